// Communicator over NCCL. Non-blocking communicators: every call that returns ncclInProgress is
// polled against a deadline, so a dead or stuck peer turns into an mlakv::Error (after
// ncclCommAbort) instead of a hang.

#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "backend.hpp"
#include "check.hpp"
#include "cuda/nccl_api.hpp"
#include "cuda/runtime.hpp"
#include "mlakv/nccl.hpp"
#include "mlakv/version.hpp"

namespace mlakv {
namespace {

using Clock = std::chrono::steady_clock;

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int world, int rank, int device, std::chrono::milliseconds timeout)
      : comm_(comm), world_(world), rank_(rank), device_(device), timeout_(timeout) {}

  ~NcclCommunicator() override {
    if (!comm_) return;
    cudaSetDevice(device_);
    // Finalize flushes outstanding work; if it cannot finish in time the peer is gone: abort.
    ncclResult_t st = cuda::nccl().CommFinalize(comm_);
    const auto deadline = Clock::now() + timeout_;
    while (st == ncclInProgress && Clock::now() < deadline) {
      std::this_thread::yield();
      if (cuda::nccl().CommGetAsyncError(comm_, &st) != ncclSuccess) break;
    }
    if (st != ncclSuccess) {
      cuda::nccl().CommAbort(comm_);
      return;
    }
    cuda::nccl().CommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  Device device() const override { return Device::cuda(device_); }

  void all_gather(const void* send, void* recv, std::size_t bytes, Stream stream) override {
    if (bytes == 0) return;
    enter();
    finish(cuda::nccl().AllGather(send, recv, bytes, ncclUint8, comm_, cuda::to_cuda(stream)), "ncclAllGather");
  }

  void reduce_scatter_sum(const float* send, float* recv, std::size_t count, Stream stream) override {
    if (count == 0) return;
    enter();
    finish(cuda::nccl().ReduceScatter(send, recv, count, ncclFloat32, ncclSum, comm_, cuda::to_cuda(stream)),
           "ncclReduceScatter");
  }

  void all_to_all(const void* send, void* recv, std::size_t bytes, Stream stream) override {
    if (bytes == 0) return;
    enter();
    const auto* s = static_cast<const char*>(send);
    auto* r = static_cast<char*>(recv);
    cudaStream_t st = cuda::to_cuda(stream);
    ncclResult_t res = cuda::nccl().GroupStart();
    for (int peer = 0; peer < world_ && res == ncclSuccess; ++peer) {
      res = cuda::nccl().Send(s + peer * bytes, bytes, ncclUint8, peer, comm_, st);
      if (res == ncclSuccess || res == ncclInProgress)
        res = cuda::nccl().Recv(r + peer * bytes, bytes, ncclUint8, peer, comm_, st);
    }
    const ncclResult_t end = cuda::nccl().GroupEnd();
    finish(res != ncclSuccess && res != ncclInProgress ? res : end, "all_to_all (ncclSend/ncclRecv)");
  }

 private:
  void enter() { cuda::set_device(Device::cuda(device_)); }

  // Waits for a non-blocking call to leave ncclInProgress; aborts and throws on error or timeout.
  void finish(ncclResult_t res, const char* what) {
    const auto deadline = Clock::now() + timeout_;
    while (res == ncclInProgress) {
      if (Clock::now() > deadline) {
        cuda::nccl().CommAbort(comm_);
        comm_ = nullptr;
        detail::fail("NCCL ", what, " on rank ", rank_, ": no progress within ", timeout_.count(),
                     " ms; communicator aborted");
      }
      std::this_thread::yield();
      if (cuda::nccl().CommGetAsyncError(comm_, &res) != ncclSuccess) break;
    }
    if (res != ncclSuccess) {
      const char* msg = cuda::nccl().GetErrorString(res);
      cuda::nccl().CommAbort(comm_);
      comm_ = nullptr;
      detail::fail("NCCL ", what, " on rank ", rank_, " failed: ", msg, "; communicator aborted");
    }
  }

  ncclComm_t comm_;
  int world_, rank_, device_;
  std::chrono::milliseconds timeout_;
};

ncclConfig_t nonblocking_config() {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  return cfg;
}

// Polls a communicator created non-blocking until it is ready.
void wait_ready(ncclComm_t comm, ncclResult_t res, int rank, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (res == ncclInProgress) {
    if (Clock::now() > deadline) {
      cuda::nccl().CommAbort(comm);
      detail::fail("ncclCommInitRankConfig on rank ", rank, ": not ready within ", timeout.count(),
                   " ms (are all ranks started with the same id?); communicator aborted");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
    cuda::nccl().CommGetAsyncError(comm, &res);
  }
  if (res != ncclSuccess) {
    if (comm) cuda::nccl().CommAbort(comm);
    detail::fail("ncclCommInitRankConfig on rank ", rank, " failed: ", cuda::nccl().GetErrorString(res));
  }
}

void check_group_args(int world, int rank, int device) {
  detail::require(world >= 1, "world: ", world, ", expected >= 1");
  detail::require(rank >= 0 && rank < world, "rank: ", rank, ", expected in [0, ", world, ")");
  const int n = cuda_device_count();
  detail::require(device >= 0 && device < n, "device: ", device, ", expected a CUDA device in [0, ", n, ")");
}

}  // namespace

NcclId nccl_make_id() {
  static_assert(sizeof(ncclUniqueId) == sizeof(NcclId::bytes));
  ncclUniqueId raw;
  const ncclResult_t res = cuda::nccl().GetUniqueId(&raw);
  detail::require(res == ncclSuccess, "ncclGetUniqueId failed: ", cuda::nccl().GetErrorString(res));
  NcclId id;
  std::memcpy(id.bytes.data(), raw.internal, sizeof(raw.internal));
  return id;
}

void nccl_write_id(const NcclId& id, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    detail::require(static_cast<bool>(f), "nccl id path: cannot write ", tmp);
    f.write(id.bytes.data(), static_cast<std::streamsize>(id.bytes.size()));
  }
  std::filesystem::rename(tmp, path);
}

NcclId nccl_read_id(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    std::ifstream f(path, std::ios::binary);
    NcclId id;
    if (f && f.read(id.bytes.data(), static_cast<std::streamsize>(id.bytes.size()))) return id;
    detail::require(Clock::now() < deadline, "nccl id path: ", path, " did not appear within ", timeout.count(),
                    " ms");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::unique_ptr<Communicator> make_nccl_communicator(const NcclId& id, int world, int rank, int device,
                                                     std::chrono::milliseconds timeout) {
  check_group_args(world, rank, device);
  cuda::set_device(Device::cuda(device));
  ncclUniqueId raw;
  std::memcpy(raw.internal, id.bytes.data(), sizeof(raw.internal));
  ncclConfig_t cfg = nonblocking_config();
  ncclComm_t comm = nullptr;
  const ncclResult_t res = cuda::nccl().CommInitRankConfig(&comm, world, raw, rank, &cfg);
  wait_ready(comm, res, rank, timeout);
  return std::make_unique<NcclCommunicator>(comm, world, rank, device, timeout);
}

std::vector<std::unique_ptr<Communicator>> make_nccl_group(const std::vector<int>& devices,
                                                           std::chrono::milliseconds timeout) {
  const int world = static_cast<int>(devices.size());
  detail::require(world >= 1, "devices: empty list, expected at least one CUDA device");
  for (int r = 0; r < world; ++r) check_group_args(world, r, devices[r]);
  const NcclId id = nccl_make_id();
  std::vector<std::unique_ptr<Communicator>> comms(world);
  // Each rank's init blocks until all have joined, so every rank initializes on its own thread.
  run_ranks(world, [&](int r) { comms[r] = make_nccl_communicator(id, world, r, devices[r], timeout); });
  return comms;
}

}  // namespace mlakv
