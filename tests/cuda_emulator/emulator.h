// Just enough of CUDA to run llmscratch's attention kernels on the CPU, for tests on machines with no GPU.
//
// A launch runs the grid's blocks one after another; the threads of a block are real std::threads that meet
// at a std::barrier for __syncthreads(), so shared-memory races and missing barriers show up as wrong results.
// Shared memory is one static buffer (the kernels only use dynamic shared memory), which is safe because
// blocks never run at the same time.
#pragma once
#define LLMSCRATCH_CPU_EMULATION
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* block_barrier = nullptr;
alignas(64) inline unsigned char smem[1 << 20];

inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, sizeof d); return d; }
using std::exp;
using std::log;
using std::max;
using std::min;
inline float expf(float x) { return std::exp(x); }
inline float logf(float x) { return std::log(x); }

template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
    gridDim = grid;
    blockDim = block;
    for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            std::barrier<> barrier(block.x);
            block_barrier = &barrier;
            std::vector<std::thread> threads;
            for (unsigned tx = 0; tx < block.x; ++tx)
                threads.emplace_back([=] {
                    threadIdx = {tx, 0, 0};
                    blockIdx = {bx, by, 0};
                    kernel(args...);
                });
            for (auto& t : threads) t.join();
        }
}
