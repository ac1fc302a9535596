// Which backend runs the DCP kernels.
#include "check.hpp"
#include "dcp/dcp_ops.hpp"

namespace mlakv::dcp::ops {

const Kernels& kernels_for(Device device, const char* op) {
  if (device.is_cpu()) return cpu_kernels();
#if MLAKV_WITH_CUDA
  if (device.is_cuda()) return cuda_kernels();
#endif
  detail::fail(op, " on ", device.str(), ": this build has no CUDA backend (configure with -DMLAKV_CUDA=ON); ",
               "CPU ranks from make_cpu_group run everywhere");
}

}  // namespace mlakv::dcp::ops
