// Combine kernel of mla_decode's split-KV schedule: merges the fp32 partials (o_s, lse_s) of each
// split request, LSE = log Σ exp(lse_s) with the maximum subtracted, and writes the rows of
// requests with no local token (o = 0, lse = −inf). It walks the scheduler's compact list of such
// requests, so a batch with nothing split costs one short launch; unsplit requests were written by
// the attention kernel.
#include <cuda_bf16.h>

#include "mla_decode_common.cuh"
#include "runtime.hpp"

namespace mlakv::cuda::mla {
namespace {

constexpr int kCombineThreads = 256, kCombineWarps = kCombineThreads / 32;

__device__ __forceinline__ void store2(const DecodeArgs& a, int64_t off, float x, float y) {
  if (a.out_f32) {
    float* d = static_cast<float*>(a.out) + off;
    if (a.out_vec) *reinterpret_cast<float2*>(d) = make_float2(x, y);
    else d[0] = x, d[1] = y;
  } else {
    __nv_bfloat16* d = static_cast<__nv_bfloat16*>(a.out) + off;
    const __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
    if (a.out_vec) *reinterpret_cast<__nv_bfloat162*>(d) = v;
    else d[0] = v.x, d[1] = v.y;
  }
}

// Grid (list entries, rows, column chunks of 512 / gridDim.z). One CTA merges one row (or a
// quarter of it) of one request: warp w sums the partials i ≡ w (mod 8), several loads in flight
// per lane, then the 8 warps' sums meet in shared memory.
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const __grid_constant__ DecodeArgs a) {
  __shared__ float acc_s[kCombineWarps][512];
  __shared__ float red[kCombineWarps];
  pdl_wait();  // the schedule and every partial come from the grids before this one
  const Schedule& s = a.sched;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int r = blockIdx.y, qi = r / a.heads, h = r - qi * a.heads;
  const int n = s.header[2];
  for (int e = blockIdx.x; e < n; e += gridDim.x) {
    const int b = s.list[e];
    const int64_t obase = b * a.o_s0 + qi * a.o_s1 + h * a.o_s2;
    float* lse_out = a.lse + b * a.l_s0 + qi * a.l_s1 + h * a.l_s2;
    const int ns = s.ntiles[b] > 0 ? s.nsplit[b] : 0;
    const float* pl = s.part_lse + static_cast<int64_t>(ns > 0 ? s.split_base[b] : 0) * a.rows + r;

    float mx = -INFINITY;
    for (int i = tid; i < ns; i += kCombineThreads) mx = fmaxf(mx, pl[static_cast<int64_t>(i) * a.rows]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    mx = red[0];
#pragma unroll
    for (int w = 1; w < kCombineWarps; ++w) mx = fmaxf(mx, red[w]);
    __syncthreads();
    float sum = 0.0f;
    if (mx > -INFINITY)
      for (int i = tid; i < ns; i += kCombineThreads) sum += __expf(pl[static_cast<int64_t>(i) * a.rows] - mx);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) red[warp] = sum;
    __syncthreads();
    sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kCombineWarps; ++w) sum += red[w];
    const float lse = mx > -INFINITY ? mx + __logf(sum) : -INFINITY;

    // This CTA's columns: [z0, z0 + 128·nq); lane l owns float4 column groups z0 + 4l + 128k.
    const int nq = 4 / gridDim.z, z0 = blockIdx.z * 128 * nq;
    float4 acc[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (lse > -INFINITY) {
      const float* po = s.part_o + (static_cast<int64_t>(s.split_base[b]) * a.rows + r) * 512 + z0 + lane * 4;
      const int64_t split_stride = static_cast<int64_t>(a.rows) * 512;
      // Four partials in flight per warp: with one request spread over every SM, each row merges
      // ~130 partials and the walk is latency-bound.
#pragma unroll 4
      for (int i = warp; i < ns; i += kCombineWarps) {
        const float wt = __expf(pl[static_cast<int64_t>(i) * a.rows] - lse);
        const float* p = po + i * split_stride;
        float4 v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k)
          if (k < nq) v[k] = *reinterpret_cast<const float4*>(p + 128 * k);
        if (wt != 0.0f) {  // an empty partial (lse −inf) adds nothing
#pragma unroll
          for (int k = 0; k < 4; ++k)
            if (k < nq) {
              acc[k].x += wt * v[k].x;
              acc[k].y += wt * v[k].y;
              acc[k].z += wt * v[k].z;
              acc[k].w += wt * v[k].w;
            }
        }
      }
    }
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (k < nq) *reinterpret_cast<float4*>(&acc_s[warp][lane * 4 + 128 * k]) = acc[k];
    __syncthreads();
    if (2 * tid < 128 * nq) {
      float x = 0.0f, y = 0.0f;
#pragma unroll
      for (int w = 0; w < kCombineWarps; ++w) {
        x += acc_s[w][2 * tid];
        y += acc_s[w][2 * tid + 1];
      }
      store2(a, obase + z0 + 2 * tid, x, y);
    }
    if (tid == 0 && blockIdx.z == 0) *lse_out = lse;
    __syncthreads();  // acc_s and red are reused by the next entry
  }
}

}  // namespace

void launch_combine(const DecodeArgs& a, int parts, cudaStream_t stream) {
  // At most parts − 1 requests are split; more entries (empty requests) are walked grid-stride.
  const int x = a.batch < parts ? a.batch : parts;
  // Few (request, row) pairs: split the 512 columns over 4 CTAs so the merge uses more SMs.
  const int z = static_cast<int64_t>(x) * a.rows >= 4 * parts ? 1 : 4;
  check_cuda(launch_maybe_pdl(a.pdl, combine_kernel,
                              dim3(static_cast<unsigned>(x), static_cast<unsigned>(a.rows), static_cast<unsigned>(z)),
                              dim3(kCombineThreads), 0, stream, a),
             "mla_decode combine_kernel");
  check_launch("mla_decode combine_kernel");
}

}  // namespace mlakv::cuda::mla
