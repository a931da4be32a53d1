// im2col: unfold receptive fields into columns.
// x: images indexed (n, c, y, x), read through strides -> col: (C, kh, kw, out_h, out_w, N)
// C-contiguous, col[c, ky, kx, oy, ox, n] = x[n, c, oy*sy - ph + ky*dy, ox*sx - pw + kx*dx]
// (0 in the padding). One thread per col element.
#include "common.cuh"

template <typename T, typename I>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ col,
                       DC_WINDOW_PARAMS(I)) {
    const DcDiv<I> div_n(N, mN), div_ow(out_w, mOW), div_oh(out_h, mOH), div_kw(kw, mKW),
        div_kh(kh, mKH);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        I r = i;
        const I n = dc_pop(r, div_n);
        const I ox = dc_pop(r, div_ow);
        const I oy = dc_pop(r, div_oh);
        const I kx = dc_pop(r, div_kw);
        const I ky = dc_pop(r, div_kh);  // r is now c
        const I y = oy * sy - ph + ky * dy;
        const I xx = ox * sx - pw + kx * dx;
        col[i] = dc_below(y, H) && dc_below(xx, W) ? x[n * sn + r * sc + y * sh + xx * sw] : T(0);
    }
}
