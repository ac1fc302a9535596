// Carving one caller workspace into aligned sub-buffers, identically in the size query and in
// the op.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace mlakv::dcp {

/// The product of sizes, or SIZE_MAX (more than any plan takes) where it overflows size_t.
template <class... Sizes> std::size_t product(Sizes... sizes) {
  std::size_t p = 1;
  for (std::size_t s : {static_cast<std::size_t>(sizes)...})
    if (__builtin_mul_overflow(p, s, &p)) return std::numeric_limits<std::size_t>::max();
  return p;
}

class WorkspacePlan {
 public:
  /// Alignment of every sub-buffer (enough for vector loads and NCCL).
  static constexpr std::size_t kAlign = 256;
  /// The most a plan may use, so that its total (with kAlign of slack) and every offset fit int64.
  static constexpr std::size_t kMaxBytes = std::numeric_limits<int64_t>::max() / 2;

  /// Reserves `bytes` and returns its offset from the aligned base.
  std::size_t take(std::size_t bytes) {
    const std::size_t off = used_;
    if (bytes > kMaxBytes || (bytes + kAlign - 1) / kAlign * kAlign > kMaxBytes - used_) {
      overflowed_ = true;  // the plan is unusable; used() stays bounded
      return off;
    }
    used_ += (bytes + kAlign - 1) / kAlign * kAlign;
    return off;
  }
  std::size_t used() const { return used_; }
  /// Whether some take() exceeded kMaxBytes (the sizes asked for overflow).
  bool overflowed() const { return overflowed_; }
  /// Starts a region that overlaps everything taken after `offset`.
  void reset(std::size_t offset) { used_ = offset; }

  /// The first aligned address of a workspace; sizes include kAlign bytes of slack for it.
  static uint8_t* aligned_base(void* data) {
    const auto a = reinterpret_cast<std::uintptr_t>(data);
    return reinterpret_cast<uint8_t*>((a + kAlign - 1) / kAlign * kAlign);
  }

 private:
  std::size_t used_ = 0;
  bool overflowed_ = false;
};

}  // namespace mlakv::dcp
