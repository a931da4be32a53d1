// A matrix product that a CUDA graph can hold: C = A @ B for the GEMMs of a
// captured training step (dualconv/kernels/cuda_gemm.py). CuPy 14 refuses
// every cuBLAS call while a stream captures (cublas.setStream), so a captured
// step cannot use cuBLAS.
//
// A (M, K) and B (K, N) are read through element strides (row, column): a
// C-contiguous matrix or the transpose of one, without a copy. The sum over k
// is cut into parts of `chunk` terms (the plan's rule: one part unless K is
// long), so that a long sum still spreads over many threads:
//
//   gemm            P[p, m, n] = sum of A[m, k] * B[k, n] for k in part p,
//                   from 0, k ascending; one thread per element of P;
//   gemm_sum_parts  C[m, n] = P[0, m, n] + P[1, m, n] + ..., p ascending;
//                   one thread per element of C (only when there are parts).
//
// Each product is rounded before it is added (the module is compiled with
// --fmad=false), in the NumPy twin's order, so both give the same bits.
#include "common.cuh"

template <typename T, typename I>
__global__ void gemm(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ P, I M,
                     I N, I K, I sam, I sak, I sbk, I sbn, I chunk) {
    const I MN = M * N;
    const I parts = (K + chunk - 1) / chunk;
    DC_GRID_STRIDE_LOOP(I, e, parts * MN) {
        const I p = e / MN;
        const I r = e - p * MN;
        const I m = r / N;
        const I n = r - m * N;
        const I first = p * chunk;
        const I last = first + chunk < K ? first + chunk : K;
        const T* a = A + m * sam;
        const T* b = B + n * sbn;
        T acc = T(0);
        for (I k = first; k < last; ++k) acc = acc + a[k * sak] * b[k * sbk];
        P[e] = acc;
    }
}

template <typename T, typename I>
__global__ void gemm_sum_parts(const T* __restrict__ P, T* __restrict__ C, I parts, I MN) {
    DC_GRID_STRIDE_LOOP(I, e, MN) {
        T acc = P[e];
        for (I p = 1; p < parts; ++p) acc = acc + P[p * MN + e];
        C[e] = acc;
    }
}
