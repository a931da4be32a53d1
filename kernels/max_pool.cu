// Max pooling, forward and backward. K is the window side when it is known at
// compile time (2), else 0 (see common.cuh).
#include "common.cuh"

// x: images indexed (n, c, y, x), read through strides -> y, argmax:
// (C, out_h, out_w, N) C-contiguous. argmax is the window-local index
// ky*kw + kx (int32). Padding is -inf. The scan starts from -inf with
// argmax 0; an element wins only if it is greater, or is NaN while the
// maximum so far is not: the first maximum wins ties and NaN propagates.
// One thread per output.
template <typename T, typename I, int K>
__global__ void max_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                 int* __restrict__ argmax, DC_WINDOW_PARAMS(I)) {
    DC_DIVIDERS(I);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        const DcPos<I> o = dc_position(i, div_n, div_ow, div_oh);
        T m = dc_neg_inf<T>();
        int best = 0;
        dc_for_each_in_window<K>(x, o.n * sn + o.c * sc, dc_neg_inf<T>(), o.y, o.x, H, W, sh, sw,
                                 kh, kw, sy, sx, ph, pw, dy, dx, [&](I k, T v) {
            // v > m, or v is NaN and m is not: "not v <= m" is both, unless m is NaN
            if (!(v <= m) && !dc_isnan(m)) {
                m = v;
                best = (int)k;
            }
        });
        y[i] = m;
        argmax[i] = best;
    }
}

// gy: indexed (n, c, oy, ox), read through strides; argmax: (C, out_h, out_w, N)
// C-contiguous -> gx: (C, H, W, N) C-contiguous. Gather: one thread per pixel
// sums, from 0, ky outer and kx inner, the gradient of every window whose
// argmax is this pixel.
template <typename T, typename I, int K>
__global__ void max_pool_backward(const T* __restrict__ gy, const int* __restrict__ argmax,
                                  T* __restrict__ gx, DC_WINDOW_PARAMS(I)) {
    DC_DIVIDERS(I);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        const DcPos<I> p = dc_position(i, div_n, div_w, div_h);
        const T* g = gy + p.n * sn + p.c * sc;
        const int* a = argmax + p.c * out_h * out_w * N + p.n;
        T sum = T(0);
        dc_for_each_reader<K>(p.y, p.x, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w, div_sy,
                              div_sx, [&](I k, I oy, I ox) {
            if (a[(oy * out_w + ox) * N] == (int)k) sum += g[oy * sh + ox * sw];
        });
        gx[i] = sum;
    }
}
