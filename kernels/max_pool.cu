// Max pooling, forward and backward.
#include "common.cuh"

// x: (N, C, H, W) -> y, argmax: (N, C, out_h, out_w). argmax is the
// window-local index ky*kw + kx (int32). Padding is -inf. The scan starts from
// the window's (0, 0) element; a later element wins only if it is greater, or
// is NaN while the current maximum is not: the first maximum wins ties and NaN
// propagates. One thread per output.
template <typename T>
__global__ void max_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                 int* __restrict__ argmax, DC_GEOMETRY_PARAMS) {
    const long long total = N * C * out_h * out_w;
    DC_GRID_STRIDE_LOOP(i, total) {
        const long long ox = i % out_w;
        const long long oy = (i / out_w) % out_h;
        const T* plane = x + (i / (out_w * out_h)) * H * W;  // x[n, c]
        T m = T(0);  // replaced by the (0, 0) element
        int best = 0;
        for (long long ky = 0; ky < kh; ++ky) {
            const long long iy = dc_src(oy, ky, sy, ph, dy);
            for (long long kx = 0; kx < kw; ++kx) {
                const long long ix = dc_src(ox, kx, sx, pw, dx);
                const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                const T v = inside ? plane[iy * W + ix] : dc_neg_inf<T>();
                if ((ky == 0 && kx == 0) || v > m || (dc_isnan(v) && !dc_isnan(m))) {
                    m = v;
                    best = (int)(ky * kw + kx);
                }
            }
        }
        y[i] = m;
        argmax[i] = best;
    }
}

// gy, argmax: (N, C, out_h, out_w) -> gx: (N, C, H, W). Gather: one thread
// per pixel sums, from 0, ky outer and kx inner, the gradient of every window
// whose argmax is this pixel.
template <typename T>
__global__ void max_pool_backward(const T* __restrict__ gy, const int* __restrict__ argmax,
                                  T* __restrict__ gx, DC_GEOMETRY_PARAMS) {
    const long long total = N * C * H * W;
    DC_GRID_STRIDE_LOOP(i, total) {
        const long long xx = i % W;
        const long long y = (i / W) % H;
        const long long plane = (i / (W * H)) * out_h * out_w;  // offset of gy[n, c]
        T sum = T(0);
        for (long long ky = 0; ky < kh; ++ky) {
            const long long oy = dc_dst(y, ky, sy, ph, dy, out_h);
            if (oy < 0) continue;
            for (long long kx = 0; kx < kw; ++kx) {
                const long long ox = dc_dst(xx, kx, sx, pw, dx, out_w);
                if (ox < 0) continue;
                const long long o = plane + oy * out_w + ox;
                if (argmax[o] == ky * kw + kx) sum += gy[o];
            }
        }
        gx[i] = sum;
    }
}
