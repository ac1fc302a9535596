// Which backend runs the DCP kernels.
#include "check.hpp"
#include "dcp/dcp_ops.hpp"

namespace mlakv::dcp::ops {

const Kernels& kernels_for(Device device, const char* op) {
  if (device.is_cpu()) return cpu_kernels();
  // The CUDA kernels implement the same table; until they exist this is the one place to change.
  detail::fail(op, " on ", device.str(), ": the DCP kernels for CUDA devices are not available in this build yet ",
               "(CPU ranks from make_cpu_group are)");
}

}  // namespace mlakv::dcp::ops
