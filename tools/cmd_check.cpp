// `mlakv check`: every op and the DCP path, for every format, on fresh random inputs.
//
// On the CPU the library's reference is checked against a second implementation written here
// from SPEC §2–§4 alone (its own byte layouts, its own attention loop), so that a shared
// misreading of the spec would have to be made twice. On a GPU the kernels are checked against
// the CPU reference: bit-exact for writes, gathers and dequantization, within SPEC §6 otherwise.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <random>

#include "cli_common.hpp"

namespace mlakv::cli {
namespace {

// ---------------------------------------------------------------------------------------------
// An independent reading of the cache layouts (SPEC §2). Only the numeric conversions of
// numeric.hpp are shared: they are the bit-level contract, tested against the GPU's own output.

constexpr CacheFormat kFormats[] = {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4};
constexpr CacheFormat kMlaFormats[] = {CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla};

int64_t naive_token_bytes(CacheFormat f) {
  switch (f) {
    case CacheFormat::bf16: return 1152;
    case CacheFormat::fp8: return 576;
    case CacheFormat::fp8_ds_mla: return 656;
    case CacheFormat::dsv4: return 584;
  }
  return 0;
}
int naive_row_width(CacheFormat f) { return f == CacheFormat::dsv4 ? 512 : 576; }

void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
uint16_t get_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
void put_f32(uint8_t* p, float v) { std::memcpy(p, &v, 4); }
float get_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

/// Where token k of a block keeps its parts, as SPEC §2 spells them out.
struct NaiveToken {
  int64_t data;   // first value byte
  int64_t scale;  // first scale byte (fp8_ds_mla, dsv4)
  int64_t rope;   // first bf16 rope byte (fp8_ds_mla, dsv4)
};
NaiveToken naive_token(const CacheDesc& d, int64_t slot) {
  const int64_t block = slot / d.block_size, k = slot % d.block_size, base = block * d.stride_bytes();
  switch (d.format) {
    case CacheFormat::bf16: return {base + 1152 * k, -1, -1};
    case CacheFormat::fp8: return {base + 576 * k, -1, -1};
    case CacheFormat::fp8_ds_mla: return {base + 656 * k, base + 656 * k + 512, base + 656 * k + 528};
    case CacheFormat::dsv4:
      return {base + 576 * k, base + 576 * static_cast<int64_t>(d.block_size) + 8 * k, base + 576 * k + 448};
  }
  return {};
}

/// Stores one token: x holds 576 values (512 for dsv4), already bf16-representable.
void naive_encode(const CacheDesc& d, std::vector<uint8_t>& cache, int64_t slot, const float* x, float scale) {
  const NaiveToken t = naive_token(d, slot);
  uint8_t* c = cache.data();
  switch (d.format) {
    case CacheFormat::bf16:
      for (int i = 0; i < 576; ++i) put_u16(c + t.data + 2 * i, num::f32_to_bf16(x[i]));
      break;
    case CacheFormat::fp8:
      for (int i = 0; i < 576; ++i) c[t.data + i] = num::f32_to_e4m3(x[i] / scale);
      break;
    case CacheFormat::fp8_ds_mla:
      for (int tile = 0; tile < 4; ++tile) {
        float amax = 0;
        for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(x[128 * tile + i]));
        const float s = std::max(amax / 448.0f, FLT_MIN);
        put_f32(c + t.scale + 4 * tile, s);
        for (int i = 0; i < 128; ++i) c[t.data + 128 * tile + i] = num::f32_to_e4m3(x[128 * tile + i] / s);
      }
      for (int i = 0; i < 64; ++i) put_u16(c + t.rope + 2 * i, num::f32_to_bf16(x[512 + i]));
      break;
    case CacheFormat::dsv4:
      for (int g = 0; g < 7; ++g) {
        float amax = 0;
        for (int i = 0; i < 64; ++i) amax = std::max(amax, std::fabs(x[64 * g + i]));
        const int e = num::ue8m0_exponent(amax);
        c[t.scale + g] = num::ue8m0_byte(e);
        for (int i = 0; i < 64; ++i) c[t.data + 64 * g + i] = num::f32_to_e4m3(std::ldexp(x[64 * g + i], -e));
      }
      c[t.scale + 7] = 0;
      for (int i = 0; i < 64; ++i) put_u16(c + t.rope + 2 * i, num::f32_to_bf16(x[448 + i]));
      break;
  }
}

/// The token's stored bytes end to end (dsv4: its 576 data bytes, then its 8 scale bytes).
void naive_packed(const CacheDesc& d, const std::vector<uint8_t>& cache, int64_t slot, uint8_t* out) {
  const NaiveToken t = naive_token(d, slot);
  if (d.format == CacheFormat::dsv4) {
    std::memcpy(out, cache.data() + t.data, 576);
    std::memcpy(out + 576, cache.data() + t.scale, 8);
  } else {
    std::memcpy(out, cache.data() + t.data, static_cast<std::size_t>(naive_token_bytes(d.format)));
  }
}

/// The dequantized token as exact products (each an e4m3 or bf16 value times one scale, which a
/// double holds exactly); a float product rounds them once.
void naive_decode(const CacheDesc& d, const std::vector<uint8_t>& cache, int64_t slot, float scale, double* out) {
  const NaiveToken t = naive_token(d, slot);
  const uint8_t* c = cache.data();
  switch (d.format) {
    case CacheFormat::bf16:
      for (int i = 0; i < 576; ++i) out[i] = num::bf16_to_f32(get_u16(c + t.data + 2 * i));
      break;
    case CacheFormat::fp8:
      for (int i = 0; i < 576; ++i) out[i] = static_cast<double>(num::e4m3_to_f32(c[t.data + i])) * scale;
      break;
    case CacheFormat::fp8_ds_mla:
      for (int i = 0; i < 512; ++i)
        out[i] = static_cast<double>(num::e4m3_to_f32(c[t.data + i])) * get_f32(c + t.scale + 4 * (i / 128));
      for (int i = 0; i < 64; ++i) out[512 + i] = num::bf16_to_f32(get_u16(c + t.rope + 2 * i));
      break;
    case CacheFormat::dsv4:
      for (int i = 0; i < 448; ++i)
        out[i] = static_cast<double>(num::e4m3_to_f32(c[t.data + i])) * num::ue8m0_scale(c[t.scale + i / 64]);
      for (int i = 0; i < 64; ++i) out[448 + i] = num::bf16_to_f32(get_u16(c + t.rope + 2 * i));
      break;
  }
}

/// Softmax attention of one query over rows (576 wide, V = first 512) in double.
void naive_attend(const double* q, const std::vector<const double*>& rows, double scale, double* out, double* lse) {
  if (rows.empty()) {
    std::fill(out, out + 512, 0.0);
    *lse = -INFINITY;
    return;
  }
  std::vector<double> s(rows.size());
  double m = -INFINITY;
  for (std::size_t j = 0; j < rows.size(); ++j) {
    double dot = 0;
    for (int i = 0; i < 576; ++i) dot += q[i] * rows[j][i];
    s[j] = dot * scale;
    m = std::max(m, s[j]);
  }
  double sum = 0;
  std::fill(out, out + 512, 0.0);
  for (std::size_t j = 0; j < rows.size(); ++j) {
    const double p = std::exp(s[j] - m);
    sum += p;
    for (int i = 0; i < 512; ++i) out[i] += p * rows[j][i];
  }
  for (int i = 0; i < 512; ++i) out[i] /= sum;
  *lse = m + std::log(sum);
}

// ---------------------------------------------------------------------------------------------
// Random paged workload

/// Requests over a paged cache: shuffled physical blocks, one shared table (local indices under
/// DCP), and the token values of every position.
struct Workload {
  int block_size = 16;
  int world = 1, interleave = 1;
  std::vector<int> lens;             // global lengths
  int64_t max_blocks = 0, num_blocks = 0;
  std::vector<int32_t> table;        // [batch, max_blocks]
  std::vector<std::vector<float>> x; // [batch][len * width]: bf16-representable values
  int width = 576;
  float fp8_scale = 0;

  int batch() const { return static_cast<int>(lens.size()); }
  /// Slot of local index j of request b.
  int64_t slot(int b, int64_t j) const {
    return static_cast<int64_t>(table[static_cast<std::size_t>(b * max_blocks + j / block_size)]) * block_size +
           j % block_size;
  }
  CacheDesc desc(CacheFormat f) const {
    CacheDesc d;
    d.format = f;
    d.num_blocks = num_blocks;
    d.block_size = block_size;
    return d;
  }
};

Workload make_workload(std::mt19937_64& rng, std::vector<int> lens, int width, int world = 1, int interleave = 1,
                       int block_size = 16) {
  Workload w;
  w.block_size = block_size;
  w.world = world;
  w.interleave = interleave;
  w.lens = std::move(lens);
  w.width = width;
  std::vector<int64_t> need;
  for (int len : w.lens) {
    const int64_t local = dcp::local_length(len, 0, world, interleave);  // rank 0 holds the most
    need.push_back(std::max<int64_t>(1, (local + block_size - 1) / block_size));
    w.max_blocks = std::max(w.max_blocks, need.back());
    w.num_blocks += need.back();
  }
  w.num_blocks += 3;  // blocks no request uses: writes must leave them alone
  std::vector<int32_t> ids(static_cast<std::size_t>(w.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  w.table.assign(static_cast<std::size_t>(w.batch() * w.max_blocks), 0);
  std::size_t next = 0;
  for (int b = 0; b < w.batch(); ++b)
    for (int64_t i = 0; i < need[static_cast<std::size_t>(b)]; ++i) w.table[static_cast<std::size_t>(b * w.max_blocks + i)] = ids[next++];

  std::normal_distribution<float> normal(0.0f, 1.0f);
  float amax = 0;
  for (int b = 0; b < w.batch(); ++b) {
    std::vector<float> v(static_cast<std::size_t>(w.lens[static_cast<std::size_t>(b)]) * width);
    for (std::size_t i = 0; i < v.size(); ++i) {
      float s = 1.0f;
      const std::size_t row = i / static_cast<std::size_t>(width);
      // Rows at very different magnitudes, and one all-zero tile, reach the scale edge cases.
      if (row % 7 == 3) s = 8.0f;
      if (row % 11 == 5) s = 1e-3f;
      if (row == 2 && i % static_cast<std::size_t>(width) < 128) s = 0.0f;
      v[i] = num::round_bf16(normal(rng) * s);
      amax = std::max(amax, std::fabs(v[i]));
    }
    w.x.push_back(std::move(v));
  }
  w.fp8_scale = amax / 448.0f;
  return w;
}

/// The cache bytes after writing every token of w on `rank`, by the naive encoder.
std::vector<uint8_t> naive_cache(const Workload& w, CacheFormat f, int rank = 0) {
  const CacheDesc d = w.desc(f);
  std::vector<uint8_t> cache(static_cast<std::size_t>(d.total_bytes()), 0);
  for (int b = 0; b < w.batch(); ++b)
    for (int64_t p = 0; p < w.lens[static_cast<std::size_t>(b)]; ++p) {
      if (dcp::owner(p, w.world, w.interleave) != rank) continue;
      naive_encode(d, cache, w.slot(b, dcp::local_index(p, w.world, w.interleave)),
                   w.x[static_cast<std::size_t>(b)].data() + p * w.width, w.fp8_scale);
    }
  return cache;
}

std::vector<std::vector<uint8_t>> naive_cache_shards(const Workload& w, CacheFormat f) {
  std::vector<std::vector<uint8_t>> caches;
  for (int r = 0; r < w.world; ++r) caches.push_back(naive_cache(w, f, r));
  return caches;
}

/// The token at global position p of request b dequantized as its owner stores it.
std::vector<double> naive_row(const Workload& w, CacheFormat f, const std::vector<std::vector<uint8_t>>& rank_caches,
                              int b, int64_t p) {
  std::vector<double> row(static_cast<std::size_t>(naive_row_width(f)));
  const int r = dcp::owner(p, w.world, w.interleave);
  naive_decode(w.desc(f), rank_caches[static_cast<std::size_t>(r)], w.slot(b, dcp::local_index(p, w.world, w.interleave)),
               w.fp8_scale, row.data());
  return row;
}

// ---------------------------------------------------------------------------------------------
// Rows of the report

enum class Status { pass, fail, skip };

struct Outcome {
  Status status = Status::pass;
  std::string figure;  // the error figure
  std::string bound;   // what it is held to
  std::string note;
};

Outcome compare_bits(std::size_t diff, std::size_t total, const std::string& unit) {
  Outcome o;
  o.status = diff == 0 ? Status::pass : Status::fail;
  o.figure = std::to_string(diff) + "/" + std::to_string(total) + " " + unit + " differ";
  o.bound = "bit-exact";
  return o;
}

template <class T> std::size_t count_diff(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return n;
}

Outcome compare_values(const std::vector<double>& out, const std::vector<double>& out_ref, double out_bound,
                       const std::vector<double>& lse, const std::vector<double>& lse_ref, double lse_bound) {
  const double e = rel_err(out, out_ref), l = max_abs_err(lse, lse_ref);
  Outcome o;
  o.status = e <= out_bound && l <= lse_bound ? Status::pass : Status::fail;
  o.figure = "out " + sci(e) + ", lse " + sci(l);
  o.bound = sci(out_bound) + " / " + sci(lse_bound);
  return o;
}

bool is_unavailable(const std::string& msg) {
  for (const char* key : {"not available", "not supported", "unsupported", "not implemented", "not yet"})
    if (msg.find(key) != std::string::npos) return true;
  return false;
}

struct Checker {
  Device device;
  std::mt19937_64 rng;
  Table table{{"op", "format", "result", "error", "bound", "note"}};
  int failed = 0, skipped = 0, passed = 0;

  void row(const std::string& op, const std::string& fmt, const std::function<Outcome()>& fn) {
    Outcome o;
    try {
      o = fn();
    } catch (const std::exception& e) {
      o.status = is_unavailable(e.what()) ? Status::skip : Status::fail;
      o.note = e.what();
    }
    const char* s = o.status == Status::pass ? "PASS" : (o.status == Status::skip ? "SKIP" : "FAIL");
    (o.status == Status::pass ? passed : (o.status == Status::skip ? skipped : failed))++;
    // Keep the table readable: long messages are cut; a failure's full text goes to stderr.
    std::string note = o.note;
    if (note.size() > 90) {
      if (o.status == Status::fail) std::cerr << op << " [" << fmt << "]: " << note << '\n';
      note = note.substr(0, 87) + "...";
    }
    table.add({op, fmt, s, o.figure, o.bound, note});
  }
};

/// On a GPU the reference is the library's CPU backend; on the CPU it is the naive code here.
bool on_gpu(const Checker& c) { return c.device.is_cuda(); }

// ---------------------------------------------------------------------------------------------
// The ops, each run on a device from host inputs, returning host outputs.

struct WriteInputs {
  std::vector<uint16_t> rows;  // [T + pad, stride] bf16
  int64_t stride = 0, tokens = 0;
  std::vector<int64_t> slots;  // [T]
};

/// All tokens of w in a shuffled order, with a few "not mine" (-1) entries and graph padding.
WriteInputs make_write_inputs(Checker& c, const Workload& w) {
  struct Tok {
    int b;
    int64_t p;
  };
  std::vector<Tok> order;
  for (int b = 0; b < w.batch(); ++b)
    for (int64_t p = 0; p < w.lens[static_cast<std::size_t>(b)]; ++p) order.push_back({b, p});
  std::shuffle(order.begin(), order.end(), c.rng);
  WriteInputs in;
  in.stride = w.width + 24;  // row stride beyond the width, as a fused projection output has
  const int64_t skipped = 3, padding = 2;
  in.tokens = static_cast<int64_t>(order.size()) + skipped;
  in.rows.assign(static_cast<std::size_t>((in.tokens + padding) * in.stride), num::f32_to_bf16(7.0f));
  for (std::size_t t = 0; t < order.size(); ++t) {
    const float* x = w.x[static_cast<std::size_t>(order[t].b)].data() + order[t].p * w.width;
    for (int i = 0; i < w.width; ++i) in.rows[t * static_cast<std::size_t>(in.stride) + i] = num::f32_to_bf16(x[i]);
    in.slots.push_back(w.slot(order[t].b, order[t].p));
  }
  for (int64_t i = 0; i < skipped; ++i) in.slots.push_back(-1 - i);
  return in;
}

std::vector<uint8_t> run_write(Device d, const Workload& w, CacheFormat f, const WriteInputs& in,
                               const std::vector<uint8_t>& initial) {
  const DeviceCache cache(d, w.desc(f), w.fp8_scale, initial);
  DeviceBuffer rows = DeviceBuffer::from(d, in.rows), slots = DeviceBuffer::from(d, in.slots);
  const Cache cv = cache.view();
  const int64_t n_rows = static_cast<int64_t>(in.rows.size()) / in.stride;
  const Tensor sm(slots.data(), DType::i64, {in.tokens}, d);
  auto* base = static_cast<uint16_t*>(rows.data());
  if (f == CacheFormat::dsv4) {
    dsv4_write(Tensor(base, DType::bf16, {n_rows, 512}, {in.stride, 1}, d), sm, cv);
  } else {
    write_cache(Tensor(base, DType::bf16, {n_rows, 512}, {in.stride, 1}, d),
                Tensor(base + 512, DType::bf16, {n_rows, 64}, {in.stride, 1}, d), sm, cv);
  }
  synchronize(d);
  return cache.bytes.to_host<uint8_t>();
}

void check_writes(Checker& c) {
  for (CacheFormat f : kFormats) {
    const std::string op = f == CacheFormat::dsv4 ? "dsv4_write" : "write_cache";
    c.row(op, format_name(f), [&] {
      const Workload w = make_workload(c.rng, {37, 1, 70, 16}, naive_row_width(f));
      const WriteInputs in = make_write_inputs(c, w);
      // A recognizable fill: bytes a write must not touch have to keep it.
      std::vector<uint8_t> initial(static_cast<std::size_t>(w.desc(f).total_bytes()), 0x5a);
      const auto got = run_write(c.device, w, f, in, initial);
      std::vector<uint8_t> want = initial;
      if (on_gpu(c)) {
        want = run_write(Device::cpu(), w, f, in, initial);
      } else {
        const CacheDesc d = w.desc(f);
        for (std::size_t t = 0; t < in.slots.size(); ++t) {
          if (in.slots[t] < 0) continue;
          std::vector<float> x(static_cast<std::size_t>(w.width));
          for (int i = 0; i < w.width; ++i) x[static_cast<std::size_t>(i)] = num::bf16_to_f32(in.rows[t * static_cast<std::size_t>(in.stride) + i]);
          naive_encode(d, want, in.slots[t], x.data(), w.fp8_scale);
        }
      }
      return compare_bits(count_diff(got, want), want.size(), "bytes");
    });
  }
}

/// A gather request set over w: each request takes a run of positions from an arbitrary start.
struct GatherInputs {
  std::vector<int32_t> cu{0}, starts;
  int64_t rows = 0;
};
GatherInputs make_gather_inputs(Checker& c, const Workload& w) {
  GatherInputs g;
  for (int len : w.lens) {
    const int start = len > 0 ? static_cast<int>(c.rng() % static_cast<uint64_t>(len)) : 0;
    const int count = len - start > 0 ? 1 + static_cast<int>(c.rng() % static_cast<uint64_t>(len - start)) : 0;
    g.starts.push_back(start);
    g.cu.push_back(g.cu.back() + count);
  }
  g.rows = g.cu.back();
  return g;
}

/// Runs gather_cache (dequant = false, u8 rows) or gather_dequant_cache (bf16 or f32 rows).
std::vector<uint8_t> run_gather(Device d, const Workload& w, CacheFormat f, const std::vector<uint8_t>& cache_bytes,
                                const GatherInputs& g, bool dequant, DType out_dtype) {
  const DeviceCache cache(d, w.desc(f), w.fp8_scale, cache_bytes);
  DeviceBuffer table = DeviceBuffer::from(d, w.table), cu = DeviceBuffer::from(d, g.cu),
               starts = DeviceBuffer::from(d, g.starts);
  const int64_t width = dequant ? naive_row_width(f) : naive_token_bytes(f);
  DeviceBuffer out(d, static_cast<std::size_t>(g.rows * width) * dtype_size(out_dtype));
  out.fill(0xcc);
  const Cache cv = cache.view();
  const Tensor bt(table.data(), DType::i32, {w.batch(), w.max_blocks}, d);
  const Tensor cs(cu.data(), DType::i32, {w.batch() + 1}, d);
  GatherOptions opts;
  opts.seq_starts = Tensor(starts.data(), DType::i32, {w.batch()}, d);
  const Tensor dst(out.data(), out_dtype, {g.rows, width}, d);
  if (dequant) gather_dequant_cache(cv, bt, cs, dst, opts);
  else gather_cache(cv, bt, cs, dst, opts);
  synchronize(d);
  return out.to_host<uint8_t>();
}

void check_gathers(Checker& c) {
  for (CacheFormat f : kFormats) {
    c.row("gather_cache", format_name(f), [&] {
      const Workload w = make_workload(c.rng, {37, 1, 70, 0, 33}, naive_row_width(f));
      const auto bytes = naive_cache(w, f);
      const GatherInputs g = make_gather_inputs(c, w);
      const auto got = run_gather(c.device, w, f, bytes, g, false, DType::u8);
      std::vector<uint8_t> want;
      if (on_gpu(c)) {
        want = run_gather(Device::cpu(), w, f, bytes, g, false, DType::u8);
      } else {
        const int64_t tb = naive_token_bytes(f);
        want.assign(static_cast<std::size_t>(g.rows * tb), 0);
        for (int b = 0; b < w.batch(); ++b)
          for (int32_t r = g.cu[static_cast<std::size_t>(b)]; r < g.cu[static_cast<std::size_t>(b) + 1]; ++r)
            naive_packed(w.desc(f), bytes, w.slot(b, g.starts[static_cast<std::size_t>(b)] + r - g.cu[static_cast<std::size_t>(b)]),
                         want.data() + r * tb);
      }
      return compare_bits(count_diff(got, want), want.size(), "bytes");
    });
  }
  for (CacheFormat f : kFormats) {
    c.row("gather_dequant_cache", format_name(f), [&] {
      const Workload w = make_workload(c.rng, {37, 1, 70, 0, 33}, naive_row_width(f));
      const auto bytes = naive_cache(w, f);
      const GatherInputs g = make_gather_inputs(c, w);
      std::size_t diff = 0, total = 0;
      // Both output types: bf16 is what attention consumes, f32 shows the unrounded products.
      for (DType dt : {DType::bf16, DType::f32}) {
        const auto got = run_gather(c.device, w, f, bytes, g, true, dt);
        std::vector<uint8_t> want;
        if (on_gpu(c)) {
          want = run_gather(Device::cpu(), w, f, bytes, g, true, dt);
        } else {
          const int width = naive_row_width(f);
          want.assign(static_cast<std::size_t>(g.rows * width) * dtype_size(dt), 0);
          std::vector<double> row(static_cast<std::size_t>(width));
          for (int b = 0; b < w.batch(); ++b)
            for (int32_t r = g.cu[static_cast<std::size_t>(b)]; r < g.cu[static_cast<std::size_t>(b) + 1]; ++r) {
              naive_decode(w.desc(f), bytes,
                           w.slot(b, g.starts[static_cast<std::size_t>(b)] + r - g.cu[static_cast<std::size_t>(b)]),
                           w.fp8_scale, row.data());
              for (int i = 0; i < width; ++i) {
                const float v = static_cast<float>(row[static_cast<std::size_t>(i)]);
                uint8_t* dst = want.data() + (static_cast<std::size_t>(r) * width + i) * dtype_size(dt);
                if (dt == DType::bf16) put_u16(dst, num::f32_to_bf16(v));
                else put_f32(dst, v);
              }
            }
        }
        diff += count_diff(got, want);
        total += want.size();
      }
      return compare_bits(diff, total, "bytes");
    });
  }
}

void check_dsv4_gather(Checker& c) {
  c.row("dsv4_dequant_gather", "dsv4", [&] {
    const Workload w = make_workload(c.rng, {37, 1, 70, 0, 33}, 512);
    const auto bytes = naive_cache(w, CacheFormat::dsv4);
    const int64_t offset = 2, max_rows = 80, row_stride = 520;
    std::vector<int32_t> lens(w.lens.begin(), w.lens.end()), glens;
    for (int len : w.lens) glens.push_back(len > 1 ? len - static_cast<int>(c.rng() % 3) : len);
    const std::size_t out_elems = static_cast<std::size_t>(w.batch() * max_rows * row_stride);
    const std::vector<uint16_t> initial(out_elems, num::f32_to_bf16(-3.0f));
    auto run = [&](Device d) {
      const DeviceCache cache(d, w.desc(CacheFormat::dsv4), w.fp8_scale, bytes);
      DeviceBuffer table = DeviceBuffer::from(d, w.table), sl = DeviceBuffer::from(d, lens),
                   gl = DeviceBuffer::from(d, glens), out = DeviceBuffer::from(d, initial);
      dsv4_dequant_gather(cache.view(), Tensor(table.data(), DType::i32, {w.batch(), w.max_blocks}, d),
                          Tensor(sl.data(), DType::i32, {w.batch()}, d),
                          Tensor(out.data(), DType::bf16, {w.batch(), max_rows, 512}, {max_rows * row_stride, row_stride, 1}, d),
                          Tensor(gl.data(), DType::i32, {w.batch()}, d), offset);
      synchronize(d);
      return out.to_host<uint16_t>();
    };
    const auto got = run(c.device);
    std::vector<uint16_t> want = initial;
    if (on_gpu(c)) {
      want = run(Device::cpu());
    } else {
      const std::vector<std::vector<uint8_t>> caches{bytes};
      for (int r = 0; r < w.batch(); ++r) {
        const int len = lens[static_cast<std::size_t>(r)], n = glens[static_cast<std::size_t>(r)];
        for (int i = 0; i < n; ++i) {
          const auto row = naive_row(w, CacheFormat::dsv4, caches, r, len - n + i);
          for (int k = 0; k < 512; ++k)
            want[static_cast<std::size_t>((r * max_rows + offset + i) * row_stride + k)] =
                num::f32_to_bf16(static_cast<float>(row[static_cast<std::size_t>(k)]));
        }
      }
    }
    return compare_bits(count_diff(got, want), want.size(), "values");
  });
}

// ---------------------------------------------------------------------------------------------
// Attention

constexpr double kScale = 0.0721687836;  // 1/sqrt(192), DeepSeek-V3's softmax scale

struct AttnResult {
  std::vector<double> out, lse;
};

std::vector<uint16_t> random_q(Checker& c, std::size_t n) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> q(n);
  for (auto& v : q) v = num::f32_to_bf16(normal(c.rng));
  return q;
}

/// Naive causal decode of q [B, s_q, H, 576] over the global sequences of w.
AttnResult naive_decode_all(const Workload& w, CacheFormat f, const std::vector<std::vector<uint8_t>>& rank_caches,
                            const std::vector<uint16_t>& q, int s_q, int heads) {
  AttnResult res;
  res.out.assign(static_cast<std::size_t>(w.batch() * s_q * heads * 512), 0.0);
  res.lse.assign(static_cast<std::size_t>(w.batch() * s_q * heads), 0.0);
  std::vector<double> qd(576);
  for (int b = 0; b < w.batch(); ++b) {
    const int len = w.lens[static_cast<std::size_t>(b)];
    std::vector<std::vector<double>> rows;
    for (int p = 0; p < len; ++p) rows.push_back(naive_row(w, f, rank_caches, b, p));
    for (int s = 0; s < s_q; ++s) {
      const int limit = std::max(0, len - s_q + s + 1);
      std::vector<const double*> visible;
      for (int p = 0; p < limit; ++p) visible.push_back(rows[static_cast<std::size_t>(p)].data());
      for (int h = 0; h < heads; ++h) {
        const std::size_t qi = static_cast<std::size_t>((b * s_q + s) * heads + h);
        for (int i = 0; i < 576; ++i) qd[static_cast<std::size_t>(i)] = num::bf16_to_f32(q[qi * 576 + static_cast<std::size_t>(i)]);
        naive_attend(qd.data(), visible, kScale, res.out.data() + qi * 512, res.lse.data() + qi);
      }
    }
  }
  return res;
}

AttnResult run_decode(Device d, const Workload& w, CacheFormat f, const std::vector<uint8_t>& cache_bytes,
                      const std::vector<uint16_t>& q, int s_q, int heads, DType out_dtype) {
  const DeviceCache cache(d, w.desc(f), w.fp8_scale, cache_bytes);
  DeviceBuffer table = DeviceBuffer::from(d, w.table), qb = DeviceBuffer::from(d, q),
               lens = DeviceBuffer::from(d, std::vector<int32_t>(w.lens.begin(), w.lens.end()));
  const int64_t B = w.batch();
  DeviceBuffer out(d, static_cast<std::size_t>(B * s_q * heads * 512) * dtype_size(out_dtype));
  DeviceBuffer lse(d, static_cast<std::size_t>(B * s_q * heads) * 4);
  DeviceBuffer ws(d, mla_decode_workspace_size(w.batch(), s_q, heads, d));
  const Cache cv = cache.view();
  DecodeParams p;
  p.softmax_scale = static_cast<float>(kScale);
  p.causal = true;
  mla_decode(Tensor(qb.data(), DType::bf16, {B, s_q, heads, 576}, d), cv,
             Tensor(table.data(), DType::i32, {B, w.max_blocks}, d), Tensor(lens.data(), DType::i32, {B}, d),
             Tensor(out.data(), out_dtype, {B, s_q, heads, 512}, d), Tensor(lse.data(), DType::f32, {B, s_q, heads}, d),
             p, Workspace{ws.data(), ws.bytes()});
  synchronize(d);
  AttnResult r;
  if (out_dtype == DType::bf16) {
    r.out = bf16_bits_to_double(out.to_host<uint16_t>());
  } else {
    const auto o = out.to_host<float>();
    r.out.assign(o.begin(), o.end());
  }
  const auto l = lse.to_host<float>();
  r.lse.assign(l.begin(), l.end());
  return r;
}

void check_decode(Checker& c) {
  for (CacheFormat f : kMlaFormats) {
    c.row("mla_decode", format_name(f), [&] {
      // Length 1 with s_q = 2 leaves the first query nothing to see: out 0, lse -inf.
      const Workload w = make_workload(c.rng, {37, 1, 70, 130}, 576);
      const int s_q = 2, heads = 8;
      const auto bytes = naive_cache(w, f);
      const auto q = random_q(c, static_cast<std::size_t>(w.batch() * s_q * heads * 576));
      if (on_gpu(c)) {
        // SPEC §6: bf16 output within 4e-3 of the fp64 reference on the same stored cache.
        const AttnResult got = run_decode(c.device, w, f, bytes, q, s_q, heads, DType::bf16);
        const AttnResult want = run_decode(Device::cpu(), w, f, bytes, q, s_q, heads, DType::f32);
        return compare_values(got.out, want.out, 4e-3, got.lse, want.lse, f == CacheFormat::fp8_ds_mla ? 4e-3 : 1e-3);
      }
      // Both sides in double: only the final rounding to f32 separates them.
      const AttnResult got = run_decode(c.device, w, f, bytes, q, s_q, heads, DType::f32);
      const AttnResult want = naive_decode_all(w, f, {bytes}, q, s_q, heads);
      return compare_values(got.out, want.out, 1e-6, got.lse, want.lse, 1e-5);
    });
  }
}

void check_merge(Checker& c) {
  c.row("merge_states", "-", [&] {
    const int64_t n = 6, h = 8, dim = 512;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> oa(static_cast<std::size_t>(n * h * dim)), ob(oa.size()), la(static_cast<std::size_t>(n * h)),
        lb(la.size());
    for (auto& v : oa) v = normal(c.rng);
    for (auto& v : ob) v = normal(c.rng);
    for (auto& v : la) v = 3.0f * normal(c.rng);
    for (auto& v : lb) v = 3.0f * normal(c.rng);
    // Empty states: -inf, +inf and NaN each mean "no tokens", alone and together.
    la[0] = -INFINITY;
    lb[1] = INFINITY;
    la[2] = NAN;
    la[3] = -INFINITY, lb[3] = -INFINITY;
    la[4] = NAN, lb[4] = INFINITY;
    la[5] = 80.0f, lb[5] = -80.0f;  // far apart: one side's weight underflows
    auto run = [&](Device d) {
      DeviceBuffer a = DeviceBuffer::from(d, oa), b = DeviceBuffer::from(d, ob), sa = DeviceBuffer::from(d, la),
                   sb = DeviceBuffer::from(d, lb), o(d, oa.size() * 4), l(d, la.size() * 4);
      merge_states(a.view(DType::f32, {n, h, dim}), sa.view(DType::f32, {n, h}), b.view(DType::f32, {n, h, dim}),
                   sb.view(DType::f32, {n, h}), o.view(DType::f32, {n, h, dim}), l.view(DType::f32, {n, h}));
      synchronize(d);
      AttnResult r;
      const auto ov = o.to_host<float>();
      const auto lv = l.to_host<float>();
      r.out.assign(ov.begin(), ov.end());
      r.lse.assign(lv.begin(), lv.end());
      return r;
    };
    const AttnResult got = run(c.device);
    if (on_gpu(c)) {
      const AttnResult want = run(Device::cpu());
      return compare_values(got.out, want.out, 1e-5, got.lse, want.lse, 1e-5);
    }
    AttnResult want;
    want.out.resize(oa.size());
    want.lse.resize(la.size());
    for (std::size_t i = 0; i < la.size(); ++i) {
      auto empty = [](float x) { return !std::isfinite(x); };
      const double a = empty(la[i]) ? -INFINITY : la[i], b = empty(lb[i]) ? -INFINITY : lb[i];
      const double m = std::max(a, b);
      double wa = 0, wb = 0, lse = -INFINITY;
      if (m != -INFINITY) {
        const double ea = std::exp(a - m), eb = std::exp(b - m);
        lse = m + std::log(ea + eb);
        wa = ea / (ea + eb);
        wb = eb / (ea + eb);
      }
      want.lse[i] = lse;
      for (int64_t k = 0; k < dim; ++k)
        want.out[i * dim + k] = wa * oa[i * dim + k] + wb * ob[i * dim + k];
    }
    // fp32 arithmetic against double: a few ulps.
    return compare_values(got.out, want.out, 1e-6, got.lse, want.lse, 1e-5);
  });
}

// ---------------------------------------------------------------------------------------------
// DCP: over the in-process CPU group on the CPU, over NCCL (one GPU per rank) on GPUs

constexpr int kWorld = 3, kInterleave = 2;  // not a power of two, and runs of two tokens per rank

/// The ranks of a DCP group starting at `base`: CPU ranks share the CPU, GPU ranks take one
/// device each.
struct Group {
  std::vector<Device> devices;
  std::vector<std::unique_ptr<Communicator>> comms;
  int world() const { return static_cast<int>(devices.size()); }
};
Group make_group(Device base, int world) {
  Group g;
  std::vector<int> ids;
  for (int r = 0; r < world; ++r) {
    g.devices.push_back(base.is_cpu() ? base : Device::cuda(base.index + r));
    ids.push_back(base.index + r);
  }
  g.comms = base.is_cpu() ? make_cpu_group(world) : make_nccl_group(ids);
  return g;
}

/// How many GPU ranks the check can form from `base` on (NCCL wants one GPU per rank).
int gpu_world(Device base) { return std::min(kWorld, cuda_device_count() - base.index); }

/// Flattened inputs of a write of every token of w, in position order per request.
struct AllTokens {
  std::vector<int64_t> positions;
  std::vector<int32_t> reqs;
  std::vector<uint16_t> rows;  // [T, width] bf16
  int64_t count() const { return static_cast<int64_t>(positions.size()); }
};
AllTokens all_tokens(const Workload& w) {
  AllTokens t;
  for (int b = 0; b < w.batch(); ++b)
    for (int64_t p = 0; p < w.lens[static_cast<std::size_t>(b)]; ++p) {
      t.positions.push_back(p);
      t.reqs.push_back(b);
      for (int i = 0; i < w.width; ++i)
        t.rows.push_back(num::f32_to_bf16(w.x[static_cast<std::size_t>(b)][static_cast<std::size_t>(p * w.width + i)]));
    }
  return t;
}

/// Each rank's slot mapping and cache, written the way an engine does it: every rank sees every
/// token, and the library's DCP slot mapping keeps the rank's own.
struct Shards {
  std::vector<std::vector<int64_t>> slots;
  std::vector<std::vector<uint8_t>> caches;
};
Shards write_shards(const std::vector<Device>& devices, const Workload& w, CacheFormat f) {
  const AllTokens tok = all_tokens(w);
  const int64_t T = tok.count();
  const int world = static_cast<int>(devices.size());
  Shards out;
  out.slots.resize(static_cast<std::size_t>(world));
  out.caches.resize(static_cast<std::size_t>(world));
  run_ranks(world, [&](int r) {
    const Device d = devices[static_cast<std::size_t>(r)];
    const DeviceCache cache(d, w.desc(f), w.fp8_scale);
    DeviceBuffer table = DeviceBuffer::from(d, w.table), pos = DeviceBuffer::from(d, tok.positions), rq = DeviceBuffer::from(d, tok.reqs),
                 x = DeviceBuffer::from(d, tok.rows), slots(d, static_cast<std::size_t>(T) * 8);
    const Tensor sm(slots.data(), DType::i64, {T}, d);
    dcp::slot_mapping(pos.view(DType::i64, {T}), rq.view(DType::i32, {T}),
                      table.view(DType::i32, {w.batch(), w.max_blocks}), w.block_size,
                      DcpShard{world, r, w.interleave}, sm);
    const Cache cv = cache.view();
    auto* base = static_cast<uint16_t*>(x.data());
    if (f == CacheFormat::dsv4)
      dsv4_write(x.view(DType::bf16, {T, 512}), sm, cv);
    else
      write_cache(Tensor(base, DType::bf16, {T, 512}, {576, 1}, d), Tensor(base + 512, DType::bf16, {T, 64}, {576, 1}, d),
                  sm, cv);
    synchronize(d);
    out.slots[static_cast<std::size_t>(r)] = slots.to_host<int64_t>();
    out.caches[static_cast<std::size_t>(r)] = cache.bytes.to_host<uint8_t>();
  });
  return out;
}

/// Whether the GPU side of a DCP row can run; the reason when not.
std::optional<Outcome> dcp_gpu_unavailable(const Checker& c) {
  if (!on_gpu(c) || gpu_world(c.device) >= 2) return std::nullopt;
  Outcome o;
  o.status = Status::skip;
  o.note = "not available: DCP over NCCL needs 2+ GPUs, one rank per GPU (--device cpu runs it)";
  return o;
}

void check_slot_mapping(Checker& c) {
  c.row("dcp::slot_mapping + write", "fp8_ds_mla", [&]() -> Outcome {
    if (auto skip = dcp_gpu_unavailable(c)) return *skip;
    const int world = on_gpu(c) ? gpu_world(c.device) : kWorld;
    const CacheFormat f = CacheFormat::fp8_ds_mla;
    const Workload w = make_workload(c.rng, {1, 5, 6, 7, 61, 100}, 576, world, kInterleave);
    const Group g = make_group(c.device, world);
    const Shards got = write_shards(g.devices, w, f);
    Shards want;
    if (on_gpu(c)) {
      want = write_shards(std::vector<Device>(static_cast<std::size_t>(world), Device::cpu()), w, f);
    } else {
      // SPEC §4 by hand: owner (t / I) mod W, local index (t / (I·W))·I + t mod I.
      for (int r = 0; r < world; ++r) {
        std::vector<int64_t> slots;
        for (int b = 0; b < w.batch(); ++b)
          for (int64_t t = 0; t < w.lens[static_cast<std::size_t>(b)]; ++t) {
            const bool mine = (t / kInterleave) % world == r;
            slots.push_back(mine ? w.slot(b, (t / (kInterleave * world)) * kInterleave + t % kInterleave) : -1);
          }
        want.slots.push_back(std::move(slots));
        want.caches.push_back(naive_cache(w, f, r));
      }
    }
    std::size_t diff = 0, total = 0;
    for (int r = 0; r < world; ++r) {
      diff += count_diff(got.slots[static_cast<std::size_t>(r)], want.slots[static_cast<std::size_t>(r)]) +
              count_diff(got.caches[static_cast<std::size_t>(r)], want.caches[static_cast<std::size_t>(r)]);
      total += want.slots[static_cast<std::size_t>(r)].size() + want.caches[static_cast<std::size_t>(r)].size();
    }
    Outcome o = compare_bits(diff, total, "slots+bytes");
    o.note = "W=" + std::to_string(world) + " I=" + std::to_string(kInterleave);
    return o;
  });
}

/// One DCP decode step on every rank of `g`; the ranks' heads stitched back into [B, s_q, H].
AttnResult run_dcp_decode(Group& g, const Workload& w, CacheFormat f, const std::vector<std::vector<uint8_t>>& caches,
                          const std::vector<uint16_t>& q, int s_q, int local_heads, dcp::Merge merge) {
  const int world = g.world(), heads = world * local_heads;
  const int64_t B = w.batch();
  std::vector<std::vector<uint16_t>> outs(static_cast<std::size_t>(world));
  std::vector<std::vector<float>> lses(static_cast<std::size_t>(world));
  run_ranks(world, [&](int r) {
    const Device d = g.devices[static_cast<std::size_t>(r)];
    const DeviceCache cache(d, w.desc(f), w.fp8_scale, caches[static_cast<std::size_t>(r)]);
    DeviceBuffer table = DeviceBuffer::from(d, w.table), qb = DeviceBuffer::from(d, q),
                 lens = DeviceBuffer::from(d, std::vector<int32_t>(w.lens.begin(), w.lens.end())),
                 out(d, static_cast<std::size_t>(B * s_q * local_heads * 512) * 2),
                 lse(d, static_cast<std::size_t>(B * s_q * local_heads) * 4),
                 ws(d, dcp::decode_workspace_size(w.batch(), s_q, local_heads, world, d));
    const Cache cv = cache.view();
    // The rank's heads are a strided slice of the full query.
    const int64_t hs = static_cast<int64_t>(heads) * 576;
    const Tensor ql(static_cast<uint16_t*>(qb.data()) + static_cast<int64_t>(r) * local_heads * 576, DType::bf16,
                    {B, s_q, local_heads, 576}, {s_q * hs, hs, 576, 1}, d);
    dcp::DecodeOptions o;
    o.softmax_scale = static_cast<float>(kScale);
    o.causal = true;
    o.interleave = w.interleave;
    o.merge = merge;
    dcp::decode(*g.comms[static_cast<std::size_t>(r)], ql, cv, table.view(DType::i32, {B, w.max_blocks}),
                lens.view(DType::i32, {B}), out.view(DType::bf16, {B, s_q, local_heads, 512}),
                lse.view(DType::f32, {B, s_q, local_heads}), o, Workspace{ws.data(), ws.bytes()});
    synchronize(d);
    outs[static_cast<std::size_t>(r)] = out.to_host<uint16_t>();
    lses[static_cast<std::size_t>(r)] = lse.to_host<float>();
  });
  AttnResult res;
  res.out.resize(static_cast<std::size_t>(B * s_q * heads * 512));
  res.lse.resize(static_cast<std::size_t>(B * s_q * heads));
  for (int r = 0; r < world; ++r)
    for (int64_t t = 0; t < B * s_q; ++t)
      for (int n = 0; n < local_heads; ++n) {
        const std::size_t src = static_cast<std::size_t>(t * local_heads + n),
                          dst = static_cast<std::size_t>(t * heads + r * local_heads + n);
        res.lse[dst] = lses[static_cast<std::size_t>(r)][src];
        for (int i = 0; i < 512; ++i)
          res.out[dst * 512 + i] = num::bf16_to_f32(outs[static_cast<std::size_t>(r)][src * 512 + i]);
      }
  return res;
}

/// The chunked-prefill context gather on every rank of `g`: each rank's f32 output rows.
std::vector<std::vector<float>> run_gather_context(Group& g, const Workload& w, CacheFormat f,
                                                   const std::vector<std::vector<uint8_t>>& caches,
                                                   const std::vector<int32_t>& cu, const std::vector<int32_t>& starts) {
  const int world = g.world();
  const int64_t rows = cu.back(), width = naive_row_width(f);
  std::vector<std::vector<float>> outs(static_cast<std::size_t>(world));
  run_ranks(world, [&](int r) {
    const Device d = g.devices[static_cast<std::size_t>(r)];
    const CacheDesc desc = w.desc(f);
    const DeviceCache cache(d, desc, w.fp8_scale, caches[static_cast<std::size_t>(r)]);
    DeviceBuffer table = DeviceBuffer::from(d, w.table), cub = DeviceBuffer::from(d, cu), sb = DeviceBuffer::from(d, starts),
                 out(d, static_cast<std::size_t>(rows * width) * 4),
                 ws(d, dcp::gather_context_workspace_size(desc, rows, w.batch(), world, w.interleave));
    const Cache cv = cache.view();
    dcp::gather_context(*g.comms[static_cast<std::size_t>(r)], cv, table.view(DType::i32, {w.batch(), w.max_blocks}),
                        cub.view(DType::i32, {w.batch() + 1}), sb.view(DType::i32, {w.batch()}),
                        out.view(DType::f32, {rows, width}), w.interleave, Workspace{ws.data(), ws.bytes()});
    synchronize(d);
    outs[static_cast<std::size_t>(r)] = out.to_host<float>();
  });
  return outs;
}

void check_dcp(Checker& c) {
  for (dcp::Merge merge : {dcp::Merge::all_to_all, dcp::Merge::allgather_reduce_scatter}) {
    const std::string op = merge == dcp::Merge::all_to_all ? "dcp::decode (all-to-all)" : "dcp::decode (ag + rs)";
    for (CacheFormat f : kMlaFormats) {
      c.row(op, format_name(f), [&]() -> Outcome {
        if (auto skip = dcp_gpu_unavailable(c)) return *skip;
        const int world = on_gpu(c) ? gpu_world(c.device) : kWorld;
        // Lengths around the shard edges: shorter than one rank's run, one full round, ragged.
        const Workload w = make_workload(c.rng, {1, 5, 6, 7, 61, 100}, 576, world, kInterleave);
        const auto caches = naive_cache_shards(w, f);
        const int s_q = 2, local_heads = 2, heads = world * local_heads;
        const auto q = random_q(c, static_cast<std::size_t>(w.batch() * s_q * heads * 576));
        Group g = make_group(c.device, world);
        const AttnResult got = run_dcp_decode(g, w, f, caches, q, s_q, local_heads, merge);
        Outcome o;
        if (on_gpu(c)) {
          Group ref = make_group(Device::cpu(), world);
          const AttnResult want = run_dcp_decode(ref, w, f, caches, q, s_q, local_heads, merge);
          o = compare_values(got.out, want.out, 4e-3, got.lse, want.lse, f == CacheFormat::fp8_ds_mla ? 4e-3 : 1e-3);
        } else {
          AttnResult want = naive_decode_all(w, f, caches, q, s_q, heads);
          // dcp::decode returns bf16: hold it to the rounded reference, where only a rounding
          // tipped by the fp32 merge can differ.
          for (auto& v : want.out) v = num::round_bf16(static_cast<float>(v));
          o = compare_values(got.out, want.out, 1e-3, got.lse, want.lse, 1e-5);
        }
        o.note = "W=" + std::to_string(world) + " I=" + std::to_string(kInterleave) + ", s_q=2 causal";
        return o;
      });
    }
  }
  for (CacheFormat f : kFormats) {
    c.row("dcp::gather_context", format_name(f), [&]() -> Outcome {
      if (auto skip = dcp_gpu_unavailable(c)) return *skip;
      const int world = on_gpu(c) ? gpu_world(c.device) : kWorld;
      const Workload w = make_workload(c.rng, {40, 7, 100, 0, 61}, naive_row_width(f), world, kInterleave);
      const auto caches = naive_cache_shards(w, f);
      // Chunks start on multiples of interleave · world, as SPEC §4 requires.
      const int align = world * kInterleave;
      std::vector<int32_t> cu{0}, starts;
      for (int len : w.lens) {
        const int start = len > align ? align * static_cast<int>(c.rng() % static_cast<uint64_t>(len / align)) : 0;
        starts.push_back(start);
        cu.push_back(cu.back() + (len - start));
      }
      Group g = make_group(c.device, world);
      const auto outs = run_gather_context(g, w, f, caches, cu, starts);
      std::vector<float> want;
      if (on_gpu(c)) {
        Group ref = make_group(Device::cpu(), world);
        want = run_gather_context(ref, w, f, caches, cu, starts).front();
      } else {
        const int64_t width = naive_row_width(f);
        want.resize(static_cast<std::size_t>(cu.back() * width));
        for (int b = 0; b < w.batch(); ++b)
          for (int32_t i = cu[static_cast<std::size_t>(b)]; i < cu[static_cast<std::size_t>(b) + 1]; ++i) {
            const auto row =
                naive_row(w, f, caches, b, starts[static_cast<std::size_t>(b)] + i - cu[static_cast<std::size_t>(b)]);
            for (int k = 0; k < width; ++k)
              want[static_cast<std::size_t>(i * width + k)] = static_cast<float>(row[static_cast<std::size_t>(k)]);
          }
      }
      // Every rank must end with the whole context.
      std::size_t diff = 0;
      for (const auto& o : outs) diff += count_diff(o, want);
      Outcome o = compare_bits(diff, want.size() * static_cast<std::size_t>(world), "values");
      o.note = "W=" + std::to_string(world) + " I=" + std::to_string(kInterleave);
      return o;
    });
  }
}

int run_check(const std::string& device_spec, uint64_t seed) {
  Checker c{resolve_device(device_spec), std::mt19937_64(seed)};
  std::cout << "mlakv check on " << c.device.str()
            << (c.device.is_cpu() ? ": CPU reference against an independent naive implementation"
                                  : ": CUDA kernels against the CPU reference")
            << " (seed " << seed << ")\n\n";
  check_writes(c);
  check_gathers(c);
  check_dsv4_gather(c);
  check_decode(c);
  check_merge(c);
  check_slot_mapping(c);
  check_dcp(c);
  c.table.left_align({true, true, true, false, false, true});
  c.table.print(std::cout);
  std::cout << '\n' << c.passed << " passed, " << c.failed << " failed, " << c.skipped << " skipped\n";
  return c.failed ? 1 : 0;
}

}  // namespace

CommandFn add_check_command(CLI::App& root) {
  auto device = std::make_shared<std::string>("auto");
  auto seed = std::make_shared<uint64_t>(1);
  CLI::App* app = root.add_subcommand("check", "Run every op and the DCP path for every format against a reference");
  app->add_option("--device", *device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  app->add_option("--seed", *seed, "random seed for the inputs")->capture_default_str();
  return [device, seed] { return run_check(*device, *seed); };
}

}  // namespace mlakv::cli
