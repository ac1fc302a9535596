// Communicator::allocate's default: plain memory on the communicator's device (host memory for
// the CPU group, cudaMalloc for a CUDA device). The NCCL communicator overrides it with a
// symmetric window.
#include <cstdlib>

#include "backend.hpp"
#include "check.hpp"
#include "mlakv/comm.hpp"

namespace mlakv {
namespace {

class HostCommBuffer final : public CommBuffer {
 public:
  explicit HostCommBuffer(std::size_t bytes) : bytes_(bytes) {
    constexpr std::size_t kAlign = 256;
    p_ = bytes ? std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign) : nullptr;
    MLAKV_REQUIRE(bytes == 0 || p_ != nullptr, "Communicator::allocate: ", bytes, " bytes of host memory unavailable");
  }
  ~HostCommBuffer() override { std::free(p_); }
  void* data() const override { return p_; }
  std::size_t bytes() const override { return bytes_; }
  bool symmetric() const override { return false; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace

std::unique_ptr<CommBuffer> Communicator::allocate(std::size_t bytes) {
  const Device d = device();
  if (d.is_cpu()) return std::make_unique<HostCommBuffer>(bytes);
#if MLAKV_WITH_CUDA
  return cuda::plain_comm_buffer(d, bytes);
#else
  detail::fail("Communicator::allocate: device ", d.str(), " needs the CUDA backend; this build has none");
#endif
}

}  // namespace mlakv
