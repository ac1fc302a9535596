#pragma once

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace mlakv {

template <class Fn> void run_ranks(int world, Fn&& fn) {
  std::exception_ptr first;
  std::mutex m;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m);
        if (!first) first = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace mlakv
