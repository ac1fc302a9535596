#include "bench_util.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iomanip>
#include <ostream>

#include <nlohmann/json.hpp>

#include "mlakv/error.hpp"

#if MLAKV_WITH_CUDA
#include <cuda_runtime.h>

#include "bench_cuda.hpp"
#endif

namespace mlakv::bench {

#if MLAKV_WITH_CUDA

namespace {

cudaStream_t st(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace

DeviceBuffer::DeviceBuffer(std::size_t bytes) : n_(bytes) {
  if (bytes) ck(cudaMalloc(&p_, bytes), "cudaMalloc");
}
DeviceBuffer::~DeviceBuffer() {
  if (p_) cudaFree(p_);
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_, n_ = o.n_;
    o.p_ = nullptr, o.n_ = 0;
  }
  return *this;
}
void DeviceBuffer::upload(const void* src, std::size_t bytes, std::size_t offset) {
  if (bytes) ck(cudaMemcpy(static_cast<uint8_t*>(p_) + offset, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}
void DeviceBuffer::fill(uint8_t byte) {
  if (n_) ck(cudaMemset(p_, byte, n_), "cudaMemset");
}

BenchStream::BenchStream() {
  cudaStream_t s;
  ck(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  s_ = s;
}
BenchStream::~BenchStream() {
  if (s_) cudaStreamDestroy(st(s_));
}
void BenchStream::sync() const { ck(cudaStreamSynchronize(st(s_)), "cudaStreamSynchronize"); }

void fill_from_pool(const DeviceBuffer& pool, void* dst, std::size_t bytes, void* stream) {
  const std::size_t chunk = pool.bytes() / 2;
  std::size_t done = 0, shift = 0;
  while (done < bytes) {
    const std::size_t n = std::min(chunk, bytes - done);
    ck(cudaMemcpyAsync(static_cast<uint8_t*>(dst) + done, pool.as<uint8_t>() + shift, n, cudaMemcpyDeviceToDevice,
                       st(stream)),
       "cudaMemcpyAsync D2D");
    done += n;
    shift = (shift + 4096 * 37 + 16) % (pool.bytes() - chunk) & ~std::size_t{15};
  }
}

double time_us(const std::function<void(int)>& enqueue, void* stream, const TimeOptions& t, double* host_us) {
  // Keep the GPU busy while the host enqueues every call, so that each event pair brackets the
  // op's GPU time and not the host's launch overhead (validation and launch take a few µs,
  // as long as a whole small op): ~64 MB of memset per call queued ahead, ~20 µs of GPU time.
  static DeviceBuffer hold(std::size_t{256} << 20);
  const int n = std::max(1, t.iters);
  // Warm-up: at least t.warmup calls and 20 ms of them, so that the SM clock has left whatever
  // state the work before left it in (a 15 µs decode step measured 15 to 44 µs by what ran
  // before it: session 22).
  using Clock = std::chrono::steady_clock;
  int done = 0;
  const auto t0 = Clock::now();
  do {
    for (int i = 0; i < 8; ++i) enqueue(done++);
    ck(cudaStreamSynchronize(st(stream)), "cudaStreamSynchronize");
  } while (done < t.warmup || Clock::now() - t0 < std::chrono::milliseconds(20));
  // The backlog must outlast the host's enqueueing of the timed calls: where the host is slower
  // than that, the GPU drains it and then waits on the host, and the events time the host's
  // launches. Checked on every run: the GPU reaches call i's first event g_i after the backlog's
  // start; the host enqueued it h_i after enqueueing that start (when the GPU was idle, so the two
  // clocks start together). A call whose slack g_i − h_i is under 10 µs found the GPU waiting for
  // it, or nearly; such a run is repeated with twice the backlog, twice at most. (A host held up
  // by a full launch queue leaves a large slack: the GPU is busy with what the queue holds.)
  int memsets = (n + 3) / 4;
  std::vector<double> us(static_cast<std::size_t>(n)), host_at(static_cast<std::size_t>(n));
  std::vector<cudaEvent_t> ev(2 * static_cast<std::size_t>(n) + 1);
  for (auto& e : ev) ck(cudaEventCreate(&e), "cudaEventCreate");
  for (int attempt = 0;; ++attempt) {
    const auto h0 = Clock::now();
    ck(cudaEventRecord(ev[2 * n], st(stream)), "cudaEventRecord");
    for (int i = 0; i < memsets; ++i) ck(cudaMemsetAsync(hold.get(), i & 0xff, hold.bytes(), st(stream)), "cudaMemsetAsync");
    const auto h1 = Clock::now();
    for (int i = 0; i < n; ++i) {
      host_at[static_cast<std::size_t>(i)] = std::chrono::duration<double, std::milli>(Clock::now() - h0).count();
      ck(cudaEventRecord(ev[2 * i], st(stream)), "cudaEventRecord");
      enqueue(done + i);
      ck(cudaEventRecord(ev[2 * i + 1], st(stream)), "cudaEventRecord");
    }
    if (host_us) *host_us = 1000.0 * std::chrono::duration<double, std::milli>(Clock::now() - h1).count() / n;
    done += n;
    ck(cudaStreamSynchronize(st(stream)), "cudaStreamSynchronize");
    ck(cudaGetLastError(), "kernel launch");
    double least_slack_ms = 1e30;
    for (int i = 0; i < n; ++i) {
      float ms = 0, at = 0;
      ck(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]), "cudaEventElapsedTime");
      ck(cudaEventElapsedTime(&at, ev[2 * n], ev[2 * i]), "cudaEventElapsedTime");
      us[static_cast<std::size_t>(i)] = 1000.0 * ms;
      least_slack_ms = std::min(least_slack_ms, at - host_at[static_cast<std::size_t>(i)]);
    }
    if (least_slack_ms >= 0.010) break;
    if (attempt == 2) {
      std::cerr << "mlakv bench: the GPU caught up with the host (least slack " << 1000.0 * least_slack_ms
                << " µs with " << memsets << " memsets queued ahead): these times may include launch overhead\n";
      break;
    }
    memsets = std::min(512, 2 * memsets);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::nth_element(us.begin(), us.begin() + n / 2, us.end());
  return us[static_cast<std::size_t>(n / 2)];
}

std::size_t l2_bytes(int device) {
  int v = 0;
  ck(cudaDeviceGetAttribute(&v, cudaDevAttrL2CacheSize, device), "cudaDeviceGetAttribute");
  return static_cast<std::size_t>(v);
}

std::string device_name(int device) {
  cudaDeviceProp p{};
  ck(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  return p.name;
}

double measure_copy_gbps(int device, int iters) {
  ck(cudaSetDevice(device), "cudaSetDevice");
  const std::size_t n = std::size_t{1} << 30;
  DeviceBuffer a(n), b(n);
  a.fill(0x3C);
  b.fill(0x5A);
  BenchStream s;
  const double us = time_us(
      [&](int i) {
        // Alternate direction so that neither buffer stays the source.
        void* dst = i % 2 ? a.get() : b.get();
        const void* src = i % 2 ? b.get() : a.get();
        ck(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, st(s.get())), "cudaMemcpyAsync");
      },
      s.get(), {3, iters});
  return 2.0 * static_cast<double>(n) / (us * 1e3);
}

#else

DeviceBuffer::DeviceBuffer(std::size_t) { throw Error("mlakv bench: built without CUDA"); }
DeviceBuffer::~DeviceBuffer() = default;
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&&) noexcept { return *this; }
void DeviceBuffer::upload(const void*, std::size_t, std::size_t) {}
void DeviceBuffer::fill(uint8_t) {}
BenchStream::BenchStream() { throw Error("mlakv bench: built without CUDA"); }
BenchStream::~BenchStream() = default;
void BenchStream::sync() const {}
void fill_from_pool(const DeviceBuffer&, void*, std::size_t, void*) {}
double time_us(const std::function<void(int)>&, void*, const TimeOptions&, double*) {
  throw Error("mlakv bench: built without CUDA");
}
std::size_t l2_bytes(int) { return 0; }
std::string device_name(int) { return "none"; }
double measure_copy_gbps(int, int) { throw Error("mlakv bench: built without CUDA"); }

#endif

void finish(Result& r, double copy_gbps, double flops) {
  r.gbps = r.us > 0 ? r.bytes / (r.us * 1e3) : 0;
  r.pct_of_copy = copy_gbps > 0 ? 100.0 * r.gbps / copy_gbps : 0;
  if (flops > 0 && r.us > 0) r.tflops = flops / (r.us * 1e6);
}

void print_row(std::ostream& os, const Result& r) {
  char buf[256];
  char tf[32] = "-";
  if (r.tflops >= 0) std::snprintf(tf, sizeof tf, "%.1f", r.tflops);
  std::snprintf(buf, sizeof buf, "%-22s %-11s %-16s %10.2f %9.1f %8.1f %9s", r.op.c_str(), r.format.c_str(),
                r.shape.c_str(), r.us, r.gbps, r.pct_of_copy, tf);
  os << buf << "\n";
}

void print_table(std::ostream& os, const std::vector<Result>& results, double copy_gbps) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "copy ceiling: %.1f GB/s (device-to-device, read + write)\n", copy_gbps);
  os << buf;
  std::snprintf(buf, sizeof buf, "%-22s %-11s %-16s %10s %9s %8s %9s", "op", "format", "shape", "us", "GB/s", "% copy",
                "TFLOP/s");
  os << buf << "\n";
  for (const auto& r : results) print_row(os, r);
  os.flush();
}

void write_json(const std::string& path, const std::string& device, double copy_gbps, const std::vector<Result>& results) {
  nlohmann::json j;
  j["device"] = device;
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  j["date"] = date;
  j["copy_gbps"] = copy_gbps;
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : results) {
    nlohmann::json o{{"op", r.op},     {"format", r.format}, {"requests", r.requests},         {"tokens", r.tokens},
                     {"us", r.us},     {"gbps", r.gbps},     {"pct_of_copy", r.pct_of_copy}, {"shape", r.shape}};
    if (r.tflops >= 0) o["tflops"] = r.tflops;
    for (const auto& [k, v] : r.extra) o[k] = v;
    arr.push_back(std::move(o));
  }
  j["results"] = std::move(arr);
  std::ofstream f(path);
  if (!f) throw Error("mlakv bench: cannot write " + path);
  f << std::setw(2) << j << "\n";
}

void report(const std::string& device, double copy_gbps, const std::vector<Result>& results,
            const std::string& json_path) {
  std::cout << "\n";
  print_table(std::cout, results, copy_gbps);
  if (json_path.empty()) return;
  write_json(json_path, device, copy_gbps, results);
  std::cout << "wrote " << json_path << "\n";
}

bool selected(const BenchOptions& opts, const std::string& op, const std::string& format, const std::string& shape) {
  if (opts.only.empty()) return true;
  const std::string name = op + " " + format + " " + shape;
  for (const std::string& o : opts.only)
    if (name.find(o) != std::string::npos) return true;
  return false;
}

}  // namespace mlakv::bench
