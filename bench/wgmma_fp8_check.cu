// The building blocks of a decode that feeds e4m3 tiles straight to the tensor cores (no widened
// bf16 stage; docs/perf/decode-notes.md, session 9), checked against the CPU and timed on the
// device before any kernel is built on them. Not part of the library: CMake builds it as
// `mlakv_wgmma_fp8_check` where the CUDA architectures include 90a. One warpgroup, one tile:
//   1. Sᵀ = K · Qᵀ: K [64 tokens × 576] e4m3, K-major in five 128-byte column blocks with the
//      128-byte swizzle (the layout 16-byte copies of raw token rows can land in); Q as two e4m3
//      terms, [32 rows × 576] alike; 18 × wgmma m64n32k32.
//   2. Vᵀ [512 dims × 64 tokens] from the same tile (the first 512 dims), 64-byte swizzle, by the
//      128 threads: 16 tokens × 16 dims each, 16 loads, 8 prmt per 4 × 4 bytes, 16 stores.
//   3. Oᵀ = Vᵀ · Pᵀ: P [16 rows × 64 tokens] e4m3, 64-byte swizzle; 8 m-blocks × 2 k-steps ×
//      wgmma m64n16k32 (a second P term would be two more k-steps into the same accumulator).
// Prints the largest error of each product against an exact CPU sum, relative to the sum of the
// products' magnitudes (FP8 wgmma keeps fewer bits than fp32 while it sums a k-group), and clocks
// per step. Exit status 1 when an error exceeds 2^-6 (a layout error, not rounding).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace {

constexpr int kTok = 64, kDim = 576, kDv = 512, kQRows = 32, kPRows = 16;
// Shared memory: K tile, Q terms, Vᵀ, P (each on a 1024-byte line).
constexpr int kK = 0, kQ = kK + 5 * 8192, kV = kQ + 5 * 4096, kP = kV + 8 * 4096, kSmem = kP + 1024;

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MLAKV_FP8_CHECK_DEVICE 1
#else
#define MLAKV_FP8_CHECK_DEVICE 0
#endif

#if MLAKV_FP8_CHECK_DEVICE
__device__ __forceinline__ uint64_t desc(uint32_t addr, uint32_t sbo, uint64_t swizzle) {
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (1ull << 16) | (static_cast<uint64_t>(sbo >> 4) << 32) |
         (swizzle << 62);
}
constexpr uint64_t kSw128 = 1, kSw64 = 2;

// D (+)= A · B; acc = 0 on a group's first k-step (D is then only written: no register to fence).
__device__ __forceinline__ void mma_n32(float (&d)[16], uint64_t a, uint64_t b, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(a), "l"(b), "r"(acc));
}
__device__ __forceinline__ void mma_n16(float (&d)[8], uint64_t a, uint64_t b, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "l"(a), "l"(b), "r"(acc));
}

/// Byte (row, 16-byte chunk u) of a K-major tile with rows `pitch` bytes apart and the 128- or
/// 64-byte swizzle (the chunk index XOR the row's position in its 1024- or 512-byte atom).
__device__ __forceinline__ uint32_t sw128(int row, int u) { return row * 128 + ((u ^ (row & 7)) << 4); }
__device__ __forceinline__ uint32_t sw64(int row, int u) { return row * 64 + ((u ^ ((row >> 1) & 3)) << 4); }

/// A 4 × 4 byte transpose: byte i of out[j] is byte j of in[i].
__device__ __forceinline__ void transpose4(const uint32_t (&in)[4], uint32_t (&out)[4]) {
  uint32_t t0, t1, t2, t3;
  asm("prmt.b32 %0, %1, %2, 0x5140;" : "=r"(t0) : "r"(in[0]), "r"(in[1]));
  asm("prmt.b32 %0, %1, %2, 0x7362;" : "=r"(t1) : "r"(in[0]), "r"(in[1]));
  asm("prmt.b32 %0, %1, %2, 0x5140;" : "=r"(t2) : "r"(in[2]), "r"(in[3]));
  asm("prmt.b32 %0, %1, %2, 0x7362;" : "=r"(t3) : "r"(in[2]), "r"(in[3]));
  asm("prmt.b32 %0, %1, %2, 0x5410;" : "=r"(out[0]) : "r"(t0), "r"(t2));
  asm("prmt.b32 %0, %1, %2, 0x7632;" : "=r"(out[1]) : "r"(t0), "r"(t2));
  asm("prmt.b32 %0, %1, %2, 0x5410;" : "=r"(out[2]) : "r"(t1), "r"(t3));
  asm("prmt.b32 %0, %1, %2, 0x7632;" : "=r"(out[3]) : "r"(t1), "r"(t3));
}

#endif  // MLAKV_FP8_CHECK_DEVICE

__global__ void __launch_bounds__(128, 1) check(const uint8_t* k, const uint8_t* q, const uint8_t* p, float* s_out,
                                                 float* o_out, long long* clocks) {
#if MLAKV_FP8_CHECK_DEVICE
  extern __shared__ __align__(1024) uint8_t smem[];
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int t = threadIdx.x, w = t >> 5, l = t & 31;
  for (int i = t; i < kSmem / 16; i += 128) reinterpret_cast<uint4*>(smem)[i] = make_uint4(0, 0, 0, 0);
  __syncthreads();
  // Operands to their layouts, 16 bytes at a time (as cp.async of raw rows would land them).
  for (int i = t; i < kTok * 36; i += 128) {
    const int r = i / 36, ch = i % 36;
    *reinterpret_cast<uint4*>(smem + kK + (ch >> 3) * 8192 + sw128(r, ch & 7)) = reinterpret_cast<const uint4*>(k)[i];
  }
  for (int i = t; i < kQRows * 36; i += 128) {
    const int r = i / 36, ch = i % 36;
    *reinterpret_cast<uint4*>(smem + kQ + (ch >> 3) * 4096 + sw128(r, ch & 7)) = reinterpret_cast<const uint4*>(q)[i];
  }
  for (int i = t; i < kPRows * 4; i += 128)
    *reinterpret_cast<uint4*>(smem + kP + sw64(i >> 2, i & 3)) = reinterpret_cast<const uint4*>(p)[i];
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();

  // 1. Sᵀ = K · Qᵀ.
  float s[16];
  long long c0 = clock64();
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
  for (int ks = 0; ks < 18; ++ks) {
    const uint32_t off = (ks >> 2) * 8192 + (ks & 3) * 32, qoff = (ks >> 2) * 4096 + (ks & 3) * 32;
    mma_n32(s, desc(base + kK + off, 1024, kSw128), desc(base + kQ + qoff, 1024, kSw128), ks);
  }
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  long long c1 = clock64();
  const long long qk_clocks = c1 - c0;
  const int r0 = 16 * w + (l >> 2), cq = 2 * (l & 3);
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) s_out[(r0 + 8 * (e >> 1)) * kQRows + 8 * j + cq + (e & 1)] = s[4 * j + e];

  // 2. Vᵀ: thread t takes dims 16·(t % 32) .. + 15 of tokens 16·(t / 32) .. + 15.
  __syncthreads();
  c0 = clock64();
  {
    const int dg = t & 31, tg = t >> 5;
    uint32_t in[16][4];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int tok = 16 * tg + i;
      const uint4 v = *reinterpret_cast<const uint4*>(smem + kK + (dg >> 3) * 8192 + sw128(tok, dg & 7));
      in[i][0] = v.x, in[i][1] = v.y, in[i][2] = v.z, in[i][3] = v.w;
    }
    // out[d][a]: dim 16·dg + d, tokens 4a .. 4a + 3 of this thread's sixteen.
    uint32_t out[16][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const uint32_t blk[4] = {in[4 * a][b], in[4 * a + 1][b], in[4 * a + 2][b], in[4 * a + 3][b]};
        uint32_t tr[4];
        transpose4(blk, tr);
#pragma unroll
        for (int j = 0; j < 4; ++j) out[4 * b + j][a] = tr[j];
      }
#pragma unroll
    for (int d = 0; d < 16; ++d) {
      const int dim = 16 * dg + d;
      *reinterpret_cast<uint4*>(smem + kV + (dim >> 6) * 4096 + sw64(dim & 63, tg)) =
          make_uint4(out[d][0], out[d][1], out[d][2], out[d][3]);
    }
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  c1 = clock64();
  const long long transpose_clocks = c1 - c0;

  // 3. Oᵀ = Vᵀ · Pᵀ.
  float o[8][8];
  c0 = clock64();
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
  for (int mb = 0; mb < 8; ++mb)
#pragma unroll
    for (int ks = 0; ks < 2; ++ks)
      mma_n16(o[mb], desc(base + kV + mb * 4096 + ks * 32, 512, kSw64), desc(base + kP + ks * 32, 512, kSw64), ks);
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  const long long pv_clocks = clock64() - c0;
#pragma unroll
  for (int mb = 0; mb < 8; ++mb)
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        o_out[(64 * mb + r0 + 8 * (e >> 1)) * kPRows + 8 * j + cq + (e & 1)] = o[mb][4 * j + e];
  if (t == 0) clocks[0] = qk_clocks, clocks[1] = transpose_clocks, clocks[2] = pv_clocks;
#else
  (void)k, (void)q, (void)p, (void)s_out, (void)o_out, (void)clocks;
#endif
}

double e4m3_value(uint8_t b) {
  const int sign = b >> 7, e = (b >> 3) & 15, m = b & 7;
  const double v = e == 0 ? m / 8.0 * std::ldexp(1.0, -6) : (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
  return sign ? -v : v;
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  auto finite_e4m3 = [&]() {
    uint8_t b;
    do b = static_cast<uint8_t>(rng() & 0xff);
    while ((b & 0x7f) == 0x7f);  // NaN
    return b;
  };
  std::vector<uint8_t> k(kTok * kDim), q(kQRows * kDim), p(kPRows * kTok);
  for (auto* v : {&k, &q, &p})
    for (auto& b : *v) b = finite_e4m3();
  uint8_t *dk, *dq, *dp;
  float *ds, *dout;
  long long* dclk;
  cudaMalloc(&dk, k.size()), cudaMalloc(&dq, q.size()), cudaMalloc(&dp, p.size());
  cudaMalloc(&ds, kTok * kQRows * 4), cudaMalloc(&dout, kDv * kPRows * 4), cudaMalloc(&dclk, 3 * sizeof(long long));
  cudaMemcpy(dk, k.data(), k.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(dq, q.data(), q.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(dp, p.data(), p.size(), cudaMemcpyHostToDevice);
  cudaFuncSetAttribute(check, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  for (int rep = 0; rep < 2; ++rep) check<<<1, 128, kSmem>>>(dk, dq, dp, ds, dout, dclk);  // the second is timed
  if (cudaDeviceSynchronize() != cudaSuccess) {
    std::printf("launch failed: %s\n", cudaGetErrorString(cudaGetLastError()));
    return 1;
  }
  std::vector<float> s(kTok * kQRows), o(kDv * kPRows);
  long long clk[3];
  cudaMemcpy(s.data(), ds, s.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(o.data(), dout, o.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(clk, dclk, sizeof clk, cudaMemcpyDeviceToHost);

  // Largest |got − Σ_i x(r, n, i)| over |x| summed, the products exact in double.
  auto worst_error = [](int rows, int cols, int len, auto&& product, auto&& got) {
    double worst = 0;
    for (int r = 0; r < rows; ++r)
      for (int n = 0; n < cols; ++n) {
        double sum = 0, mag = 0;
        for (int i = 0; i < len; ++i) {
          const double x = product(r, n, i);
          sum += x, mag += std::fabs(x);
        }
        worst = std::fmax(worst, std::fabs(got(r, n) - sum) / (mag + 1e-30));
      }
    return worst;
  };
  const double worst_s = worst_error(
      kTok, kQRows, kDim, [&](int r, int n, int d) { return e4m3_value(k[r * kDim + d]) * e4m3_value(q[n * kDim + d]); },
      [&](int r, int n) { return s[r * kQRows + n]; });
  const double worst_o = worst_error(
      kDv, kPRows, kTok, [&](int d, int n, int r) { return e4m3_value(k[r * kDim + d]) * e4m3_value(p[n * kTok + r]); },
      [&](int d, int n) { return o[d * kPRows + n]; });
  // A wrong layout is off by O(1); reduced-precision sums by ~2^-14 of the largest product per
  // group, which over 18 groups can reach ~2^-10 of the magnitudes: 2^-6 separates the two.
  const double tol = std::ldexp(1.0, -6);
  std::printf("S = K·Qᵀ  (18 × m64n32k32 e4m3, 128-byte swizzle): worst error %.2e of the magnitudes  %s\n", worst_s,
              worst_s <= tol ? "ok" : "FAIL");
  std::printf("O = Vᵀ·Pᵀ (16 × m64n16k32 e4m3, Vᵀ transposed in shared memory, 64-byte swizzle): worst %.2e  %s\n",
              worst_o, worst_o <= tol ? "ok" : "FAIL");
  std::printf("clocks, one warpgroup, one tile: Q·Kᵀ %lld, Vᵀ transpose %lld, P·V %lld\n", clk[0], clk[1], clk[2]);
  // The operands are random e4m3 bytes (products over ~30 binades), so the worst error also says
  // how many bits the FP8 tensor cores keep while they sum (the decode-notes' model assumes 14).
  std::printf("bits kept in the sums (−log2 of the worst error of S, of O): %.1f, %.1f\n", -std::log2(worst_s + 1e-300),
              -std::log2(worst_o + 1e-300));
  return worst_s <= tol && worst_o <= tol ? 0 : 1;
}
