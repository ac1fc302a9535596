#include "mlakv/tensor.hpp"

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
  detail::require(shp.size() <= static_cast<std::size_t>(kMaxDims), "Tensor: ", shp.size(), " dimensions, at most ",
                  kMaxDims, " supported");
  ndim = static_cast<int>(shp.size());
  int d = 0;
  for (int64_t s : shp) shape[d++] = s;
  int64_t st = 1;
  for (d = ndim - 1; d >= 0; --d) {
    stride[d] = st;
    st *= shape[d];
  }
}

Tensor::Tensor(void* ptr, DType dt, std::initializer_list<int64_t> shp, std::initializer_list<int64_t> strides,
               Device dev)
    : Tensor(ptr, dt, shp, dev) {
  detail::require(strides.size() == shp.size(), "Tensor: ", strides.size(), " strides for ", shp.size(),
                  " dimensions");
  int d = 0;
  for (int64_t s : strides) stride[d++] = s;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t st = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] != 1 && stride[d] != st) return false;
    st *= shape[d];
  }
  return true;
}

std::size_t Tensor::span_bytes() const {
  if (numel() == 0) return 0;
  int64_t last = 0;
  for (int d = 0; d < ndim; ++d) last += (shape[d] - 1) * stride[d];
  return static_cast<std::size_t>(last + 1) * dtype_size(dtype);
}

std::string Tensor::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (int d = 0; d < ndim; ++d) os << (d ? ", " : "") << shape[d];
  os << "] on " << device.str();
  return os.str();
}

}  // namespace mlakv
