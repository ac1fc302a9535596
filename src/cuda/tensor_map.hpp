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
/// A map over a paged cache's token rows of 2-byte elements, stored in the 128-byte swizzle. 4-D
/// where box_rows is 64: {64 elements, block_size tokens, row_bytes / 128 column blocks 128 bytes
/// apart, num_blocks blocks}, one box = a whole 64-token tile (all column blocks) in one copy;
/// else 3-D: {row_bytes / 2 elements, block_size tokens, num_blocks blocks}, one box = 64
/// elements × box_rows tokens of one block (box_cblocks = 1). Rows `row_bytes` apart, blocks
/// `block_stride` bytes apart; boxes outside the map land as zeros without a read (masked
/// blocks). box_rows = min(64, block_size). Returns false, leaving `map` unspecified, where TMA
/// cannot address the cache (alignment, a block size that neither divides nor is a multiple of
/// 64, more than 2^31 − 1 blocks): the caller keeps its cp.async path.
bool encode_paged_rows_map(CUtensorMap& map, const void* base, int64_t num_blocks, int block_size,
                           int64_t block_stride, int row_bytes, int& box_rows, int& box_cblocks);

}  // namespace mlakv::cuda
