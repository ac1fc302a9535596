#include "check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace mlakv::detail {

namespace {

bool is_empty(const Tensor& t) {
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] == 0) return true;
  return false;
}

// Whether an element of `a` sits at the same address as the element of `b` with the same index.
bool same_view(const Tensor& a, const Tensor& b) {
  if (a.data != b.data || a.dtype != b.dtype || a.ndim != b.ndim) return false;
  for (int d = 0; d < a.ndim; ++d)
    if (a.shape[d] != b.shape[d] || (a.shape[d] > 1 && a.stride[d] != b.stride[d])) return false;
  return true;
}

std::string span_text(const ByteSpan& s) {
  std::ostringstream os;
  if (s.view) os << s.view->describe();
  else os << s.end - s.begin << " bytes on " << s.device.str();
  os << " at bytes [" << reinterpret_cast<const void*>(s.begin) << ", " << reinterpret_cast<const void*>(s.end) << ")";
  return os.str();
}

bool overlap(const ByteSpan& a, const ByteSpan& b) {
  return !a.empty() && !b.empty() && a.device == b.device && a.begin < b.end && b.begin < a.end;
}

void check_disjoint(const ByteSpan& out, const ByteSpan& other, bool other_is_input, InPlace in_place) {
  if (!overlap(out, other)) return;
  const bool may_alias = other_is_input && in_place == InPlace::same_view;
  if (may_alias && out.view && other.view && same_view(*out.view, *other.view)) return;
  fail(out.name, ": ", span_text(out), " shares memory with ", other_is_input ? "input " : "output ", other.name, " (",
       span_text(other), "), expected no memory shared with ", other_is_input ? "an input" : "another output",
       may_alias ? " unless it is exactly that input's view (in place)" : "",
       ": kernels write outputs in parallel while they read the inputs");
}

std::string strides_of(const Tensor& t) {
  std::string s = "[";
  for (int d = 0; d < t.ndim; ++d) s += (d ? ", " : "") + std::to_string(t.stride[d]);
  return s + "]";
}

}  // namespace

std::optional<int64_t> element_count(const Tensor& t) {
  if (is_empty(t)) return 0;  // before any product: a zero dimension empties the view whatever the others
  int64_t n = 1;
  for (int d = 0; d < t.ndim; ++d)
    if (__builtin_mul_overflow(n, t.shape[d], &n)) return std::nullopt;
  return n;
}

// Every element's byte offset (sum of index x stride, times the element size, in either
// direction) as the ops compute it in int64.
std::optional<ByteExtent> byte_extent(const Tensor& t) {
  if (is_empty(t)) return ByteExtent{};
  int64_t lo = 0, hi = 0;
  for (int d = 0; d < t.ndim; ++d) {
    int64_t reach;
    if (__builtin_mul_overflow(t.shape[d] - 1, t.stride[d], &reach) ||
        __builtin_add_overflow(reach < 0 ? lo : hi, reach, reach < 0 ? &lo : &hi))
      return std::nullopt;
  }
  const auto es = static_cast<int64_t>(dtype_size(t.dtype));
  if (__builtin_mul_overflow(lo, es, &lo) || __builtin_add_overflow(hi, 1, &hi) || __builtin_mul_overflow(hi, es, &hi))
    return std::nullopt;
  return ByteExtent{lo, hi};
}

ByteSpan byte_span(const Tensor& t, std::string_view name) {
  const std::optional<ByteExtent> e = byte_extent(t);
  MLAKV_REQUIRE(e.has_value(), name, ": ", t.describe(), " has no byte span within int64 (unchecked view)");
  ByteSpan s{name, t.device, 0, 0, &t};
  if (e->hi == 0) return s;
  // A span reaching below address 0 or past the last one is cut there: no memory lies beyond.
  const auto addr = reinterpret_cast<std::uintptr_t>(t.data);
  const std::uintptr_t down = 0 - static_cast<std::uintptr_t>(e->lo), up = static_cast<std::uintptr_t>(e->hi);
  s.begin = addr >= down ? addr - down : 0;
  s.end = addr <= UINTPTR_MAX - up ? addr + up : UINTPTR_MAX;
  return s;
}

ByteSpan byte_span(const std::optional<Tensor>& t, std::string_view name) {
  return t ? byte_span(*t, name) : ByteSpan{name};
}

ByteSpan byte_span(const void* data, std::size_t bytes, Device device, std::string_view name) {
  const auto addr = reinterpret_cast<std::uintptr_t>(data);
  if (!data || bytes == 0) return {name, device};
  return {name, device, addr, addr <= UINTPTR_MAX - bytes ? addr + bytes : UINTPTR_MAX};
}

void check_outputs_disjoint(std::initializer_list<ByteSpan> outputs, std::initializer_list<ByteSpan> inputs,
                            InPlace in_place) {
  for (auto o = outputs.begin(); o != outputs.end(); ++o) {
    for (const ByteSpan& in : inputs) check_disjoint(*o, in, true, in_place);
    for (auto later = o + 1; later != outputs.end(); ++later) check_disjoint(*o, *later, false, in_place);
  }
}

void check_scale_pointer(const float* p, std::string_view name, std::string_view what, bool host_readable) {
  MLAKV_REQUIRE(p != nullptr, name, ": null, expected a pointer to ", what);
  MLAKV_REQUIRE(reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0, name, ": address ",
                static_cast<const void*>(p), " is not ", alignof(float), "-byte aligned, expected a float's alignment");
  if (host_readable) MLAKV_REQUIRE(std::isfinite(*p) && *p > 0.0f, name, ": ", *p, ", expected a finite value > 0");
}

void check_no_self_overlap(const Tensor& t, std::string_view name) {
  if (is_empty(t)) return;
  int order[kMaxDims], n = 0;
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] > 1) order[n++] = d;
  std::sort(order, order + n, [&](int x, int y) { return std::llabs(t.stride[x]) < std::llabs(t.stride[y]); });
  int64_t span = 0;  // elements the inner dimensions reach beyond their first, in |stride| units
  for (int i = 0; i < n; ++i) {
    const int d = order[i];
    const int64_t step = std::llabs(t.stride[d]);
    MLAKV_REQUIRE(step > span, name, ": stride ", t.stride[d], " of dimension ", d, " of ", t.describe(),
                  " with strides ", strides_of(t),
                  " makes elements share memory, expected an output whose elements are all distinct");
    span += (t.shape[d] - 1) * step;  // fits: check_tensor bounded every offset
  }
}

void check_tensor(const Tensor& t, std::string_view name, Device device) {
  MLAKV_REQUIRE(t.ndim >= 0 && t.ndim <= kMaxDims, name, ": ndim ", t.ndim, " out of range [0, ", kMaxDims, "]");
  for (int d = 0; d < t.ndim; ++d)
    MLAKV_REQUIRE(t.shape[d] >= 0, name, ": dimension ", d, " is ", t.shape[d], ", expected >= 0");
  MLAKV_REQUIRE(element_count(t).has_value(), name, ": ", t.describe(), " has more than ", INT64_MAX,
                " elements, expected a view whose element count fits in int64");
  MLAKV_REQUIRE(byte_extent(t).has_value(), name, ": ", t.describe(), " with strides ", strides_of(t),
                " spans more than 2^63 bytes, expected a view whose byte offsets fit in int64");
  MLAKV_REQUIRE(t.data != nullptr || is_empty(t), name, ": null data pointer for ", t.describe());
  // Elements are read and written as their type (floats, int32/int64 indices) on the host too.
  MLAKV_REQUIRE(reinterpret_cast<std::uintptr_t>(t.data) % dtype_size(t.dtype) == 0, name, ": data address ", t.data,
                " is not ", dtype_size(t.dtype), "-byte aligned, expected the alignment of its ", dtype_name(t.dtype),
                " elements");
  check_same_device(t, name, device);
}

void check_same_device(const Tensor& t, std::string_view name, Device device) {
  MLAKV_REQUIRE(t.device == device, name, " is on ", t.device.str(), ", expected ", device.str(),
                " (all tensors of an op must be on one device)");
}

void check_dtype(const Tensor& t, std::string_view name, std::initializer_list<DType> allowed) {
  if (std::find(allowed.begin(), allowed.end(), t.dtype) != allowed.end()) return;
  std::string list;
  for (DType d : allowed) list += (list.empty() ? "" : " or ") + std::string(dtype_name(d));
  fail(name, ": dtype ", dtype_name(t.dtype), ", expected ", list);
}

void check_ndim(const Tensor& t, std::string_view name, int ndim) {
  MLAKV_REQUIRE(t.ndim == ndim, name, ": ", t.describe(), " has ", t.ndim, " dimensions, expected ", ndim);
}

void check_dim(const Tensor& t, std::string_view name, int dim, int64_t expected) {
  MLAKV_REQUIRE(t.shape[dim] == expected, name, ": dimension ", dim, " of ", t.describe(), " is ", t.shape[dim],
                ", expected ", expected);
}

void check_inner_contiguous(const Tensor& t, std::string_view name) {
  MLAKV_REQUIRE(t.ndim == 0 || t.shape[t.ndim - 1] <= 1 || t.stride[t.ndim - 1] == 1, name,
                ": innermost stride is ", t.ndim ? t.stride[t.ndim - 1] : 0, ", expected 1");
}

void check_contiguous(const Tensor& t, std::string_view name) {
  MLAKV_REQUIRE(t.is_contiguous(), name, ": ", t.describe(), " must be contiguous");
}

void check_block_table(const Tensor& block_table, Device device, int64_t batch) {
  check_tensor(block_table, "block_table", device);
  check_dtype(block_table, "block_table", {DType::i32});
  check_ndim(block_table, "block_table", 2);
  check_inner_contiguous(block_table, "block_table");
  if (batch >= 0) check_dim(block_table, "block_table", 0, batch);
}

void check_aligned(const Tensor& t, std::string_view name, std::size_t bytes) {
  const auto addr = reinterpret_cast<std::uintptr_t>(t.data);
  MLAKV_REQUIRE(addr % bytes == 0, name, ": data address ", t.data, " is not ", bytes, "-byte aligned");
  const std::size_t es = dtype_size(t.dtype);
  for (int d = 0; d + 1 < t.ndim; ++d)
    MLAKV_REQUIRE((static_cast<std::size_t>(t.stride[d]) * es) % bytes == 0 || t.shape[d] <= 1, name, ": stride ",
                  t.stride[d], " of dimension ", d, " is not a multiple of ", bytes, " bytes");
}

}  // namespace mlakv::detail
