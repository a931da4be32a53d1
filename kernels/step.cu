// The kernels of a captured training step (dualconv/step_graph.py): what a CUDA
// graph replays instead of taking per-step values from the host.
//
// A replayed graph repeats its launches with the same arguments, so whatever
// changes from step to step lives on the device, in tables the host fills once
// per epoch, and a device clock (one int32, the index of the next step):
//
//   step_begin    one thread: copies row clock of the float table (the step's
//                 learning rate and Adam bias corrections, in the model's
//                 dtype) and of the int table (the step index, the divergence
//                 guard's step code, Dropout's keys) into the "now" arrays
//                 that the step's other kernels read, then advances the clock;
//   gather_rows   copies the step's batch, rows order[step*B .. step*B + B) of
//                 X (N, F) and of the labels y (N,), into fixed buffers
//                 xb (B, F) and yb (B,): a gather, one thread per element.
//
// Both move values, never compute them: the tables hold what the eager step
// would have passed as kernel arguments, cast the same way, so a replayed step
// is bitwise equal to the eager one.
#include "common.cuh"

template <typename T>
__global__ void step_begin(const T* __restrict__ float_table, const int* __restrict__ int_table,
                           T* __restrict__ floats_now, int* __restrict__ ints_now,
                           int* __restrict__ clock, int steps, int float_width, int int_width) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const int s = *clock;
    if (s < 0 || s >= steps) return;  // past the table: the host planned fewer steps
    for (int k = 0; k < float_width; ++k) floats_now[k] = float_table[s * float_width + k];
    for (int k = 0; k < int_width; ++k) ints_now[k] = int_table[s * int_width + k];
    *clock = s + 1;
}

// xb[i, f] = X[order[step*B + i], f] and yb[i] = y[order[step*B + i]], for the
// B*F elements of xb (the thread of f == 0 also copies the label). X and xb are
// C-contiguous (N, F) and (B, F); order holds int64 row numbers below N.
template <typename T, typename I>
__global__ void gather_rows(const T* __restrict__ X, const long long* __restrict__ y,
                            const long long* __restrict__ order, const int* __restrict__ step,
                            T* __restrict__ xb, long long* __restrict__ yb, I B, I F) {
    const long long first = (long long)(*step) * (long long)B;
    DC_GRID_STRIDE_LOOP(I, e, B * F) {
        const I i = e / F;
        const I f = e - i * F;
        const long long row = order[first + i];
        xb[e] = X[row * (long long)F + f];
        if (f == 0) yb[i] = y[row];
    }
}
