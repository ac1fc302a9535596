// NCCL, loaded on first use with dlopen rather than linked. An engine that already loaded its own
// libnccl.so.2 (PyTorch does) then shares that copy, and nothing of ours binds to the symbols a
// statically linked NCCL exports (its private C++ runtime among them); a machine without NCCL
// runs everything but the NCCL communicators.
#pragma once

#include <nccl.h>

namespace mlakv::cuda {

struct NcclApi {
  decltype(&::ncclGetUniqueId) GetUniqueId;
  decltype(&::ncclCommInitRankConfig) CommInitRankConfig;
  decltype(&::ncclCommGetAsyncError) CommGetAsyncError;
  decltype(&::ncclCommFinalize) CommFinalize;
  decltype(&::ncclCommDestroy) CommDestroy;
  decltype(&::ncclCommAbort) CommAbort;
  decltype(&::ncclAllGather) AllGather;
  decltype(&::ncclReduceScatter) ReduceScatter;
  decltype(&::ncclSend) Send;
  decltype(&::ncclRecv) Recv;
  decltype(&::ncclGroupStart) GroupStart;
  decltype(&::ncclGroupEnd) GroupEnd;
  decltype(&::ncclGetErrorString) GetErrorString;
  // Optional (null where the library is older): symmetric windows (2.27) and ncclAlltoAll (2.28).
  decltype(&::ncclMemAlloc) MemAlloc;
  decltype(&::ncclMemFree) MemFree;
  decltype(&::ncclCommWindowRegister) CommWindowRegister;
  decltype(&::ncclCommWindowDeregister) CommWindowDeregister;
  decltype(&::ncclAlltoAll) AlltoAll;
  bool has_windows() const { return MemAlloc && MemFree && CommWindowRegister && CommWindowDeregister; }
};

/// The NCCL entry points; loads the library on the first call (MLAKV_NCCL_LIBRARY names a file to
/// load instead of libnccl.so.2). Throws mlakv::Error when it cannot be loaded.
const NcclApi& nccl();

}  // namespace mlakv::cuda
