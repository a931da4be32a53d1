// Softmax cross-entropy with integer labels, forward and gradient in one
// launch. z: logits (N, C) C-contiguous; labels: (N,) of type L (int64 from the
// plans) -> loss: (N,), each row's -log softmax(z)[label] (NaN for a label
// outside [0, C)); gz: (N, C), the gradient of the mean loss,
// (softmax(z) - onehot) / N. One thread per row; log-sum-exp shifted by the row
// maximum, as the CPU twin (dualconv/kernels/cpu.py) does.
#include "common.cuh"

template <typename T, typename L, typename I>
__global__ void softmax_cross_entropy(const T* __restrict__ z, const L* __restrict__ labels,
                                      T* __restrict__ loss, T* __restrict__ gz, I N, I C) {
    DC_GRID_STRIDE_LOOP(I, n, N) {
        const T* zn = z + n * C;
        T* gn = gz + n * C;
        T top = zn[0];
        DC_PRAGMA(unroll 1)
        for (I c = 1; c < C; ++c) {
            const T v = zn[c];
            if (v > top || dc_isnan(v)) top = v;
        }
        T sum = T(0);
        DC_PRAGMA(unroll 1)
        for (I c = 0; c < C; ++c) sum += exp(zn[c] - top);
        const T log_z = log(sum);
        const L label = labels[n];
        DC_PRAGMA(unroll 1)
        for (I c = 0; c < C; ++c) {
            const T p = exp((zn[c] - top) - log_z);
            gn[c] = (p - (c == label ? T(1) : T(0))) / T(N);
        }
        loss[n] = label >= 0 && label < C ? -((zn[label] - top) - log_z) : dc_nan<T>();
    }
}
