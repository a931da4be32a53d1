// A matrix product that a CUDA graph can hold: C = A @ B, one thread per
// element of C, for the GEMMs of a captured training step
// (dualconv/kernels/cuda_gemm.py). CuPy 14 refuses every cuBLAS call while a
// stream captures (cublas.setStream), so a captured step cannot use cuBLAS.
//
// A (M, K) and B (K, N) are read through element strides (row, column): a
// C-contiguous matrix or the transpose of one, without a copy; C (M, N) is
// C-contiguous.
// Each output is one dot product summed from 0 with k ascending, each
// product rounded before it is added (the module is compiled with
// --fmad=false): the order of the NumPy twin, so both give the same bits.
#include "common.cuh"

template <typename T, typename I>
__global__ void gemm(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C, I M,
                     I N, I K, I sam, I sak, I sbk, I sbn) {
    DC_GRID_STRIDE_LOOP(I, e, M * N) {
        const I m = e / N;
        const I n = e - m * N;
        const T* a = A + m * sam;
        const T* b = B + n * sbn;
        T acc = T(0);
        for (I k = 0; k < K; ++k) acc = acc + a[k * sak] * b[k * sbk];
        C[e] = acc;
    }
}
