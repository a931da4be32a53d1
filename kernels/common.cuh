// Shared helpers for the dualconv kernels (kernels/*.cu).
//
// Rules every kernel here follows (the kernel contract in ARCHITECTURE.md; the
// launches are planned in dualconv/kernels/cuda.py):
//   * one thread per output element, grid-stride loop; the index type I is
//     int (the 32-bit instantiation, used whenever every index fits) or
//     long long (the 64-bit one);
//   * gathers only: no atomics, no shared memory, no __syncthreads, so that the
//     CPU emulation harness (dualconv/testing/fake_cupy/) can run a grid
//     thread by thread;
//   * memory orders are those of the CPU twins (dualconv/kernels/cpu.py):
//     images batch-last (C, H, W, N), columns (C, kh, kw, out_h, out_w, N);
//     image inputs are read through element strides, outputs are written
//     C-contiguous;
//   * sums visit kernel offsets ky outer, kx inner, in the same order as the
//     CPU twins, so results are bitwise equal to them.
//     The one exception is float32 subnormals (|x| < 1.18e-38): CuPy compiles
//     every kernel with -ftz=true, so float32 arithmetic and comparisons read
//     them as zero and flush subnormal results to zero, where NumPy keeps
//     them (the emulation runs float kernels with FTZ/DAZ on to match; shown
//     by tests/gpu/test_gpu_training.py). float64 is not affected.
//
// Every window kernel takes DC_WINDOW_PARAMS(I) after its arrays:
//   total                 the number of outputs (one thread each)
//   N, C, H, W, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w   geometry (dy, dx: dilation)
//   sn, sc, sh, sw        element strides of the strided input (its n, c, y, x axes)
//   mN, mH, mW, mOH, mOW, mKH, mKW, mSY, mSX   division magics of N, H, W, out_h,
//                         out_w, kh, kw, sy, sx (see DcDiv; the 64-bit kernels ignore them)
#ifndef DUALCONV_COMMON_CUH
#define DUALCONV_COMMON_CUH

// A loop pragma for NVRTC; nothing for the g++ emulation, which does not know it.
#if defined(__CUDACC__)
#define DC_PRAGMA(x) _Pragma(#x)
#else
#define DC_PRAGMA(x)
#endif

#define DC_WINDOW_PARAMS(I)                                                         \
    I total, I N, I C, I H, I W, I kh, I kw, I sy, I sx, I ph, I pw, I dy, I dx,    \
    I out_h, I out_w, I sn, I sc, I sh, I sw, unsigned long long mN, unsigned long long mH,  \
    unsigned long long mW, unsigned long long mOH, unsigned long long mOW,          \
    unsigned long long mKH, unsigned long long mKW, unsigned long long mSY,         \
    unsigned long long mSX

// for (I i = first; i < total; i += stride): this thread's elements. The plan
// picks I so that total + stride still fits in it.
#define DC_GRID_STRIDE_LOOP(I, i, total)                                            \
    DC_PRAGMA(unroll 1)                                                             \
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < (total);         \
         i += (I)blockDim.x * (I)gridDim.x)

// q = n / d for 0 <= n. The 32-bit version divides without a division
// instruction: q = (umulhi(n, m) + n) >> s with the magic (m, s) the host
// computed for d (magic = m | s << 32; exact for n, d < 2^31, as PyTorch's
// IntDivider). The 64-bit version divides.
template <typename I> struct DcDiv;

template <> struct DcDiv<int> {
    int d;
    unsigned m, s;
    __device__ __forceinline__ DcDiv(int d_, unsigned long long magic)
        : d(d_), m((unsigned)magic), s((unsigned)(magic >> 32)) {}
    __device__ __forceinline__ int div(int n) const {
        const unsigned t = (unsigned)(((unsigned long long)(unsigned)n * m) >> 32);
        return (int)((t + (unsigned)n) >> s);
    }
};

template <> struct DcDiv<long long> {
    long long d;
    __device__ __forceinline__ DcDiv(long long d_, unsigned long long) : d(d_) {}
    __device__ __forceinline__ long long div(long long n) const { return n / d; }
};

// Splits r = q * d + rem: returns rem and leaves q in r.
template <typename I>
__device__ __forceinline__ I dc_pop(I& r, const DcDiv<I>& d) {
    const I q = d.div(r);
    const I rem = r - q * d.d;
    r = q;
    return rem;
}

// The dividers the window kernels decode indices with, from DC_WINDOW_PARAMS
// (a kernel uses some of them; the compiler drops the others).
#define DC_DIVIDERS(I)                                                              \
    const DcDiv<I> div_n(N, mN), div_h(H, mH), div_w(W, mW), div_oh(out_h, mOH),    \
        div_ow(out_w, mOW), div_kh(kh, mKH), div_kw(kw, mKW), div_sy(sy, mSY),      \
        div_sx(sx, mSX)

// Where element i of a C-contiguous (C, rows, cols, N) array lies.
template <typename I> struct DcPos { I c, y, x, n; };

template <typename I>
__device__ __forceinline__ DcPos<I> dc_position(I i, const DcDiv<I>& div_n,
                                                const DcDiv<I>& div_cols,
                                                const DcDiv<I>& div_rows) {
    DcPos<I> p;
    p.n = dc_pop(i, div_n);
    p.x = dc_pop(i, div_cols);
    p.y = dc_pop(i, div_rows);
    p.c = i;
    return p;
}

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

template <typename T> __device__ __forceinline__ T dc_nan();
template <> __device__ __forceinline__ float dc_nan<float>() {
    return __int_as_float(0x7fc00000);
}
template <> __device__ __forceinline__ double dc_nan<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

// 0 <= v < n in one unsigned comparison.
__device__ __forceinline__ bool dc_below(int v, int n) { return (unsigned)v < (unsigned)n; }
__device__ __forceinline__ bool dc_below(long long v, long long n) {
    return (unsigned long long)v < (unsigned long long)n;
}

// Window loops take the window side K at compile time (2: the common 2x2
// pooling, unrolled) or at run time (K = 0: kh, kw as passed, not unrolled).

// Forward (one thread per output): calls body(k, v) for each element v of the
// window of output (oy, ox) of the image x[base + y*sh + x*sw], with
// k = ky*kw + kx, ky outer and kx inner, both ascending; v is pad where the
// window lies in the padding.
template <int K, typename T, typename I, typename Body>
__device__ __forceinline__ void dc_for_each_in_window(
        const T* __restrict__ x, I base, T pad, I oy, I ox, I H, I W, I sh, I sw, I kh_, I kw_,
        I sy, I sx, I ph, I pw, I dy, I dx, Body body) {
    const I kh = K ? I(K) : kh_, kw = K ? I(K) : kw_;
    const I ix0 = ox * sx - pw, step = dx * sw;
    I iy = oy * sy - ph;
    DC_PRAGMA(unroll (K ? K : 1))
    for (I ky = 0; ky < kh; ++ky, iy += dy) {
        const I w_inside = dc_below(iy, H) ? W : I(0);  // no x is inside on a padding row
        I ix = ix0, at = base + iy * sh + ix0 * sw;
        DC_PRAGMA(unroll (K ? K : 1))
        for (I kx = 0; kx < kw; ++kx, ix += dx, at += step)
            body(ky * kw + kx, dc_below(ix, w_inside) ? x[at] : pad);
    }
}

// Backward / fold (one thread per pixel, a gather): calls body(k, oy, ox) for
// each output (oy, ox) whose window reads pixel (y, x) at kernel offset
// k = ky*kw + kx, ky outer and kx inner, both ascending: the order in which
// the NumPy twins add, so a sum from 0 in body is bitwise equal to them.
// Output row oy reads y at ky when oy*sy = y + ph - ky*dy; that value only
// falls as ky grows, so the scan stops at the first negative one.
template <int K, typename I, typename Body>
__device__ __forceinline__ void dc_for_each_reader(
        I y, I x, I kh_, I kw_, I sy, I sx, I ph, I pw, I dy, I dx, I out_h, I out_w,
        const DcDiv<I>& div_sy, const DcDiv<I>& div_sx, Body body) {
    const I kh = K ? I(K) : kh_, kw = K ? I(K) : kw_;
    I ty = y + ph;
    DC_PRAGMA(unroll (K ? K : 1))
    for (I ky = 0; ky < kh; ++ky, ty -= dy) {
        if (ty < 0) break;
        const I oy = div_sy.div(ty);
        if (oy * sy != ty || oy >= out_h) continue;
        I tx = x + pw;
        DC_PRAGMA(unroll (K ? K : 1))
        for (I kx = 0; kx < kw; ++kx, tx -= dx) {
            if (tx < 0) break;
            const I ox = div_sx.div(tx);
            if (ox * sx != tx || ox >= out_w) continue;
            body(ky * kw + kx, oy, ox);
        }
    }
}

#endif  // DUALCONV_COMMON_CUH
