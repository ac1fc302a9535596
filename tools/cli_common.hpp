// Pieces shared by the `mlakv` subcommands: device buffers that work the same on the CPU and on a
// GPU, device selection, error figures, a progress bar and plain-text tables.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlakv/mlakv.hpp"

namespace CLI {
class App;
}

namespace mlakv::cli {

/// A bad flag value or a bad combination of flags: main prints it and exits 2. The message
/// starts with the flag it is about.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Registers a subcommand on `root`; the returned function runs it after parsing and gives the
/// process exit code.
using CommandFn = std::function<int()>;
CommandFn add_check_command(CLI::App& root);
CommandFn add_demo_command(CLI::App& root);

bool have_gpu();
/// "cpu", "cuda", "cuda:N" or "auto" (a GPU when the build has CUDA and one is present).
/// Throws UsageError naming `flag` for anything else or for a GPU that is not there.
Device resolve_device(const std::string& spec, const std::string& flag = "--device");
/// "NVIDIA H200 (sm_90, 139.8 GiB)" per visible GPU; empty without CUDA.
std::vector<std::string> gpu_descriptions();
/// Waits for all work queued on `device` (a no-op on the CPU).
void synchronize(Device device);

/// Owning memory on one device. Copies go through the CUDA runtime for GPU memory.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device device, std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

  void upload(const void* src, std::size_t bytes, std::size_t offset = 0);
  void download(void* dst, std::size_t bytes, std::size_t offset = 0) const;
  void fill(uint8_t byte);

  /// A contiguous view of the start of the buffer.
  Tensor view(DType dtype, std::initializer_list<int64_t> shape) const;

  template <class T> static DeviceBuffer from(Device device, const std::vector<T>& host) {
    DeviceBuffer b(device, host.size() * sizeof(T));
    b.upload(host.data(), b.bytes());
    return b;
  }
  template <class T> std::vector<T> to_host() const {
    std::vector<T> v(bytes_ / sizeof(T));
    download(v.data(), v.size() * sizeof(T));
    return v;
  }

 private:
  void release() noexcept;
  Device device_{};
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

/// A paged cache in one device's memory, with the per-tensor scale an fp8 cache reads beside it.
struct DeviceCache {
  DeviceBuffer bytes, scale;
  CacheDesc desc;
  DeviceCache() = default;
  /// Allocates desc.total_bytes() filled with `fill`.
  DeviceCache(Device device, const CacheDesc& desc, float fp8_scale, uint8_t fill = 0);
  /// Uploads existing cache bytes (desc.total_bytes() of them).
  DeviceCache(Device device, const CacheDesc& desc, float fp8_scale, const std::vector<uint8_t>& contents);
  Cache view() const;
};

/// ‖x − ref‖ / ‖ref‖ over finite reference entries; an entry where exactly one side is
/// non-finite, or differs in kind (+inf vs −inf), makes it +inf. Both zero gives 0.
double rel_err(const std::vector<double>& x, const std::vector<double>& ref);
/// Largest |x − ref|, where equal infinities count as 0 and any other non-finite pair as +inf.
double max_abs_err(const std::vector<double>& x, const std::vector<double>& ref);
std::vector<double> bf16_bits_to_double(const std::vector<uint16_t>& v);

/// "1.50 MiB", "12.0 KiB", "900 B".
std::string format_bytes(double bytes);
/// "%.2e"-style scientific figure.
std::string sci(double v);
/// "12.3 ms", "4.56 s".
std::string format_seconds(double s);

/// Parses "1000,4000,250" into positive integers; UsageError naming `flag` otherwise.
std::vector<int> parse_int_list(const std::string& text, const std::string& flag);

/// A one-line progress bar on stderr, shown only when stderr is a terminal and the work has
/// already taken over a second (so short runs and logs stay clean).
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  ~ProgressBar();
  void update(int64_t done);
  void finish();

 private:
  void draw(int64_t done);
  std::string label_;
  int64_t total_;
  bool tty_;
  bool shown_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

/// Left-aligned first column, right-aligned figures; columns sized to their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  /// Which columns are left-aligned (the others are right-aligned); default: the first.
  void left_align(std::vector<bool> left) { left_ = std::move(left); }
  void print(std::ostream& os) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> left_;
};

}  // namespace mlakv::cli
