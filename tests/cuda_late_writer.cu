// A kernel that lets the stream's next grid launch at once (griddepcontrol.launch_dependents) and
// writes its buffers only after a delay: a programmatic dependent that read or wrote them before
// its griddepcontrol.wait would see the old bytes, or have its writes overwritten, and its own
// early writes to the checked buffers show in the report.
#include "cuda_late_writer.hpp"

#include <cuda_runtime.h>

#include <stdexcept>

namespace mlakv::test {
namespace {

__device__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void late_writer(const unsigned* gate, LateReport* report, PoisonCheck c0, PoisonCheck c1, PoisonCheck c2,
                            LateWrite w0, LateWrite w1, LateWrite w2, unsigned long long delay_ns) {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  const unsigned long long t0 = now_ns();
  while (*static_cast<const volatile unsigned*>(gate) == 0 && now_ns() - t0 < 1000000000ull) {
  }
  const unsigned long long t1 = now_ns();
  while (now_ns() - t1 < delay_ns) {
  }
  const std::size_t i0 = blockIdx.x * blockDim.x + threadIdx.x, step = gridDim.x * blockDim.x;
  unsigned long long touched = 0;
  for (const PoisonCheck& c : {c0, c1, c2})
    for (std::size_t i = i0; i < c.bytes; i += step)
      touched += *(static_cast<const volatile unsigned char*>(c.dst) + i) != c.fill;
  if (touched) atomicAdd(&report->touched, touched);
  for (const LateWrite& w : {w0, w1, w2})
    for (std::size_t i = i0; i < w.bytes; i += step)
      static_cast<unsigned char*>(w.dst)[i] = w.src ? static_cast<const unsigned char*>(w.src)[i] : w.fill;
}

__global__ void read_without_wait(const unsigned* word, unsigned* seen) { *seen = *static_cast<const volatile unsigned*>(word); }

}  // namespace

Gate::Gate() {
  if (cudaHostAlloc(&host_, sizeof(unsigned), cudaHostAllocMapped) != cudaSuccess ||
      cudaHostGetDevicePointer(reinterpret_cast<void**>(&dev_), host_, 0) != cudaSuccess)
    throw std::runtime_error("Gate: mapped pinned memory unavailable");
  close();
}
Gate::~Gate() { cudaFreeHost(host_); }

bool launch_late_writer(const Gate& gate, LateReport* report, const PoisonCheck (&checks)[3],
                        const LateWrite (&writes)[3], unsigned delay_us, void* stream) {
  late_writer<<<8, 256, 0, static_cast<cudaStream_t>(stream)>>>(gate.device(), report, checks[0], checks[1], checks[2],
                                                               writes[0], writes[1], writes[2], 1000ull * delay_us);
  return cudaGetLastError() == cudaSuccess;
}

bool pdl_overlap_observed() {
  cudaStream_t st = nullptr;
  unsigned* d = nullptr;  // [0]: the word, [1]: what the dependent saw
  LateReport* rep = nullptr;
  Gate gate;
  bool ok = cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) == cudaSuccess &&
            cudaMalloc(&d, 2 * sizeof(unsigned)) == cudaSuccess && cudaMalloc(&rep, sizeof(LateReport)) == cudaSuccess &&
            cudaMemsetAsync(d, 0, 2 * sizeof(unsigned), st) == cudaSuccess;
  static const unsigned one = 1;
  unsigned* one_d = nullptr;
  ok = ok && cudaMalloc(&one_d, sizeof(unsigned)) == cudaSuccess &&
       cudaMemcpy(one_d, &one, sizeof(unsigned), cudaMemcpyHostToDevice) == cudaSuccess;
  ok = ok && launch_late_writer(gate, rep, {}, {LateWrite{d, one_d, sizeof(unsigned)}}, 200, st);
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(1), cfg.blockDim = dim3(1), cfg.stream = st, cfg.attrs = &attr, cfg.numAttrs = 1;
  ok = ok && cudaLaunchKernelEx(&cfg, read_without_wait, static_cast<const unsigned*>(d), d + 1) == cudaSuccess;
  gate.open();
  unsigned seen[2] = {0, 0};
  ok = ok && cudaMemcpyAsync(seen, d, sizeof(seen), cudaMemcpyDeviceToHost, st) == cudaSuccess &&
       cudaStreamSynchronize(st) == cudaSuccess;
  cudaFree(one_d), cudaFree(rep), cudaFree(d), cudaStreamDestroy(st);
  return ok && seen[0] == 1 && seen[1] == 0;  // the dependent ran before the write
}

}  // namespace mlakv::test
