// Collectives between threads of one process. Every collective is two barriers: after the first
// every rank's buffers are published and stable, so each rank reads what it needs from the
// others directly; the second keeps a rank from reusing its send buffer (or publishing the next
// collective's pointers) while a peer may still be reading. A rank that never arrives (it threw,
// or called a different collective) makes the others time out; the group is then broken for good
// so that no later collective waits again.
#include "comm/cpu_group.hpp"

#include <condition_variable>
#include <cstring>
#include <mutex>

#include "check.hpp"

namespace mlakv::detail {
namespace {

enum class Kind { all_gather, reduce_scatter_sum, all_to_all };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::all_gather: return "all_gather";
    case Kind::reduce_scatter_sum: return "reduce_scatter_sum";
    case Kind::all_to_all: return "all_to_all";
  }
  return "?";
}

struct Posted {
  Kind kind{};
  const void* send = nullptr;
  std::size_t bytes = 0;  // per-rank block (elements * 4 for reduce_scatter_sum)
};

struct Shared {
  explicit Shared(int w, std::chrono::milliseconds t) : world(w), timeout(t), posted(static_cast<std::size_t>(w)) {}

  const int world;
  const std::chrono::milliseconds timeout;
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  bool broken = false;
  std::vector<Posted> posted;

  void barrier(int rank, const char* what) {
    std::unique_lock<std::mutex> lock(m);
    MLAKV_REQUIRE(!broken, "cpu group rank ", rank, ": ", what, " on a broken group (an earlier collective timed out)");
    const uint64_t gen = generation;
    if (++arrived == world) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    const bool done = cv.wait_for(lock, timeout, [&] { return generation != gen || broken; });
    if (generation != gen) return;
    broken = true;
    cv.notify_all();
    if (!done)
      fail("cpu group rank ", rank, ": ", what, " timed out after ", timeout.count(),
           " ms waiting for the other ranks (a rank threw or called a different collective)");
    fail("cpu group rank ", rank, ": ", what, " aborted: another rank timed out");
  }
};

class CpuCommunicator final : public Communicator {
 public:
  CpuCommunicator(std::shared_ptr<Shared> s, int rank) : s_(std::move(s)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world() const override { return s_->world; }
  Device device() const override { return Device::cpu(); }

  void all_gather(const void* send, void* recv, std::size_t bytes, Stream) override {
    run(Kind::all_gather, send, bytes, [&](int src, const uint8_t* peer) {
      if (bytes) std::memcpy(static_cast<uint8_t*>(recv) + src * bytes, peer, bytes);
    });
  }

  void reduce_scatter_sum(const float* send, float* recv, std::size_t count, Stream) override {
    // Sum in double, in rank order: deterministic and one rounding per element.
    std::vector<double> acc(count, 0.0);
    run(Kind::reduce_scatter_sum, send, count * sizeof(float), [&](int, const uint8_t* peer) {
      const float* p = reinterpret_cast<const float*>(peer) + static_cast<std::size_t>(rank_) * count;
      for (std::size_t i = 0; i < count; ++i) acc[i] += p[i];
    });
    for (std::size_t i = 0; i < count; ++i) recv[i] = static_cast<float>(acc[i]);
  }

  void all_to_all(const void* send, void* recv, std::size_t bytes, Stream) override {
    run(Kind::all_to_all, send, bytes, [&](int src, const uint8_t* peer) {
      if (bytes) std::memcpy(static_cast<uint8_t*>(recv) + src * bytes, peer + rank_ * bytes, bytes);
    });
  }

 private:
  // Publishes this rank's send buffer, then calls take(src, peer_send) for every rank in order.
  template <class Take> void run(Kind kind, const void* send, std::size_t bytes, Take&& take) {
    MLAKV_REQUIRE(send != nullptr || bytes == 0, "cpu group rank ", rank_, ": ", kind_name(kind), ": null send buffer");
    s_->posted[static_cast<std::size_t>(rank_)] = {kind, send, bytes};
    s_->barrier(rank_, kind_name(kind));
    // Every rank sees the same posts, so a mismatch makes all of them throw here, and none is
    // left waiting at the second barrier.
    for (int r = 0; r < s_->world; ++r) {
      const Posted& p = s_->posted[static_cast<std::size_t>(r)];
      MLAKV_REQUIRE(p.kind == kind && p.bytes == bytes, "cpu group rank ", rank_, ": ", kind_name(kind), " of ", bytes,
                    " bytes per rank, but rank ", r, " called ", kind_name(p.kind), " with ", p.bytes,
                    " (every rank must call the same collective with the same size)");
    }
    for (int r = 0; r < s_->world; ++r) take(r, static_cast<const uint8_t*>(s_->posted[static_cast<std::size_t>(r)].send));
    s_->barrier(rank_, kind_name(kind));
  }

  std::shared_ptr<Shared> s_;
  int rank_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_cpu_group(int world, std::chrono::milliseconds timeout) {
  MLAKV_REQUIRE(world >= 1, "make_cpu_group: world ", world, ", expected >= 1");
  MLAKV_REQUIRE(timeout.count() > 0, "make_cpu_group: timeout ", timeout.count(), " ms, expected > 0");
  auto shared = std::make_shared<Shared>(world, timeout);
  std::vector<std::unique_ptr<Communicator>> comms;
  comms.reserve(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) comms.push_back(std::make_unique<CpuCommunicator>(shared, r));
  return comms;
}

}  // namespace mlakv::detail

namespace mlakv {

std::vector<std::unique_ptr<Communicator>> make_cpu_group(int world) {
  return detail::make_cpu_group(world, detail::kCpuGroupDefaultTimeout);
}

}  // namespace mlakv
