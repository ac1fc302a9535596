// Randomized bad input for every public op with a CPU path (SPEC §5). Each call starts from a valid
// one and applies a few random mutations: dims (0, negative, huge, off by one), strides (0,
// negative, huge, overlapping), dtype, device, data pointers (null, misaligned), ndim, values in
// index tensors (block ids, lengths, slots, cu_seq_lens: negative, out of range, INT_MAX,
// decreasing), scalar parameters (NaN, inf, 0, negative) and the cache descriptor (block_size,
// num_blocks, block_stride, format, scale). Every buffer sits between guard bytes and outputs
// are poisoned. A call must either
//   - throw mlakv::Error, leaving every buffer (guards included) byte for byte as it was, or
//   - succeed, leaving inputs and everything outside the outputs' views untouched;
// any other exception, a crash or a sanitizer report is a bug. Some mutations make the call
// invalid for sure (negative dims, null data, NaN scales, views whose byte extent overflows
// int64, ...): those must throw.
//
// Views are backed by real memory: a mutated view that no longer fits its buffer gets a larger
// one (contents repeated), so that an op may touch all of what it was given (the workspace too).
// A view too large to back (huge dims with real strides) only runs the op's validator
// (src/validate.hpp); a block table with huge rows gets reserved, zero-filled address space for
// the entries a validator can reach; other index tensors too large to back, and ops without a
// separate validator, skip such calls. A call that must be rejected always runs the op itself.
//
// MLAKV_FUZZ_TRACE=1 prints each call before it runs (to find the one a sanitizer stops at);
// MLAKV_FUZZ_SCALE=k multiplies the number of calls.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sys/mman.h>

#include "mlakv/mlakv.hpp"
#include "validate.hpp"

namespace mlakv::test {
namespace {

using i128 = __int128;

constexpr std::size_t kGuard = 256;               // guard bytes on each side of every buffer
constexpr std::size_t kMaxBacked = 32u << 20;     // larger views are not backed by memory
constexpr uint8_t kGuardByte = 0xA5, kPoison = 0xCD;
constexpr int64_t kI64Max = INT64_MAX, kI64Min = INT64_MIN;

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  int64_t below(int64_t n) { return n <= 0 ? 0 : static_cast<int64_t>(g() % static_cast<uint64_t>(n)); }
  bool chance(int pct) { return below(100) < pct; }
  template <class T> T pick(std::initializer_list<T> v) { return v.begin()[below(static_cast<int64_t>(v.size()))]; }
  template <class T> T pick(const std::vector<T>& v) { return v[static_cast<std::size_t>(below(static_cast<int64_t>(v.size())))]; }
  float normal() { return std::normal_distribution<float>(0.0f, 1.0f)(g); }
};

// ---- memory ---------------------------------------------------------------------------------------

struct Buffer {
  std::vector<uint8_t> mem;  // guard | alignment pad | payload | guard
  std::size_t off = 0, size = 0;
  uint8_t* payload() { return mem.data() + off; }
  uint8_t* begin() { return mem.data(); }
  uint8_t* end() { return mem.data() + mem.size(); }
};

std::unique_ptr<Buffer> make_buffer(std::size_t size) {
  auto b = std::make_unique<Buffer>();
  b->mem.assign(kGuard + 64 + size + kGuard, kGuardByte);
  const auto base = reinterpret_cast<std::uintptr_t>(b->mem.data()) + kGuard;
  b->off = static_cast<std::size_t>((base + 63) / 64 * 64 - reinterpret_cast<std::uintptr_t>(b->mem.data()));
  b->size = size;
  return b;
}

// Address space reserved (MAP_NORESERVE, zero-filled on demand) for a block table whose rows
// are huge: a validator reads only the entries the lengths and starts reach.
struct Mapping {
  void* p = MAP_FAILED;
  std::size_t n = 0;
  explicit Mapping(std::size_t bytes) : n(bytes) {
    p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  }
  Mapping(const Mapping&) = delete;
  ~Mapping() {
    if (p != MAP_FAILED) munmap(p, n);
  }
};

enum class Role { in, out, index };

struct Arg {
  std::string name;
  Tensor* t;
  Buffer* buf;
  Role role;
  Tensor orig;      // as built: where index values live
  int64_t bound;    // a meaningful upper bound for index values (capacity, num_blocks, rows)
  const bool* present = nullptr;  // optional arguments: whether the op gets it
};

// Byte extent [lo, hi) of a view relative to its data pointer; !ok for an ndim or a dim that no
// tensor can have (the op must reject it). i128 holds every product of two int64.
struct Extent {
  bool ok = false;
  bool empty = true;
  i128 lo = 0, hi = 0, numel = 0;
};

Extent extent_of(const Tensor& t) {
  Extent e;
  if (t.ndim < 0 || t.ndim > kMaxDims) return e;
  e.numel = 1;
  for (int d = 0; d < t.ndim; ++d) {
    if (t.shape[d] < 0) return e;
    if (t.shape[d] == 0) e.numel = 0;
  }
  e.ok = true;
  if (e.numel == 0) return e;
  e.empty = false;
  const i128 cap = static_cast<i128>(1) << 100;
  for (int d = 0; d < t.ndim; ++d) {
    e.numel = e.numel * t.shape[d];
    if (e.numel > cap) e.numel = cap;
    const i128 span = static_cast<i128>(t.shape[d] - 1) * t.stride[d];
    (span < 0 ? e.lo : e.hi) += span;
  }
  const auto es = static_cast<i128>(dtype_size(t.dtype));
  e.lo *= es;
  e.hi = (e.hi + 1) * es;
  return e;
}

bool fits_i64(i128 v) { return v <= kI64Max && v >= kI64Min; }
// v clamped to int, for parameters derived from others that may already be extreme.
int sat(int64_t v) { return static_cast<int>(std::clamp<int64_t>(v, INT_MIN, INT_MAX)); }
int64_t sat64(i128 v) { return static_cast<int64_t>(std::clamp<i128>(v, kI64Min, kI64Max)); }

// ---- one call -------------------------------------------------------------------------------------

struct Case {
  std::string op;
  std::vector<std::unique_ptr<Buffer>> bufs;
  std::deque<Tensor> tensors;
  std::vector<Arg> args;
  std::deque<bool> flags;  // presence of optional tensors
  std::deque<Mapping> maps;

  bool has_cache = false, writes_cache = false;
  Cache cache{};
  Buffer* cache_buf = nullptr;
  Buffer* scale_buf = nullptr;  // the fp8 scale (and q scales)
  bool uses_scale = false;      // whether the op reads cache.scale (fp8)

  bool has_ws = false;
  Workspace ws{};
  Buffer* ws_buf = nullptr;

  std::function<void()> run, validate;
  std::vector<std::function<void(Rng&, std::ostream&)>> scalar_mutators;
  std::function<void(std::vector<std::string>&)> must_rules;  // reasons the mutated call is invalid
  std::function<void(std::ostream&)> check_ok;                // extra checks after a success

  Buffer* buffer(std::size_t bytes) {
    bufs.push_back(make_buffer(bytes));
    return bufs.back().get();
  }

  // A tensor with its own buffer, `strides` in elements (empty: contiguous).
  Tensor& add(const std::string& name, Role role, DType dt, std::vector<int64_t> shape, std::vector<int64_t> strides = {},
              int64_t bound = 0) {
    Tensor t;
    t.dtype = dt;
    t.ndim = static_cast<int>(shape.size());
    int64_t st = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
      t.shape[d] = shape[d];
      t.stride[d] = strides.empty() ? st : strides[d];
      st *= shape[d];
    }
    const Extent e = extent_of(t);
    Buffer* b = buffer(e.empty ? 0 : static_cast<std::size_t>(e.hi));
    std::memset(b->payload(), role == Role::out ? kPoison : 0, b->size);
    t.data = b->payload();
    tensors.push_back(t);
    args.push_back({name, &tensors.back(), b, role, t, bound});
    return tensors.back();
  }
  Arg& arg(const std::string& name) {
    for (auto& a : args)
      if (a.name == name) return a;
    throw std::logic_error("no arg " + name);
  }
  bool* flag(bool v) {
    flags.push_back(v);
    return &flags.back();
  }
};

// ---- element access on the views the builders made (contiguous or strided, always backed) ---------

uint8_t* elem(const Tensor& t, std::initializer_list<int64_t> idx) {
  int64_t off = 0;
  int d = 0;
  for (int64_t i : idx) off += i * t.stride[d++];
  return static_cast<uint8_t*>(t.data) + off * static_cast<int64_t>(dtype_size(t.dtype));
}
void put_int(const Tensor& t, std::initializer_list<int64_t> idx, int64_t v) {
  uint8_t* p = elem(t, idx);
  if (t.dtype == DType::i64) {
    std::memcpy(p, &v, 8);
  } else {
    const auto w = static_cast<int32_t>(v);
    std::memcpy(p, &w, 4);
  }
}
int64_t get_int(const Tensor& t, std::initializer_list<int64_t> idx) {
  const uint8_t* p = elem(t, idx);
  if (t.dtype == DType::i64) {
    int64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
// Random bf16 / f32 values in every element of rows [0, shape[0]) x [0, width) of a 2-D view
// (or all of a contiguous view).
void fill_values(Rng& r, const Tensor& t) {
  const Extent e = extent_of(t);
  if (e.empty) return;
  auto* p = static_cast<uint8_t*>(t.data);
  const std::size_t es = dtype_size(t.dtype);
  for (std::size_t i = 0; i + es <= static_cast<std::size_t>(e.hi); i += es) {
    if (t.dtype == DType::f32) {
      const float f = r.normal();
      std::memcpy(p + i, &f, 4);
    } else if (t.dtype == DType::bf16) {
      const uint16_t b = num::f32_to_bf16(r.normal());
      std::memcpy(p + i, &b, 2);
    } else {
      p[i] = static_cast<uint8_t>(r.below(0x7F));  // finite e4m3 / bytes
    }
  }
}

// ---- the cache ------------------------------------------------------------------------------------

void fill_cache_bytes(uint8_t* p, std::size_t n) {
  // Bytes 1..63: finite as e4m3, bf16 pairs, float scales and UE8M0 exponents alike.
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(1 + (i * 37) % 63);
}

void add_cache(Case& c, Rng& r, CacheFormat f, int64_t num_blocks, int block_size, bool writes) {
  c.has_cache = true;
  c.writes_cache = writes;
  c.uses_scale = true;
  CacheDesc d{f, num_blocks, block_size, 0};
  if (r.chance(25)) d.block_stride = d.stride_bytes() + 64;  // padded blocks
  c.cache.desc = d;
  c.cache_buf = c.buffer(static_cast<std::size_t>(d.total_bytes()));
  fill_cache_bytes(c.cache_buf->payload(), c.cache_buf->size);
  c.cache.data = c.cache_buf->payload();
  c.cache.device = Device::cpu();
  if (!c.scale_buf) c.scale_buf = c.buffer(64);
  const float s = 0.25f + static_cast<float>(r.below(8)) * 0.125f;
  std::memcpy(c.scale_buf->payload(), &s, 4);
  c.cache.scale = reinterpret_cast<const float*>(c.scale_buf->payload());

  auto& sm = c.scalar_mutators;
  sm.push_back([&c](Rng& r, std::ostream& log) {
    const int64_t nb = c.cache.desc.num_blocks;
    c.cache.desc.num_blocks = r.pick<int64_t>({0, -1, sat64(i128{nb} - 1), sat64(i128{nb} + 1), int64_t{1} << 40, int64_t{1} << 62, kI64Max, kI64Min});
    log << "cache.desc.num_blocks=" << c.cache.desc.num_blocks << "; ";
  });
  sm.push_back([&c](Rng& r, std::ostream& log) {
    const int bs = c.cache.desc.block_size;
    c.cache.desc.block_size = r.pick<int>({0, -1, INT_MIN, sat(int64_t{bs} + 1), sat(int64_t{bs} * 2), std::max(1, bs / 2), 3, 1 << 20, INT_MAX});
    log << "cache.desc.block_size=" << c.cache.desc.block_size << "; ";
  });
  sm.push_back([&c](Rng& r, std::ostream& log) {
    const int64_t dense = c.cache.desc.dense_block_bytes();
    c.cache.desc.block_stride = r.pick<int64_t>({-1, -(int64_t{1} << 40), 1, dense - 1, dense + 1, dense + 2, dense + 4,
                                                 sat64(i128{dense} * 2), int64_t{1} << 40, int64_t{1} << 62, kI64Max, kI64Min});
    log << "cache.desc.block_stride=" << c.cache.desc.block_stride << "; ";
  });
  sm.push_back([&c](Rng& r, std::ostream& log) {
    c.cache.desc.format = static_cast<CacheFormat>(r.pick<int>({0, 1, 2, 3, 4, 255}));
    log << "cache.desc.format=" << static_cast<int>(c.cache.desc.format) << "; ";
  });
  sm.push_back([&c](Rng& r, std::ostream& log) {
    const int k = static_cast<int>(r.below(5));
    c.cache.data = k == 0 ? nullptr : static_cast<uint8_t*>(c.cache.data) + k;
    log << "cache.data+=" << k << (k == 0 ? "(null)" : "") << "; ";
  });
  sm.push_back([&c](Rng& r, std::ostream& log) {
    const int k = static_cast<int>(r.below(3));
    c.cache.scale = k == 0 ? nullptr : reinterpret_cast<const float*>(c.scale_buf->payload() + 8 + k);
    if (k) {
      const float one = 1.0f;
      std::memcpy(c.scale_buf->payload() + 8 + k, &one, 4);
    }
    log << "cache.scale=" << (k == 0 ? "null" : "misaligned") << "; ";
  });
  sm.push_back([&c](Rng& r, std::ostream& log) {
    const float v = r.pick<float>({NAN, INFINITY, -INFINITY, 0.0f, -0.0f, -1.0f, 1e-45f, FLT_MIN, FLT_MAX});
    if (c.cache.scale) std::memcpy(const_cast<float*>(c.cache.scale), &v, 4);
    log << "*cache.scale=" << v << "; ";
  });
  sm.push_back([&c](Rng&, std::ostream& log) {
    c.cache.device = Device::cuda(0);
    log << "cache.device=cuda:0; ";
  });
}

// Extent of the cache in bytes, or nullopt where the descriptor is invalid (the op must reject).
std::optional<i128> cache_extent(const Cache& c, std::vector<std::string>& must) {
  const CacheDesc& d = c.desc;
  const auto f = static_cast<int>(d.format);
  if (f < 0 || f > 3) return must.push_back("unknown cache format"), std::nullopt;
  if (d.num_blocks < 0) return must.push_back("negative num_blocks"), std::nullopt;
  if (d.block_size < 1) return must.push_back("block_size < 1"), std::nullopt;
  const i128 dense = static_cast<i128>(d.token_bytes()) * d.block_size;
  if (d.block_stride != 0 && d.block_stride < dense) return must.push_back("block_stride below a dense block"), std::nullopt;
  if (!c.data && d.num_blocks > 0) return must.push_back("null cache data"), std::nullopt;
  i128 stride = d.block_stride > 0 ? static_cast<i128>(d.block_stride) : dense;
  if (d.block_stride == 0 && d.format == CacheFormat::dsv4) stride = (dense + 575) / 576 * 576;
  const i128 total = stride * d.num_blocks;
  if (!fits_i64(total)) return must.push_back("cache extent beyond int64"), std::nullopt;
  return total;
}

// ---- generic tensor mutations ----------------------------------------------------------------------

void mutate_tensor(Rng& r, Arg& a, std::ostream& log) {
  Tensor& t = *a.t;
  const int nd = std::max(0, std::min(t.ndim, kMaxDims));
  const int d = nd ? static_cast<int>(r.below(nd)) : 0;
  int kind = static_cast<int>(r.below(a.role == Role::index ? 9 : 7));
  if (kind >= 7 && extent_of(a.orig).empty) kind = 0;
  log << a.name << ": ";
  switch (kind) {
    case 0:
    case 1: {  // a dimension
      if (!nd) break;
      const int64_t s = t.shape[d];
      t.shape[d] = r.pick<int64_t>({0, -1, -(int64_t{1} << 40), sat64(i128{s} - 1), sat64(i128{s} + 1), sat64(i128{s} * 2), int64_t{1} << 31, (int64_t{1} << 32) + 1,
                                    int64_t{1} << 40, int64_t{1} << 60, (int64_t{1} << 61) - 1, int64_t{1} << 62, kI64Max});
      log << "shape[" << d << "]=" << t.shape[d];
      if (r.chance(20)) {  // a broadcast: huge count, no memory
        t.stride[d] = 0;
        log << " stride 0";
      }
      break;
    }
    case 2: {  // a stride
      if (!nd) break;
      const int64_t s = t.stride[d];
      t.stride[d] = r.pick<int64_t>({0, -1, sat64(-i128{s}), sat64(i128{s} + 1), sat64(i128{s} - 1), s / 2, sat64(i128{s} * 2 + 64), int64_t{1} << 20, int64_t{1} << 40,
                                     int64_t{1} << 62, kI64Max, kI64Min, -(int64_t{1} << 62)});
      log << "stride[" << d << "]=" << t.stride[d];
      break;
    }
    case 3:
      t.dtype = static_cast<DType>(r.pick<int>({0, 1, 2, 3, 4, 5, 6, 7, 200}));
      log << "dtype=" << static_cast<int>(t.dtype);
      break;
    case 4:
      t.device = r.pick<Device>({Device::cuda(0), Device::cuda(1), Device{DeviceKind::cpu, 1}});
      log << "device=" << t.device.str() << "/" << t.device.index;
      break;
    case 5: {
      const int k = static_cast<int>(r.below(4));
      t.data = k == 0 ? nullptr : static_cast<uint8_t*>(t.data) + k;
      log << "data+=" << k << (k == 0 ? "(null)" : "");
      break;
    }
    case 6:
      t.ndim = r.pick<int>({-1, 0, t.ndim - 1, t.ndim + 1, kMaxDims + 1});
      if (t.ndim > 0 && t.ndim <= kMaxDims && t.shape[t.ndim - 1] == 0) t.shape[t.ndim - 1] = 1, t.stride[t.ndim - 1] = 1;
      log << "ndim=" << t.ndim;
      break;
    default: {  // a value of an index tensor, at a random element of the view as built
      const Tensor& o = a.orig;
      std::vector<int64_t> idx(static_cast<std::size_t>(o.ndim));
      for (int k = 0; k < o.ndim; ++k) idx[static_cast<std::size_t>(k)] = r.below(o.shape[k]);
      int64_t off = 0;
      for (int k = 0; k < o.ndim; ++k) off += idx[static_cast<std::size_t>(k)] * o.stride[k];
      const int64_t es = static_cast<int64_t>(dtype_size(o.dtype));
      uint8_t* p = static_cast<uint8_t*>(o.data) + off * es;
      int64_t cur = 0;
      if (o.dtype == DType::i64) std::memcpy(&cur, p, 8);
      else {
        int32_t w;
        std::memcpy(&w, p, 4);
        cur = w;
      }
      const int64_t b = a.bound;
      std::vector<int64_t> vals = {-1, -2, INT32_MIN, INT32_MAX, INT32_MAX - 1, b, b - 1, b + 1, sat64(i128{cur} - 1), sat64(i128{cur} + 1), 2 * b + 7, 1 << 20};
      if (o.dtype == DType::i64) vals.insert(vals.end(), {kI64Min, kI64Max, int64_t{1} << 40, int64_t{1} << 62, -(int64_t{1} << 62)});
      const int64_t v = r.pick(vals);
      if (o.dtype == DType::i64) std::memcpy(p, &v, 8);
      else {
        const auto w = static_cast<int32_t>(v);
        std::memcpy(p, &w, 4);
      }
      log << "value at offset " << off << " " << cur << " -> " << (o.dtype == DType::i64 ? v : static_cast<int32_t>(v));
    }
  }
  log << "; ";
}

// ---- running one case ------------------------------------------------------------------------------

enum class Mode { full, validator_only, skip };

struct Stats {
  int calls = 0, accepted = 0, rejected = 0, validator_only = 0, skipped = 0;
  std::vector<std::string> failures;
};

bool trace() {
  static const bool on = std::getenv("MLAKV_FUZZ_TRACE") != nullptr;
  return on;
}

// Makes every view fit real memory where it can; collects what makes the call certainly invalid.
Mode back_views(Case& c, std::vector<std::string>& must, bool& device_changed) {
  Mode mode = Mode::full;
  for (Arg& a : c.args) {
    if (a.present && !*a.present) continue;
    Tensor& t = *a.t;
    if (!(t.device == Device::cpu())) device_changed = true;
    const Extent e = extent_of(t);
    if (!e.ok) {
      must.push_back(a.name + ": ndim or a dim out of range");
      continue;
    }
    if (e.numel > kI64Max) must.push_back(a.name + ": numel beyond int64");
    if (e.empty) continue;
    if (!fits_i64(e.lo) || !fits_i64(e.hi)) {
      must.push_back(a.name + ": byte extent beyond int64");
      continue;
    }
    if (!t.data) {
      must.push_back(a.name + ": null data");
      continue;
    }
    if (e.hi - e.lo > static_cast<i128>(kMaxBacked)) {
      if (a.role != Role::index) {
        if (mode == Mode::full) mode = Mode::validator_only;
        continue;
      }
      // A 2-D index tensor (a block table) with huge contiguous rows: a validator reads entries
      // [0, ~2^32) of each row at most (positions are int32). Reserve that much, zero-filled
      // (block id 0 is valid), with the old payload in place; run only the validator.
      Tensor rows = t;
      rows.shape[1] = 1;
      const Extent er = extent_of(rows);
      const i128 reach = (static_cast<i128>(1) << 32) * static_cast<i128>(dtype_size(t.dtype));
      if (t.ndim != 2 || t.stride[1] != 1 || !er.ok || er.hi - er.lo > static_cast<i128>(kMaxBacked)) {
        mode = Mode::skip;
        continue;
      }
      const auto* old_data = static_cast<const uint8_t*>(t.data);
      const std::ptrdiff_t phase = old_data - a.buf->payload();
      const auto pre = static_cast<std::size_t>((-er.lo + 4095) / 4096 * 4096) + 4096;
      Mapping& m = c.maps.emplace_back(pre + static_cast<std::size_t>(er.hi + reach) + 4096);
      if (m.p == MAP_FAILED) {
        mode = Mode::skip;
        continue;
      }
      auto* nd = static_cast<uint8_t*>(m.p) + pre + reinterpret_cast<std::uintptr_t>(old_data) % 64;
      if (phase >= 0) std::memcpy(nd - phase, a.buf->payload(), a.buf->size);
      t.data = nd;
      if (mode == Mode::full) mode = Mode::validator_only;
      continue;
    }
    auto* data = static_cast<uint8_t*>(t.data);
    if (data + static_cast<std::ptrdiff_t>(e.lo) >= a.buf->begin() && data + static_cast<std::ptrdiff_t>(e.hi) <= a.buf->end())
      continue;
    // A larger buffer, its contents the old payload repeated, in phase with the data pointer.
    Buffer* old = a.buf;
    const std::size_t mis = reinterpret_cast<std::uintptr_t>(data) % 64;
    const auto pre = static_cast<std::size_t>((-e.lo + 63) / 64 * 64);
    Buffer* nb = c.buffer(pre + mis + static_cast<std::size_t>(e.hi) + 64);
    uint8_t* nd = nb->payload() + pre + mis;
    const std::ptrdiff_t phase = data - old->payload();
    for (std::size_t i = 0; i < nb->size; ++i) {
      if (old->size == 0) {
        nb->payload()[i] = a.role == Role::out ? kPoison : 0;
        continue;
      }
      const i128 k = static_cast<i128>(i) - static_cast<i128>(nd - nb->payload()) + phase;
      const auto n = static_cast<i128>(old->size);
      nb->payload()[i] = old->payload()[static_cast<std::size_t>(((k % n) + n) % n)];
    }
    t.data = nd;
    a.buf = nb;
  }
  if (c.has_cache) {
    if (!(c.cache.device == Device::cpu())) device_changed = true;
    if (c.uses_scale && c.cache.desc.format == CacheFormat::fp8) {
      if (!c.cache.scale) {
        must.push_back("null fp8 scale");
      } else {
        float s;
        std::memcpy(&s, c.cache.scale, 4);
        if (!(std::isfinite(s) && s > 0)) must.push_back("fp8 scale not finite and > 0");
      }
    }
    if (const auto ext = cache_extent(c.cache, must)) {
      auto* data = static_cast<uint8_t*>(c.cache.data);
      if (*ext > static_cast<i128>(kMaxBacked)) {
        if (mode == Mode::full) mode = Mode::validator_only;
      } else if (*ext > 0 && !(data >= c.cache_buf->begin() && data + static_cast<std::ptrdiff_t>(*ext) <= c.cache_buf->end())) {
        Buffer* old = c.cache_buf;
        const std::size_t mis = reinterpret_cast<std::uintptr_t>(data) % 64;
        Buffer* nb = c.buffer(mis + static_cast<std::size_t>(*ext) + 64);
        fill_cache_bytes(nb->payload(), nb->size);
        const std::ptrdiff_t phase = data - old->payload();
        const std::size_t keep = phase >= 0 && static_cast<std::size_t>(phase) < old->size ? old->size - static_cast<std::size_t>(phase) : 0;
        std::memcpy(nb->payload() + mis, data, std::min(keep, static_cast<std::size_t>(*ext)));
        c.cache.data = nb->payload() + mis;
        c.cache_buf = nb;
      }
    }
  }
  if (c.has_ws && c.ws.data) {
    // The workspace is memory too: an op may use all c.ws.bytes of it.
    auto* data = static_cast<uint8_t*>(c.ws.data);
    const auto avail = static_cast<std::size_t>(c.ws_buf->end() - data);
    if (c.ws.bytes > kMaxBacked) {
      mode = Mode::skip;
    } else if (c.ws.bytes > avail) {
      Buffer* nb = c.buffer(c.ws.bytes + 64);
      c.ws.data = nb->payload() + reinterpret_cast<std::uintptr_t>(data) % 64;
      c.ws_buf = nb;
    }
  }
  if (c.must_rules) c.must_rules(must);
  return mode;
}

// Byte ranges an accepted call may change.
std::vector<std::pair<i128, i128>> writable(Case& c) {
  std::vector<std::pair<i128, i128>> w;
  for (Arg& a : c.args) {
    if (a.role != Role::out || (a.present && !*a.present)) continue;
    const Extent e = extent_of(*a.t);
    if (!e.ok || e.empty || !a.t->data) continue;
    // In integers: an unbacked view may reach beyond the address space.
    const auto p = static_cast<i128>(reinterpret_cast<std::uintptr_t>(a.t->data));
    w.emplace_back(std::max<i128>(p + e.lo, 0), std::min<i128>(p + e.hi, static_cast<i128>(UINTPTR_MAX)));
  }
  if (c.has_cache && c.writes_cache && c.cache.data) {
    const auto p = static_cast<i128>(reinterpret_cast<std::uintptr_t>(c.cache.data));
    std::vector<std::string> ignore;
    if (const auto ext = cache_extent(c.cache, ignore)) w.emplace_back(p, p + *ext);
  }
  if (c.has_ws && c.ws.data) {
    const auto p = static_cast<i128>(reinterpret_cast<std::uintptr_t>(c.ws.data));
    w.emplace_back(p, p + static_cast<i128>(c.ws.bytes));
  }
  return w;
}

void run_case(Case& c, Rng& r, uint64_t seed, bool mutate, Stats& st) {
  std::ostringstream log;
  log << c.op << " seed " << seed << ": ";
  if (mutate) {
    const int n = r.chance(60) ? 1 : (r.chance(75) ? 2 : 3);
    for (int i = 0; i < n; ++i) {
      const auto total = static_cast<int64_t>(c.args.size() + c.scalar_mutators.size());
      const int64_t k = r.below(total);
      if (k < static_cast<int64_t>(c.args.size())) {
        Arg& a = c.args[static_cast<std::size_t>(k)];
        if (a.present && !*a.present) *const_cast<bool*>(a.present) = true;
        mutate_tensor(r, a, log);
      } else {
        c.scalar_mutators[static_cast<std::size_t>(k - static_cast<int64_t>(c.args.size()))](r, log);
      }
    }
  } else {
    log << "(valid baseline)";
  }
  std::vector<std::string> must;
  bool device_changed = false;
  Mode mode = back_views(c, must, device_changed);
  if (mode == Mode::full && device_changed) must.push_back("a non-CPU device (no CUDA in this build)");
  // A call that must be rejected must not touch any memory: run the op itself even where views
  // are not backed.
  if (!must.empty()) mode = Mode::full;
  if (mode == Mode::skip || (mode == Mode::validator_only && !c.validate)) {
    ++st.skipped;
    return;
  }
  if (trace()) std::cerr << "[fuzz] " << log.str() << (mode == Mode::full ? "" : " (validator only)") << std::endl;

  std::vector<std::vector<uint8_t>> before;
  before.reserve(c.bufs.size());
  for (auto& b : c.bufs) before.push_back(b->mem);

  ++st.calls;
  if (mode == Mode::validator_only) ++st.validator_only;
  auto fail = [&](const std::string& what) {
    if (st.failures.size() < 30) st.failures.push_back(log.str() + "\n    -> " + what);
  };
  bool threw = false;
  std::string message;
  try {
    (mode == Mode::full ? c.run : c.validate)();
  } catch (const Error& e) {
    threw = true;
    message = e.what();
  } catch (const std::exception& e) {
    return fail(std::string("threw a non-mlakv exception: ") + e.what());
  } catch (...) {
    return fail("threw a non-std exception");
  }
  if (threw) {
    ++st.rejected;
    if (!mutate) fail("the valid baseline was rejected: " + message);
    if (message.empty()) fail("mlakv::Error with an empty message");
    for (std::size_t i = 0; i < c.bufs.size(); ++i)
      if (c.bufs[i]->mem != before[i]) return fail("rejected (" + message + ") but buffer " + std::to_string(i) + " changed");
    return;
  }
  ++st.accepted;
  if (!must.empty()) return fail("accepted although invalid: " + must.front());
  const auto w = writable(c);
  for (std::size_t i = 0; i < c.bufs.size(); ++i) {
    Buffer& b = *c.bufs[i];
    for (std::size_t k = 0; k < b.mem.size(); ++k) {
      if (b.mem[k] == before[i][k]) continue;
      const auto p = static_cast<i128>(reinterpret_cast<std::uintptr_t>(b.mem.data() + k));
      bool ok = false;
      for (const auto& [lo, hi] : w) ok = ok || (p >= lo && p < hi);
      if (!ok) return fail("accepted, but wrote byte " + std::to_string(k) + " of buffer " + std::to_string(i) +
                           " outside every output view (guard or input damaged)");
    }
  }
  if (mode == Mode::full && c.check_ok) {
    std::ostringstream os;
    c.check_ok(os);
    if (!os.str().empty()) fail(os.str());
  }
}

int scale_calls(int n) {
  const char* s = std::getenv("MLAKV_FUZZ_SCALE");
  return s ? n * std::max(1, std::atoi(s)) : n;
}

void fuzz(const char* op, int calls, uint64_t seed0, const std::function<void(Case&, Rng&)>& build) {
  Stats st;
  for (int i = 0; i < scale_calls(calls); ++i) {
    const uint64_t seed = seed0 * 1000003u + static_cast<uint64_t>(i);
    Rng r(seed);
    Case c;
    c.op = op;
    build(c, r);
    run_case(c, r, seed, i % 40 != 0, st);
  }
  std::ostringstream all;
  for (const auto& f : st.failures) all << "\n  " << f;
  EXPECT_TRUE(st.failures.empty()) << st.failures.size() << " failing calls:" << all.str();
  // Most calls reach the op; the baseline (every 40th call) must pass.
  EXPECT_GT(st.accepted, 0);
  EXPECT_GT(st.rejected, st.calls / 4);
  std::cout << "[fuzz] " << op << ": " << st.calls << " calls (" << st.accepted << " accepted, " << st.rejected
            << " rejected, " << st.validator_only << " validator only), " << st.skipped << " skipped (unbackable)\n";
}

// Checks that no element of the f32 view `lse` is NaN (a decode or merge never produces one).
void expect_no_nan_lse(const Tensor& lse, std::ostream& os) {
  const Extent e = extent_of(lse);
  if (!e.ok || e.empty || lse.dtype != DType::f32 || e.numel > 100000) return;
  std::vector<int64_t> idx(static_cast<std::size_t>(lse.ndim), 0);
  for (i128 n = 0; n < e.numel; ++n) {
    int64_t off = 0;
    for (int d = 0; d < lse.ndim; ++d) off += idx[static_cast<std::size_t>(d)] * lse.stride[d];
    float v;
    std::memcpy(&v, static_cast<const uint8_t*>(lse.data) + off * 4, 4);
    if (std::isnan(v)) {
      os << "accepted, but lse has a NaN at element offset " << off;
      return;
    }
    for (int d = lse.ndim - 1; d >= 0; --d) {
      if (++idx[static_cast<std::size_t>(d)] < lse.shape[d]) break;
      idx[static_cast<std::size_t>(d)] = 0;
    }
  }
}

// ---- builders of valid calls -----------------------------------------------------------------------

void fill_block_table(Rng& r, const Tensor& bt, int64_t num_blocks) {
  for (int64_t b = 0; b < bt.shape[0]; ++b)
    for (int64_t j = 0; j < bt.shape[1]; ++j) put_int(bt, {b, j}, r.below(num_blocks));
}

void fill_slots(Rng& r, const Tensor& sm, int64_t cap) {
  for (int64_t t = 0; t < sm.shape[0]; ++t) put_int(sm, {t}, r.chance(15) ? -1 : r.below(cap));
}

void build_write_cache(Case& c, Rng& r) {
  add_cache(c, r, r.pick({CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla}), 4, r.pick({1, 4, 16}), true);
  const int64_t T = 1 + r.below(6), cap = c.cache.desc.capacity_tokens();
  const DType dt = r.pick({DType::bf16, DType::f32});
  Tensor& kv = c.add("kv_c", Role::in, dt, {T + r.below(2), kLatentDim}, {r.chance(30) ? 576 : kLatentDim, 1});
  Tensor& pe = c.add("k_pe", Role::in, r.pick({DType::bf16, DType::f32}), {T + r.below(2), kRopeDim},
                     {r.chance(30) ? 128 : kRopeDim, 1});
  Tensor& sm = c.add("slot_mapping", Role::index, DType::i64, {T}, {}, cap);
  fill_values(r, kv);
  fill_values(r, pe);
  fill_slots(r, sm, cap);
  c.run = [&] { write_cache(kv, pe, sm, c.cache); };
  c.validate = [&] { detail::validate_write_cache(kv, pe, sm, c.cache); };
}

void build_dsv4_write(Case& c, Rng& r) {
  add_cache(c, r, CacheFormat::dsv4, 3, r.pick({1, 4, 16, 64}), true);
  c.uses_scale = false;
  const int64_t T = 1 + r.below(6), cap = c.cache.desc.capacity_tokens();
  Tensor& k = c.add("k", Role::in, DType::bf16, {T + r.below(2), kDsv4HeadDim}, {r.chance(30) ? 576 : kDsv4HeadDim, 1});
  Tensor& sm = c.add("slot_mapping", Role::index, DType::i64, {T}, {}, cap);
  fill_values(r, k);
  fill_slots(r, sm, cap);
  c.run = [&] { dsv4_write(k, sm, c.cache); };
  c.validate = [&] { detail::validate_dsv4_write(k, sm, c.cache); };
}

// gather_cache (raw) or gather_dequant_cache over B sequences of a random format.
void build_gather(Case& c, Rng& r, bool dequant) {
  const CacheFormat f = r.pick({CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4});
  const int bs = r.pick({1, 4, 16});
  const int64_t nb = 6, mb = 3, B = 1 + r.below(3);
  add_cache(c, r, f, nb, bs, false);
  std::vector<int64_t> starts(static_cast<std::size_t>(B)), lens(static_cast<std::size_t>(B));
  int64_t rows = 0;
  for (int64_t b = 0; b < B; ++b) {
    starts[static_cast<std::size_t>(b)] = r.below(mb * bs);
    lens[static_cast<std::size_t>(b)] = r.below(mb * bs - starts[static_cast<std::size_t>(b)] + 1);
    rows += lens[static_cast<std::size_t>(b)];
  }
  const bool with_starts = r.chance(60);
  if (!with_starts) std::fill(starts.begin(), starts.end(), 0);
  Tensor& bt = c.add("block_table", Role::index, DType::i32, {B, mb}, {}, nb);
  fill_block_table(r, bt, nb);
  Tensor& cu = c.add("cu_seq_lens", Role::index, DType::i32, {B + 1}, {}, rows);
  for (int64_t b = 0, acc = 0; b <= B; ++b) {
    put_int(cu, {b}, acc);
    if (b < B) acc += lens[static_cast<std::size_t>(b)];
  }
  const int64_t dst_rows = rows + r.below(3);
  DType dt;
  int64_t width;
  if (dequant) {
    dt = r.pick({DType::bf16, DType::f32});
    width = c.cache.desc.row_width();
  } else if (f == CacheFormat::bf16 && r.chance(50)) {
    dt = DType::bf16, width = kHeadDim;
  } else if (f == CacheFormat::fp8 && r.chance(50)) {
    dt = DType::e4m3, width = kHeadDim;
  } else {
    dt = DType::u8, width = c.cache.desc.token_bytes();
  }
  Tensor& dst = c.add("dst", Role::out, dt, {dst_rows, width}, {width + (r.chance(25) ? 16 : 0), 1});
  Tensor& ss = c.add("seq_starts", Role::index, DType::i32, {B}, {}, mb * bs);
  for (int64_t b = 0; b < B; ++b) put_int(ss, {b}, starts[static_cast<std::size_t>(b)]);
  Tensor& t2s = c.add("token_to_seq", Role::index, DType::i32, {dst_rows}, {}, B);
  for (int64_t b = 0, row = 0; b < B; ++b)
    for (int64_t i = 0; i < lens[static_cast<std::size_t>(b)]; ++i) put_int(t2s, {row++}, b);
  bool* has_ss = c.flag(with_starts);
  bool* has_t2s = c.flag(r.chance(30));
  c.arg("seq_starts").present = has_ss;
  c.arg("token_to_seq").present = has_t2s;
  c.scalar_mutators.push_back([has_ss, has_t2s](Rng& r, std::ostream& log) {
    bool* f = r.chance(50) ? has_ss : has_t2s;
    *f = !*f;
    log << (f == has_ss ? "seq_starts" : "token_to_seq") << (*f ? " given" : " dropped") << "; ";
  });
  auto opts = [&ss, &t2s, has_ss, has_t2s] {
    GatherOptions o;
    if (*has_ss) o.seq_starts = ss;
    if (*has_t2s) o.token_to_seq = t2s;
    return o;
  };
  if (dequant) {
    c.run = [&c, &bt, &cu, &dst, opts] { gather_dequant_cache(c.cache, bt, cu, dst, opts()); };
    c.validate = [&c, &bt, &cu, &dst, opts] { detail::validate_gather_dequant_cache(c.cache, bt, cu, dst, opts()); };
  } else {
    c.uses_scale = false;
    c.run = [&c, &bt, &cu, &dst, opts] { gather_cache(c.cache, bt, cu, dst, opts()); };
    c.validate = [&c, &bt, &cu, &dst, opts] { detail::validate_gather_cache(c.cache, bt, cu, dst, opts()); };
  }
}

void build_dsv4_gather(Case& c, Rng& r) {
  const int bs = r.pick({1, 4, 16});
  const int64_t nb = 5, mb = 3, R = 1 + r.below(3);
  add_cache(c, r, CacheFormat::dsv4, nb, bs, false);
  c.uses_scale = false;
  Tensor& bt = c.add("block_table", Role::index, DType::i32, {R, mb}, {}, nb);
  fill_block_table(r, bt, nb);
  Tensor& sl = c.add("seq_lens", Role::index, DType::i32, {R}, {}, mb * bs);
  Tensor& gl = c.add("gather_lens", Role::index, DType::i32, {R}, {}, mb * bs);
  const bool with_gl = r.chance(60);
  int64_t most = 0;
  for (int64_t q = 0; q < R; ++q) {
    const int64_t len = r.below(mb * bs + 1), n = r.below(len + 1);
    put_int(sl, {q}, len);
    put_int(gl, {q}, n);
    most = std::max(most, with_gl ? n : len);
  }
  const int64_t offset = r.below(3), max_rows = offset + most + r.below(3), ld = r.chance(30) ? 576 : kDsv4HeadDim;
  Tensor& out = c.add("out", Role::out, DType::bf16, {R, max_rows, kDsv4HeadDim}, {max_rows * ld + (r.chance(30) ? 64 : 0), ld, 1});
  bool* has_gl = c.flag(with_gl);
  c.arg("gather_lens").present = has_gl;
  auto own = std::make_shared<int64_t>(offset);
  c.scalar_mutators.push_back([has_gl](Rng&, std::ostream& log) {
    *has_gl = !*has_gl;
    log << "gather_lens " << (*has_gl ? "given" : "dropped") << "; ";
  });
  c.scalar_mutators.push_back([own, max_rows](Rng& r, std::ostream& log) {
    *own = r.pick<int64_t>({-1, kI64Min, kI64Max, kI64Max - 1, max_rows, max_rows + 1, int64_t{1} << 40, int64_t{1} << 62});
    log << "offset=" << *own << "; ";
  });
  c.must_rules = [own](std::vector<std::string>& must) {
    if (*own < 0) must.push_back("negative offset");
  };
  auto gl_opt = [&gl, has_gl] { return *has_gl ? std::optional<Tensor>(gl) : std::nullopt; };
  c.run = [&c, &bt, &sl, &out, gl_opt, own] { dsv4_dequant_gather(c.cache, bt, sl, out, gl_opt(), *own); };
  c.validate = [&c, &bt, &sl, &out, gl_opt, own] { detail::validate_dsv4_dequant_gather(c.cache, bt, sl, out, gl_opt(), *own); };
}

// Shard / DCP parameter mutations shared by mla_decode and dcp::slot_mapping.
void shard_mutator(Case& c, DcpShard* sh) {
  c.scalar_mutators.push_back([sh](Rng& r, std::ostream& log) {
    switch (r.below(3)) {
      case 0: sh->world = r.pick<int>({0, -1, 1, 2, 3, 7, INT_MAX, INT_MIN}); break;
      case 1: sh->rank = r.pick<int>({-1, 0, 1, sh->world, sat(int64_t{sh->world} - 1), INT_MAX, INT_MIN}); break;
      default: sh->interleave = r.pick<int>({0, -1, 1, 2, 3, 16, 64, 1 << 30, INT_MAX, INT_MIN});
    }
    log << "shard={" << sh->world << "," << sh->rank << "," << sh->interleave << "}; ";
  });
}

void shard_must(const DcpShard& sh, int block_size, std::vector<std::string>& must) {
  if (sh.world < 1 || sh.rank < 0 || sh.rank >= sh.world || sh.interleave < 1 ||
      (block_size >= 1 && block_size % sh.interleave != 0))
    must.push_back("invalid DCP shard");
}

struct DecodeState {
  DecodeParams params;
  float* q_scale = nullptr;
  Workspace ws;  // unused on the CPU: mutated only to check it is not dereferenced
};

void add_decode_scalars(Case& c, float* softmax_scale, bool* causal, const float** q_scale_ptr, float* q_scale) {
  c.scalar_mutators.push_back([softmax_scale](Rng& r, std::ostream& log) {
    *softmax_scale = r.pick<float>({0.0f, -0.0f, -1.0f, NAN, INFINITY, -INFINITY, 1e-45f, FLT_MAX, 1e30f});
    log << "softmax_scale=" << *softmax_scale << "; ";
  });
  c.scalar_mutators.push_back([causal](Rng&, std::ostream& log) {
    *causal = !*causal;
    log << "causal=" << *causal << "; ";
  });
  c.scalar_mutators.push_back([q_scale_ptr, q_scale](Rng& r, std::ostream& log) {
    if (r.chance(40)) {
      *q_scale_ptr = r.chance(50) ? nullptr : q_scale;
      log << "q_scale ptr " << (*q_scale_ptr ? "set" : "null") << "; ";
    } else {
      *q_scale = r.pick<float>({NAN, INFINITY, 0.0f, -1.0f, 1e-45f, FLT_MAX});
      log << "*q_scale=" << *q_scale << "; ";
    }
  });
}

/// A decode's paged inputs beside q and its outputs: a cache of `nb` blocks of `bs` tokens, a
/// block table of `mb` blocks per request, lengths within it, out and lse for [B, S, H].
struct DecodeTensors {
  Tensor &bt, &sl, &out, &lse;
};
DecodeTensors add_decode_tensors(Case& c, Rng& r, int64_t B, int64_t S, int64_t H, int64_t nb, int64_t mb, int bs) {
  add_cache(c, r, r.pick({CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla}), nb, bs, false);
  Tensor& bt = c.add("block_table", Role::index, DType::i32, {B, mb}, {}, nb);
  fill_block_table(r, bt, nb);
  Tensor& sl = c.add("seq_lens", Role::index, DType::i32, {B}, {}, mb * bs);
  for (int64_t b = 0; b < B; ++b) put_int(sl, {b}, r.below(mb * bs + 1));
  Tensor& out = c.add("out", Role::out, r.pick({DType::bf16, DType::f32}), {B, S, H, kLatentDim});
  Tensor& lse = c.add("lse", Role::out, DType::f32, {B, S, H});
  return {bt, sl, out, lse};
}

void build_mla_decode(Case& c, Rng& r) {
  const int bs = r.pick({4, 16});
  const int64_t nb = 6, mb = 3, B = 1 + r.below(2), S = 1 + r.below(2), H = r.pick<int64_t>({1, 2, 4});
  const bool e4m3 = r.chance(25);
  Tensor& q = c.add("q", Role::in, e4m3 ? DType::e4m3 : DType::bf16, {B, S, H, kHeadDim},
                    {S * H * 640, H * 640, 640, 1});
  fill_values(r, q);
  const DecodeTensors d = add_decode_tensors(c, r, B, S, H, nb, mb, bs);
  Tensor &bt = d.bt, &sl = d.sl, &out = d.out, &lse = d.lse;
  auto st = std::make_shared<DecodeState>();
  st->params.softmax_scale = 0.04f;
  st->params.causal = r.chance(70);
  st->q_scale = reinterpret_cast<float*>(c.buffer(64)->payload());
  *st->q_scale = 0.5f;
  st->params.q_scale = e4m3 ? st->q_scale : nullptr;
  if (r.chance(30)) {
    const int w = r.pick({2, 3});
    st->params.shard = {w, static_cast<int>(r.below(w)), r.pick({1, 2, 4})};
  }
  add_decode_scalars(c, &st->params.softmax_scale, &st->params.causal, &st->params.q_scale, st->q_scale);
  shard_mutator(c, &st->params.shard);
  c.scalar_mutators.push_back([st](Rng& r, std::ostream& log) {
    st->ws = {r.chance(50) ? nullptr : st->q_scale, static_cast<std::size_t>(r.pick<int64_t>({0, 1, -1}))};
    log << "workspace={" << st->ws.data << "," << st->ws.bytes << "}; ";
  });
  c.must_rules = [&c, &q, st](std::vector<std::string>& must) {
    const float s = st->params.softmax_scale;
    if (!(std::isfinite(s) && s > 0)) must.push_back("softmax_scale not finite and > 0");
    if (q.dtype == DType::e4m3 && (!st->params.q_scale || !(std::isfinite(*st->params.q_scale) && *st->params.q_scale > 0)))
      must.push_back("bad q_scale for e4m3 q");
    if (c.cache.desc.format == CacheFormat::dsv4) must.push_back("dsv4 cache");
    shard_must(st->params.shard, c.cache.desc.block_size, must);
  };
  c.run = [&c, &q, &bt, &sl, &out, &lse, st] { mla_decode(q, c.cache, bt, sl, out, lse, st->params, st->ws); };
  c.validate = [&c, &q, &bt, &sl, &out, &lse, st] {
    detail::validate_mla_decode(q, c.cache, bt, sl, out, lse, st->params, st->ws);
  };
  c.check_ok = [&c, &lse](std::ostream& os) {
    // Shifted or retyped query bytes may be NaN: then so may the result.
    const Arg& a = c.arg("q");
    if (a.t->dtype == a.orig.dtype && a.t->data == a.orig.data) expect_no_nan_lse(lse, os);
  };
}

void build_merge_states(Case& c, Rng& r) {
  const int64_t N = 1 + r.below(3), H = 1 + r.below(4), D = r.pick<int64_t>({8, 64, kLatentDim});
  auto state = [&](const std::string& o_name, const std::string& l_name, Role role) -> std::pair<Tensor*, Tensor*> {
    const int64_t ld = D + (r.chance(25) ? 8 : 0);
    Tensor& o = c.add(o_name, role, r.pick({DType::bf16, DType::f32}), {N, H, D}, {H * ld, ld, 1});
    Tensor& l = c.add(l_name, role, DType::f32, {N, H}, {r.chance(25) ? H + 1 : H, 1});
    if (role == Role::in) {
      fill_values(r, o);
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < H; ++j) {
          const float v = r.chance(80) ? r.normal() : r.pick<float>({-INFINITY, INFINITY, NAN});
          std::memcpy(elem(l, {i, j}), &v, 4);
        }
    }
    return {&o, &l};
  };
  auto [oa, la] = state("o_a", "lse_a", Role::in);
  auto [ob, lb] = state("o_b", "lse_b", Role::in);
  auto [o, l] = state("o", "lse", Role::out);
  c.run = [=] { merge_states(*oa, *la, *ob, *lb, *o, *l); };
  c.validate = [=] { detail::validate_merge_states(*oa, *la, *ob, *lb, *o, *l); };
  c.check_ok = [l](std::ostream& os) { expect_no_nan_lse(*l, os); };
}

void build_slot_mapping(Case& c, Rng& r) {
  const int bs = r.pick({4, 16});
  const int64_t T = 1 + r.below(8), B = 1 + r.below(3), mb = 3;
  auto sh = std::make_shared<DcpShard>();
  const int w = r.pick({1, 2, 3});
  *sh = {w, static_cast<int>(r.below(w)), r.pick({1, 2, 4})};
  auto block_size = std::make_shared<int>(bs);
  Tensor& pos = c.add("positions", Role::index, DType::i64, {T}, {}, mb * bs);
  Tensor& req = c.add("token_to_req", Role::index, DType::i32, {T}, {}, B);
  Tensor& bt = c.add("block_table", Role::index, DType::i32, {B, mb}, {}, 1000);
  Tensor& out = c.add("slot_mapping", Role::out, DType::i64, {T}, {r.chance(25) ? 2 : 1});
  for (int64_t t = 0; t < T; ++t) {
    put_int(pos, {t}, r.chance(10) ? -1 : r.below(mb * bs));
    put_int(req, {t}, r.chance(10) ? -1 : r.below(B));
  }
  fill_block_table(r, bt, 1000);
  shard_mutator(c, sh.get());
  c.scalar_mutators.push_back([block_size, sh](Rng& r, std::ostream& log) {
    *block_size = r.pick<int>({0, -1, INT_MIN, 1, 3, sat(int64_t{*block_size} + 1), sat(int64_t{*block_size} * 4), 1 << 20, INT_MAX});
    log << "block_size=" << *block_size << "; ";
  });
  c.must_rules = [sh, block_size](std::vector<std::string>& must) {
    if (*block_size < 1) must.push_back("block_size < 1");
    shard_must(*sh, *block_size, must);
  };
  c.run = [&pos, &req, &bt, &out, sh, block_size] { dcp::slot_mapping(pos, req, bt, *block_size, *sh, out); };
}

Communicator& cpu_rank0() {
  static auto group = make_cpu_group(1);
  return *group[0];
}

void workspace_mutator(Case& c) {
  c.scalar_mutators.push_back([&c](Rng& r, std::ostream& log) {
    switch (r.below(4)) {
      case 0: c.ws.bytes = c.ws.bytes ? c.ws.bytes - 1 : 0; break;
      case 1: c.ws.bytes = r.pick<std::size_t>({0, SIZE_MAX, std::size_t{1} << 62}); break;
      case 2: c.ws.data = nullptr; break;
      default: c.ws.data = static_cast<uint8_t*>(c.ws.data) + 1, c.ws.bytes = c.ws.bytes ? c.ws.bytes - 1 : 0;
    }
    log << "workspace={" << c.ws.data << "," << c.ws.bytes << "}; ";
  });
}

void build_dcp_decode(Case& c, Rng& r) {
  const int bs = r.pick({4, 16});
  const int64_t nb = 6, mb = 3, B = 1 + r.below(2), S = 1 + r.below(2), N = r.pick<int64_t>({1, 2});
  Tensor& q = c.add("q_local", Role::in, DType::bf16, {B, S, N, kHeadDim});
  fill_values(r, q);
  const DecodeTensors d = add_decode_tensors(c, r, B, S, N, nb, mb, bs);
  Tensor &bt = d.bt, &sl = d.sl, &out = d.out, &lse = d.lse;
  auto opts = std::make_shared<dcp::DecodeOptions>();
  opts->softmax_scale = 0.04f;
  opts->causal = r.chance(70);
  opts->interleave = r.pick({1, 2, 4});
  opts->merge = r.pick({dcp::Merge::all_to_all, dcp::Merge::allgather_reduce_scatter});
  opts->q_quant = r.pick({dcp::QueryQuant::none, dcp::QueryQuant::e4m3_after_gather, dcp::QueryQuant::e4m3_before_gather});
  auto* qs = reinterpret_cast<float*>(c.buffer(64)->payload());
  *qs = 0.05f;
  opts->q_scale = qs;
  c.has_ws = true;
  c.ws_buf = c.buffer(dcp::decode_workspace_size(static_cast<int>(B), static_cast<int>(S), static_cast<int>(N), 1, Device::cpu()));
  c.ws = {c.ws_buf->payload(), c.ws_buf->size};
  add_decode_scalars(c, &opts->softmax_scale, &opts->causal, &opts->q_scale, qs);
  workspace_mutator(c);
  c.scalar_mutators.push_back([opts](Rng& r, std::ostream& log) {
    switch (r.below(3)) {
      case 0: opts->interleave = r.pick<int>({0, -1, 3, 32, INT_MAX, INT_MIN}); break;
      case 1: opts->merge = static_cast<dcp::Merge>(r.pick<int>({0, 1, 7})); break;
      default: opts->q_quant = static_cast<dcp::QueryQuant>(r.pick<int>({0, 1, 2, 9}));
    }
    log << "opts={I " << opts->interleave << ", merge " << static_cast<int>(opts->merge) << ", q_quant "
        << static_cast<int>(opts->q_quant) << "}; ";
  });
  c.must_rules = [&c, opts](std::vector<std::string>& must) {
    const float s = opts->softmax_scale;
    if (!(std::isfinite(s) && s > 0)) must.push_back("softmax_scale not finite and > 0");
    if (static_cast<int>(opts->merge) > 1) must.push_back("unknown merge");
    if (static_cast<int>(opts->q_quant) > 2) must.push_back("unknown q_quant");
    if (opts->q_quant != dcp::QueryQuant::none && (!opts->q_scale || !(std::isfinite(*opts->q_scale) && *opts->q_scale > 0)))
      must.push_back("bad q_scale");
    if (!c.ws.data) must.push_back("null workspace");
    shard_must({1, 0, opts->interleave}, c.cache.desc.block_size, must);
  };
  c.run = [&c, &q, &bt, &sl, &out, &lse, opts] { dcp::decode(cpu_rank0(), q, c.cache, bt, sl, out, lse, *opts, c.ws); };
  c.check_ok = [&c, &lse](std::ostream& os) {
    const Arg& a = c.arg("q_local");
    if (a.t->data == a.orig.data) expect_no_nan_lse(lse, os);
  };
}

void build_gather_context(Case& c, Rng& r) {
  const CacheFormat f = r.pick({CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4});
  const int bs = r.pick({4, 16});
  const int64_t nb = 6, mb = 3, B = 1 + r.below(3);
  add_cache(c, r, f, nb, bs, false);
  auto interleave = std::make_shared<int>(r.pick({1, 2, 4}));
  Tensor& bt = c.add("block_table", Role::index, DType::i32, {B, mb}, {}, nb);
  fill_block_table(r, bt, nb);
  Tensor& ss = c.add("seq_starts", Role::index, DType::i32, {B}, {}, mb * bs);
  Tensor& cu = c.add("cu_seq_lens", Role::index, DType::i32, {B + 1}, {}, 0);
  int64_t rows = 0;
  put_int(cu, {0}, 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t start = r.below(mb * bs / *interleave) * *interleave;
    put_int(ss, {b}, start);
    rows += r.below(mb * bs - start + 1);
    put_int(cu, {b + 1}, rows);
  }
  c.arg("cu_seq_lens").bound = rows;
  const int64_t out_rows = rows + r.below(3), width = c.cache.desc.row_width();
  Tensor& out = c.add("out", Role::out, r.pick({DType::bf16, DType::f32}), {out_rows, width}, {width + (r.chance(25) ? 8 : 0), 1});
  c.has_ws = true;
  c.ws_buf = c.buffer(dcp::gather_context_workspace_size(c.cache.desc, out_rows, static_cast<int>(B), 1, *interleave));
  c.ws = {c.ws_buf->payload(), c.ws_buf->size};
  workspace_mutator(c);
  c.scalar_mutators.push_back([interleave](Rng& r, std::ostream& log) {
    *interleave = r.pick<int>({0, -1, 3, 8, 32, INT_MAX, INT_MIN});
    log << "interleave=" << *interleave << "; ";
  });
  c.must_rules = [&c, interleave](std::vector<std::string>& must) {
    if (!c.ws.data) must.push_back("null workspace");
    shard_must({1, 0, *interleave}, c.cache.desc.block_size, must);
  };
  c.run = [&c, &bt, &cu, &ss, &out, interleave] {
    dcp::gather_context(cpu_rank0(), c.cache, bt, cu, ss, out, *interleave, c.ws);
  };
}

// ---- the tests -------------------------------------------------------------------------------------

TEST(ValidationFuzz, WriteCache) { fuzz("write_cache", 1000, 1, build_write_cache); }
TEST(ValidationFuzz, Dsv4Write) { fuzz("dsv4_write", 600, 2, build_dsv4_write); }
TEST(ValidationFuzz, GatherCache) {
  fuzz("gather_cache", 1000, 3, [](Case& c, Rng& r) { build_gather(c, r, false); });
}
TEST(ValidationFuzz, GatherDequantCache) {
  fuzz("gather_dequant_cache", 800, 4, [](Case& c, Rng& r) { build_gather(c, r, true); });
}
TEST(ValidationFuzz, Dsv4DequantGather) { fuzz("dsv4_dequant_gather", 800, 5, build_dsv4_gather); }
TEST(ValidationFuzz, MlaDecode) { fuzz("mla_decode", 1000, 6, build_mla_decode); }
TEST(ValidationFuzz, MergeStates) { fuzz("merge_states", 600, 7, build_merge_states); }
TEST(ValidationFuzz, DcpSlotMapping) { fuzz("dcp::slot_mapping", 800, 8, build_slot_mapping); }
TEST(ValidationFuzz, DcpDecode) { fuzz("dcp::decode", 600, 9, build_dcp_decode); }
TEST(ValidationFuzz, DcpGatherContext) { fuzz("dcp::gather_context", 600, 10, build_gather_context); }

// The workspace size queries either throw mlakv::Error or return at least the bytes their layout
// obviously needs (a size that wrapped around would let the op write past the workspace).
TEST(ValidationFuzz, WorkspaceSizeQueriesNeverWrap) {
  Rng r(11);
  const std::vector<int> ints = {-1, 0, 1, 2, 3, 16, 17, 1 << 16, 1 << 20, INT_MAX, INT_MIN};
  for (int i = 0; i < scale_calls(2000); ++i) {
    const int b = r.pick(ints), s = r.pick(ints), h = r.pick(ints), w = r.pick(ints), il = r.pick(ints);
    std::ostringstream what;
    what << "(" << b << ", " << s << ", " << h << ", " << w << ", " << il << ")";
    try {
      const std::size_t n = mla_decode_workspace_size(b, s, h, Device::cpu());
      EXPECT_EQ(n, 0u) << what.str();
    } catch (const Error&) {
    } catch (...) {
      ADD_FAILURE() << "mla_decode_workspace_size" << what.str() << " threw a non-mlakv exception";
    }
    try {
      const std::size_t n = dcp::decode_workspace_size(b, s, h, w, Device::cpu());
      // At least the gathered queries: batch · s_q · (world · heads) · 576 bf16.
      const i128 need = static_cast<i128>(b) * s * h * w * kHeadDim * 2;
      EXPECT_GE(static_cast<i128>(n), need) << "dcp::decode_workspace_size" << what.str() << " = " << n;
    } catch (const Error&) {
    } catch (...) {
      ADD_FAILURE() << "dcp::decode_workspace_size" << what.str() << " threw a non-mlakv exception";
    }
    const int64_t rows = r.pick<int64_t>({-1, 0, 1, 100, int64_t{1} << 31, int64_t{1} << 40, int64_t{1} << 62, kI64Max});
    CacheDesc d{r.pick({CacheFormat::bf16, CacheFormat::fp8, CacheFormat::fp8_ds_mla, CacheFormat::dsv4}), 4, 16, 0};
    try {
      const std::size_t n = dcp::gather_context_workspace_size(d, rows, b, w, il);
      // At least world copies of one rank's rows: min(rows, rows / world + batch · interleave).
      const i128 cap = std::min<i128>(rows, rows / w + static_cast<i128>(b) * il);
      const i128 need = cap * d.token_bytes() * w;
      EXPECT_GE(static_cast<i128>(n), need) << "dcp::gather_context_workspace_size(" << rows << ", " << what.str() << ") = " << n;
    } catch (const Error&) {
    } catch (...) {
      ADD_FAILURE() << "dcp::gather_context_workspace_size threw a non-mlakv exception";
    }
  }
}

}  // namespace
}  // namespace mlakv::test
