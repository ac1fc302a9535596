// TMA tensor maps over paged caches (host side): built per call from the cache's address and
// shape, passed to kernels by value (a __grid_constant__ argument), so a captured CUDA graph
// keeps the map it was captured with, like every other argument.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace mlakv::cuda {

/// (Branch cluster4d: 4-D, {64 elements, block_size tokens, row_bytes / 128 column blocks 128
/// bytes apart, num_blocks blocks}; a box is box_cblocks column blocks — all of them where
/// box_rows is 64, else one — × box_rows tokens: a 64-token tile in one copy.)
/// A 3-D map over a paged cache's token rows of 2-byte elements: {row_bytes / 2 elements,
/// block_size tokens, num_blocks blocks}, rows `row_bytes` apart and blocks `block_stride` bytes
/// apart; one box is 64 elements (128 bytes) × box_rows tokens of one block, stored in the
/// 128-byte swizzle, and boxes outside the map land as zeros without a read (masked blocks).
/// box_rows = min(64, block_size). Returns false, leaving `map` unspecified, where TMA cannot
/// address the cache (alignment, a block size that neither divides nor is a multiple of 64,
/// more than 2^31 − 1 blocks): the caller keeps its cp.async path.
bool encode_paged_rows_map(CUtensorMap& map, const void* base, int64_t num_blocks, int block_size,
                           int64_t block_stride, int row_bytes, int& box_rows, int& box_cblocks);

/// A 3-D map over a paged cache's whole token rows as 4-byte elements, unswizzled: {row_bytes / 4,
/// block_size tokens, num_blocks blocks}; one box is box_rows = min(unit_rows, block_size) whole
/// rows of one block, landing dense ([token][row_bytes]): the FP8 kernels' raw ring. Returns
/// false where TMA cannot address the cache (as above, and rows over 1 KB).
bool encode_paged_raw_rows_map(CUtensorMap& map, const void* base, int64_t num_blocks, int block_size,
                               int64_t block_stride, int row_bytes, int unit_rows, int& box_rows);

}  // namespace mlakv::cuda
