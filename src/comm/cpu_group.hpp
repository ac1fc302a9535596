// The in-process CPU group with an explicit timeout, for tests that exercise a rank failing
// (make_cpu_group in comm.hpp uses the default).
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "mlakv/comm.hpp"

namespace mlakv::detail {

/// How long a rank waits for the others at a collective before the group is declared broken.
inline constexpr std::chrono::milliseconds kCpuGroupDefaultTimeout{60000};

std::vector<std::unique_ptr<Communicator>> make_cpu_group(int world, std::chrono::milliseconds timeout);

}  // namespace mlakv::detail
