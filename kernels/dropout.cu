// Inverted dropout, forward, in one launch: the mask and the product x * mask.
//
// x, y, mask: (F, N) C-contiguous, the batch-last layout (F features of each
// sample outer, the N samples inner), element e = j*N + n; or, with batch_first,
// (N, F) C-contiguous, element e = n*F + j (the layout a Dense layer's output
// has: read and written in place, never copied into the other order). Either way
// element e is feature j of sample n of the part; the whole batch counts pairs of samples from
// first_pair (the part's first sample / 2). The recipe is the CPU twin's
// (dualconv/kernels/cpu.py dropout_forward, the loops in reference.py), in
// 32-bit unsigned integer arithmetic, so the masks are the same bits:
//
//   u(i)    = lowbias32(lowbias32(i ^ key_lo) ^ key_hi)
//   word    = lowbias32(u(j) ^ u(F + first_pair + n / 2))
//   bits    = n odd ? word >> 16 : word & 0xFFFF
//   mask    = bits >= threshold ? scale : 0,   y = x * mask (one rounding)
//
// One thread per element; each recomputes its two keyed hashes (about forty
// integer operations), which costs less than the launches and the memory
// passes of computing them once in separate kernels.
#include "common.cuh"

__device__ __forceinline__ unsigned int dc_lowbias32(unsigned int z) {
    z ^= z >> 16;
    z *= 0x7FEB352Du;
    z ^= z >> 15;
    z *= 0x846CA68Bu;
    z ^= z >> 16;
    return z;
}

__device__ __forceinline__ unsigned int dc_keyed_hash(unsigned int i, unsigned int key_lo,
                                                      unsigned int key_hi) {
    return dc_lowbias32(dc_lowbias32(i ^ key_lo) ^ key_hi);
}

// The mask and product for every element, with the key given as its two halves.
template <typename T, typename I>
__device__ __forceinline__ void dc_dropout(const T* __restrict__ x, T* __restrict__ y,
                                           T* __restrict__ mask, I total, I N, unsigned int F,
                                           int batch_first, unsigned int first_pair, unsigned int key_lo,
                                           unsigned int key_hi, unsigned int threshold, T scale) {
    DC_GRID_STRIDE_LOOP(I, e, total) {
        const I n = batch_first ? e / (I)F : e - (e / N) * N;
        const I j = batch_first ? e - n * (I)F : e / N;
        const unsigned int feature = dc_keyed_hash((unsigned int)j, key_lo, key_hi);
        const unsigned int pair = dc_keyed_hash(F + first_pair + (unsigned int)(n / 2), key_lo, key_hi);
        const unsigned int word = dc_lowbias32(feature ^ pair);
        const unsigned int bits = (n & 1) ? (word >> 16) : (word & 0xFFFFu);
        const T m = bits >= threshold ? scale : T(0);
        mask[e] = m;
        y[e] = x[e] * m;
    }
}

template <typename T, typename I>
__global__ void dropout_forward(const T* __restrict__ x, T* __restrict__ y, T* __restrict__ mask,
                                I total, I N, unsigned int F, int batch_first,
                                unsigned int first_pair, unsigned int key_lo, unsigned int key_hi,
                                unsigned int threshold, T scale) {
    dc_dropout(x, y, mask, total, N, F, batch_first, first_pair, key_lo, key_hi, threshold, scale);
}

// dropout_forward with the 64-bit key read from key[0] (low half) and key[1]
// (high half), device memory that a captured step's step_begin fills.
template <typename T, typename I>
__global__ void dropout_forward_at(const T* __restrict__ x, T* __restrict__ y,
                                   T* __restrict__ mask, I total, I N, unsigned int F,
                                   int batch_first, unsigned int first_pair,
                                   const int* __restrict__ key, unsigned int threshold, T scale) {
    dc_dropout(x, y, mask, total, N, F, batch_first, first_pair, (unsigned int)key[0],
               (unsigned int)key[1], threshold, scale);
}
