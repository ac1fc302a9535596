// Split-KV scheduler for mla_decode, computed on the device from seq_lens so that the decode step
// needs no host synchronization and stays graph-capturable.
//
// Every request b costs ntiles_b + kSegmentCost units (0 when it has no local token); the total
// is cut into `parts` equal ranges of `payload` units, and part p processes the tiles whose cost
// units fall in [p·payload, (p+1)·payload). One long request is thus spread over every part, many
// short ones are packed a few per part, and a request is split only at part boundaries. Tile t of
// request b sits at unit prefix[b] + kSegmentCost + t, so any kernel can recompute which part
// holds it without a table.
#include "mla_decode_common.cuh"
#include "runtime.hpp"

namespace mlakv::cuda::mla {
namespace {

constexpr int kSchedThreads = 1024;

// Exclusive scan over the block; returns the block total in `total`.
__device__ int block_exclusive_scan(int v, int& total) {
  __shared__ int warp_sums[kSchedThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = warp_sums[lane];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    warp_sums[lane] = w;  // inclusive
  }
  __syncthreads();
  const int before = (warp > 0 ? warp_sums[warp - 1] : 0) + x - v;
  total = warp_sums[kSchedThreads / 32 - 1];
  __syncthreads();  // warp_sums is reused by the next call
  return before;
}

__global__ void __launch_bounds__(kSchedThreads) schedule_kernel(DecodeArgs a, int parts) {
  // The attention grid may be scheduled now: it waits for this grid's completion before reading
  // the schedule, and its launch latency hides under this kernel.
  pdl_launch_dependents();
  // A programmatic dependent of whatever ran before the step: the step's inputs, and the
  // workspace the previous step's combine reads, only after it.
  pdl_wait();
  const Schedule s = a.sched;
  const int B = a.batch;
  if (B <= 32) {
    if (threadIdx.x < 32) schedule_warp(a, a.sched, parts);
    return;
  }
  __shared__ int list_len, max_cost;
  if (threadIdx.x == 0) list_len = 0, max_cost = 0;

  if (B <= kSchedThreads) {
    // One request per thread, kept in registers (no read-back: this kernel is on the critical
    // path of every step, the attention grid waits for it, and each read-back is an L2 round
    // trip).
    const int b = threadIdx.x;
    int n = 0, cost = 0;
    if (b < B) request_tiles(a, s, b, n, cost);
    int total;
    int first = block_exclusive_scan(cost, total);  // its barriers also order list_len's init
    atomicMax(&max_cost, cost);
    __syncthreads();
    const split::Plan sp = split::plan(B, parts, total, max_cost, a.whole_requests, a.align_slack);
    if (sp.stride) {
      first = b * sp.stride;
      total = B * sp.stride;
    }
    const int nsplit = place_request(s, b, B, first, total, sp.payload, n);
    const int v = nsplit > 1 ? nsplit : 0;
    int tot;
    const int ex = block_exclusive_scan(v, tot);
    if (b < B) {
      s.split_base[b] = v > 0 ? ex : -1;
      if (nsplit != 1) s.list[atomicAdd(&list_len, 1)] = b;  // split, or empty: the combine's work
    }
    __syncthreads();
    if (threadIdx.x == 0) s.header[2] = list_len;
    return;
  }

  int carry = 0;
  for (int b0 = 0; b0 < B; b0 += kSchedThreads) {
    const int b = b0 + threadIdx.x;
    int n = 0, cost = 0;
    if (b < B) request_tiles(a, s, b, n, cost);
    int total;
    const int ex = block_exclusive_scan(cost, total);
    if (b < B) s.prefix[b] = carry + ex;
    carry += total;
  }
  const int total = carry;
  const int payload = split::plan(B, parts, total, 0, false).payload;  // B > 1024: the balanced split only
  if (threadIdx.x == 0) {
    s.prefix[B] = total;
    s.header[0] = payload;
    s.header[1] = total;
  }
  __syncthreads();  // prefix written by other threads above is read below

  int slots = 0;
  for (int b0 = 0; b0 < B; b0 += kSchedThreads) {
    const int b = b0 + threadIdx.x;
    int nsplit = 0;
    if (b < B) {
      nsplit = segments(s.ntiles[b], s.prefix[b] + kSegmentCost, payload);
      s.nsplit[b] = nsplit;
    }
    const int v = nsplit > 1 ? nsplit : 0;
    int tot;
    const int ex = block_exclusive_scan(v, tot);
    if (b < B) {
      s.split_base[b] = v > 0 ? slots + ex : -1;
      if (nsplit != 1) s.list[atomicAdd(&list_len, 1)] = b;  // split, or empty: the combine's work
    }
    slots += tot;
  }
  __syncthreads();
  if (threadIdx.x == 0) s.header[2] = list_len;
}

}  // namespace

void launch_schedule(const DecodeArgs& a, int parts, cudaStream_t stream) {
  // A programmatic dependent of the stream's previous kernel (it waits for it before any read or
  // write: the previous decode's combine may still read this workspace).
  check_cuda(launch_maybe_pdl(a.pdl_first, schedule_kernel, dim3(1), dim3(a.batch <= 32 ? 32 : kSchedThreads), 0, stream, a, parts),
             "mla_decode schedule_kernel");
}

}  // namespace mlakv::cuda::mla
