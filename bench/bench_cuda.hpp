// CUDA runtime helpers for the bench sources (CUDA builds only).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "mlakv/error.hpp"

namespace mlakv::bench {

/// Throws mlakv::Error naming the failed call.
inline void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(std::string("mlakv bench: ") + what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

}  // namespace mlakv::bench
