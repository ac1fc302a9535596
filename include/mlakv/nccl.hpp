// NCCL communicators for a DCP group on GPUs. Available in CUDA builds; elsewhere every function
// throws mlakv::Error.
#pragma once

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "mlakv/comm.hpp"

namespace mlakv {

/// The 128 opaque bytes of an ncclUniqueId, made by one rank and handed to all.
struct NcclId {
  std::array<char, 128> bytes{};
};

/// Makes a fresh id (on rank 0 of a multi-process group).
NcclId nccl_make_id();
/// Writes the id atomically to `path` (write to a temporary file, then rename).
void nccl_write_id(const NcclId& id, const std::string& path);
/// Waits up to `timeout` for `path` to appear and reads the id from it.
NcclId nccl_read_id(const std::string& path, std::chrono::milliseconds timeout);

/// One rank of a multi-process group on CUDA device `device`. The communicator is non-blocking:
/// every NCCL call that does not complete within `timeout` aborts the communicator and throws.
std::unique_ptr<Communicator> make_nccl_communicator(const NcclId& id, int world, int rank, int device,
                                                     std::chrono::milliseconds timeout = std::chrono::seconds(60));

/// A whole single-process group, one rank per device in `devices` (rank r on devices[r]). Each
/// communicator is then driven by its own thread (run_ranks).
std::vector<std::unique_ptr<Communicator>> make_nccl_group(const std::vector<int>& devices,
                                                           std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace mlakv
