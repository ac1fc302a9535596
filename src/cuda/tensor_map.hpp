// TMA tensor maps over paged caches (host side): built per call from the cache's address and
// shape, passed to kernels by value (a __grid_constant__ argument), so a captured CUDA graph
// keeps the map it was captured with, like every other argument.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace mlakv::cuda {

/// A 4-D map over a paged cache's token rows of 2-byte elements, stored in the 128-byte swizzle:
/// {64 elements, block_size tokens (row_bytes apart), row_bytes / 128 column blocks (128 bytes
/// apart), num_blocks blocks (block_stride bytes apart)}. A box is box_rows = min(64, block_size)
/// tokens of one block × box_cblocks column blocks: max_cblocks (default all: a whole 64-token
/// tile in one copy) where box_rows is 64, else one. Boxes outside the map land as zeros without a read
/// (masked blocks). Returns false, leaving `map` unspecified, where TMA cannot address the cache
/// (alignment, a block size that neither divides nor is a multiple of 64, more than 2^31 − 1
/// blocks): the caller keeps its cp.async path.
bool encode_paged_rows_map(CUtensorMap& map, const void* base, int64_t num_blocks, int block_size,
                           int64_t block_stride, int row_bytes, int& box_rows, int& box_cblocks,
                           int max_cblocks = 0);

}  // namespace mlakv::cuda
