// How many e4m3x2 -> f16x2 conversions an SM retires per clock by cvt (F2FP), by the integer
// path of src/cuda/e4m3_alu.hpp (prmt, shift, mask), and by both interleaved: whether splitting
// K's conversion between them can shorten the 16-row tile (session 31). One CTA per SM, 8 warps
// per scheduler, 8 independent chains per thread; clock64 around the loop.
//   nvcc -O3 -arch=sm_90a -std=c++17 -I src pipe_rate.cu -o pipe_rate && ./pipe_rate
#include <cstdio>
#include <cstdint>
#include "cuda/e4m3_alu.hpp"

constexpr int kIters = 4096, kChains = 8;

__device__ __forceinline__ uint32_t cvt(uint32_t x) {
  uint32_t r;
  asm volatile("{\n.reg .b16 l, h;\nmov.b32 {l, h}, %1;\ncvt.rn.f16x2.e4m3x2 %0, l;\n}\n" : "=r"(r) : "r"(x));
  return r;
}
__device__ __forceinline__ uint32_t alu(uint32_t x) { return mlakv::cuda::e4m3_alu::e4m3x2_placed<7>(x, x, 0, 1); }

template <int kMode>  // 0 cvt, 1 integer path, 2 both (half the chains each)
__global__ void rate(uint32_t* out, long long* clocks) {
  uint32_t v[kChains];
  for (int c = 0; c < kChains; ++c) v[c] = threadIdx.x * 0x01010101u + c;
  __syncthreads();
  const long long t0 = clock64();
  for (int i = 0; i < kIters; ++i)
#pragma unroll
    for (int c = 0; c < kChains; ++c) v[c] = (kMode == 0 || (kMode == 2 && c % 2 == 0)) ? cvt(v[c]) : alu(v[c]);
  __syncthreads();
  const long long t1 = clock64();
  uint32_t acc = 0;
  for (int c = 0; c < kChains; ++c) acc ^= v[c];
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
  if (threadIdx.x == 0) clocks[blockIdx.x] = t1 - t0;
}

template <int kMode> void run(const char* name, int sms, int threads) {
  uint32_t* out;
  long long* clk;
  cudaMalloc(&out, sizeof(uint32_t) * sms * threads);
  cudaMalloc(&clk, sizeof(long long) * sms);
  rate<kMode><<<sms, threads>>>(out, clk);  // warm-up
  rate<kMode><<<sms, threads>>>(out, clk);
  cudaDeviceSynchronize();
  long long h[1024];
  cudaMemcpy(h, clk, sizeof(long long) * sms, cudaMemcpyDeviceToHost);
  long long mx = 0;
  for (int i = 0; i < sms; ++i) mx = h[i] > mx ? h[i] : mx;
  const double conv = double(threads) * kIters * kChains;
  std::printf("%-12s threads %4d: %6.2f conversions (f16x2 words) per clock per SM, %6.1f clocks per warp-instruction-equivalent per scheduler\n",
              name, threads, conv / mx, 4.0 * mx / (conv / 32));
  cudaFree(out);
  cudaFree(clk);
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  for (int threads : {128, 1024}) {
    run<0>("cvt", sms, threads);
    run<1>("integer", sms, threads);
    run<2>("both", sms, threads);
  }
  return cudaGetLastError() != cudaSuccess;
}
