// Argument checks shared by every op: each failure throws mlakv::Error naming the argument,
// its value and what was expected.
#pragma once

#include <cstdint>
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

template <class... Args> void require(bool ok, const Args&... parts) {
  if (!ok) fail(parts...);
}

/// name: data non-null unless empty, device as expected.
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

}  // namespace mlakv::detail
