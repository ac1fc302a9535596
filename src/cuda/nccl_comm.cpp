// Communicator over NCCL. Non-blocking communicators: every call that returns ncclInProgress is
// polled against a deadline, so a dead or stuck peer turns into an mlakv::Error (after
// ncclCommAbort) instead of a hang.

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
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

// What a communicator shares with the buffers it registered: the handle (null once aborted or
// destroyed, so a buffer that outlives it only frees its memory).
struct CommState {
  ncclComm_t comm = nullptr;
  int rank = 0, device = 0;
  std::chrono::milliseconds timeout{};

  // Waits for a non-blocking call to complete; aborts and throws on error or timeout. A call can
  // return ncclSuccess while its work still runs on NCCL's thread (ncclCommWindowRegister does):
  // the communicator's state, not the return value, says when the next call may come.
  void finish(ncclResult_t res, const char* what) {
    const auto deadline = Clock::now() + timeout;
    if (res == ncclSuccess) cuda::nccl().CommGetAsyncError(comm, &res);
    while (res == ncclInProgress) {
      if (Clock::now() > deadline) {
        cuda::nccl().CommAbort(comm);
        comm = nullptr;
        detail::fail("NCCL ", what, " on rank ", rank, ": no progress within ", timeout.count(),
                     " ms; communicator aborted");
      }
      std::this_thread::yield();
      if (cuda::nccl().CommGetAsyncError(comm, &res) != ncclSuccess) break;
    }
    if (res != ncclSuccess) {
      const char* msg = cuda::nccl().GetErrorString(res);
      cuda::nccl().CommAbort(comm);
      comm = nullptr;
      detail::fail("NCCL ", what, " on rank ", rank, " failed: ", msg, "; communicator aborted");
    }
  }

  // The same wait where nothing may throw (destructors): true when the call completed.
  bool settle(ncclResult_t res) const {
    const auto deadline = Clock::now() + timeout;
    if (res == ncclSuccess && cuda::nccl().CommGetAsyncError(comm, &res) != ncclSuccess) return false;
    while (res == ncclInProgress && Clock::now() < deadline) {
      std::this_thread::yield();
      if (cuda::nccl().CommGetAsyncError(comm, &res) != ncclSuccess) return false;
    }
    return res == ncclSuccess;
  }
};

/// ncclMemAlloc'd memory registered as a symmetric window of the communicator.
class WindowBuffer final : public CommBuffer {
 public:
  WindowBuffer(std::shared_ptr<CommState> st, void* p, std::size_t bytes, ncclWindow_t win)
      : st_(std::move(st)), p_(p), bytes_(bytes), win_(win) {}
  ~WindowBuffer() override {
    cudaSetDevice(st_->device);
    // Deregistering is collective: every rank destroys its buffer. A communicator that is gone
    // took its windows with it.
    if (st_->comm && !st_->settle(cuda::nccl().CommWindowDeregister(st_->comm, win_))) {
      cuda::nccl().CommAbort(st_->comm);
      st_->comm = nullptr;
    }
    cuda::nccl().MemFree(p_);
  }
  void* data() const override { return p_; }
  std::size_t bytes() const override { return bytes_; }
  bool symmetric() const override { return true; }

 private:
  std::shared_ptr<CommState> st_;
  void* p_;
  std::size_t bytes_;
  ncclWindow_t win_;
};

bool symmetric_windows_wanted() {
  const char* env = std::getenv("MLAKV_NCCL_SYMMETRIC");
  return cuda::nccl().has_windows() && !(env && std::string(env) == "0");
}

// ncclAlltoAll where the library has it (2.28), unless MLAKV_NCCL_ALLTOALL=sendrecv asks for the
// grouped ncclSend / ncclRecv form.
bool use_nccl_alltoall() {
  const char* env = std::getenv("MLAKV_NCCL_ALLTOALL");
  return cuda::nccl().AlltoAll && !(env && std::string(env) == "sendrecv");
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int world, int rank, int device, std::chrono::milliseconds timeout)
      : st_(std::make_shared<CommState>(CommState{comm, rank, device, timeout})), world_(world) {}

  ~NcclCommunicator() override {
    ncclComm_t comm = st_->comm;
    if (!comm) return;
    cudaSetDevice(st_->device);
    // Finalize flushes outstanding work; if it cannot finish in time the peer is gone: abort.
    if (st_->settle(cuda::nccl().CommFinalize(comm))) cuda::nccl().CommDestroy(comm);
    else cuda::nccl().CommAbort(comm);
    st_->comm = nullptr;  // buffers still alive only free their memory from here on
  }

  int rank() const override { return st_->rank; }
  int world() const override { return world_; }
  Device device() const override { return Device::cuda(st_->device); }

  void all_gather(const void* send, void* recv, std::size_t bytes, Stream stream) override {
    if (bytes == 0) return;
    enter();
    st_->finish(cuda::nccl().AllGather(send, recv, bytes, ncclUint8, st_->comm, cuda::to_cuda(stream)),
                "ncclAllGather");
  }

  void reduce_scatter_sum(const float* send, float* recv, std::size_t count, Stream stream) override {
    if (count == 0) return;
    enter();
    st_->finish(cuda::nccl().ReduceScatter(send, recv, count, ncclFloat32, ncclSum, st_->comm, cuda::to_cuda(stream)),
                "ncclReduceScatter");
  }

  void all_to_all(const void* send, void* recv, std::size_t bytes, Stream stream) override {
    if (bytes == 0) return;
    enter();
    cudaStream_t st = cuda::to_cuda(stream);
    if (use_nccl_alltoall()) {
      st_->finish(cuda::nccl().AlltoAll(send, recv, bytes, ncclUint8, st_->comm, st), "ncclAlltoAll");
      return;
    }
    const auto* s = static_cast<const char*>(send);
    auto* r = static_cast<char*>(recv);
    ncclResult_t res = cuda::nccl().GroupStart();
    for (int peer = 0; peer < world_ && res == ncclSuccess; ++peer) {
      res = cuda::nccl().Send(s + peer * bytes, bytes, ncclUint8, peer, st_->comm, st);
      if (res == ncclSuccess || res == ncclInProgress)
        res = cuda::nccl().Recv(r + peer * bytes, bytes, ncclUint8, peer, st_->comm, st);
    }
    const ncclResult_t end = cuda::nccl().GroupEnd();
    st_->finish(res != ncclSuccess && res != ncclInProgress ? res : end, "all_to_all (ncclSend/ncclRecv)");
  }

  std::unique_ptr<CommBuffer> allocate(std::size_t bytes) override {
    if (!symmetric_windows_wanted()) return cuda::plain_comm_buffer(device(), bytes);
    enter();
    // Whole 2 MiB pages: NCCL maps each peer's window into its symmetric address range, and
    // ncclCommWindowRegister fails with "invalid argument" for a size the mapping granularity
    // does not divide (seen with 4 KiB on H200).
    constexpr std::size_t kPage = std::size_t{2} << 20;
    const std::size_t n = (std::max<std::size_t>(bytes, 1) + kPage - 1) / kPage * kPage;
    void* p = nullptr;
    const ncclResult_t a = cuda::nccl().MemAlloc(&p, n);
    MLAKV_REQUIRE(a == ncclSuccess, "Communicator::allocate: ncclMemAlloc of ", n, " bytes on rank ", st_->rank,
                  " failed: ", cuda::nccl().GetErrorString(a), " (MLAKV_NCCL_SYMMETRIC=0 uses cudaMalloc)");
    ncclWindow_t win = nullptr;
    try {
      st_->finish(cuda::nccl().CommWindowRegister(st_->comm, p, n, &win, NCCL_WIN_COLL_SYMMETRIC),
                  "ncclCommWindowRegister");
    } catch (...) {
      cuda::nccl().MemFree(p);
      throw;
    }
    return std::make_unique<WindowBuffer>(st_, p, bytes, win);
  }

 private:
  // Every call: the rank's device current, and a clear error on a communicator an earlier
  // failure aborted (NCCL would only say "invalid argument").
  void enter() {
    MLAKV_REQUIRE(st_->comm != nullptr, "NCCL communicator of rank ", st_->rank,
                  ": aborted by an earlier failure; make a new group");
    cuda::set_device(Device::cuda(st_->device));
  }

  std::shared_ptr<CommState> st_;
  int world_;
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
  MLAKV_REQUIRE(world >= 1, "world: ", world, ", expected >= 1");
  MLAKV_REQUIRE(rank >= 0 && rank < world, "rank: ", rank, ", expected in [0, ", world, ")");
  const int n = cuda_device_count();
  MLAKV_REQUIRE(device >= 0 && device < n, "device: ", device, ", expected a CUDA device in [0, ", n, ")");
}

}  // namespace

namespace cuda {
namespace {
class CudaCommBuffer final : public CommBuffer {
 public:
  CudaCommBuffer(int device, std::size_t bytes) : device_(device), bytes_(bytes) {
    set_device(Device::cuda(device));
    if (bytes) check_cuda(cudaMalloc(&p_, bytes), "cudaMalloc (Communicator::allocate)");
  }
  ~CudaCommBuffer() override {
    if (!p_) return;
    cudaSetDevice(device_);
    cudaFree(p_);
  }
  void* data() const override { return p_; }
  std::size_t bytes() const override { return bytes_; }
  bool symmetric() const override { return false; }

 private:
  int device_;
  void* p_ = nullptr;
  std::size_t bytes_;
};
}  // namespace

std::unique_ptr<CommBuffer> plain_comm_buffer(Device device, std::size_t bytes) {
  return std::make_unique<CudaCommBuffer>(device.index, bytes);
}
}  // namespace cuda

NcclId nccl_make_id() {
  static_assert(sizeof(ncclUniqueId) == sizeof(NcclId::bytes));
  ncclUniqueId raw;
  const ncclResult_t res = cuda::nccl().GetUniqueId(&raw);
  MLAKV_REQUIRE(res == ncclSuccess, "ncclGetUniqueId failed: ", cuda::nccl().GetErrorString(res));
  NcclId id;
  std::memcpy(id.bytes.data(), raw.internal, sizeof(raw.internal));
  return id;
}

void nccl_write_id(const NcclId& id, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    MLAKV_REQUIRE(static_cast<bool>(f), "nccl id path: cannot write ", tmp);
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
    MLAKV_REQUIRE(Clock::now() < deadline, "nccl id path: ", path, " did not appear within ", timeout.count(),
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
  MLAKV_REQUIRE(world >= 1, "devices: empty list, expected at least one CUDA device");
  for (int r = 0; r < world; ++r) check_group_args(world, r, devices[r]);
  const NcclId id = nccl_make_id();
  std::vector<std::unique_ptr<Communicator>> comms(world);
  // Each rank's init blocks until all have joined, so every rank initializes on its own thread.
  run_ranks(world, [&](int r) { comms[r] = make_nccl_communicator(id, world, r, devices[r], timeout); });
  return comms;
}

}  // namespace mlakv
