// Splits a CPU reference op's independent items over the machine's cores. Each item writes only
// its own outputs and reads shared inputs, so the result is the same bits for any thread count;
// the GPU tests' references (up to ~10 GFLOP in double per case) then take seconds, not minutes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace mlakv::cpu {

/// Runs f(i) for every i in [0, n), in contiguous chunks on up to hardware_concurrency threads
/// (the caller runs the first chunk). `work` estimates the total cost in multiply-adds: below
/// ~2^20 per thread a thread costs more than it saves. The first exception thrown is rethrown.
template <class F>
void parallel_for(int64_t n, double work, F&& f) {
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t by_work = static_cast<int64_t>(work / static_cast<double>(1 << 20));
  const int64_t threads = std::max<int64_t>(1, std::min({hw, n, by_work}));
  if (threads == 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(threads));
  auto chunk = [&](int64_t t) {
    try {
      for (int64_t i = n * t / threads; i < n * (t + 1) / threads; ++i) f(i);
    } catch (...) {
      errors[static_cast<std::size_t>(t)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads - 1));
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(chunk, t);
  chunk(0);
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace mlakv::cpu
