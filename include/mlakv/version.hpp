#pragma once

namespace mlakv {
inline constexpr const char* kVersion = "0.1.0";
/// True when this build carries the CUDA backend.
bool built_with_cuda();
/// Number of CUDA devices visible (0 without CUDA or without a GPU).
int cuda_device_count();
}  // namespace mlakv
