// Collectives for a DCP group. One Communicator per rank; every rank calls each collective in
// the same order. Buffers live on the communicator's device.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "mlakv/tensor.hpp"

namespace mlakv {

/// Memory for the buffers collectives read and write (a DCP step's or context gather's
/// workspace), from Communicator::allocate. Freed when destroyed, which every rank does (it may
/// be a collective call), before its communicator is destroyed.
class CommBuffer {
 public:
  virtual ~CommBuffer() = default;
  virtual void* data() const = 0;
  virtual std::size_t bytes() const = 0;
  /// Whether collectives on buffers inside it take a faster path (NCCL: a symmetric window).
  virtual bool symmetric() const = 0;
};

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

  /// `bytes` on device() for collective buffers. A collective call: every rank calls it, in the
  /// same order, with the same size. With NCCL 2.27 or newer it is allocated by ncclMemAlloc and
  /// registered as a symmetric window (unless MLAKV_NCCL_SYMMETRIC=0), so that NCCL may use its
  /// symmetric kernels for collectives whose buffers lie at the same offset in it on every rank:
  /// a dcp::decode or dcp::gather_context workspace taken from here qualifies (every rank lays it
  /// out identically). Elsewhere, and by default, plain memory on device().
  virtual std::unique_ptr<CommBuffer> allocate(std::size_t bytes);
};

/// An in-process group of `world` CPU ranks that meet through shared memory; rank r's
/// communicator must be used by one thread (one thread per rank).
std::vector<std::unique_ptr<Communicator>> make_cpu_group(int world);

/// Runs fn(rank) on `world` threads and rethrows the first exception any rank threw.
template <class Fn> void run_ranks(int world, Fn&& fn);

}  // namespace mlakv

#include "mlakv/detail/run_ranks.hpp"
