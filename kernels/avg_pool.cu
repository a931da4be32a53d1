// Average pooling, forward and backward; padding counts as zeros. K is the
// window side when it is known at compile time (2), else 0 (see common.cuh).
#include "common.cuh"

// x: images indexed (n, c, y, x), read through strides -> y: (C, out_h, out_w, N)
// C-contiguous. The window sum starts from -0.0 (so it equals its first
// element exactly, as the NumPy twin's copy does) and adds every element ky
// outer, kx inner (padding adds +0, as in the NumPy twin), then is divided by
// kh*kw. One thread per output.
template <typename T, typename I, int K>
__global__ void avg_pool_forward(const T* __restrict__ x, T* __restrict__ y, DC_WINDOW_PARAMS(I)) {
    DC_DIVIDERS(I);
    const T area = T(kh * kw);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        const DcPos<I> o = dc_position(i, div_n, div_ow, div_oh);
        T sum = -T(0);
        dc_for_each_in_window<K>(x, o.n * sn + o.c * sc, T(0), o.y, o.x, H, W, sh, sw, kh, kw,
                                 sy, sx, ph, pw, dy, dx, [&](I, T v) { sum += v; });
        y[i] = sum / area;
    }
}

// gy: indexed (n, c, oy, ox), read through strides -> gx: (C, H, W, N)
// C-contiguous. Each output gradient is divided by kh*kw; one thread per
// pixel sums, from 0, ky outer and kx inner, those of the windows that cover it.
template <typename T, typename I, int K>
__global__ void avg_pool_backward(const T* __restrict__ gy, T* __restrict__ gx,
                                  DC_WINDOW_PARAMS(I)) {
    DC_DIVIDERS(I);
    const T area = T(kh * kw);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        const DcPos<I> p = dc_position(i, div_n, div_w, div_h);
        const T* g = gy + p.n * sn + p.c * sc;
        T sum = T(0);
        dc_for_each_reader<K>(p.y, p.x, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w, div_sy,
                              div_sx, [&](I, I oy, I ox) { sum += g[oy * sh + ox * sw] / area; });
        gx[i] = sum;
    }
}
