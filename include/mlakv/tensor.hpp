// Non-owning tensor views, devices, dtypes and the opaque stream handle.
// Host-only: nothing here needs CUDA headers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace mlakv {

enum class DType : uint8_t { bf16, f16, f32, f64, e4m3, u8, i32, i64 };

/// Bytes of one element; e4m3 and u8 are one byte.
std::size_t dtype_size(DType d);
/// Lower-case name ("bf16", "f32", "e4m3", ...), used in error messages.
const char* dtype_name(DType d);

enum class DeviceKind : uint8_t { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;

  static Device cpu() { return {DeviceKind::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceKind::cuda, i}; }
  bool is_cpu() const { return kind == DeviceKind::cpu; }
  bool is_cuda() const { return kind == DeviceKind::cuda; }
  /// "cpu" or "cuda:N".
  std::string str() const;
  friend bool operator==(const Device&, const Device&) = default;
};

/// A CUDA stream as an opaque pointer (a cudaStream_t); null is the legacy default stream.
/// Ignored by the CPU backend.
struct Stream {
  void* handle = nullptr;
};

inline constexpr int kMaxDims = 6;

/// A non-owning view: pointer, element type, shape and strides in elements.
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::u8;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> stride{};
  Device device{};

  Tensor() = default;
  /// Contiguous (row-major) view.
  Tensor(void* ptr, DType dt, std::initializer_list<int64_t> shp, Device dev = Device::cpu());
  /// View with explicit strides (elements).
  Tensor(void* ptr, DType dt, std::initializer_list<int64_t> shp,
         std::initializer_list<int64_t> strides, Device dev = Device::cpu());

  int64_t size(int d) const { return shape[d < 0 ? d + ndim : d]; }
  /// Element count; throws mlakv::Error where it overflows int64 (a huge or broadcast shape).
  int64_t numel() const;
  bool is_contiguous() const;
  /// numel() x element size; throws mlakv::Error where it overflows int64.
  std::size_t nbytes() const;
  /// Bytes from data to one past the highest byte any element reaches (0 when empty); throws
  /// mlakv::Error where an element's byte offset overflows int64.
  std::size_t span_bytes() const;
  template <class T> T* ptr() const { return static_cast<T*>(data); }
  /// "bf16[3, 16, 576] on cpu", for error messages.
  std::string describe() const;
};

}  // namespace mlakv
