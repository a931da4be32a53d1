// im2col: unfold receptive fields into columns.
// x: images indexed (n, c, y, x), read through strides -> col: (C, kh, kw, out_h, out_w, N)
// C-contiguous, col[c, ky, kx, oy, ox, n] = x[n, c, oy*sy - ph + ky*dy, ox*sx - pw + kx*dx]
// (0 in the padding). One thread per col element.
#include "common.cuh"

template <typename T, typename I>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ col, DC_WINDOW_PARAMS(I)) {
    DC_DIVIDERS(I);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        const DcPos<I> o = dc_position(i, div_n, div_ow, div_oh);  // o.c runs over (c, ky, kx)
        I c = o.c;
        const I kx = dc_pop(c, div_kw);
        const I ky = dc_pop(c, div_kh);
        const I y = o.y * sy - ph + ky * dy;
        const I xx = o.x * sx - pw + kx * dx;
        col[i] = dc_below(y, H) && dc_below(xx, W) ? x[o.n * sn + c * sc + y * sh + xx * sw]
                                                   : T(0);
    }
}
