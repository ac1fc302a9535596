// Host side of mla_decode on CUDA: workspace carving, kernel arguments and the three launches
// (schedule -> attention -> combine), all asynchronous on the caller's stream, with no
// allocation and no host synchronization (CUDA-graph capturable).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend.hpp"
#include "mla_decode_common.cuh"
#include "mla_decode_kernel.cuh"
#include "mla_decode_sm90.cuh"
#include "mla_decode_sm90_ls.cuh"
#include "runtime.hpp"
#include "tensor_map.hpp"

namespace mlakv::cuda {
namespace mla {
namespace {

constexpr bool kAltDefault = true;

template <CacheFormat F, int NM> void launch_instance(const DecodeArgs& a, int parts, cudaStream_t stream) {
  using S = Smem<F, NM>;
  auto kernel = mla_decode_kernel<F, NM>;
  // The opt-in above 48 KB is per function and device; setting it is cheap and legal while a
  // stream is being captured, but do it once per device anyway.
  static int configured[64] = {};
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev < 0 || dev >= 64 || !configured[dev]) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kBytes),
               "cudaFuncSetAttribute(mla_decode_kernel)");
    if (dev >= 0 && dev < 64) configured[dev] = 1;
  }
  const dim3 grid(static_cast<unsigned>(parts), static_cast<unsigned>(num_mtiles(a.rows)));
  check_cuda(launch_maybe_pdl(a.pdl, kernel, grid, dim3(kThreads), S::kBytes, stream, a), "mla_decode_kernel");
}

template <CacheFormat F> void launch_format(const DecodeArgs& a, int parts, cudaStream_t stream) {
  if (rows_per_cta(a.rows) == 16) launch_instance<F, 1>(a, parts, stream);
  else launch_instance<F, 2>(a, parts, stream);
}

/// The sm90 kernel instance, its shared-memory opt-in set (once per device).
template <CacheFormat F, int NW, bool ALT, bool RM, bool RS = false> auto sm90_instance(int dev) {
  auto kernel = mla_decode_sm90_kernel<F, NW, ALT, RM, RS>;
  static int configured[64] = {};
  if (dev < 0 || dev >= 64 || !configured[dev]) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Sm90Smem<F, NW, ALT, RS>::kBytes),
               "cudaFuncSetAttribute(mla_decode_sm90_kernel)");
    if (dev >= 0 && dev < 64) configured[dev] = 1;
  }
  return kernel;
}

/// The lock-step form (bf16, 64 rows per CTA, single CTAs).
void launch_sm90_ls(const DecodeArgs& a, int parts, cudaStream_t stream) {
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  auto kernel = mla_decode_sm90_ls_kernel<CacheFormat::bf16>;
  static int configured[64] = {};
  if (dev < 0 || dev >= 64 || !configured[dev]) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, LsSmem::kBytes),
               "cudaFuncSetAttribute(mla_decode_sm90_ls_kernel)");
    if (dev >= 0 && dev < 64) configured[dev] = 1;
  }
  const dim3 grid(static_cast<unsigned>(parts), static_cast<unsigned>((a.rows + 63) / 64));
  const bool pdl = a.fused ? a.pdl_first : a.pdl;
  check_cuda(launch_clustered(pdl, 1, kernel, grid, dim3(kLsThreads), LsSmem::kBytes, stream, a),
             "mla_decode_sm90_ls_kernel");
}

template <CacheFormat F, int NW, bool ALT = false, bool RM = false, bool RS = false>
void launch_sm90(const DecodeArgs& a, int parts, cudaStream_t stream) {
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  auto kernel = sm90_instance<F, NW, ALT, RM, RS>(dev);
  const dim3 grid(static_cast<unsigned>(parts), static_cast<unsigned>((a.rows + a.cta_rows - 1) / a.cta_rows));
  // A programmatic dependent of the schedule grid, or (fused path: pdl_first) of whatever ran
  // before the step, waited for before any read.
  const bool pdl = a.fused ? a.pdl_first : a.pdl;
  check_cuda(launch_clustered(pdl, RM ? a.cluster : 1, kernel, grid, dim3(kSm90Threads), Sm90Smem<F, NW, ALT, RS>::kBytes,
                              stream, a),
             "mla_decode_sm90_kernel");
}

/// How many CTA pairs of the rows-as-M form the device runs at once (a pair needs two SMs of one
/// GPC: GPCs with an odd SM count leave one idle), which bounds the parts of a clustered launch.
template <CacheFormat F> int rm_pairs_resident(int dev) {
  static std::atomic<int> cache[64] = {};  // pairs + 1; 0 unknown
  if (dev >= 0 && dev < 64)
    if (const int v = cache[dev].load(std::memory_order_relaxed)) return v - 1;
  auto kernel = sm90_instance<F, 32, false, true>(dev);
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(1, 2, 1), cfg.blockDim = dim3(kSm90Threads);
  cfg.dynamicSmemBytes = Sm90Smem<F, 32, false>::kBytes;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 1, attr.val.clusterDim.y = 2, attr.val.clusterDim.z = 1;
  cfg.attrs = &attr, cfg.numAttrs = 1;
  int n = 0;
  check_cuda(cudaOccupancyMaxActiveClusters(&n, kernel, &cfg), "cudaOccupancyMaxActiveClusters");
  if (dev >= 0 && dev < 64) cache[dev].store(n + 1, std::memory_order_relaxed);
  return n;
}
int rm_pairs_resident(CacheFormat f, int dev) {
  switch (f) {
    case CacheFormat::bf16: return rm_pairs_resident<CacheFormat::bf16>(dev);
    case CacheFormat::fp8: return rm_pairs_resident<CacheFormat::fp8>(dev);
    case CacheFormat::fp8_ds_mla: return rm_pairs_resident<CacheFormat::fp8_ds_mla>(dev);
    default: return 0;
  }
}

/// The wgmma kernel runs where the device is compute capability 9.0 and this build carries its
/// sm_90a machine code (a build for other targets leaves it out: binaryVersion tells).
bool sm90_available(int dev) {
  static std::atomic<int> cache[64] = {};  // 0 unknown, 1 yes, 2 no
  if (dev >= 0 && dev < 64)
    if (const int v = cache[dev].load(std::memory_order_relaxed)) return v == 1;
  int major = 0, minor = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute");
  bool ok = major == 9 && minor == 0;
  if (ok) {
    cudaFuncAttributes attr{};
    ok = cudaFuncGetAttributes(&attr, mla_decode_sm90_kernel<CacheFormat::bf16, 8>) == cudaSuccess && attr.binaryVersion == 90;
    cudaGetLastError();
  }
  if (dev >= 0 && dev < 64) cache[dev].store(ok ? 1 : 2, std::memory_order_relaxed);
  return ok;
}

}  // namespace

/// Which attention kernel serves a call: decided on the host from the format, the query rows and
/// the device, so the choice needs no synchronization: the sm90 kernel for every format on sm_90a
/// (fp8_ds_mla at 32 rows per CTA against the mma.sync kernel: B=128 H=128 ctx=4096 1646 → 1101
/// µs, B=1 H=128 ctx=32768 121 → 85 µs; docs/PERF.md). MLAKV_DECODE_KERNEL=mma forces the
/// mma.sync kernel (tests keep it checked: it serves other devices).
bool use_sm90(CacheFormat format, int rows, int dev) {
  if (format != CacheFormat::bf16 && format != CacheFormat::fp8 && format != CacheFormat::fp8_ds_mla) return false;
  const char* e = std::getenv("MLAKV_DECODE_KERNEL");
  if (e && std::strcmp(e, "mma") == 0) return false;
  return sm90_available(dev);
}

/// 64-row bf16 CTAs: the rows-as-M seesaw form (query rows as wgmma's M, P from registers, each
/// consumer warpgroup half of the output columns), which measured 4–11 % faster than the
/// split-rows form (docs/perf/decode-notes.md); MLAKV_DECODE_FORM=split selects the latter.
bool use_rows_as_m() {
  const char* e = std::getenv("MLAKV_DECODE_FORM");
  return !(e && std::strcmp(e, "split") == 0);
}
/// MLAKV_DECODE_FORM=ls: the lock-step rows-as-M form (mla_decode_sm90_ls.cuh) for 64-row bf16
/// CTAs whose tiles go by TMA, measured against the seesaw before it may become the default.
bool use_lockstep() {
  const char* e = std::getenv("MLAKV_DECODE_FORM");
  return e && std::strcmp(e, "ls") == 0;
}

/// The rows-as-M form's CTA pairs (DecodeArgs::cluster): bf16 where its tiles go by TMA, fp8
/// always (sm90_fp8_pairs), where a request has an even number of 64-row tiles and the device
/// holds a pair; MLAKV_DECODE_CLUSTER=0 keeps one CTA per row tile (fp8: 32-row CTAs), =require
/// fails a call those conditions would give pairs but the device or the map does not (tests).
/// fp8_ds_mla pairs only where asked (=fp16, or =require): their fp16 stage rounds each
/// scale · value to 11 bits, and a query channel ~1000× the others turns that into lse errors
/// of ~0.1 against SPEC §6's 4e-3 (session 19); the 32-row form is exact.
enum class PairMode { off, on, fp16, require };
PairMode pair_mode() {
  const char* e = std::getenv("MLAKV_DECODE_CLUSTER");
  if (e && std::strcmp(e, "0") == 0) return PairMode::off;
  if (e && std::strcmp(e, "fp16") == 0) return PairMode::fp16;
  return e && std::strcmp(e, "require") == 0 ? PairMode::require : PairMode::on;
}
bool pairs_apply(int rows) {
  return rows > 64 && (rows + 63) / 64 % 2 == 0 && use_rows_as_m() && pair_mode() != PairMode::off;
}

bool sm90_fp8_pairs(int rows, CacheFormat f, int dev) {
  if ((f != CacheFormat::fp8 && f != CacheFormat::fp8_ds_mla) || !pairs_apply(rows) || !sm90_available(dev))
    return false;
  const PairMode m = pair_mode();
  if (f == CacheFormat::fp8_ds_mla && m != PairMode::fp16 && m != PairMode::require) return false;
  if (rm_pairs_resident(f, dev) > 0) return true;
  if (m == PairMode::require)
    detail::fail("mla_decode: MLAKV_DECODE_CLUSTER=require, but device ", dev, " holds no CTA pair");
  return false;
}

int sm90_bf16_rows_cap() {
  const char* e = std::getenv("MLAKV_DECODE_CTA_ROWS");
  return e && std::strcmp(e, "32") == 0 ? 32 : 64;
}

int plan_parts(int rows, int sms, bool sm90, CacheFormat format, int dev) {
  const int p = sms / (sm90 ? sm90_mtiles(rows, format, dev) : num_mtiles(rows));
  return p < 1 ? 1 : p;
}

/// MLAKV_DECODE_PARTS=N caps the parts of a call at N: two launch forms that would plan
/// different part counts (a clustered launch is bounded by the pairs the device holds) then run
/// the same schedule, so tests can compare them closely.
int cap_parts(int parts) {
  const char* e = std::getenv("MLAKV_DECODE_PARTS");
  const int n = e ? std::atoi(e) : 0;
  return n >= 1 && n < parts ? n : parts;
}

/// Alternating tiles (the two consumer warpgroups take every other KV tile with all 16 or 32 rows
/// of the CTA, merging at request ends) halve the wgmma count per tile at ≤ 32 rows per CTA (FP8
/// and 32 rows merge through the Q tile). fp8_ds_mla at 16 rows: 13–14 % faster than split rows
/// (B=64 H=16 ctx=16384 489 → 425 µs). MLAKV_DECODE_ALT=0 turns it off (split rows), =1 on.
bool use_alt() {
  const char* e = std::getenv("MLAKV_DECODE_ALT");
  if (e && std::strcmp(e, "0") == 0) return false;
  if (e && std::strcmp(e, "1") == 0) return true;
  return kAltDefault;
}

/// The rows-as-M form's order after the other's publication (DecodeArgs::rm_order):
/// MLAKV_DECODE_RM_ORDER=release|overlap|adaptive, else overlap for bf16 and release for FP8
/// (session 23, against each other: bf16 B=128 H=128 −4 %, fp8 +7 %).
RmOrder rm_order(CacheFormat format) {
  const char* e = std::getenv("MLAKV_DECODE_RM_ORDER");
  if (e && std::strcmp(e, "release") == 0) return RmOrder::release;
  if (e && std::strcmp(e, "overlap") == 0) return RmOrder::overlap;
  if (e && std::strcmp(e, "adaptive") == 0) return RmOrder::adaptive;
  return format == CacheFormat::bf16 ? RmOrder::overlap : RmOrder::release;
}

/// Programmatic dependent launch across schedule -> attention -> combine where the device has it
/// (compute capability 9.0+), the step's first grid included (a dependent of the kernel before
/// the step); MLAKV_DECODE_PDL=0 launches them as plain stream successors, =inner only the grids
/// after the first.
bool use_pdl_first() {
  const char* e = std::getenv("MLAKV_DECODE_PDL");
  return !(e && std::strcmp(e, "inner") == 0);
}
bool use_pdl(int dev) {
  const char* e = std::getenv("MLAKV_DECODE_PDL");
  if (e && std::strcmp(e, "0") == 0) return false;
  static std::atomic<int> cache[64] = {};  // 0 unknown, 1 yes, 2 no
  if (dev >= 0 && dev < 64)
    if (const int v = cache[dev].load(std::memory_order_relaxed)) return v == 1;
  int major = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  const bool ok = major >= 9;
  if (dev >= 0 && dev < 64) cache[dev].store(ok ? 1 : 2, std::memory_order_relaxed);
  return ok;
}

/// The register-operand form (K and V converted by the consumers into wgmma A registers, no
/// widened stage; Sm90Smem's RS) wherever it exists: fp8 at 16 rows (session 26: 14–18 % faster
/// than the widened form), fp8 at 32 rows (session 29: 6–10 %) and fp8_ds_mla at 16 rows (session
/// 29: 20–21 %), on the H100 (docs/PERF.md). MLAKV_DECODE_FP8_FORM=widen selects the widened stage.
bool use_fp8_rs() {
  const char* e = std::getenv("MLAKV_DECODE_FP8_FORM");
  return !(e && std::strcmp(e, "widen") == 0);
}

template <CacheFormat F> void launch_sm90_format(const DecodeArgs& a, int parts, cudaStream_t stream) {
  switch (a.cta_rows) {
    case 16:
      if constexpr (F != CacheFormat::bf16)
        if (use_alt() && use_fp8_rs()) {
          launch_sm90<F, 8, true, false, true>(a, parts, stream);
          break;
        }
      if (use_alt()) launch_sm90<F, 8, true>(a, parts, stream);
      else launch_sm90<F, 8>(a, parts, stream);
      break;
    case 32:
      if constexpr (F == CacheFormat::fp8)
        if (use_alt() && use_fp8_rs()) {
          launch_sm90<F, 16, true, false, true>(a, parts, stream);
          break;
        }
      if (use_alt()) launch_sm90<F, 16, true>(a, parts, stream);
      else launch_sm90<F, 16>(a, parts, stream);
      break;
    default:
      if constexpr (F == CacheFormat::bf16) {
        if (a.lockstep) launch_sm90_ls(a, parts, stream);
        else if (use_rows_as_m()) launch_sm90<F, 32, false, true>(a, parts, stream);
        else launch_sm90<F, 32>(a, parts, stream);
      } else {
        launch_sm90<F, 32, false, true>(a, parts, stream);  // FP8 at 64 rows (sm90_fp8_pairs): always a pair
      }
      break;
  }
}

void launch_attention_sm90(const DecodeArgs& a, CacheFormat format, int parts, cudaStream_t stream) {
  switch (format) {
    case CacheFormat::bf16: launch_sm90_format<CacheFormat::bf16>(a, parts, stream); break;
    case CacheFormat::fp8: launch_sm90_format<CacheFormat::fp8>(a, parts, stream); break;
    default: launch_sm90_format<CacheFormat::fp8_ds_mla>(a, parts, stream); break;
  }
}

/// bf16 tiles by TMA on the sm90 kernel's rows-as-M form (one thread issues nine 8 KB boxes per
/// tile instead of 128 threads issuing 36 cp.async each); MLAKV_DECODE_TMA=0 keeps every tile on
/// cp.async.
bool use_tma() {
  const char* e = std::getenv("MLAKV_DECODE_TMA");
  return !(e && std::strcmp(e, "0") == 0);
}

/// The fused small-batch path (sm90 kernel, B ≤ kFusedMaxBatch): the attention and combine grids
/// compute the schedule themselves, no schedule grid. MLAKV_DECODE_FUSED=0 turns it off.
bool use_fused(bool sm90, int batch) {
  if (!sm90 || batch > kFusedMaxBatch) return false;
  const char* e = std::getenv("MLAKV_DECODE_FUSED");
  return !(e && std::strcmp(e, "0") == 0);
}
/// On the fused path, the in-grid merge drops the combine grid too. It can run with ≤ 128 rows
/// (the counters cover ≤ 8 row tiles), ≤ kMergeMaxPartials parts and a grid the device holds at
/// once (its merging CTAs wait for the others to arrive). It is the default where a split request
/// has about two partials (2 · parts ≤ 5 · batch: B=32 at 64-row CTAs, −2 to −10 % on an H200, session 41);
/// from about four it loses to the combine grid (B ≤ 8, B=32 at 16 rows). There a request spans
/// at most three consecutive parts, so CTAs dispatched in order can always finish even where
/// fewer SMs are free than the grid has CTAs. MLAKV_DECODE_FUSED=merge takes it wherever it can
/// run, =combine nowhere.
bool use_in_grid_merge(int batch, int rows, int parts, int ctas, int sms) {
  if (rows > 128 || parts > kMergeMaxPartials || ctas > sms) return false;
  const char* e = std::getenv("MLAKV_DECODE_FUSED");
  if (e && std::strcmp(e, "merge") == 0) return true;
  if (e && std::strcmp(e, "combine") == 0) return false;
  return 2 * parts <= 5 * batch;
}

/// The in-grid merge's tag for one call (DecodeArgs::merge_tag): never 0 (a reset counter) nor
/// ~0 (a workspace filled with 0xFF).
unsigned next_merge_tag() {
  static std::atomic<unsigned> next{1};
  for (;;) {
    const unsigned t = next.fetch_add(1, std::memory_order_relaxed);
    if (t != 0 && t != ~0u) return t;
  }
}

/// Several whole near-equal requests to a part where there are more requests than parts
/// (split::plan); MLAKV_DECODE_WHOLE=0 splits them over the parts instead.
bool use_whole_requests() {
  const char* e = std::getenv("MLAKV_DECODE_WHOLE");
  return !(e && std::strcmp(e, "0") == 0);
}

/// Splits aligned to parts (split::plan) within MLAKV_DECODE_ALIGN=N units of the balanced
/// payload; 2 unless set (session 23: −4 to −7 % at bf16 B=8 and B=32 H=128 8K, ±1 % elsewhere;
/// 16 was +4 % at B=32 64K), −1 for off.
int align_slack() {
  const char* e = std::getenv("MLAKV_DECODE_ALIGN");
  return e && *e ? std::max(-1, std::atoi(e)) : 2;
}

/// DecodeArgs::rs_inflight: MLAKV_DECODE_RS_INFLIGHT=1|2|3, else 1.
int rs_inflight() {
  const char* e = std::getenv("MLAKV_DECODE_RS_INFLIGHT");
  const int n = e ? std::atoi(e) : 0;
  return n >= 1 && n <= 3 ? n : 1;
}

void launch_attention(const DecodeArgs& a, CacheFormat format, int parts, cudaStream_t stream) {
  switch (format) {
    case CacheFormat::bf16: launch_format<CacheFormat::bf16>(a, parts, stream); break;
    case CacheFormat::fp8: launch_format<CacheFormat::fp8>(a, parts, stream); break;
    case CacheFormat::fp8_ds_mla: launch_format<CacheFormat::fp8_ds_mla>(a, parts, stream); break;
    default: detail::fail("mla_decode: cache format ", format_name(format), " has no CUDA kernel");
  }
}

}  // namespace mla

#ifdef MLAKV_DECODE_TRACE
namespace mla {
std::vector<uint64_t> read_combine_trace();  // mla_combine.cu
/// The measurement build's stamps of the last decode launch, then cleared (mla_decode_trace.cuh).
std::vector<uint64_t> read_decode_trace() {
  std::vector<uint64_t> v(kTraceAllWords);
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  check_cuda(cudaMemcpyFromSymbol(v.data(), g_decode_trace, sizeof(unsigned long long) * kTraceAllWords), "trace read");
  const std::vector<uint64_t> zero(kTraceAllWords, 0);
  check_cuda(cudaMemcpyToSymbol(g_decode_trace, zero.data(), sizeof(unsigned long long) * kTraceAllWords), "trace clear");
  const std::vector<uint64_t> comb = read_combine_trace();
  for (int w : {kTsCombStart, kTsCombWaited, kTsCombEnd}) v[kTraceWords + w] = comb[w];
  v.insert(v.end(), comb.begin() + kTraceStepWords, comb.end());  // combine CTAs 0–7, eight words each
  return v;
}
}  // namespace mla
#endif

std::size_t mla_decode_workspace_size(int batch, int s_q, int heads, int device_index) {
  if (batch <= 0) return 0;
  const int rows = s_q * heads, sms = sm_count(device_index);
  // Sized for whichever kernel needs more parts (the format is not known here).
  int parts = mla::plan_parts(rows, sms, false, CacheFormat::bf16, device_index);
  for (CacheFormat f : {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla})
    parts = std::max(parts, mla::plan_parts(rows, sms, true, f, device_index));
  return mla::workspace_layout(batch, rows, parts).total;
}

namespace {
bool vec_ok(const Tensor& t, int elems) {
  const std::size_t bytes = elems * dtype_size(t.dtype);
  if (reinterpret_cast<std::uintptr_t>(t.data) % bytes != 0) return false;
  for (int d = 0; d + 1 < t.ndim; ++d)
    if (t.shape[d] > 1 && t.stride[d] % elems != 0) return false;
  return true;
}
}  // namespace

void mla_decode(const Tensor& q, const Cache& cache, const Tensor& block_table, const Tensor& seq_lens,
                const Tensor& out, const Tensor& lse, const DecodeParams& params, Workspace workspace,
                Stream stream) {
  set_device(q.device);
  const int batch = static_cast<int>(q.shape[0]), s_q = static_cast<int>(q.shape[1]),
            heads = static_cast<int>(q.shape[2]);
  if (batch == 0) return;
  const int rows = s_q * heads;
  const CacheFormat format = cache.desc.format;
  const int dev = q.device.index;
  const bool sm90 = mla::use_sm90(format, rows, dev);
  mla::DecodeArgs a{};
  // The rows-as-M form (64-row CTAs of bf16, or FP8 in pairs). The map only where bf16 runs it:
  // encoding it is host work on every call.
  a.cta_rows = sm90 ? mla::sm90_rows_per_cta(rows, format, dev) : 0;
  const bool rm = a.cta_rows == 64 && mla::use_rows_as_m();
  const int mtiles = sm90 ? (rows + a.cta_rows - 1) / a.cta_rows : 0;
  a.block_size = cache.desc.block_size;
  // The lock-step form reads a tile in two boxes, column blocks 0–3 (kv_map) and 4–8 (kv_map_hi),
  // each refilled by its own warpgroup (block sizes 16 and 32: a box per block and 16 or 32
  // tokens), and bf16 queries with 16-byte aligned rows (copied by cp.async).
  const bool ls = rm && format == CacheFormat::bf16 && mla::use_lockstep() && q.dtype == DType::bf16 && vec_ok(q, 8);
  if (rm && format == CacheFormat::bf16 && mla::use_tma()) {
    a.kv_tma = encode_paged_rows_map(a.kv_map, cache.data, cache.desc.num_blocks, a.block_size,
                                     cache.desc.stride_bytes(), 1152, a.kv_box_rows, a.kv_box_cblocks, ls ? 4 : 0);
    int rows_hi = 0, cblocks_hi = 0;
    if (ls && a.kv_tma)
      a.kv_tma = encode_paged_rows_map(a.kv_map_hi, cache.data, cache.desc.num_blocks, a.block_size,
                                       cache.desc.stride_bytes(), 1152, rows_hi, cblocks_hi, 5);
  }
  a.lockstep = ls && a.kv_tma;
  // FP8 at 64 rows is always a pair (sm90_fp8_pairs checked the device holds one).
  const int pairs = rm && !a.lockstep && mla::pairs_apply(rows) ? mla::rm_pairs_resident(format, dev) : 0;
  a.cluster = rm && pairs > 0 && (format != CacheFormat::bf16 || a.kv_tma) ? 2 : 1;
  if (rm && !a.lockstep && format == CacheFormat::bf16 && mla::pairs_apply(rows) && a.cluster == 1 &&
      mla::pair_mode() == mla::PairMode::require)
    detail::fail("mla_decode: MLAKV_DECODE_CLUSTER=require, but the call runs without CTA pairs (tensor map ",
                 a.kv_tma ? "made" : "refused", ", ", pairs, " pairs resident)");
  int parts = mla::plan_parts(rows, sm_count(dev), sm90, format, dev);
  if (a.cluster > 1) parts = std::max(1, std::min(parts, 2 * pairs / mtiles));
  parts = mla::cap_parts(parts);
  const mla::WorkspaceLayout wl = mla::workspace_layout(batch, rows, parts);
  auto* ws = static_cast<uint8_t*>(workspace.data);

  a.q = q.data;
  a.q_s0 = q.stride[0], a.q_s1 = q.stride[1], a.q_s2 = q.stride[2];
  a.q_e4m3 = q.dtype == DType::e4m3;
  a.q_vec = vec_ok(q, 8);
  a.q_scale = params.q_scale;
  a.cache = static_cast<const uint8_t*>(cache.data);
  a.num_blocks = cache.desc.num_blocks;
  a.block_stride = cache.desc.stride_bytes();
  a.k_scale = cache.scale;
  a.block_table = block_table.ptr<const int32_t>();
  a.bt_s0 = block_table.stride[0], a.bt_s1 = block_table.stride[1];
  a.max_blocks = static_cast<int>(block_table.shape[1]);
  a.seq_lens = seq_lens.ptr<const int32_t>();
  a.sl_s0 = seq_lens.stride[0];
  a.out = out.data;
  a.o_s0 = out.stride[0], a.o_s1 = out.stride[1], a.o_s2 = out.stride[2];
  a.out_f32 = out.dtype == DType::f32;
  a.out_vec = vec_ok(out, 8);
  a.lse = lse.ptr<float>();
  a.l_s0 = lse.stride[0], a.l_s1 = lse.stride[1], a.l_s2 = lse.stride[2];
  a.batch = batch, a.s_q = s_q, a.heads = heads, a.rows = rows;
  a.scale_log2 = params.softmax_scale * static_cast<float>(M_LOG2E);
  a.causal = params.causal;
  a.world = params.shard.world, a.rank = params.shard.rank, a.interleave = params.shard.interleave;
  a.sched.header = reinterpret_cast<int*>(ws + wl.header);
  a.sched.prefix = reinterpret_cast<int*>(ws + wl.prefix);
  a.sched.ntiles = reinterpret_cast<int*>(ws + wl.ntiles);
  a.sched.len_local = reinterpret_cast<int*>(ws + wl.len_local);
  a.sched.split_base = reinterpret_cast<int*>(ws + wl.split_base);
  a.sched.nsplit = reinterpret_cast<int*>(ws + wl.nsplit);
  a.sched.list = reinterpret_cast<int*>(ws + wl.list);
  a.sched.part_lse = reinterpret_cast<float*>(ws + wl.part_lse);
  a.sched.part_o = reinterpret_cast<float*>(ws + wl.part_o);
  a.pdl = mla::use_pdl(q.device.index);
  a.pdl_first = a.pdl && mla::use_pdl_first();
  a.fused = mla::use_fused(sm90, batch);
  a.in_grid_merge = a.fused && mla::use_in_grid_merge(batch, rows, parts, parts * mtiles, sm_count(dev));
  a.merge_tag = a.in_grid_merge ? mla::next_merge_tag() : 0;
  a.whole_requests = mla::use_whole_requests();
  a.align_slack = mla::align_slack();
  a.rs_inflight = mla::rs_inflight();
  a.parts = parts;
  a.counters = reinterpret_cast<unsigned long long*>(ws + wl.counters);

  a.rm_order = mla::rm_order(format);

  const cudaStream_t st = to_cuda(stream);
  if (a.in_grid_merge) {
    mla::launch_attention_sm90(a, cache.desc.format, parts, st);
    return;
  }
  if (!a.fused) mla::launch_schedule(a, parts, st);
  if (sm90) mla::launch_attention_sm90(a, cache.desc.format, parts, st);
  else mla::launch_attention(a, cache.desc.format, parts, st);
  mla::launch_combine(a, parts, sm_count(q.device.index), st);
}

}  // namespace mlakv::cuda
