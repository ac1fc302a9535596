// A predecessor kernel for the tests of programmatic dependent launch (cuda_late_writer.cu).
#pragma once

#include <cstddef>

namespace mlakv::test {

/// dst[0 .. bytes) = src's bytes, or `fill` where src is null.
struct LateWrite {
  void* dst = nullptr;
  const void* src = nullptr;
  std::size_t bytes = 0;
  unsigned char fill = 0;
};

/// bytes [0, bytes) of dst must all still be `fill` when the late writer checks.
struct PoisonCheck {
  const void* dst = nullptr;
  std::size_t bytes = 0;
  unsigned char fill = 0xFF;
};

/// A host flag the late writer spins on (mapped pinned memory): the host opens it once the work
/// that should overlap the writer is enqueued, so the writer's delay cannot run out while the host
/// is still enqueueing. The writer gives up waiting after a second (a test then fails, not hangs).
class Gate {
 public:
  Gate();
  ~Gate();
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  void close() { *host_ = 0; }
  void open() { *reinterpret_cast<volatile unsigned*>(host_) = 1; }
  unsigned* device() const { return dev_; }

 private:
  unsigned* host_ = nullptr;
  unsigned* dev_ = nullptr;
};

/// Device counters the late writer fills in: checked bytes that no longer held their poison.
struct LateReport {
  unsigned long long touched = 0;
};

/// On `stream` (a cudaStream_t): a kernel that lets the next grid launch at once
/// (griddepcontrol.launch_dependents), waits for `gate` to open, then `delay_us`, then counts
/// into `report` (device memory) the checked bytes a dependent already wrote, then performs the
/// writes. w* with null dst and c* with zero bytes are skipped.
bool launch_late_writer(const Gate& gate, LateReport* report, const PoisonCheck (&checks)[3],
                        const LateWrite (&writes)[3], unsigned delay_us, void* stream);

/// Whether this device and driver start a programmatic dependent before its predecessor ends:
/// a late writer sets a word after a delay, a dependent launched with programmatic stream
/// serialization reads it without waiting. False: the PDL tests could not fail, so they skip.
bool pdl_overlap_observed();

}  // namespace mlakv::test
