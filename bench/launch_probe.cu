// The floor under a small decode step, measured by `mlakv bench`'s own timing (bench_util's
// time_us: CUDA events around each step, the GPU kept busy ahead so that the host's launch work
// is hidden, a warm-up, the median of many):
// what one or two grids cost when they do nothing, with the decode kernel's launch shape (one CTA
// per SM, 384 threads, ~200 KB of shared memory) and its programmatic dependent launch, and with
// the dependent global loads every decode CTA starts with. Not part of the library: CMake builds
// it as `mlakv_launch_probe` where the CUDA architectures include 90a.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "bench_util.hpp"

namespace {

constexpr int kSmem = 200 * 1024;

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

__global__ void tiny_kernel() {}

// The first grid: `hops` dependent loads (a pointer chase, as seq_lens → schedule → block table →
// tile), then one value per CTA for the dependent grid.
__global__ void __launch_bounds__(384, 1) first_kernel(const int* chain, int n, int start, int hops, int* out,
                                                       bool trigger) {
  extern __shared__ int smem[];
  if (trigger) pdl_trigger();
  if (threadIdx.x == 0) {
    int i = static_cast<int>((start + 104729LL * blockIdx.x) % n);
    for (int h = 0; h < hops; ++h) i = __ldcg(chain + i);
    smem[0] = i;
    if (out) out[blockIdx.x] = i;
  }
}

__global__ void __launch_bounds__(256) second_kernel(const int* in, int* out) {
  pdl_wait();
  if (threadIdx.x == 0 && in) out[blockIdx.x] = in[0] + 1;  // a value the first grid wrote
}

cudaError_t launch_second(bool pdl, int ctas, const int* in, int* out, cudaStream_t s) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(ctas), cfg.blockDim = dim3(256), cfg.stream = s;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr, cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, second_kernel, in, out);
}

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

}  // namespace

int main() {
  int sms = 0;
  ck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "attr");
  cudaDeviceProp p{};
  ck(cudaGetDeviceProperties(&p, 0), "props");
  ck(cudaFuncSetAttribute(first_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem), "smem opt-in");
  cudaStream_t s;
  ck(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  // A pointer chase over 64 MB (beyond L2 for the first hop of each CTA: HBM latency) or 1 MB (L2).
  const int big = 16 << 20, small = 1 << 18;
  std::vector<int> h(big);
  for (int i = 0; i < big; ++i) h[i] = static_cast<int>((static_cast<long long>(i) * 2654435761LL + 12345) % big);
  int *chain_big = nullptr, *chain_small = nullptr, *out1 = nullptr, *out2 = nullptr;
  ck(cudaMalloc(&chain_big, sizeof(int) * big), "malloc");
  ck(cudaMalloc(&chain_small, sizeof(int) * small), "malloc");
  ck(cudaMemcpy(chain_big, h.data(), sizeof(int) * big, cudaMemcpyHostToDevice), "copy");
  for (int i = 0; i < small; ++i) h[i] %= small;
  ck(cudaMemcpy(chain_small, h.data(), sizeof(int) * small, cudaMemcpyHostToDevice), "copy");
  ck(cudaMalloc(&out1, sizeof(int) * 4096), "malloc");
  ck(cudaMalloc(&out2, sizeof(int) * 4096), "malloc");

  std::printf("device %s, %d SMs; medians of 200 event-bracketed steps, µs\n", p.name, sms);
  // A new start each step: the chase's first hop misses whatever the steps before brought in.
  int step_no = 0;
  auto first = [&](const int* chain, int hops, bool trigger) {
    const int n = chain == chain_big ? big : small;
    first_kernel<<<sms, 384, kSmem, s>>>(chain, n, static_cast<int>((7919LL * 132 * ++step_no) % n), hops, out1, trigger);
  };
  struct Case {
    const char* name;
    std::function<void()> step;
  };
  const std::vector<Case> cases = {
      {"one empty grid, 1 CTA of 32 threads", [&] { tiny_kernel<<<1, 32, 0, s>>>(); }},
      {"one grid, an SM's worth of CTAs (384 thr, 200 KB smem), no loads", [&] { first(chain_small, 0, false); }},
      {"  + 3 dependent loads per CTA (L2)", [&] { first(chain_small, 3, false); }},
      {"  + 3 dependent loads per CTA (HBM)", [&] { first(chain_big, 3, false); }},
      {"two grids in stream order (second 4 CTAs/SM), no loads",
       [&] {
         first(chain_small, 0, false);
         ck(launch_second(false, 4 * sms, out1, out2, s), "second");
       }},
      {"two grids, the second a programmatic dependent (PDL), no loads",
       [&] {
         first(chain_small, 0, true);
         ck(launch_second(true, 4 * sms, out1, out2, s), "second");
       }},
      {"two grids with PDL, 3 dependent HBM loads per first CTA",
       [&] {
         first(chain_big, 3, true);
         ck(launch_second(true, 4 * sms, out1, out2, s), "second");
       }},
  };
  const mlakv::bench::TimeOptions t{50, 200};
  for (const Case& c : cases)
    std::printf("%8.2f  %s\n", mlakv::bench::time_us([&](int) { c.step(); }, s, t), c.name);
  return 0;
}
