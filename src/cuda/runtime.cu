#include "runtime.hpp"

#include <array>
#include <atomic>

#include "backend.hpp"
#include "mlakv/version.hpp"

namespace mlakv {

bool built_with_cuda() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the sticky error, report none
    return 0;
  }
  return n;
}

namespace cuda {

void set_device(Device device) {
  int current = -1;
  check_cuda(cudaGetDevice(&current), "cudaGetDevice");
  if (current != device.index) check_cuda(cudaSetDevice(device.index), "cudaSetDevice");
}

int sm_count(int device_index) {
  static std::array<std::atomic<int>, 64> cache{};
  if (device_index >= 0 && device_index < 64) {
    if (int v = cache[device_index].load(std::memory_order_relaxed)) return v;
  }
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device_index), "cudaDeviceGetAttribute");
  if (device_index >= 0 && device_index < 64) cache[device_index].store(v, std::memory_order_relaxed);
  return v;
}

}  // namespace cuda
}  // namespace mlakv
