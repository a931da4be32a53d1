// Average pooling, forward and backward; padding counts as zeros. K is the
// window side when it is known at compile time (2), else 0 (see common.cuh).
#include "common.cuh"

// x: images indexed (n, c, y, x), read through strides -> y: (C, out_h, out_w, N)
// C-contiguous. The window sum starts from -0.0 (so it equals its first
// element exactly, as the NumPy twin's copy does) and adds every element ky
// outer, kx inner (padding adds +0, as in the NumPy twin), then is divided by
// kh*kw. One thread per output.
template <typename T, typename I, int K>
__global__ void avg_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                 DC_WINDOW_PARAMS(I)) {
    const DcDiv<I> div_n(N, mN), div_ow(out_w, mOW), div_oh(out_h, mOH);
    const T area = T(kh * kw);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        I r = i;
        const I n = dc_pop(r, div_n);
        const I ox = dc_pop(r, div_ow);
        const I oy = dc_pop(r, div_oh);  // r is now c
        T sum = -T(0);
        dc_for_each_in_window<K>(x, n * sn + r * sc, T(0), oy, ox, H, W, sh, sw, kh, kw, sy, sx,
                              ph, pw, dy, dx, [&](I, T v) { sum += v; });
        y[i] = sum / area;
    }
}

// gy: indexed (n, c, oy, ox), read through strides -> gx: (C, H, W, N)
// C-contiguous. Each output gradient is divided by kh*kw; one thread per
// pixel sums, from 0, ky outer and kx inner, those of the windows that cover it.
template <typename T, typename I, int K>
__global__ void avg_pool_backward(const T* __restrict__ gy, T* __restrict__ gx,
                                  DC_WINDOW_PARAMS(I)) {
    const DcDiv<I> div_n(N, mN), div_w(W, mW), div_h(H, mH), div_sy(sy, mSY), div_sx(sx, mSX);
    const T area = T(kh * kw);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        I r = i;
        const I n = dc_pop(r, div_n);
        const I xx = dc_pop(r, div_w);
        const I y = dc_pop(r, div_h);  // r is now c
        const T* g = gy + n * sn + r * sc;
        T sum = T(0);
        dc_for_each_reader<K>(y, xx, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w, div_sy, div_sx,
                           [&](I, I oy, I ox) { sum += g[oy * sh + ox * sw] / area; });
        gx[i] = sum;
    }
}
