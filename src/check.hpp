// Argument checks shared by every op: each failure throws mlakv::Error naming the argument,
// its value and what was expected.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "mlakv/error.hpp"
#include "mlakv/tensor.hpp"

namespace mlakv::detail {

template <class... Args> [[noreturn]] void fail(const Args&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(os.str());
}

/// Throws fail(parts...) unless `ok`. A macro so that the parts (views described, devices named,
/// strides listed) are built only on failure: as a function's arguments they were built on every
/// call, ~30 µs of host time per mla_decode (session 42), longer than a small step on the GPU.
#define MLAKV_REQUIRE(ok, ...)                       \
  do {                                               \
    if (!(ok)) ::mlakv::detail::fail(__VA_ARGS__);   \
  } while (0)

/// Elements of a view (0 when a dimension is 0), or nullopt where the count overflows int64.
std::optional<int64_t> element_count(const Tensor& t);
/// Byte offsets [lo, hi) from a view's data pointer that its elements reach (lo <= 0; {0, 0} when
/// empty), or nullopt where an offset overflows int64. A broadcast view (stride 0) may reach few
/// bytes with an element count beyond int64: check_tensor rejects either.
struct ByteExtent {
  int64_t lo = 0, hi = 0;
};
std::optional<ByteExtent> byte_extent(const Tensor& t);

/// name: dimensions >= 0, element count and byte offsets within int64, data non-null unless
/// empty and aligned to its element type, device as expected.
void check_tensor(const Tensor& t, std::string_view name, Device device);
void check_dtype(const Tensor& t, std::string_view name, std::initializer_list<DType> allowed);
void check_ndim(const Tensor& t, std::string_view name, int ndim);
void check_dim(const Tensor& t, std::string_view name, int dim, int64_t expected);
/// Last dimension has stride 1 (rows are contiguous).
void check_inner_contiguous(const Tensor& t, std::string_view name);
void check_contiguous(const Tensor& t, std::string_view name);
/// Start address aligned to `bytes`, and every non-inner stride a multiple of bytes / elem size.
void check_aligned(const Tensor& t, std::string_view name, std::size_t bytes);
/// A pointer to one float scale: not null (`what`: what it points to, for the message), aligned
/// for a float, and, where the host can read it, finite and > 0.
void check_scale_pointer(const float* p, std::string_view name, std::string_view what, bool host_readable);
/// An output no two of whose elements share memory: its dimensions, ordered by |stride|, each
/// step over everything the inner ones span (outputs written in parallel would race otherwise).
void check_no_self_overlap(const Tensor& t, std::string_view name);
/// An int32 [batch, max_blocks] block table with contiguous rows on `device`; batch < 0: any.
void check_block_table(const Tensor& block_table, Device device, int64_t batch);
/// Tokens a block-table row of `max_blocks` blocks of `block_size` tokens covers, saturated at
/// INT64_MAX: a table may claim more entries than the product fits (only used entries are read).
inline int64_t table_capacity(int64_t max_blocks, int64_t block_size) {
  return block_size > 0 && max_blocks > INT64_MAX / block_size ? INT64_MAX : max_blocks * block_size;
}
/// All devices equal to `device` (first tensor's device is the op's device).
void check_same_device(const Tensor& t, std::string_view name, Device device);

/// Memory an op reads or writes through one argument: bytes [begin, end) on `device`. For a view
/// it is the hull of its elements (lowest to one past the highest byte any element reaches), a
/// superset of its bytes where strides leave gaps. Empty views and buffers have none.
struct ByteSpan {
  std::string_view name;
  Device device{};
  std::uintptr_t begin = 0, end = 0;
  const Tensor* view = nullptr;  // the view it covers, if any (messages, in-place use)
  bool empty() const { return begin == end; }
};
/// The span of a view that passed check_tensor (its byte offsets fit in int64).
ByteSpan byte_span(const Tensor& t, std::string_view name);
/// The span of an optional view: none when absent.
ByteSpan byte_span(const std::optional<Tensor>& t, std::string_view name);
/// `bytes` bytes at `data` on `device`; none when data is null or bytes is 0.
ByteSpan byte_span(const void* data, std::size_t bytes, Device device, std::string_view name);

/// Whether an op may write an output over an input: `same_view` allows an output that is exactly
/// an input's view (same address, type, shape and strides), for element-wise ops that read each
/// element before writing it; any other shared byte is still rejected.
enum class InPlace : uint8_t { no, same_view };
/// Outputs whose spans meet an input's span or another output's on the same device: the kernels
/// write outputs in parallel while they read the inputs, so any shared byte corrupts the result.
/// Conservative: views whose hulls interleave without sharing an element are rejected too.
void check_outputs_disjoint(std::initializer_list<ByteSpan> outputs, std::initializer_list<ByteSpan> inputs,
                            InPlace in_place = InPlace::no);

}  // namespace mlakv::detail
