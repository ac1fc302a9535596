// wgmma issue cost by shape, measured on the device: which decode form (rows or tokens as wgmma's
// M, how many rows per instruction) can reach the tensor-bound targets. Not part of the library:
// CMake builds it as `mlakv_wgmma_probe` where the CUDA architectures include 90a.
//
// One CTA per SM, 1 or 2 warpgroups, each issuing kIters batches of kBatch independent
// m64nNk16 bf16 wgmma (A and B from shared memory, A K-major or MN-major, or A from registers),
// commit + wait per batch, as the decode kernel does per tile. Prints clocks per instruction and
// the FMA rate per SM against the dense bf16 peak of 2048 FMA per clock (64·N·16 FMA: N/2 clocks).
// Then the 64-row form's Q·Kᵀ chain with and without a barrier wait per column block.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

namespace {

constexpr int kBatch = 32, kIters = 256;

__device__ __forceinline__ uint64_t desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) |
         (static_cast<uint64_t>(sbo >> 4) << 32) | (1ull << 62);
}

template <int N> struct Acc { float d[N / 2]; };

// D (+)= A·B for one shape; d as N/2 floats per thread. RS: A from 4 registers.
template <int N, int TA, bool RS> __device__ __forceinline__ void mma(float* d, uint64_t a, uint64_t b, const uint32_t* ra);

#define MLAKV_PROBE_REGS_8 "{%0,%1,%2,%3}"
#define MLAKV_PROBE_REGS_16 "{%0,%1,%2,%3,%4,%5,%6,%7}"
#define MLAKV_PROBE_REGS_32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}"

template <> __device__ __forceinline__ void mma<8, 0, false>(float* d, uint64_t a, uint64_t b, const uint32_t*) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 " MLAKV_PROBE_REGS_8 ", %4, %5, 1, 1, 1, 0, 0;\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "l"(a), "l"(b));
}
template <> __device__ __forceinline__ void mma<16, 0, false>(float* d, uint64_t a, uint64_t b, const uint32_t*) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 " MLAKV_PROBE_REGS_16 ", %8, %9, 1, 1, 1, 0, 0;\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
               : "l"(a), "l"(b));
}
template <> __device__ __forceinline__ void mma<16, 1, false>(float* d, uint64_t a, uint64_t b, const uint32_t*) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 " MLAKV_PROBE_REGS_16 ", %8, %9, 1, 1, 1, 1, 0;\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
               : "l"(a), "l"(b));
}
template <> __device__ __forceinline__ void mma<32, 0, false>(float* d, uint64_t a, uint64_t b, const uint32_t*) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 " MLAKV_PROBE_REGS_32 ", %16, %17, 1, 1, 1, 0, 0;\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
               : "l"(a), "l"(b));
}
template <> __device__ __forceinline__ void mma<32, 1, false>(float* d, uint64_t a, uint64_t b, const uint32_t*) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 " MLAKV_PROBE_REGS_32 ", %16, %17, 1, 1, 1, 1, 0;\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
               : "l"(a), "l"(b));
}
// N = 64 and 256 as several m64n32 accumulators would not measure the wide instruction: emit it.
template <> __device__ __forceinline__ void mma<64, 0, false>(float* d, uint64_t a, uint64_t b, const uint32_t*) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
      " %32, %33, 1, 1, 1, 0, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b));
}
template <> __device__ __forceinline__ void mma<64, 0, true>(float* d, uint64_t, uint64_t b, const uint32_t* ra) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
      " {%32,%33,%34,%35}, %36, 1, 1, 1, 0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(ra[0]), "r"(ra[1]), "r"(ra[2]), "r"(ra[3]), "l"(b));
}

template <int N, int TA, bool RS>
__global__ void __launch_bounds__(256, 1) probe(int warpgroups, long long* cycles, float* sink) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) uint8_t smem[];
  for (int i = threadIdx.x; i < 96 * 1024 / 4; i += blockDim.x) reinterpret_cast<float*>(smem)[i] = 0.0f;
  __syncthreads();
  if (static_cast<int>(threadIdx.x >> 7) >= warpgroups) return;
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t ra[4] = {0, 0, 0, 0};
  // Four accumulators dealt round-robin (the decode kernel's K·Qᵀ chain), reset each batch.
  constexpr int kAcc = N >= 64 ? 2 : 4;
  Acc<N> acc[kAcc];
  for (auto& a : acc)
    for (float& x : a.d) x = 0.0f;
  const long long t0 = clock64();
  for (int it = 0; it < kIters; ++it) {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const uint32_t off = (k & 7) * 2048;
      mma<N, TA, RS>(acc[k % kAcc].d, desc(base + off, TA ? 8192 : 16, 1024), desc(base + 32768 + off, 16, 1024), ra);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
  const long long t1 = clock64();
  float s = 0.0f;
  for (auto& a : acc)
    for (float x : a.d) s += x;
  if (s != 0.0f) sink[threadIdx.x] = s;
  if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
#endif
}

/// Launches `k` on every SM twice with `warpgroups` working and returns CTA 0's clocks of the
/// second launch, or −1 (reported) when a launch failed.
long long measured_clocks(void (*k)(int, long long*, float*), int smem, const char* name, int sms, int warpgroups,
                          long long* d_cycles, float* sink) {
  cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  k<<<sms, 256, smem>>>(warpgroups, d_cycles, sink);
  k<<<sms, 256, smem>>>(warpgroups, d_cycles, sink);  // the second launch is measured
  if (cudaDeviceSynchronize() != cudaSuccess) {
    std::printf("%-34s launch failed: %s\n", name, cudaGetErrorString(cudaGetLastError()));
    return -1;
  }
  long long c = 0;
  cudaMemcpy(&c, d_cycles, sizeof c, cudaMemcpyDeviceToHost);
  return c;
}

template <int N, int TA, bool RS> void run(const char* name, int sms, long long* d_cycles, float* sink) {
  for (int wgs = 1; wgs <= 2; ++wgs) {
    const long long c = measured_clocks(probe<N, TA, RS>, 96 * 1024, name, sms, wgs, d_cycles, sink);
    if (c < 0) return;
    const double per = static_cast<double>(c) / (kIters * kBatch);  // clocks per instruction per warpgroup
    const double fma_clk = wgs * 64.0 * N * 16 / per;
    std::printf("%-24s warpgroups %d  %7.1f clk/instr  %6.0f FMA/clk/SM  %5.1f %% of 2048\n", name, wgs, per, fma_clk,
                100.0 * fma_clk / 2048);
  }
}

// The 64-row decode form's Q·Kᵀ: 36 dependent m64n64k16 (nine 64-column blocks × four k-steps)
// into one accumulator, the way it would run with a "landed" barrier per column block (FlashMLA's
// sub-tile barriers; session 13's branch tma-blockbars was 25 % slower with them). The barriers
// are complete before the loop, so each wait returns at once and the clocks measure only what the
// breaks in the chain cost: ptxas ends the HGMMA group before every wait and issues
// WARPGROUP.ARRIVE after it, whatever form the wait loop takes.
//   kChainPlain  no waits: one group of 36 (the kernel today)
//   kChainWaits  a wait + wgmma.fence before each block, one accumulator
//   kChainTwoAcc the same, blocks alternating between two accumulators (added at the end), so a
//                block never waits for the one before it to leave the tensor pipe
//   kChainCommit the same as kChainWaits with a commit per block (FlashMLA's batches)
enum ChainForm { kChainPlain, kChainWaits, kChainTwoAcc, kChainCommit };

__device__ __forceinline__ void wait_landed(uint32_t bar) {
  asm volatile("{\n.reg .pred p;\nW:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], 0;\n@!p bra W;\n}\n" ::"r"(bar)
               : "memory");
}

template <int F> __global__ void __launch_bounds__(256, 1) chain_probe(int warpgroups, long long* cycles, float* sink) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) uint8_t smem[];
  __shared__ __align__(8) uint64_t landed;
  for (int i = threadIdx.x; i < 160 * 1024 / 4; i += blockDim.x) reinterpret_cast<float*>(smem)[i] = 0.0f;
  const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&landed));
  if (threadIdx.x == 0) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bar) : "memory");
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");  // phase 0 complete
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x >> 7) >= warpgroups) return;
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  float d0[32], d1[32];
  for (int i = 0; i < 32; ++i) d0[i] = d1[i] = 0.0f;
  const long long t0 = clock64();
  for (int it = 0; it < kIters / 8; ++it) {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int kk = 0; kk < 36; ++kk) {
      if (F != kChainPlain && (kk & 3) == 0) {
        wait_landed(bar);
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
      }
      const uint32_t off = (kk >> 2) * 8192 + (kk & 3) * 32;  // Q at 0, the tile at 72 KB
      float* d = F == kChainTwoAcc && ((kk >> 2) & 1) ? d1 : d0;
      mma<64, 0, false>(d, desc(base + off, 16, 1024), desc(base + 73728 + off, 16, 1024), nullptr);
      if (F == kChainCommit && (kk & 3) == 3) asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
  const long long t1 = clock64();
  float s = 0.0f;
  for (int i = 0; i < 32; ++i) s += d0[i] + d1[i];
  if (s != 0.0f) sink[threadIdx.x] = s;
  if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
#endif
}

template <int F> void run_chain(const char* name, int sms, long long* d_cycles, float* sink) {
  for (int wgs = 1; wgs <= 2; ++wgs) {
    const long long c = measured_clocks(chain_probe<F>, 160 * 1024, name, sms, wgs, d_cycles, sink);
    if (c < 0) return;
    const double per = static_cast<double>(c) / (kIters / 8);  // clocks per Q·Kᵀ per warpgroup
    std::printf("%-34s warpgroups %d  %7.0f clk per Q·Kᵀ (36 × m64n64k16)  %5.1f %% of 2048 FMA/clk\n", name, wgs, per,
                100.0 * wgs * 36 * 64.0 * 64 * 16 / per / 2048);
  }
}

}  // namespace

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  long long* d_cycles = nullptr;
  float* sink = nullptr;
  cudaMalloc(&d_cycles, sms * sizeof(long long));
  cudaMalloc(&sink, 256 * sizeof(float));
  std::printf("wgmma probe: %d SMs, batches of %d independent instructions, commit + wait per batch\n", sms, kBatch);
  run<8, 0, false>("m64n8k16 SS", sms, d_cycles, sink);
  run<16, 0, false>("m64n16k16 SS", sms, d_cycles, sink);
  run<16, 1, false>("m64n16k16 SS, A MN-major", sms, d_cycles, sink);
  run<32, 0, false>("m64n32k16 SS", sms, d_cycles, sink);
  run<32, 1, false>("m64n32k16 SS, A MN-major", sms, d_cycles, sink);
  run<64, 0, false>("m64n64k16 SS", sms, d_cycles, sink);
  run<64, 0, true>("m64n64k16 RS", sms, d_cycles, sink);
  std::printf("\nthe 64-row form's Q·Kᵀ chain, and with a (complete) landed barrier per 64-column block\n");
  run_chain<kChainPlain>("chain, no waits", sms, d_cycles, sink);
  run_chain<kChainWaits>("chain, wait per block", sms, d_cycles, sink);
  run_chain<kChainTwoAcc>("chain, wait per block, two accs", sms, d_cycles, sink);
  run_chain<kChainCommit>("chain, wait + commit per block", sms, d_cycles, sink);
  return 0;
}
