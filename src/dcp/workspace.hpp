// Carving one caller workspace into aligned sub-buffers, identically in the size query and in
// the op.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace mlakv::dcp {

class WorkspacePlan {
 public:
  /// Alignment of every sub-buffer (enough for vector loads and NCCL).
  static constexpr std::size_t kAlign = 256;

  /// Reserves `bytes` and returns its offset from the aligned base.
  std::size_t take(std::size_t bytes) {
    const std::size_t off = used_;
    used_ += (bytes + kAlign - 1) / kAlign * kAlign;
    return off;
  }
  std::size_t used() const { return used_; }
  /// Starts a region that overlaps everything taken after `offset`.
  void reset(std::size_t offset) { used_ = offset; }

  /// The first aligned address of a workspace; sizes include kAlign bytes of slack for it.
  static uint8_t* aligned_base(void* data) {
    const auto a = reinterpret_cast<std::uintptr_t>(data);
    return reinterpret_cast<uint8_t*>((a + kAlign - 1) / kAlign * kAlign);
  }

 private:
  std::size_t used_ = 0;
};

}  // namespace mlakv::dcp
