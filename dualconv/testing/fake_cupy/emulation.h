// Lets g++ compile CUDA C source (a cupy.RawModule's code) as plain C++ so
// the CPU emulation harness (emulation_harness.cpp) can run a whole CUDA grid
// sequentially, thread by thread. Only enough CUDA for kernels without shared
// memory, __syncthreads or atomics (the rules at the top of kernels/common.cuh):
// the built-in index variables and the intrinsics kernels/common.cuh uses.
//
// It is part of the emulated CuPy (dualconv.testing.fake_cupy), not of
// kernels/: it is not CUDA, and NVRTC never sees it.
#pragma once

#include <cstring>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

// Set by the harness before each emulated thread runs.
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// __restrict__ is a GNU extension g++ already understands.

inline float __int_as_float(int bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

inline double __longlong_as_double(long long bits) {
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
}
