#include "tensor_map.hpp"

#include <cuda_runtime.h>

#include <mutex>

namespace mlakv::cuda {
namespace {

using EncodeTiled = decltype(&cuTensorMapEncodeTiled);

/// The driver's encoder, found through the runtime (no link against libcuda); null where the
/// driver does not have it.
EncodeTiled encoder() {
  static EncodeTiled fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<EncodeTiled>(p);
    cudaGetLastError();
  });
  return fn;
}

/// {cols elements, block_size tokens (row_bytes apart), [cblocks column blocks (cols elements
/// apart), ] num_blocks blocks (block_stride apart)}, boxes of box_cols elements × box_rows tokens
/// [× box_cblocks column blocks] of one block; the column-block dimension only where cblocks > 1.
bool encode_rows(CUtensorMap& map, const void* base, int64_t num_blocks, int block_size, int64_t block_stride,
                 int row_bytes, CUtensorMapDataType type, int elem_bytes, int box_cols, int box_rows,
                 CUtensorMapSwizzle swizzle, int cblocks = 1, int box_cblocks = 1) {
  if (num_blocks <= 0 || num_blocks > INT32_MAX - 1) return false;  // block coordinates are int32
  if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0 || block_stride % 16 != 0 || row_bytes % 16 != 0 ||
      block_stride >= (int64_t{1} << 40) || block_stride < int64_t{block_size} * row_bytes)
    return false;
  const EncodeTiled encode = encoder();
  if (!encode) return false;
  const int cols = row_bytes / elem_bytes / cblocks, rank = cblocks > 1 ? 4 : 3;
  cuuint64_t dims[4] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(block_size)};
  cuuint64_t strides[3] = {static_cast<cuuint64_t>(row_bytes)};
  cuuint32_t box[4] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  if (cblocks > 1) {
    dims[2] = static_cast<cuuint64_t>(cblocks), strides[1] = static_cast<cuuint64_t>(cols) * elem_bytes;
    box[2] = static_cast<cuuint32_t>(box_cblocks);
  }
  dims[rank - 1] = static_cast<cuuint64_t>(num_blocks), strides[rank - 2] = static_cast<cuuint64_t>(block_stride);
  box[rank - 1] = 1;
  return encode(&map, type, rank, const_cast<void*>(base), dims, strides, box, elem_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

bool encode_paged_rows_map(CUtensorMap& map, const void* base, int64_t num_blocks, int block_size,
                           int64_t block_stride, int row_bytes, int& box_rows, int& box_cblocks, int max_cblocks) {
  if (block_size < 16 || (block_size % 64 != 0 && 64 % block_size != 0) || row_bytes % 128 != 0) return false;
  box_rows = block_size < 64 ? block_size : 64;
  box_cblocks = box_rows == 64 ? (max_cblocks > 0 ? max_cblocks : row_bytes / 128) : 1;  // else the stage's block pitch is not the box's
  return encode_rows(map, base, num_blocks, block_size, block_stride, row_bytes, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, 64,
                     box_rows, CU_TENSOR_MAP_SWIZZLE_128B, row_bytes / 128, box_cblocks);
}

}  // namespace mlakv::cuda
