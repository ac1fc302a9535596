// Build without the CUDA backend: the runtime queries answer "none".
#include "mlakv/version.hpp"

namespace mlakv {
bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
}  // namespace mlakv
