// Umbrella header.
#pragma once

#include "mlakv/comm.hpp"
#include "mlakv/dcp.hpp"
#include "mlakv/error.hpp"
#include "mlakv/nccl.hpp"
#include "mlakv/format.hpp"
#include "mlakv/numeric.hpp"
#include "mlakv/ops.hpp"
#include "mlakv/tensor.hpp"
#include "mlakv/version.hpp"
