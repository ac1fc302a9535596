#include "cli_common.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <sstream>

#if MLAKV_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace mlakv::cli {

namespace {

#if MLAKV_WITH_CUDA
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}
// Runtime calls act on the calling thread's current device; the demo drives one GPU per thread.
void use(Device d) { cuda_check(cudaSetDevice(d.index), "cudaSetDevice"); }
#endif

#if !MLAKV_WITH_CUDA
[[noreturn]] void no_cuda() { throw Error("this build of mlakv has no CUDA backend (configure with -DMLAKV_CUDA=ON)"); }
#endif

}  // namespace

bool have_gpu() { return built_with_cuda() && cuda_device_count() > 0; }

Device resolve_device(const std::string& spec, const std::string& flag) {
  if (spec == "cpu") return Device::cpu();
  if (spec == "auto") return have_gpu() ? Device::cuda(0) : Device::cpu();
  int index = 0;
  if (spec == "cuda") {
    index = 0;
  } else if (spec.rfind("cuda:", 0) == 0 && spec.size() > 5 &&
             std::all_of(spec.begin() + 5, spec.end(), [](unsigned char c) { return std::isdigit(c); })) {
    index = std::atoi(spec.c_str() + 5);
  } else {
    throw UsageError(flag + " " + spec + ": expected cpu, cuda, cuda:N or auto");
  }
  if (!built_with_cuda())
    throw UsageError(flag + " " + spec + ": this build of mlakv has no CUDA backend (configure with -DMLAKV_CUDA=ON)");
  const int n = cuda_device_count();
  if (index >= n)
    throw UsageError(flag + " " + spec + ": " + (n == 0 ? "no CUDA device is visible" : std::to_string(n) +
                                                              " CUDA device(s) visible"));
  return Device::cuda(index);
}

std::vector<std::string> gpu_descriptions() {
  std::vector<std::string> out;
#if MLAKV_WITH_CUDA
  for (int i = 0; i < cuda_device_count(); ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      out.push_back("(properties unavailable)");
      continue;
    }
    out.push_back(std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
                  format_bytes(static_cast<double>(p.totalGlobalMem)) + ", " + std::to_string(p.multiProcessorCount) +
                  " SMs)");
  }
#endif
  return out;
}

void synchronize([[maybe_unused]] Device device) {
  if (device.is_cpu()) return;
#if MLAKV_WITH_CUDA
  use(device);
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
#else
  no_cuda();
#endif
}

// ---------------------------------------------------------------------------------------------
// DeviceBuffer

DeviceBuffer::DeviceBuffer(Device device, std::size_t bytes) : device_(device), bytes_(bytes) {
  // Never hand out a null pointer, even for zero bytes: ops reject null data.
  const std::size_t n = std::max<std::size_t>(bytes, 1);
  if (device.is_cpu()) {
    // 256-byte alignment matches what cudaMalloc gives, so views pass the same alignment checks.
    data_ = std::aligned_alloc(256, (n + 255) / 256 * 256);
    if (!data_) throw Error("out of host memory allocating " + format_bytes(static_cast<double>(n)));
    return;
  }
#if MLAKV_WITH_CUDA
  use(device);
  cuda_check(cudaMalloc(&data_, n), "cudaMalloc");
#else
  no_cuda();
#endif
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : device_(o.device_), data_(o.data_), bytes_(o.bytes_) {
  o.data_ = nullptr;
  o.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    release();
    device_ = o.device_;
    data_ = o.data_;
    bytes_ = o.bytes_;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::release() noexcept {
  if (!data_) return;
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
#if MLAKV_WITH_CUDA
    cudaSetDevice(device_.index);
    cudaFree(data_);
#endif
  }
  data_ = nullptr;
}

void DeviceBuffer::upload(const void* src, std::size_t bytes, std::size_t offset) {
  if (offset + bytes > bytes_) throw Error("DeviceBuffer::upload past the end of the buffer");
  if (bytes == 0) return;
  char* dst = static_cast<char*>(data_) + offset;
  if (device_.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if MLAKV_WITH_CUDA
  use(device_);
  cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (upload)");
#else
  no_cuda();
#endif
}

void DeviceBuffer::download(void* dst, std::size_t bytes, std::size_t offset) const {
  if (offset + bytes > bytes_) throw Error("DeviceBuffer::download past the end of the buffer");
  if (bytes == 0) return;
  const char* src = static_cast<const char*>(data_) + offset;
  if (device_.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if MLAKV_WITH_CUDA
  use(device_);
  // A plain cudaMemcpy waits for the legacy default stream, where the CLI queues its ops.
  cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (download)");
#else
  no_cuda();
#endif
}

void DeviceBuffer::fill(uint8_t byte) {
  if (device_.is_cpu()) {
    std::memset(data_, byte, bytes_);
    return;
  }
#if MLAKV_WITH_CUDA
  use(device_);
  cuda_check(cudaMemset(data_, byte, bytes_), "cudaMemset");
#else
  no_cuda();
#endif
}

Tensor DeviceBuffer::view(DType dtype, std::initializer_list<int64_t> shape) const {
  Tensor t(data_, dtype, shape, device_);
  if (t.nbytes() > std::max<std::size_t>(bytes_, 1) && t.numel() > 0)
    throw Error("DeviceBuffer::view: " + t.describe() + " is larger than the buffer (" + std::to_string(bytes_) +
                " bytes)");
  return t;
}

DeviceCache::DeviceCache(Device device, const CacheDesc& d, float fp8_scale, uint8_t fill)
    : bytes(device, static_cast<std::size_t>(d.total_bytes())),
      scale(DeviceBuffer::from(device, std::vector<float>{fp8_scale})),
      desc(d) {
  bytes.fill(fill);
}

DeviceCache::DeviceCache(Device device, const CacheDesc& d, float fp8_scale, const std::vector<uint8_t>& contents)
    : bytes(DeviceBuffer::from(device, contents)),
      scale(DeviceBuffer::from(device, std::vector<float>{fp8_scale})),
      desc(d) {
  if (contents.size() != static_cast<std::size_t>(d.total_bytes()))
    throw Error("DeviceCache: " + std::to_string(contents.size()) + " bytes given, the descriptor needs " +
                std::to_string(d.total_bytes()));
}

Cache DeviceCache::view() const {
  const bool scaled = desc.format == CacheFormat::fp8;
  return Cache{bytes.data(), desc, bytes.device(), scaled ? static_cast<const float*>(scale.data()) : nullptr};
}

// ---------------------------------------------------------------------------------------------
// Error figures

double rel_err(const std::vector<double>& x, const std::vector<double>& ref) {
  if (x.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double a = x[i], b = ref[i];
    if (!std::isfinite(a) || !std::isfinite(b)) {
      // Infinite lse of empty states must match exactly; NaN never does.
      if (a == b) continue;
      return INFINITY;
    }
    num += (a - b) * (a - b);
    den += b * b;
  }
  if (den == 0) return num == 0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

double max_abs_err(const std::vector<double>& x, const std::vector<double>& ref) {
  if (x.size() != ref.size()) return INFINITY;
  double m = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double a = x[i], b = ref[i];
    if (!std::isfinite(a) || !std::isfinite(b)) {
      if (a == b) continue;
      return INFINITY;
    }
    m = std::max(m, std::fabs(a - b));
  }
  return m;
}

std::vector<double> bf16_bits_to_double(const std::vector<uint16_t>& v) {
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = num::bf16_to_f32(v[i]);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Formatting

std::string format_bytes(double bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  else std::snprintf(buf, sizeof buf, bytes < 10 ? "%.2f %s" : (bytes < 100 ? "%.1f %s" : "%.0f %s"), bytes, units[u]);
  return buf;
}

std::string sci(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (std::isnan(v)) return "nan";
  if (v == 0) return "0";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

std::string format_seconds(double s) {
  char buf[32];
  if (s < 1e-3) std::snprintf(buf, sizeof buf, "%.1f us", s * 1e6);
  else if (s < 1.0) std::snprintf(buf, sizeof buf, "%.1f ms", s * 1e3);
  else std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

std::vector<int> parse_int_list(const std::string& text, const std::string& flag) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || v < 1 || v > (1L << 30))
      throw UsageError(flag + " " + text + ": '" + item + "' is not a positive integer");
    out.push_back(static_cast<int>(v));
  }
  if (out.empty() || (!text.empty() && text.back() == ','))
    throw UsageError(flag + " " + text + ": expected a comma-separated list of positive integers");
  return out;
}

// ---------------------------------------------------------------------------------------------
// ProgressBar

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)), total_(std::max<int64_t>(total, 1)), tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t done) {
  if (!tty_ || finished_) return;
  if (!shown_ && std::chrono::steady_clock::now() - start_ < std::chrono::seconds(1)) return;
  shown_ = true;
  draw(done);
}

void ProgressBar::draw(int64_t done) {
  constexpr int kWidth = 30;
  done = std::clamp<int64_t>(done, 0, total_);
  const int filled = static_cast<int>(kWidth * done / total_);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(kWidth - filled), '.');
  std::fprintf(stderr, "\r%s [%s] %lld/%lld  %.1f s", label_.c_str(), bar.c_str(), static_cast<long long>(done),
               static_cast<long long>(total_), secs);
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (!shown_) return;
  draw(total_);
  // Erase the bar so that the report that follows starts on a clean line.
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

// ---------------------------------------------------------------------------------------------
// Table

void Table::print(std::ostream& os) const {
  std::vector<std::size_t> width(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  };
  measure(header_);
  for (const auto& r : rows_) measure(r);
  auto is_left = [&](std::size_t c) { return c < left_.size() ? left_[c] : c == 0; };
  auto line = [&](const std::vector<std::string>& row) {
    std::string out;
    for (std::size_t c = 0; c < width.size(); ++c) {
      const std::string cell = c < row.size() ? row[c] : "";
      const std::string pad(width[c] - std::min(width[c], cell.size()), ' ');
      if (c) out += "  ";
      out += is_left(c) ? cell + pad : pad + cell;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    os << out << '\n';
  };
  line(header_);
  std::size_t total = 0;
  for (std::size_t c = 0; c < width.size(); ++c) total += width[c] + (c ? 2 : 0);
  os << std::string(total, '-') << '\n';
  for (const auto& r : rows_) line(r);
}

}  // namespace mlakv::cli
