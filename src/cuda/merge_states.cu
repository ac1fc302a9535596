// merge_states (SPEC §3 op 7) on CUDA: o = w_a·o_a + w_b·o_b, lse = log(e^lse_a + e^lse_b) with
// the maximum subtracted; +inf and NaN LSEs count as −inf (empty); both empty: o = 0, lse = −inf.
#include <cuda_bf16.h>

#include <cmath>

#include "backend.hpp"
#include "runtime.hpp"

namespace mlakv::cuda {
namespace {

struct StateView {
  void* o;
  int64_t s0, s1;  // element strides of dims 0 and 1 (dim 2 is contiguous)
  bool f32;
  float* lse;
  int64_t l0, l1;
};

struct MergeArgs {
  StateView a, b, out;
  int64_t n, h, d;
};

__device__ __forceinline__ float load_o(const StateView& v, int64_t off) {
  return v.f32 ? static_cast<const float*>(v.o)[off] : __bfloat162float(static_cast<const __nv_bfloat16*>(v.o)[off]);
}
__device__ __forceinline__ void store_o(const StateView& v, int64_t off, float x) {
  if (v.f32) static_cast<float*>(v.o)[off] = x;
  else static_cast<__nv_bfloat16*>(v.o)[off] = __float2bfloat16_rn(x);
}
__device__ __forceinline__ float empty_as_neg_inf(float x) { return (isnan(x) || x == INFINITY) ? -INFINITY : x; }

constexpr int kThreads = 256;

// One warp per (n, h) state.
__global__ void __launch_bounds__(kThreads) merge_states_kernel(const __grid_constant__ MergeArgs m) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= m.n * m.h) return;
  const int64_t i = w / m.h, j = w - i * m.h;
  const float la = empty_as_neg_inf(m.a.lse[i * m.a.l0 + j * m.a.l1]);
  const float lb = empty_as_neg_inf(m.b.lse[i * m.b.l0 + j * m.b.l1]);
  const float mx = fmaxf(la, lb);
  float wa = 0.0f, wb = 0.0f, lse = -INFINITY;
  if (mx > -INFINITY) {
    const float ea = expf(la - mx), eb = expf(lb - mx);  // exp(-inf) = 0
    const float sum = ea + eb;
    wa = ea / sum;
    wb = eb / sum;
    lse = mx + logf(sum);
  }
  const int64_t oa = i * m.a.s0 + j * m.a.s1, ob = i * m.b.s0 + j * m.b.s1, oo = i * m.out.s0 + j * m.out.s1;
  for (int64_t k = lane; k < m.d; k += 32) {
    // A zero weight must not read the other state: an empty state's o may be garbage.
    const float xa = wa != 0.0f ? wa * load_o(m.a, oa + k) : 0.0f;
    const float xb = wb != 0.0f ? wb * load_o(m.b, ob + k) : 0.0f;
    store_o(m.out, oo + k, xa + xb);
  }
  if (lane == 0) m.out.lse[i * m.out.l0 + j * m.out.l1] = lse;
}

StateView view(const Tensor& o, const Tensor& lse) {
  return {o.data, o.stride[0], o.stride[1], o.dtype == DType::f32, lse.ptr<float>(), lse.stride[0], lse.stride[1]};
}

}  // namespace

void merge_states(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b, const Tensor& lse_b, const Tensor& o,
                  const Tensor& lse, Stream stream) {
  set_device(o_a.device);
  MergeArgs m{view(o_a, lse_a), view(o_b, lse_b), view(o, lse), o_a.shape[0], o_a.shape[1], o_a.shape[2]};
  const int64_t states = m.n * m.h;
  if (states == 0) return;
  const int64_t blocks = (states * 32 + kThreads - 1) / kThreads;
  merge_states_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, to_cuda(stream)>>>(m);
  check_launch("merge_states_kernel");
}

}  // namespace mlakv::cuda
