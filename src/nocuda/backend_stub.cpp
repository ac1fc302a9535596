// Build without the CUDA backend: the runtime queries answer "none".
#include "mlakv/version.hpp"

namespace mlakv {
bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
}  // namespace mlakv

#include "check.hpp"
#include "mlakv/nccl.hpp"

namespace mlakv {
namespace {
[[noreturn]] void no_nccl() { detail::fail("NCCL communicators need the CUDA backend; this build has none (-DMLAKV_CUDA=ON)"); }
}  // namespace
NcclId nccl_make_id() { no_nccl(); }
void nccl_write_id(const NcclId&, const std::string&) { no_nccl(); }
NcclId nccl_read_id(const std::string&, std::chrono::milliseconds) { no_nccl(); }
std::unique_ptr<Communicator> make_nccl_communicator(const NcclId&, int, int, int, std::chrono::milliseconds) { no_nccl(); }
std::vector<std::unique_ptr<Communicator>> make_nccl_group(const std::vector<int>&, std::chrono::milliseconds) { no_nccl(); }
}  // namespace mlakv
