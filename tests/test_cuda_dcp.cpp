// DCP on GPUs (SPEC §4): every CUDA DCP kernel against its CPU version (one GPU), and on two GPUs
// over NCCL the whole decode step against a single-GPU mla_decode and the context gather against
// a single-GPU gather_dequant_cache. Skipped without enough GPUs.
#include <gtest/gtest.h>

#include "attention_test_util.hpp"

#if MLAKV_WITH_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dcp/dcp_ops.hpp"
#include "mlakv/nccl.hpp"
#endif

namespace mlakv::test {
namespace {

#if MLAKV_WITH_CUDA

using namespace attn;

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

/// Device memory on one GPU, freed on destruction.
class DevMem {
 public:
  DevMem(int device, std::size_t bytes) : device_(device), bytes_(bytes) {
    cuda_ok(cudaSetDevice(device), "cudaSetDevice");
    cuda_ok(cudaMalloc(&ptr_, std::max<std::size_t>(bytes, 1)), "cudaMalloc");
  }
  template <class T> DevMem(int device, const std::vector<T>& v) : DevMem(device, v.size() * sizeof(T)) {
    cuda_ok(cudaMemcpy(ptr_, v.data(), bytes_, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  ~DevMem() {
    cudaSetDevice(device_);
    cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }
  void fill(uint8_t b) { cuda_ok(cudaMemset(ptr_, b, bytes_), "cudaMemset"); }
  template <class T> std::vector<T> host() const {
    std::vector<T> v(bytes_ / sizeof(T));
    cuda_ok(cudaMemcpy(v.data(), ptr_, v.size() * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return v;
  }

 private:
  int device_;
  std::size_t bytes_;
  void* ptr_ = nullptr;
};

/// The same tensor view moved onto a device buffer.
Tensor on(const DevMem& m, const Tensor& host_view, int device) {
  Tensor t = host_view;
  t.data = m.get();
  t.device = Device::cuda(device);
  return t;
}

void sync(int device) {
  cuda_ok(cudaSetDevice(device), "cudaSetDevice");
  cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

#define MLAKV_REQUIRE_GPUS(n)                                                                            \
  do {                                                                                                   \
    if (!::mlakv::test::have_gpu() || ::mlakv::cuda_device_count() < (n))                               \
      GTEST_SKIP() << "needs " << (n) << " CUDA device(s), found " << (have_gpu() ? cuda_device_count() : 0); \
  } while (0)

const dcp::ops::Kernels& cpu_k() { return dcp::ops::cpu_kernels(); }
const dcp::ops::Kernels& gpu_k() { return dcp::ops::cuda_kernels(); }

std::vector<uint8_t> random_bytes(std::size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng()());
  return v;
}

/// e4m3 codes without the two NaN codes (NaN payloads need not survive a dequantization).
uint8_t finite_e4m3() {
  uint8_t c;
  do c = static_cast<uint8_t>(rng()()); while ((c & 0x7f) == 0x7f);
  return c;
}

float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng()); }

/// LSEs with some empty entries of every kind (-inf, +inf, NaN).
std::vector<float> random_lses(std::size_t n) {
  std::vector<float> v(n);
  for (auto& x : v) {
    const int k = static_cast<int>(rng()() % 10);
    x = k == 0 ? -INFINITY : k == 1 ? INFINITY : k == 2 ? NAN : uniform(-5.f, 40.f);
  }
  return v;
}

template <class T> bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/// A bf16 or f32 buffer as doubles.
std::vector<double> values(const std::vector<uint8_t>& bytes, DType dt) {
  std::vector<double> v(bytes.size() / dtype_size(dt));
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::f32) {
      float f;
      std::memcpy(&f, bytes.data() + 4 * i, 4);
      v[i] = f;
    } else {
      uint16_t b;
      std::memcpy(&b, bytes.data() + 2 * i, 2);
      v[i] = num::bf16_to_f32(b);
    }
  }
  return v;
}

// ================================================================================================
// (a) Kernels against the CPU versions, one GPU.

TEST(CudaDcpKernels, SlotMappingMatchesCpuIncludingPaddingAndOutOfRangeRows) {
  MLAKV_REQUIRE_GPUS(1);
  const int bs = 16, batch = 3, max_blocks = 6;
  std::vector<int32_t> table(batch * max_blocks);
  for (auto& x : table) x = static_cast<int32_t>(rng()() % 50);
  const int64_t T = 700;
  std::vector<int64_t> pos(T);
  std::vector<int32_t> req(T);
  for (int64_t t = 0; t < T; ++t) {
    pos[t] = t % 97 == 0 ? -1 : static_cast<int64_t>(rng()() % 40);  // local index < 40 < 6 blocks x 16 for W >= 1
    req[t] = t % 89 == 0 ? -3 : static_cast<int32_t>(rng()() % batch);
  }
  for (int W : {1, 2, 3})
    for (int I : {1, 2, 8})
      for (int rank = 0; rank < W; ++rank) {
        SCOPED_TRACE("W=" + std::to_string(W) + " I=" + std::to_string(I) + " rank=" + std::to_string(rank));
        std::vector<int64_t> want(T, 7);
        const Tensor hp(pos.data(), DType::i64, {T}), hr(req.data(), DType::i32, {T}),
            hb(table.data(), DType::i32, {batch, max_blocks}), hs(want.data(), DType::i64, {T});
        cpu_k().slot_mapping(hp, hr, hb, bs, {W, rank, I}, hs, {});
        DevMem dp(0, pos), dr(0, req), db(0, table), ds(0, T * sizeof(int64_t));
        gpu_k().slot_mapping(on(dp, hp, 0), on(dr, hr, 0), on(db, hb, 0), bs, {W, rank, I}, on(ds, hs, 0), {});
        sync(0);
        EXPECT_EQ(ds.host<int64_t>(), want);
      }
}

TEST(CudaDcpKernels, PackQCopiesOrQuantizesStridedQueriesBitExactly) {
  MLAKV_REQUIRE_GPUS(1);
  const int64_t B = 3, S = 2, N = 5;
  for (int64_t pad : {int64_t{0}, int64_t{8}, int64_t{1}}) {  // 1: rows only 2-byte aligned
    const int64_t s2 = kHeadDim + pad, s1 = N * s2 + 3 * pad, s0 = S * s1;
    std::vector<uint16_t> q = random_bf16(static_cast<std::size_t>(B * s0));
    const Tensor hq(q.data(), DType::bf16, {B, S, N, kHeadDim}, {s0, s1, s2, 1});
    float scale = 0.0123f;
    DevMem dq(0, q), dscale(0, std::vector<float>{scale});
    for (bool e4m3 : {false, true}) {
      SCOPED_TRACE("pad=" + std::to_string(pad) + " e4m3=" + std::to_string(e4m3));
      const std::size_t bytes = static_cast<std::size_t>(B * S * N * kHeadDim) * (e4m3 ? 1 : 2);
      std::vector<uint8_t> want(bytes, 0xEE);
      cpu_k().pack_q(hq, want.data(), e4m3, &scale, {});
      DevMem dd(0, bytes);
      gpu_k().pack_q(on(dq, hq, 0), dd.get(), e4m3, dscale.as<float>(), {});
      sync(0);
      EXPECT_TRUE(same_bytes(dd.host<uint8_t>(), want));
    }
  }
}

TEST(CudaDcpKernels, ArrangeQPermutesHeadsAndQuantizesBitExactly) {
  MLAKV_REQUIRE_GPUS(1);
  float scale = 0.02f;
  DevMem dscale(0, std::vector<float>{scale});
  for (int W : {1, 2, 3})
    for (int64_t T : {int64_t{1}, int64_t{7}}) {
      const int N = 3;
      const std::size_t elems = static_cast<std::size_t>(W * T * N * kHeadDim);
      std::vector<uint16_t> src16 = random_bf16(elems);
      std::vector<uint8_t> src8(elems);
      for (auto& c : src8) c = static_cast<uint8_t>(rng()());
      struct Mode {
        DType dt;
        bool quant;
      };
      for (const Mode m : {Mode{DType::bf16, false}, Mode{DType::bf16, true}, Mode{DType::e4m3, false}}) {
        SCOPED_TRACE("W=" + std::to_string(W) + " T=" + std::to_string(T) + " src=" + dtype_name(m.dt) +
                     " quant=" + std::to_string(m.quant));
        const void* hsrc = m.dt == DType::bf16 ? static_cast<const void*>(src16.data()) : src8.data();
        const std::size_t out_bytes = elems * (m.quant || m.dt == DType::e4m3 ? 1 : 2);
        std::vector<uint8_t> want(out_bytes, 0xEE);
        cpu_k().arrange_q(hsrc, m.dt, W, T, N, want.data(), m.quant, &scale, {});
        DevMem ds = m.dt == DType::bf16 ? DevMem(0, src16) : DevMem(0, src8);
        DevMem dd(0, out_bytes);
        gpu_k().arrange_q(ds.get(), m.dt, W, T, N, dd.get(), m.quant, dscale.as<float>(), {});
        sync(0);
        EXPECT_TRUE(same_bytes(dd.host<uint8_t>(), want));
      }
    }
}

TEST(CudaDcpKernels, RescalePartialsMatchesCpuWithEmptyPartials) {
  MLAKV_REQUIRE_GPUS(1);
  for (int W : {1, 2, 3})
    for (int rank = 0; rank < W; ++rank) {
      SCOPED_TRACE("W=" + std::to_string(W) + " rank=" + std::to_string(rank));
      const int64_t T = 5;
      const int N = 3;
      const std::size_t rows = static_cast<std::size_t>(T * W * N);
      std::vector<float> o = random_f32(rows * kLatentDim), lse_all = random_lses(W * rows);
      std::vector<float> want(W * T * N * kLatentDim, 9.f);
      cpu_k().rescale_partials(o.data(), lse_all.data(), W, rank, T, N, want.data(), {});
      DevMem dO(0, o), dl(0, lse_all), dd(0, want.size() * 4);
      gpu_k().rescale_partials(dO.as<float>(), dl.as<float>(), W, rank, T, N, dd.as<float>(), {});
      sync(0);
      const auto got = dd.host<float>();
      EXPECT_LE(rel_err(got, want), 1e-6);
      for (std::size_t i = 0; i < want.size(); ++i) {
        if (want[i] == 0.0f) {
          ASSERT_EQ(got[i], 0.0f) << i;  // empty partials contribute exact zeros
        }
      }
    }
}

// Output views [B, s_q, N, 512] with padded strides, prefilled so that untouched bytes show.
struct OutBuffers {
  int64_t B, S, N, s2, s1, s0;
  DType dt;
  std::vector<uint8_t> out;
  std::vector<float> lse;
  OutBuffers(int64_t b, int64_t s, int64_t n, DType d, int64_t pad) : B(b), S(s), N(n), dt(d) {
    s2 = kLatentDim + pad;
    s1 = N * s2;
    s0 = S * s1 + pad;
    out.assign(static_cast<std::size_t>(B * s0) * dtype_size(dt), 0xA5);
    lse.assign(static_cast<std::size_t>(B * S * N * 2), 77.f);  // lse strides double the dense ones
  }
  Tensor out_view(void* p) const { return Tensor(p, dt, {B, S, N, kLatentDim}, {s0, s1, s2, 1}); }
  Tensor lse_view(void* p) const { return Tensor(p, DType::f32, {B, S, N}, {2 * S * N, 2 * N, 2}); }
};

void expect_merged_equal(const OutBuffers& want, const std::vector<uint8_t>& out, const std::vector<float>& lse) {
  const bool f32 = want.dt == DType::f32;
  const auto a = values(out, want.dt), b = values(want.out, want.dt);
  EXPECT_LE(rel_err(a, b), f32 ? 1e-6 : 4e-3);
  // Element-wise: fp32 sums against the CPU's double ones (one bf16 rounding apart at most), and
  // the padding between rows untouched on both.
  std::size_t bad = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(a[i] - b[i]) <= (f32 ? 1e-5 : 1.0 / 64) * std::fabs(b[i]) + 1e-6)) {
      if (bad++ < 4) ADD_FAILURE() << "element " << i << ": got " << a[i] << ", want " << b[i];
    }
  EXPECT_EQ(bad, 0u);
  EXPECT_LE(max_lse_diff(lse, want.lse), 1e-5);
}

TEST(CudaDcpKernels, FinishReduceScatterMatchesCpu) {
  MLAKV_REQUIRE_GPUS(1);
  for (DType dt : {DType::f32, DType::bf16})
    for (int64_t pad : {int64_t{0}, int64_t{1}})
      for (int W : {1, 2, 3}) {
        const int rank = W - 1;
        SCOPED_TRACE(std::string(dtype_name(dt)) + " pad=" + std::to_string(pad) + " W=" + std::to_string(W));
        const int64_t B = 2, S = 3, T = B * S;
        const int N = 3;
        std::vector<float> o_sum = random_f32(static_cast<std::size_t>(T * N * kLatentDim));
        std::vector<float> lse_all = random_lses(static_cast<std::size_t>(W * T * W * N));
        OutBuffers want(B, S, N, dt, pad);
        cpu_k().finish_reduce_scatter(o_sum.data(), lse_all.data(), W, rank, T, N, want.out_view(want.out.data()),
                                      want.lse_view(want.lse.data()), {});
        OutBuffers init(B, S, N, dt, pad);
        DevMem dsum(0, o_sum), dl(0, lse_all), dout(0, init.out), dlse(0, init.lse);
        gpu_k().finish_reduce_scatter(dsum.as<float>(), dl.as<float>(), W, rank, T, N,
                                      on(dout, init.out_view(nullptr), 0), on(dlse, init.lse_view(nullptr), 0), {});
        sync(0);
        expect_merged_equal(want, dout.host<uint8_t>(), dlse.host<float>());
      }
}

TEST(CudaDcpKernels, PackPartialsAndMergePackedMatchCpu) {
  MLAKV_REQUIRE_GPUS(1);
  for (int W : {1, 2, 3})
    for (int64_t T : {int64_t{1}, int64_t{4}, int64_t{6}})  // T·N % 4: 3, 0, 2 -> scalar and vector paths
      for (int N : {3, 4}) {
        SCOPED_TRACE("W=" + std::to_string(W) + " T=" + std::to_string(T) + " N=" + std::to_string(N));
        const std::size_t rows = static_cast<std::size_t>(T * W * N);
        std::vector<float> o = random_f32(rows * kLatentDim), lse = random_lses(rows);
        const std::size_t packed = W * dcp::ops::packed_floats(T, N);
        std::vector<float> want(packed, 5.f);
        cpu_k().pack_partials(o.data(), lse.data(), W, T, N, want.data(), {});
        DevMem dO(0, o), dl(0, lse), dp(0, packed * 4);
        gpu_k().pack_partials(dO.as<float>(), dl.as<float>(), W, T, N, dp.as<float>(), {});
        sync(0);
        const auto got = dp.host<float>();
        EXPECT_TRUE(same_bytes(got, want));

        // Merge what a rank would receive: here the packed blocks themselves, as W senders.
        for (DType dt : {DType::f32, DType::bf16})
          for (int64_t pad : {int64_t{0}, int64_t{1}}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + " pad=" + std::to_string(pad));
          const int64_t B = T, S = 1;
          OutBuffers w(B, S, N, dt, pad);
          cpu_k().merge_packed(want.data(), W, T, N, w.out_view(w.out.data()), w.lse_view(w.lse.data()), {});
          OutBuffers init(B, S, N, dt, pad);
          DevMem dout(0, init.out), dlse(0, init.lse);
          gpu_k().merge_packed(dp.as<float>(), W, T, N, on(dout, init.out_view(nullptr), 0),
                               on(dlse, init.lse_view(nullptr), 0), {});
          sync(0);
          expect_merged_equal(w, dout.host<uint8_t>(), dlse.host<float>());
        }
      }
}

TEST(CudaDcpKernels, ContextOffsetsMatchCpuForLongBatches) {
  MLAKV_REQUIRE_GPUS(1);
  for (int64_t B : {int64_t{0}, int64_t{1}, int64_t{5}, int64_t{2500}})
    for (int W : {1, 2, 3})
      for (int I : {1, 2, 8}) {
        SCOPED_TRACE("B=" + std::to_string(B) + " W=" + std::to_string(W) + " I=" + std::to_string(I));
        std::vector<int32_t> cu(B + 1, 0);
        for (int64_t b = 0; b < B; ++b) cu[b + 1] = cu[b] + static_cast<int32_t>(rng()() % 70);
        const Tensor hc(cu.data(), DType::i32, {B + 1});
        std::vector<int32_t> want(W * (B + 1), -5);
        cpu_k().context_offsets(hc, W, I, want.data(), {});
        DevMem dc(0, cu), dout(0, want.size() * 4);
        dout.fill(0xFF);
        gpu_k().context_offsets(on(dc, hc, 0), W, I, dout.as<int32_t>(), {});
        sync(0);
        EXPECT_EQ(dout.host<int32_t>(), want);
      }
}

/// A cache of random stored bytes whose dequantized values are finite, so that decoding them is
/// bit-exact (NaN payloads need not be preserved).
std::vector<uint8_t> random_cache_bytes(const CacheDesc& d) {
  std::vector<uint8_t> bytes(static_cast<std::size_t>(d.total_bytes()));
  for (auto& b : bytes) b = finite_e4m3();
  auto put_bf16 = [&](uint8_t* p) {
    const uint16_t v = num::f32_to_bf16(uniform(-3.f, 3.f));
    std::memcpy(p, &v, 2);
  };
  for (int64_t blk = 0; blk < d.num_blocks; ++blk) {
    uint8_t* base = bytes.data() + blk * d.stride_bytes();
    for (int64_t k = 0; k < d.block_size; ++k) {
      const TokenLayout t = d.token(k);
      switch (d.format) {
        case CacheFormat::bf16:
          for (int i = 0; i < kHeadDim; ++i) put_bf16(base + t.data_offset + 2 * i);
          break;
        case CacheFormat::fp8: break;
        case CacheFormat::fp8_ds_mla:
          for (int i = 0; i < 4; ++i) {
            const float s = uniform(1e-3f, 1e-1f);
            std::memcpy(base + t.scale_offset + 4 * i, &s, 4);
          }
          for (int i = 0; i < kRopeDim; ++i) put_bf16(base + t.rope_offset + 2 * i);
          break;
        case CacheFormat::dsv4:
          for (int i = 0; i < 7; ++i) base[t.scale_offset + i] = static_cast<uint8_t>(110 + rng()() % 30);
          base[t.scale_offset + 7] = 0;
          for (int i = 0; i < kRopeDim; ++i) put_bf16(base + t.rope_offset + 2 * i);
          break;
      }
    }
  }
  return bytes;
}

struct ContextSetup {
  CacheDesc desc;
  std::vector<uint8_t> cache_bytes;
  std::vector<int32_t> table, cu, starts;
  int64_t batch = 0, max_blocks = 0;
};

// Chunks on rank `rank` of a (W, I) group whose starts are multiples of I·W and whose local rows
// stay within the block table.
ContextSetup context_setup(CacheFormat f, int bs, int64_t stride, int W, int I, const std::vector<int32_t>& lens) {
  ContextSetup s;
  s.desc = {f, 40, bs, stride};
  s.cache_bytes = random_cache_bytes(s.desc);
  s.batch = static_cast<int64_t>(lens.size());
  s.max_blocks = 12;
  s.table.resize(static_cast<std::size_t>(s.batch * s.max_blocks));
  for (auto& x : s.table) x = static_cast<int32_t>(rng()() % s.desc.num_blocks);
  s.cu.push_back(3);  // rows before the first chunk are left alone
  for (int64_t b = 0; b < s.batch; ++b) {
    s.cu.push_back(s.cu.back() + lens[b]);
    const int64_t room = s.max_blocks * bs - (lens[b] / W + I);  // local rows start at start / W
    const int64_t steps = room / I;
    s.starts.push_back(static_cast<int32_t>((steps > 0 ? static_cast<int64_t>(rng()() % (steps + 1)) : 0) * I * W));
  }
  return s;
}

TEST(CudaDcpKernels, PackAndUnpackContextMatchCpuBitExactlyForEveryFormat) {
  MLAKV_REQUIRE_GPUS(1);
  const std::vector<int32_t> lens{37, 0, 130, 5, 64};
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4})
    for (int W : {1, 2, 3})
      for (int I : {1, 4}) {
        const int bs = 16;
        // dsv4 also with an odd padded stride: 2-byte aligned blocks take the unaligned path.
        const CacheDesc probe{f, 1, bs, 0};
        for (int64_t stride : {int64_t{0}, f == CacheFormat::dsv4 ? probe.dense_block_bytes() + 2 : int64_t{0}}) {
          const ContextSetup s = context_setup(f, bs, stride, W, I, lens);
          const int64_t batch = s.batch, tb = s.desc.token_bytes();
          std::vector<int32_t> cu = s.cu, starts = s.starts, table = s.table;
          const Tensor hcu(cu.data(), DType::i32, {batch + 1}), hst(starts.data(), DType::i32, {batch}),
              hbt(table.data(), DType::i32, {batch, s.max_blocks});
          std::vector<int32_t> offsets(W * (batch + 1));
          cpu_k().context_offsets(hcu, W, I, offsets.data(), {});
          const int64_t capacity = *std::max_element(offsets.begin(), offsets.end()) + 3;
          std::vector<uint8_t> recv_cpu(static_cast<std::size_t>(W * capacity * tb), 0x3C);
          std::vector<uint8_t> cache_bytes = s.cache_bytes;
          float scale = 0.037f;
          Cache hc{cache_bytes.data(), s.desc, Device::cpu(), &scale};

          DevMem dcache(0, cache_bytes), dcu(0, cu), dst(0, starts), dbt(0, table), doff(0, offsets),
              dscale(0, std::vector<float>{scale});
          Cache gc{dcache.get(), s.desc, Device::cuda(0), dscale.as<float>()};
          // Every rank packs its rows into its block of the (simulated) all-gather buffer.
          DevMem drecv(0, recv_cpu);
          for (int r = 0; r < W; ++r) {
            SCOPED_TRACE(std::string(format_name(f)) + " W=" + std::to_string(W) + " I=" + std::to_string(I) +
                         " stride=" + std::to_string(stride) + " rank=" + std::to_string(r));
            cpu_k().pack_context(hc, hbt, hcu, hst, {W, r, I}, offsets.data(), recv_cpu.data() + r * capacity * tb,
                                 capacity, {});
            gpu_k().pack_context(gc, on(dbt, hbt, 0), on(dcu, hcu, 0), on(dst, hst, 0), {W, r, I}, doff.as<int32_t>(),
                                 drecv.as<uint8_t>() + r * capacity * tb, capacity, {});
          }
          sync(0);
          ASSERT_TRUE(same_bytes(drecv.host<uint8_t>(), recv_cpu));

          for (DType dt : {DType::bf16, DType::f32}) {
            SCOPED_TRACE(std::string(format_name(f)) + " W=" + std::to_string(W) + " I=" + std::to_string(I) + " " +
                         dtype_name(dt));
            const int width = s.desc.row_width();
            const int64_t rows = cu.back() + 4, row_stride = width + 8;
            std::vector<uint8_t> want(static_cast<std::size_t>(rows * row_stride) * dtype_size(dt), 0x5A);
            const Tensor hout(want.data(), dt, {rows, width}, {row_stride, 1});
            DevMem dout(0, want);  // same prefill
            cpu_k().unpack_context(recv_cpu.data(), capacity, f, &scale, hcu, W, I, offsets.data(), hout, {});
            gpu_k().unpack_context(drecv.as<uint8_t>(), capacity, f, dscale.as<float>(), on(dcu, hcu, 0), W, I,
                                   doff.as<int32_t>(), on(dout, hout, 0), {});
            sync(0);
            EXPECT_TRUE(same_bytes(dout.host<uint8_t>(), want));
          }
        }
      }
}

TEST(CudaDcpKernels, PackContextSkipsGarbageBlockTableEntriesAndUnpackSkipsGarbageOffsets) {
  MLAKV_REQUIRE_GPUS(1);
  const int W = 2, I = 2, bs = 16;
  const ContextSetup s = context_setup(CacheFormat::fp8_ds_mla, bs, 0, W, I, {100, 60});
  const int64_t batch = s.batch, tb = s.desc.token_bytes();
  std::vector<int32_t> cu = s.cu, starts(static_cast<std::size_t>(s.batch), 0), bad_table = s.table;
  // Entries the chunks use become garbage: negative, past num_blocks, huge.
  bad_table[0] = -1;
  bad_table[1] = static_cast<int32_t>(s.desc.num_blocks);
  bad_table[s.max_blocks + 0] = 1 << 30;
  bad_table[s.max_blocks + 1] = -(1 << 30);
  const Tensor hcu(cu.data(), DType::i32, {batch + 1}), hst(starts.data(), DType::i32, {batch}),
      hbt(bad_table.data(), DType::i32, {batch, s.max_blocks});
  std::vector<int32_t> offsets(W * (batch + 1));
  cpu_k().context_offsets(hcu, W, I, offsets.data(), {});
  const int64_t capacity = offsets[batch] + offsets[2 * batch + 1];
  DevMem dcache(0, s.cache_bytes), dcu(0, cu), dst(0, starts), dbt(0, bad_table), doff(0, offsets),
      drecv(0, static_cast<std::size_t>(W * capacity * tb));
  drecv.fill(0xC3);
  Cache gc{dcache.get(), s.desc, Device::cuda(0), nullptr};
  gpu_k().pack_context(gc, on(dbt, hbt, 0), on(dcu, hcu, 0), on(dst, hst, 0), {W, 0, I}, doff.as<int32_t>(),
                       drecv.as<uint8_t>(), capacity, {});
  sync(0);
  // Rows whose block is garbage are left as they were; the others are the stored bytes.
  const auto got = drecv.host<uint8_t>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < offsets[b + 1] - offsets[b]; ++i) {
      const int64_t j = starts[b] / W + i, id = bad_table[b * s.max_blocks + j / bs];
      const uint8_t* row = got.data() + (offsets[b] + i) * tb;
      if (id < 0 || id >= s.desc.num_blocks) {
        EXPECT_TRUE(std::all_of(row, row + tb, [](uint8_t x) { return x == 0xC3; })) << b << " " << i;
      } else {
        EXPECT_EQ(std::memcmp(row, s.cache_bytes.data() + id * s.desc.stride_bytes() + (j % bs) * tb, tb), 0);
      }
    }

  // Offsets far past the capacity: nothing is read outside recv, nothing written.
  std::vector<int32_t> bad_offsets(offsets.size(), 1 << 29);
  bad_offsets[0] = -(1 << 29);
  DevMem dbad(0, bad_offsets);
  const int64_t rows = cu.back();
  std::vector<uint8_t> init(static_cast<std::size_t>(rows * kHeadDim * 2), 0x11);
  DevMem dout(0, init);
  gpu_k().unpack_context(drecv.as<uint8_t>(), capacity, CacheFormat::fp8_ds_mla, nullptr, on(dcu, hcu, 0), W, I,
                         dbad.as<int32_t>(), Tensor(dout.get(), DType::bf16, {rows, kHeadDim}, Device::cuda(0)), {});
  sync(0);
  EXPECT_TRUE(same_bytes(dout.host<uint8_t>(), init));

  // The same garbage offsets on the packing side: rows at or past the capacity are never written,
  // negative local indices never read. recv holds W·capacity rows; rank 0's part is the first.
  drecv.fill(0xC3);
  gpu_k().pack_context(gc, on(dbt, hbt, 0), on(dcu, hcu, 0), on(dst, hst, 0), {W, 0, I}, dbad.as<int32_t>(),
                       drecv.as<uint8_t>(), capacity, {});
  sync(0);
  const auto after = drecv.host<uint8_t>();
  EXPECT_TRUE(std::all_of(after.begin() + capacity * tb, after.end(), [](uint8_t x) { return x == 0xC3; }));
}

TEST(CudaDcpKernels, EmptyInputsLaunchNothing) {
  MLAKV_REQUIRE_GPUS(1);
  cuda_ok(cudaSetDevice(0), "cudaSetDevice");
  cuda_ok(cudaGetLastError(), "before");
  // Null pointers everywhere: any launch that touched them would fault.
  gpu_k().arrange_q(nullptr, DType::bf16, 2, 0, 4, nullptr, false, nullptr, {});
  gpu_k().rescale_partials(nullptr, nullptr, 2, 0, 0, 4, nullptr, {});
  gpu_k().pack_partials(nullptr, nullptr, 2, 0, 4, nullptr, {});
  const Tensor empty_q(nullptr, DType::bf16, {0, 1, 4, kHeadDim}, Device::cuda(0));
  gpu_k().pack_q(empty_q, nullptr, false, nullptr, {});
  const Tensor empty_out(nullptr, DType::bf16, {0, 1, 4, kLatentDim}, Device::cuda(0));
  const Tensor empty_lse(nullptr, DType::f32, {0, 1, 4}, Device::cuda(0));
  gpu_k().merge_packed(nullptr, 2, 0, 4, empty_out, empty_lse, {});
  gpu_k().finish_reduce_scatter(nullptr, nullptr, 2, 0, 0, 4, empty_out, empty_lse, {});
  const Tensor e64(nullptr, DType::i64, {0}, Device::cuda(0)), e32(nullptr, DType::i32, {0}, Device::cuda(0));
  gpu_k().slot_mapping(e64, e32, Tensor(nullptr, DType::i32, {0, 4}, Device::cuda(0)), 16, {2, 0, 1}, e64, {});
  sync(0);
}

// ================================================================================================
// (b) Two GPUs over NCCL.

class CudaDcpGroup : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (have_gpu() && cuda_device_count() >= 2) comms_ = new std::vector<std::unique_ptr<Communicator>>(make_nccl_group({0, 1}));
  }
  static void TearDownTestSuite() {
    delete comms_;
    comms_ = nullptr;
  }
  void SetUp() override {
    if (!comms_) GTEST_SKIP() << "needs 2 CUDA devices";
  }
  static Communicator& comm(int r) { return *(*comms_)[static_cast<std::size_t>(r)]; }
  static inline std::vector<std::unique_ptr<Communicator>>* comms_ = nullptr;
};

constexpr int kW = 2;
const float kSoftmaxScale = static_cast<float>(1.0 / std::sqrt(576.0));

/// One request set written into a full single-GPU cache and into each rank's shard.
struct ShardedCaches {
  Requests req;
  BlockTable bt;
  std::unique_ptr<OwnedCache> full;
  std::vector<std::unique_ptr<OwnedCache>> shard;

  ShardedCaches(std::vector<int32_t> lens, CacheFormat f, int bs, int I)
      : req(std::move(lens)), bt(blocks_needed(req, bs, 1, 1)) {
    full = std::make_unique<OwnedCache>(f, bt.num_blocks, bs, 0.02f);
    auto slots = plain_slots(req, bt, bs);
    write_tokens(req, full->cache, slots);
    for (int r = 0; r < kW; ++r) {
      shard.push_back(std::make_unique<OwnedCache>(f, bt.num_blocks, bs, 0.02f));
      auto s = dcp_slots(req, bt, bs, {kW, r, I});
      write_tokens(req, shard.back()->cache, s);
    }
  }
  /// The same tokens in another format (same latents).
  ShardedCaches with_format(CacheFormat f) const { return ShardedCaches(*this, f); }

 private:
  ShardedCaches(const ShardedCaches& o, CacheFormat f) : req(o.req), bt(o.bt) {
    const int bs = o.full->cache.desc.block_size;
    full = std::make_unique<OwnedCache>(f, bt.num_blocks, bs, 0.02f);
    bt.tensor.data = bt.ids.data();
    auto slots = plain_slots(req, bt, bs);
    write_tokens(req, full->cache, slots);
  }
};

/// A host cache's bytes and scale on a device.
struct DevCache {
  DevMem bytes, scale;
  Cache cache;
  DevCache(const OwnedCache& h, int device)
      : bytes(device, h.bytes), scale(device, std::vector<float>{*h.scale}),
        cache{bytes.get(), h.cache.desc, Device::cuda(device), scale.as<float>()} {}
};

struct AttnOut {
  std::vector<uint16_t> out;  // bf16 [B, S, H, 512]
  std::vector<float> lse;     // [B, S, H]
};

/// Single-GPU mla_decode on device 0 over the full cache; q bf16 [B, S, H, 576], or its e4m3
/// quantization with q_scale when quantized.
AttnOut single_gpu_decode(const ShardedCaches& sc, const std::vector<uint16_t>& q, int64_t S, int64_t H, bool quantized,
                          float q_scale, bool causal = true) {
  const int64_t B = sc.req.batch();
  DevCache cache(*sc.full, 0);
  std::vector<int32_t> lens = sc.req.lens;
  DevMem dbt(0, sc.bt.ids), dlens(0, lens), dqs(0, std::vector<float>{q_scale});
  std::vector<uint8_t> q8(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) q8[i] = num::f32_to_e4m3(num::bf16_to_f32(q[i]) / q_scale);
  DevMem dq = quantized ? DevMem(0, q8) : DevMem(0, q);
  DevMem dout(0, static_cast<std::size_t>(B * S * H * kLatentDim * 2)), dlse(0, static_cast<std::size_t>(B * S * H * 4));
  const std::size_t ws = mla_decode_workspace_size(static_cast<int>(B), static_cast<int>(S), static_cast<int>(H),
                                                   Device::cuda(0));
  DevMem dws(0, ws);
  DecodeParams p;
  p.softmax_scale = kSoftmaxScale;
  p.causal = causal;
  p.q_scale = quantized ? dqs.as<float>() : nullptr;
  const Device d0 = Device::cuda(0);
  mla_decode(Tensor(dq.get(), quantized ? DType::e4m3 : DType::bf16, {B, S, H, kHeadDim}, d0), cache.cache,
             Tensor(dbt.get(), DType::i32, {B, sc.bt.max_blocks}, d0), Tensor(dlens.get(), DType::i32, {B}, d0),
             Tensor(dout.get(), DType::bf16, {B, S, H, kLatentDim}, d0), Tensor(dlse.get(), DType::f32, {B, S, H}, d0),
             p, {dws.get(), ws});
  sync(0);
  return {dout.host<uint16_t>(), dlse.host<float>()};
}

struct DcpRun {
  dcp::Merge merge = dcp::Merge::all_to_all;
  dcp::QueryQuant q_quant = dcp::QueryQuant::none;
  int interleave = 1;
  bool causal = true;
  bool graph = false;  // capture the step in a CUDA graph and replay it
  bool comm_memory = false;  // workspace from Communicator::allocate (NCCL symmetric windows)
};

/// dcp::decode on both GPUs; rank r's queries are heads [rN, rN + N) of q [B, S, W·N, 576]
/// (a strided view). Returns the per-rank outputs assembled back into [B, S, W·N, ...].
AttnOut dcp_decode(Communicator& (*comm)(int), const ShardedCaches& sc, const std::vector<uint16_t>& q, int64_t S,
                   int64_t N, const DcpRun& run, float q_scale) {
  const int64_t B = sc.req.batch(), H = kW * N;
  AttnOut res{std::vector<uint16_t>(static_cast<std::size_t>(B * S * H * kLatentDim)),
              std::vector<float>(static_cast<std::size_t>(B * S * H))};
  run_ranks(kW, [&](int r) {
    cuda_ok(cudaSetDevice(r), "cudaSetDevice");
    cudaStream_t stream;
    cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    const Device dev = Device::cuda(r);
    DevCache cache(*sc.shard[static_cast<std::size_t>(r)], r);
    std::vector<int32_t> lens = sc.req.lens;
    DevMem dbt(r, sc.bt.ids), dlens(r, lens), dq(r, q), dqs(r, std::vector<float>{q_scale});
    DevMem dout(r, static_cast<std::size_t>(B * S * N * kLatentDim * 2)), dlse(r, static_cast<std::size_t>(B * S * N * 4));
    dout.fill(0xFF);  // NaN if anything is left unwritten
    const std::size_t ws = dcp::decode_workspace_size(static_cast<int>(B), static_cast<int>(S), static_cast<int>(N), kW, dev);
    DevMem dws(r, run.comm_memory ? 0 : ws);
    const std::unique_ptr<CommBuffer> cws = run.comm_memory ? comm(r).allocate(ws) : nullptr;
    if (cws) {  // stale bytes must not matter
      cuda_ok(cudaMemset(cws->data(), 0xFF, ws), "cudaMemset");
      cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    }
    void* const wsp = cws ? cws->data() : dws.get();
    dcp::DecodeOptions o;
    o.softmax_scale = kSoftmaxScale;
    o.causal = run.causal;
    o.interleave = run.interleave;
    o.merge = run.merge;
    o.q_quant = run.q_quant;
    o.q_scale = dqs.as<float>();
    const Tensor q_local(dq.as<uint16_t>() + r * N * kHeadDim, DType::bf16, {B, S, N, kHeadDim},
                         {S * H * kHeadDim, H * kHeadDim, kHeadDim, 1}, dev);
    auto step = [&] {
      dcp::decode(comm(r), q_local, cache.cache, Tensor(dbt.get(), DType::i32, {B, sc.bt.max_blocks}, dev),
                  Tensor(dlens.get(), DType::i32, {B}, dev), Tensor(dout.get(), DType::bf16, {B, S, N, kLatentDim}, dev),
                  Tensor(dlse.get(), DType::f32, {B, S, N}, dev), o, {wsp, ws}, Stream{stream});
    };
    if (run.graph) {
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
      step();
      cuda_ok(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
      cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
      for (int i = 0; i < 2; ++i) cuda_ok(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
      cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
    } else {
      step();
    }
    cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    cudaStreamDestroy(stream);
    const auto out = dout.host<uint16_t>();
    const auto lse = dlse.host<float>();
    for (int64_t t = 0; t < B * S; ++t)
      for (int64_t n = 0; n < N; ++n) {
        std::copy_n(out.begin() + (t * N + n) * kLatentDim, kLatentDim,
                    res.out.begin() + (t * H + r * N + n) * kLatentDim);
        res.lse[static_cast<std::size_t>(t * H + r * N + n)] = lse[static_cast<std::size_t>(t * N + n)];
      }
  });
  return res;
}

std::vector<double> bf16_values(const std::vector<uint16_t>& v) {
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = num::bf16_to_f32(v[i]);
  return r;
}

float q_scale_for(const std::vector<uint16_t>& q) {
  float amax = 0;
  for (uint16_t b : q) amax = std::max(amax, std::fabs(num::bf16_to_f32(b)));
  return amax / 448.0f;
}

TEST_F(CudaDcpGroup, DecodeEqualsSingleGpuDecodeForEveryFormatMergeInterleaveAndQueryMode) {
  // Lengths include 0 (nothing anywhere), 1 and <= 64 (rank 1's shard empty for I = 1 or 64).
  const std::vector<int32_t> lens{0, 1, 37, 64, 65, 200, 333};
  const int bs = 64;
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla})
    for (int I : {1, 64}) {
      const ShardedCaches sc(lens, f, bs, I);
      for (int64_t S : {int64_t{1}, int64_t{3}}) {
        const int64_t N = 4, H = kW * N, B = sc.req.batch();
        const std::vector<uint16_t> q = random_bf16(static_cast<std::size_t>(B * S * H * kHeadDim));
        const float qs = q_scale_for(q);
        const AttnOut ref_bf16 = single_gpu_decode(sc, q, S, H, false, qs);
        const AttnOut ref_e4m3 = single_gpu_decode(sc, q, S, H, true, qs);
        for (dcp::Merge m : {dcp::Merge::allgather_reduce_scatter, dcp::Merge::all_to_all})
          for (dcp::QueryQuant qq :
               {dcp::QueryQuant::none, dcp::QueryQuant::e4m3_after_gather, dcp::QueryQuant::e4m3_before_gather}) {
            SCOPED_TRACE(std::string(format_name(f)) + " I=" + std::to_string(I) + " s_q=" + std::to_string(S) +
                         " merge=" + std::to_string(static_cast<int>(m)) + " q_quant=" + std::to_string(static_cast<int>(qq)));
            DcpRun run;
            run.merge = m;
            run.q_quant = qq;
            run.interleave = I;
            const AttnOut got = dcp_decode(&comm, sc, q, S, N, run, qs);
            const AttnOut& ref = qq == dcp::QueryQuant::none ? ref_bf16 : ref_e4m3;
            EXPECT_LE(rel_err(bf16_values(got.out), bf16_values(ref.out)), 4e-3);
            EXPECT_LE(max_lse_diff(got.lse, ref.lse), 1e-3);
          }
      }
    }
}

TEST_F(CudaDcpGroup, DecodeWithManyHeadsNonCausalAndInGraphReplay) {
  const ShardedCaches sc({1000, 3, 2048}, CacheFormat::bf16, 64, 16);
  const int64_t S = 2, N = 16, H = kW * N, B = sc.req.batch();
  const std::vector<uint16_t> q = random_bf16(static_cast<std::size_t>(B * S * H * kHeadDim));
  for (bool causal : {true, false})
    for (bool graph : {false, true}) {
      SCOPED_TRACE("causal=" + std::to_string(causal) + " graph=" + std::to_string(graph));
      const AttnOut ref = single_gpu_decode(sc, q, S, H, false, 1.f, causal);
      DcpRun run;
      run.interleave = 16;
      run.causal = causal;
      run.graph = graph;
      run.merge = graph ? dcp::Merge::allgather_reduce_scatter : dcp::Merge::all_to_all;
      const AttnOut got = dcp_decode(&comm, sc, q, S, N, run, 1.f);
      EXPECT_LE(rel_err(bf16_values(got.out), bf16_values(ref.out)), 4e-3);
      EXPECT_LE(max_lse_diff(got.lse, ref.lse), 1e-3);
    }
}

TEST_F(CudaDcpGroup, DecodeOnCommunicatorMemoryEqualsSingleGpuForBothMergesAndInGraphReplay) {
  const ShardedCaches sc({0, 1, 700, 64, 1500, 129}, CacheFormat::fp8, 64, 1);
  const int64_t S = 1, N = 16, H = kW * N, B = sc.req.batch();
  const std::vector<uint16_t> q = random_bf16(static_cast<std::size_t>(B * S * H * kHeadDim));
  const AttnOut ref = single_gpu_decode(sc, q, S, H, false, 1.f);
  for (dcp::Merge m : {dcp::Merge::allgather_reduce_scatter, dcp::Merge::all_to_all})
    for (bool graph : {false, true}) {
      SCOPED_TRACE("merge=" + std::to_string(static_cast<int>(m)) + " graph=" + std::to_string(graph));
      DcpRun run;
      run.merge = m;
      run.graph = graph;
      run.comm_memory = true;
      const AttnOut got = dcp_decode(&comm, sc, q, S, N, run, 1.f);
      EXPECT_LE(rel_err(bf16_values(got.out), bf16_values(ref.out)), 4e-3);
      EXPECT_LE(max_lse_diff(got.lse, ref.lse), 1e-3);
    }
}

TEST_F(CudaDcpGroup, CommunicatorMemoryIsWritableDeviceMemoryOfTheRequestedSize) {
  run_ranks(kW, [&](int r) {
    cuda_ok(cudaSetDevice(r), "cudaSetDevice");
    for (std::size_t bytes : {std::size_t{1}, std::size_t{5000}, std::size_t{3} << 20}) {
      const std::unique_ptr<CommBuffer> b = comm(r).allocate(bytes);
      ASSERT_NE(b->data(), nullptr);
      EXPECT_EQ(b->bytes(), bytes);
      cudaPointerAttributes at{};
      cuda_ok(cudaPointerGetAttributes(&at, b->data()), "cudaPointerGetAttributes");
      EXPECT_EQ(at.device, r);
      cuda_ok(cudaMemset(b->data(), 0x5A, bytes), "cudaMemset");
      uint8_t last = 0;
      cuda_ok(cudaMemcpy(&last, static_cast<uint8_t*>(b->data()) + bytes - 1, 1, cudaMemcpyDeviceToHost), "cudaMemcpy");
      EXPECT_EQ(last, 0x5A);
      if (r == 0 && bytes == 1) std::printf("[ info ] Communicator::allocate: %s\n", b->symmetric() ? "NCCL symmetric window" : "cudaMalloc");
    }
  });
}

TEST_F(CudaDcpGroup, CommunicatorMemoryIsPlainCudaMemoryWhenSymmetricWindowsAreTurnedOff) {
  ::setenv("MLAKV_NCCL_SYMMETRIC", "0", 1);
  std::vector<int> symmetric(kW, -1);
  run_ranks(kW, [&](int r) {
    cuda_ok(cudaSetDevice(r), "cudaSetDevice");
    const std::unique_ptr<CommBuffer> b = comm(r).allocate(4096);
    symmetric[static_cast<std::size_t>(r)] = b->symmetric();
    cuda_ok(cudaMemset(b->data(), 0, 4096), "cudaMemset");
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  });
  ::unsetenv("MLAKV_NCCL_SYMMETRIC");
  EXPECT_EQ(symmetric, std::vector<int>(kW, 0));
}

TEST_F(CudaDcpGroup, Fp8CachesWithDcpStayWithinTheFp8BudgetOfTheBf16Cache) {
  const std::vector<int32_t> lens{700, 1500, 64};
  for (CacheFormat f : {CacheFormat::fp8, CacheFormat::fp8_ds_mla}) {
    SCOPED_TRACE(format_name(f));
    const ShardedCaches sc(lens, f, 64, 1);
    const ShardedCaches bf16 = sc.with_format(CacheFormat::bf16);
    const int64_t S = 1, N = 8, H = kW * N, B = sc.req.batch();
    const std::vector<uint16_t> q = random_bf16(static_cast<std::size_t>(B * S * H * kHeadDim));
    const AttnOut ref = single_gpu_decode(bf16, q, S, H, false, 1.f);
    const AttnOut got = dcp_decode(&comm, sc, q, S, N, DcpRun{}, 1.f);
    EXPECT_LE(rel_err(bf16_values(got.out), bf16_values(ref.out)), f == CacheFormat::fp8 ? 6e-2 : 4e-2);
  }
}

TEST_F(CudaDcpGroup, GatherContextEqualsSingleGpuGatherDequantForEveryFormat) {
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4})
    for (int I : {1, 16})
      for (DType dt : {DType::bf16, DType::f32}) {
        if (f == CacheFormat::dsv4 && dt == DType::f32) continue;  // dsv4 gathers to bf16 rows
        SCOPED_TRACE(std::string(format_name(f)) + " I=" + std::to_string(I) + " " + dtype_name(dt));
        const int bs = 32;
        const ShardedCaches sc({300, 45, 129, 0}, f, bs, I);
        const int64_t B = sc.req.batch(), step = static_cast<int64_t>(I) * kW;
        // Chunk b: positions [start, start + len) of request b, start a multiple of I·W.
        std::vector<int32_t> starts, cu{2};
        for (int64_t b = 0; b < B; ++b) {
          const int64_t L = sc.req.lens[static_cast<std::size_t>(b)];
          const int64_t start = L > step ? (L / 3) / step * step : 0;
          starts.push_back(static_cast<int32_t>(start));
          cu.push_back(cu.back() + static_cast<int32_t>(L - start - (b == 0 ? 5 : 0)));
        }
        const int width = sc.full->cache.desc.row_width();
        const int64_t rows = cu.back() + 3, row_stride = width + 16;
        const std::vector<uint8_t> init(static_cast<std::size_t>(rows * row_stride) * dtype_size(dt), 0x77);

        // The single-GPU reference, and the same on the CPU.
        std::vector<uint8_t> want = init;
        {
          std::vector<int32_t> hcu = cu, hst = starts;
          GatherOptions go;
          go.seq_starts = Tensor(hst.data(), DType::i32, {B});
          gather_dequant_cache(sc.full->cache, sc.bt.tensor, Tensor(hcu.data(), DType::i32, {B + 1}),
                               Tensor(want.data(), dt, {rows, width}, {row_stride, 1}), go);
          DevCache c0(*sc.full, 0);
          DevMem dbt(0, sc.bt.ids), dcu(0, cu), dst(0, starts), dout(0, init);
          const Device d0 = Device::cuda(0);
          go.seq_starts = Tensor(dst.get(), DType::i32, {B}, d0);
          gather_dequant_cache(c0.cache, Tensor(dbt.get(), DType::i32, {B, sc.bt.max_blocks}, d0),
                               Tensor(dcu.get(), DType::i32, {B + 1}, d0),
                               Tensor(dout.get(), dt, {rows, width}, {row_stride, 1}, d0), go);
          sync(0);
          ASSERT_TRUE(same_bytes(dout.host<uint8_t>(), want)) << "single-GPU gather_dequant_cache vs CPU";
        }

        run_ranks(kW, [&](int r) {
          cuda_ok(cudaSetDevice(r), "cudaSetDevice");
          const Device dev = Device::cuda(r);
          DevCache cache(*sc.shard[static_cast<std::size_t>(r)], r);
          DevMem dbt(r, sc.bt.ids), dcu(r, cu), dst(r, starts), dout(r, init);
          const std::size_t ws = dcp::gather_context_workspace_size(cache.cache.desc, rows, static_cast<int>(B), kW, I);
          // Half the cases on the communicator's memory (NCCL symmetric windows).
          const bool on_comm = (I == 16) == (dt == DType::bf16);
          DevMem dws(r, on_comm ? 0 : ws);
          const std::unique_ptr<CommBuffer> cws = on_comm ? comm(r).allocate(ws) : nullptr;
          void* const wsp = cws ? cws->data() : dws.get();
          dcp::gather_context(comm(r), cache.cache, Tensor(dbt.get(), DType::i32, {B, sc.bt.max_blocks}, dev),
                              Tensor(dcu.get(), DType::i32, {B + 1}, dev), Tensor(dst.get(), DType::i32, {B}, dev),
                              Tensor(dout.get(), dt, {rows, width}, {row_stride, 1}, dev), I, {wsp, ws});
          sync(r);
          EXPECT_TRUE(same_bytes(dout.host<uint8_t>(), want)) << "rank " << r;
        });
      }
}

#else

TEST(CudaDcpKernels, SkippedWithoutCuda) { GTEST_SKIP() << "built without CUDA"; }

#endif  // MLAKV_WITH_CUDA

}  // namespace
}  // namespace mlakv::test
