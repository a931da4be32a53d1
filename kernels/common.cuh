// Shared helpers for the dualconv kernels (kernels/*.cu).
//
// Rules every kernel here follows (the kernel contract in ARCHITECTURE.md):
//   * one thread per output element, grid-stride loop, 64-bit (long long) indices;
//   * gathers only: no atomics, no shared memory, no __syncthreads, so that the
//     CPU emulation harness (dualconv/testing/fake_cupy/) can run a grid
//     thread by thread;
//   * sums visit kernel offsets ky outer, kx inner, in the same order as
//     the CPU twins in dualconv/kernels/cpu.py, so results are bitwise equal to them.
//     The one exception is float32 subnormals (|x| < 1.18e-38): CuPy compiles
//     every kernel with -ftz=true, so float32 arithmetic and comparisons read
//     them as zero and flush subnormal results to zero, where NumPy keeps
//     them (the emulation runs float kernels with FTZ/DAZ on to match; shown
//     by tests/gpu/test_gpu_training.py). float64 is not affected.
//
// Every kernel takes the same geometry arguments, in this order, all long long:
//   N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w
// (dy, dx are the dilation). Arrays are C-contiguous.
#ifndef DUALCONV_COMMON_CUH
#define DUALCONV_COMMON_CUH

#define DC_GEOMETRY_PARAMS                                                   \
    long long N, long long C, long long H, long long W, long long kh,        \
    long long kw, long long sy, long long sx, long long ph, long long pw,    \
    long long dy, long long dx, long long out_h, long long out_w

// for (long long i = first; i < total; i += stride): this thread's elements.
#define DC_GRID_STRIDE_LOOP(i, total)                                        \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;    \
         i < (total); i += (long long)blockDim.x * gridDim.x)

// NaN test that needs no math header (NVRTC) and no fast-math assumptions.
template <typename T>
__device__ __forceinline__ bool dc_isnan(T v) { return v != v; }

template <typename T> __device__ __forceinline__ T dc_neg_inf();
template <> __device__ __forceinline__ float dc_neg_inf<float>() {
    return __int_as_float((int)0xff800000);
}
template <> __device__ __forceinline__ double dc_neg_inf<double>() {
    return __longlong_as_double((long long)0xfff0000000000000ULL);
}

// Position (y, x) of the input pixel seen by output (oy, ox) at kernel offset
// (ky, kx); it may fall in the padding (outside [0, H) x [0, W)).
__device__ __forceinline__ long long dc_src(long long o, long long k, long long s,
                                           long long p, long long d) {
    return o * s - p + k * d;
}

// The output row (or column) that reads pixel coordinate y (unpadded) at kernel
// offset k, or -1 if none does: y + p - k*d must be a non-negative multiple of
// s below out.
__device__ __forceinline__ long long dc_dst(long long y, long long k, long long s,
                                           long long p, long long d, long long out) {
    const long long t = y + p - k * d;
    if (t < 0 || t % s != 0) return -1;
    const long long o = t / s;
    return o < out ? o : -1;
}

// Forward (one thread per output): calls body(ky, kx, v) for each element v of
// the window of output (oy, ox) in plane (one H x W image), ky outer and kx
// inner, both ascending; v is pad where the window lies in the padding.
template <typename T, typename Body>
__device__ __forceinline__ void dc_for_each_in_window(
        const T* plane, T pad, long long oy, long long ox, long long H, long long W,
        long long kh, long long kw, long long sy, long long sx, long long ph, long long pw,
        long long dy, long long dx, Body body) {
    for (long long ky = 0; ky < kh; ++ky) {
        const long long iy = dc_src(oy, ky, sy, ph, dy);
        for (long long kx = 0; kx < kw; ++kx) {
            const long long ix = dc_src(ox, kx, sx, pw, dx);
            const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
            body(ky, kx, inside ? plane[iy * W + ix] : pad);
        }
    }
}

// Backward / fold (one thread per pixel, a gather): calls body(ky, kx, oy, ox)
// for each output (oy, ox) whose window reads pixel (y, x) at kernel offset
// (ky, kx), ky outer and kx inner, both ascending: the order in which
// dualconv/kernels/cpu.py adds, so a sum from 0 in body is bitwise equal to it.
template <typename Body>
__device__ __forceinline__ void dc_for_each_reader(
        long long y, long long x, long long kh, long long kw, long long sy, long long sx,
        long long ph, long long pw, long long dy, long long dx, long long out_h,
        long long out_w, Body body) {
    for (long long ky = 0; ky < kh; ++ky) {
        const long long oy = dc_dst(y, ky, sy, ph, dy, out_h);
        if (oy < 0) continue;
        for (long long kx = 0; kx < kw; ++kx) {
            const long long ox = dc_dst(x, kx, sx, pw, dx, out_w);
            if (ox < 0) continue;
            body(ky, kx, oy, ox);
        }
    }
}

#endif  // DUALCONV_COMMON_CUH
