// col2im: fold columns back into an image (the adjoint of im2col).
// col: (C, kh, kw, out_h, out_w, N) C-contiguous -> x: (C, H, W, N) C-contiguous.
// Gather: one thread per pixel sums, from 0, ky outer and kx inner, every
// column entry read from it.
#include "common.cuh"

template <typename T, typename I>
__global__ void col2im(const T* __restrict__ col, T* __restrict__ x, DC_WINDOW_PARAMS(I)) {
    DC_DIVIDERS(I);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        const DcPos<I> p = dc_position(i, div_n, div_w, div_h);
        const T* cols = col + p.c * kh * kw * out_h * out_w * N + p.n;  // col[c, 0, 0, 0, 0, n]
        T sum = T(0);
        dc_for_each_reader<0>(p.y, p.x, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w, div_sy,
                              div_sx, [&](I k, I oy, I ox) {
            sum += cols[((k * out_h + oy) * out_w + ox) * N];
        });
        x[i] = sum;
    }
}
