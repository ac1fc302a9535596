// Collectives for a DCP group. One Communicator per rank; every rank calls each collective in
// the same order. Buffers live on the communicator's device.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "mlakv/tensor.hpp"

namespace mlakv {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual Device device() const = 0;

  /// recv [world][bytes] <- every rank's send [bytes], rank-major.
  virtual void all_gather(const void* send, void* recv, std::size_t bytes, Stream stream) = 0;
  /// send [world][count] f32; recv [count] = sum over ranks of their send[rank()].
  virtual void reduce_scatter_sum(const float* send, float* recv, std::size_t count, Stream stream) = 0;
  /// send [world][bytes]: block d goes to rank d; recv [world][bytes]: block s came from rank s.
  virtual void all_to_all(const void* send, void* recv, std::size_t bytes, Stream stream) = 0;
};

/// An in-process group of `world` CPU ranks that meet through shared memory; rank r's
/// communicator must be used by one thread (one thread per rank).
std::vector<std::unique_ptr<Communicator>> make_cpu_group(int world);

/// Runs fn(rank) on `world` threads and rethrows the first exception any rank threw.
template <class Fn> void run_ranks(int world, Fn&& fn);

}  // namespace mlakv

#include "mlakv/detail/run_ranks.hpp"
