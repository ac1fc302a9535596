#include "cuda/nccl_api.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "check.hpp"

namespace mlakv::cuda {
namespace {

NcclApi load() {
  const char* env = std::getenv("MLAKV_NCCL_LIBRARY");
  const std::string name = env && *env ? env : "libnccl.so.2";
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib && !(env && *env)) lib = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    detail::fail("NCCL: cannot load ", name, " (", why ? why : "not found",
                 "); install NCCL or set MLAKV_NCCL_LIBRARY to its path");
  }
  auto sym = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
    MLAKV_REQUIRE(fn != nullptr, "NCCL: ", name, " has no ", symbol, " (NCCL 2.19 or newer is needed)");
  };
  NcclApi api{};
  sym(api.GetUniqueId, "ncclGetUniqueId");
  sym(api.CommInitRankConfig, "ncclCommInitRankConfig");
  sym(api.CommGetAsyncError, "ncclCommGetAsyncError");
  sym(api.CommFinalize, "ncclCommFinalize");
  sym(api.CommDestroy, "ncclCommDestroy");
  sym(api.CommAbort, "ncclCommAbort");
  sym(api.AllGather, "ncclAllGather");
  sym(api.ReduceScatter, "ncclReduceScatter");
  sym(api.Send, "ncclSend");
  sym(api.Recv, "ncclRecv");
  sym(api.GroupStart, "ncclGroupStart");
  sym(api.GroupEnd, "ncclGroupEnd");
  sym(api.GetErrorString, "ncclGetErrorString");
  auto optional = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
  };
  optional(api.MemAlloc, "ncclMemAlloc");
  optional(api.MemFree, "ncclMemFree");
  optional(api.CommWindowRegister, "ncclCommWindowRegister");
  optional(api.CommWindowDeregister, "ncclCommWindowDeregister");
  optional(api.AlltoAll, "ncclAlltoAll");
  return api;  // the library stays loaded for the life of the process
}

}  // namespace

const NcclApi& nccl() {
  static const NcclApi api = load();  // a failed load throws and is retried on the next call
  return api;
}

}  // namespace mlakv::cuda
