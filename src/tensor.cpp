#include "mlakv/tensor.hpp"

#include <optional>
#include <sstream>

#include "check.hpp"

namespace mlakv {

std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::bf16: case DType::f16: return 2;
    case DType::f32: case DType::i32: return 4;
    case DType::f64: case DType::i64: return 8;
    case DType::e4m3: case DType::u8: return 1;
  }
  return 1;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::e4m3: return "e4m3";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

std::string Device::str() const { return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index); }

Tensor::Tensor(void* ptr, DType dt, std::initializer_list<int64_t> shp, Device dev) : data(ptr), dtype(dt), device(dev) {
  MLAKV_REQUIRE(shp.size() <= static_cast<std::size_t>(kMaxDims), "Tensor: ", shp.size(), " dimensions, at most ",
                kMaxDims, " supported");
  ndim = static_cast<int>(shp.size());
  int d = 0;
  for (int64_t s : shp) shape[d++] = s;
  // Saturated where the product overflows: such a view is rejected by every op (its element
  // count does not fit in int64), and an explicit-stride view replaces these strides anyway.
  int64_t st = 1;
  for (d = ndim - 1; d >= 0; --d) {
    stride[d] = st;
    if (__builtin_mul_overflow(st, shape[d], &st)) st = INT64_MAX;
  }
}

Tensor::Tensor(void* ptr, DType dt, std::initializer_list<int64_t> shp, std::initializer_list<int64_t> strides,
               Device dev)
    : Tensor(ptr, dt, shp, dev) {
  MLAKV_REQUIRE(strides.size() == shp.size(), "Tensor: ", strides.size(), " strides for ", shp.size(),
                " dimensions");
  int d = 0;
  for (int64_t s : strides) stride[d++] = s;
}

int64_t Tensor::numel() const {
  const std::optional<int64_t> n = detail::element_count(*this);
  MLAKV_REQUIRE(n.has_value(), "Tensor::numel: ", describe(), " has more than ", INT64_MAX,
                " elements, expected an element count that fits in int64");
  return *n;
}

std::size_t Tensor::nbytes() const {
  int64_t bytes;
  MLAKV_REQUIRE(!__builtin_mul_overflow(numel(), static_cast<int64_t>(dtype_size(dtype)), &bytes),
                "Tensor::nbytes: ", describe(), " holds more than ", INT64_MAX,
                " bytes of elements, expected a size that fits in int64");
  return static_cast<std::size_t>(bytes);
}

bool Tensor::is_contiguous() const {
  int64_t st = 1;
  bool beyond = false;  // st overflowed: no stride of an outer dimension can equal it
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] != 1 && (beyond || stride[d] != st)) return false;
    beyond = beyond || __builtin_mul_overflow(st, shape[d], &st);
  }
  return true;
}

std::size_t Tensor::span_bytes() const {
  const std::optional<detail::ByteExtent> e = detail::byte_extent(*this);
  MLAKV_REQUIRE(e.has_value(), "Tensor::span_bytes: ", describe(),
                " reaches more than 2^63 bytes, expected a view whose byte offsets fit in int64");
  return static_cast<std::size_t>(e->hi);
}

std::string Tensor::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (int d = 0; d < ndim; ++d) os << (d ? ", " : "") << shape[d];
  os << "] on " << device.str();
  return os.str();
}

}  // namespace mlakv
