// Shared pieces of `mlakv bench`: device buffers, the copy ceiling, event timing, the result
// table and the JSON report. Every function throws mlakv::Error on a CUDA failure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "bench.hpp"

namespace mlakv::bench {

/// Owned device memory (cudaMalloc / cudaFree). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return p_; }
  template <class T> T* as() const { return static_cast<T*>(p_); }
  std::size_t bytes() const { return n_; }
  void upload(const void* src, std::size_t bytes, std::size_t offset = 0);
  void fill(uint8_t byte);

 private:
  void* p_ = nullptr;
  std::size_t n_ = 0;
};

/// A CUDA stream owned for the length of a benchmark (non-blocking), as an opaque handle.
class BenchStream {
 public:
  BenchStream();
  ~BenchStream();
  BenchStream(const BenchStream&) = delete;
  BenchStream& operator=(const BenchStream&) = delete;
  void* get() const { return s_; }
  void sync() const;

 private:
  void* s_ = nullptr;
};

/// Fills `dst` with the bytes of `pool` repeated (device-to-device), starting each copy at a
/// different pool offset so that rows are not all alike.
void fill_from_pool(const DeviceBuffer& pool, void* dst, std::size_t bytes, void* stream);

struct TimeOptions {
  int warmup = 5;
  int iters = 50;
};

/// Median time in microseconds of `enqueue(i)` for i = 0, 1, ...: each timed call sits between its
/// own pair of CUDA events on `stream`, after `warmup` untimed calls, all enqueued behind a long
/// memset so that the events time the GPU, not the host's launch overhead. The caller rotates
/// inputs by i so that repeated calls do not find their data in L2. `host_us`, if given, gets the
/// host's time to enqueue one call (with its two event records), averaged over the timed calls.
double time_us(const std::function<void(int)>& enqueue, void* stream, const TimeOptions& t, double* host_us = nullptr);

/// Bytes of L2 on `device` and its name.
std::size_t l2_bytes(int device);
std::string device_name(int device);

/// Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written (a 1 GiB
/// cudaMemcpyAsync, median of several).
double measure_copy_gbps(int device, int iters = 20);

/// One measured case.
struct Result {
  std::string op, format, shape;
  int64_t requests = 0, tokens = 0;
  double us = 0, bytes = 0;
  double gbps = 0, pct_of_copy = 0;
  double tflops = -1;  ///< < 0: not applicable
  /// Extra JSON fields (e.g. heads, ctx for decode).
  std::vector<std::pair<std::string, double>> extra;
};

/// gbps and pct_of_copy from bytes, us and the ceiling; tflops from `flops` when > 0.
void finish(Result& r, double copy_gbps, double flops = 0);

/// op, format, shape, µs, GB/s, % of copy, TFLOP/s.
void print_table(std::ostream& os, const std::vector<Result>& results, double copy_gbps);
void print_row(std::ostream& os, const Result& r);

/// {device, date, copy_gbps, results: [{op, format, requests, tokens, us, gbps, pct_of_copy, ...}]}.
void write_json(const std::string& path, const std::string& device, double copy_gbps, const std::vector<Result>& results);

/// The end of every bench: the table on stdout, then the JSON when json_path is non-empty.
void report(const std::string& device, double copy_gbps, const std::vector<Result>& results,
            const std::string& json_path);

}  // namespace mlakv::bench
