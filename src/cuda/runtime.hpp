// Host-side CUDA helpers shared by every launcher.
#pragma once

#include <cuda_runtime.h>

#include "check.hpp"

namespace mlakv::cuda {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) detail::fail("CUDA error in ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

/// After a launch: turns a configuration error into mlakv::Error (does not synchronize).
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline cudaStream_t to_cuda(Stream s) { return static_cast<cudaStream_t>(s.handle); }

/// Multiprocessor count of a device, cached per device.
int sm_count(int device_index);

}  // namespace mlakv::cuda
