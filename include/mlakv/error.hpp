// The one exception type mlakv throws.
#pragma once

#include <stdexcept>
#include <string>

namespace mlakv {

/// Thrown for bad arguments (before any kernel runs and before anything is written),
/// for backend failures (CUDA, NCCL) and for unsupported combinations. The message names
/// the argument, its value and what was expected.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace mlakv
