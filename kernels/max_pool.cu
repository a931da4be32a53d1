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
    const DcDiv<I> div_n(N, mN), div_ow(out_w, mOW), div_oh(out_h, mOH);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        I r = i;
        const I n = dc_pop(r, div_n);
        const I ox = dc_pop(r, div_ow);
        const I oy = dc_pop(r, div_oh);  // r is now c
        T m = dc_neg_inf<T>();
        int best = 0;
        dc_for_each_in_window<K>(x, n * sn + r * sc, dc_neg_inf<T>(), oy, ox, H, W, sh, sw, kh, kw,
                              sy, sx, ph, pw, dy, dx, [&](I k, T v) {
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
__global__ void max_pool_backward(const T* __restrict__ gy,
                                  const int* __restrict__ argmax, T* __restrict__ gx,
                                  DC_WINDOW_PARAMS(I)) {
    const DcDiv<I> div_n(N, mN), div_w(W, mW), div_h(H, mH), div_sy(sy, mSY), div_sx(sx, mSX);
    DC_GRID_STRIDE_LOOP(I, i, total) {
        I r = i;
        const I n = dc_pop(r, div_n);
        const I xx = dc_pop(r, div_w);
        const I y = dc_pop(r, div_h);  // r is now c
        const T* g = gy + n * sn + r * sc;
        const int* a = argmax + r * out_h * out_w * N + n;
        T sum = T(0);
        dc_for_each_reader<K>(y, xx, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w, div_sy, div_sx,
                           [&](I k, I oy, I ox) {
            if (a[(oy * out_w + ox) * N] == (int)k) sum += g[oy * sh + ox * sw];
        });
        gx[i] = sum;
    }
}
