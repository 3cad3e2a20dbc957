// The execution model of a CUDA grid, on the host: what kernels/cuda's kernels need to run
// unchanged on a machine without a GPU (see cuda_emulation.h for how a .cu file is compiled
// against it, and docs/cuda.md, "CUDA emulation", for what it does and does not check).
//
// Blocks run one after another on the calling host thread. The threads of a block are fibers
// (own stacks) that switch only where CUDA threads synchronize: __syncthreads and warp shuffles.
// Warps run one at a time up to the next barrier (a warp's shuffles resolve as soon as its 32
// lanes reach them), in a fixed order, forward or reverse (SetThreadOrder): one warp always runs
// ahead of the others, so a missing barrier shows up as stale shared data in one order or both.
// Misuse is fatal, with the source line: a barrier some threads of the block skip or reach at
// another line, a shuffle some lanes of the warp are not at, a deadlock.
#pragma once

#include <cstdint>
#include <functional>

namespace caduceus::cuda_emulation {

// dim3/uint3 layout: x, y, z.
struct Dim3 {
  uint32_t x = 1, y = 1, z = 1;
};

// The built-in variables of the thread that is running now (read on every threadIdx, so inline).
struct ThreadIndex {
  Dim3 thread_idx;
  Dim3 block_idx;
  Dim3 block_dim;
  Dim3 grid_dim;
};
extern const ThreadIndex* current_index;  // set by the scheduler; a zero index outside kernels
inline const ThreadIndex& Current() { return *current_index; }

// Runs `thread_body` for every thread of every block of the grid, then returns. The caller has
// checked the configuration (non-zero dims, at most 1024 threads per block). One grid at a time
// per process (kernels keep __shared__ arrays in static storage): concurrent callers are
// serialized.
void RunGrid(Dim3 grid, Dim3 block, const std::function<void()>& thread_body);

// __syncthreads() at file:line.
void SyncThreads(const char* file, int line);

// __shfl_xor_sync on 32-bit values: every lane of the warp must be at the same shuffle.
uint32_t ShuffleXor(const char* file, int line, uint32_t member_mask, uint32_t bits, int lane_mask,
                    int width);

// Order in which the threads of a block (and the blocks of a grid) run between two
// synchronization points. Initial value from CADUCEUS_CUDA_EMULATION_ORDER=forward|reverse.
enum class ThreadOrder { kForward, kReverse };
void SetThreadOrder(ThreadOrder order);
ThreadOrder GetThreadOrder();

}  // namespace caduceus::cuda_emulation
