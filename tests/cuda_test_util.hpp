// Device memory for the GPU tests (CUDA builds only).
#pragma once

#if MLAKV_WITH_CUDA
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace mlakv::test {

/// Owned device buffer on the current device: uninitialized, filled with a byte, or a copy of a
/// host vector. get<T>() waits for the device, then copies the whole buffer back.
struct DevBuf {
  void* p = nullptr;
  std::size_t n = 0;
  explicit DevBuf(std::size_t bytes, int fill = -1) : n(bytes) {
    if (bytes) EXPECT_EQ(cudaMalloc(&p, bytes), cudaSuccess);
    if (bytes && fill >= 0) EXPECT_EQ(cudaMemset(p, fill, bytes), cudaSuccess);
  }
  template <class T> explicit DevBuf(const std::vector<T>& v) : DevBuf(v.size() * sizeof(T)) {
    if (n) EXPECT_EQ(cudaMemcpy(p, v.data(), n, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T> std::vector<T> get() const {
    std::vector<T> v(n / sizeof(T));
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (n) EXPECT_EQ(cudaMemcpy(v.data(), p, n, cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  uint8_t* u8() const { return static_cast<uint8_t*>(p); }
};

/// An environment variable set (or, with nullptr, unset) for a scope, its earlier state restored
/// however the scope ends (a failed ASSERT returns early): the decode switches are read per call.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(const char* n, const char* value) : name(n) {
    if (const char* e = std::getenv(n)) old = e;
    if (value) setenv(n, value, 1);
    else unsetenv(n);
  }
  ~ScopedEnv() {
    if (old) setenv(name.c_str(), old->c_str(), 1);
    else unsetenv(name.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
};

}  // namespace mlakv::test
#endif
