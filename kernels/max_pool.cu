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
        dc_for_each_in_window(plane, dc_neg_inf<T>(), oy, ox, H, W, kh, kw, sy, sx, ph, pw,
                              dy, dx, [&](long long ky, long long kx, T v) {
            if ((ky == 0 && kx == 0) || v > m || (dc_isnan(v) && !dc_isnan(m))) {
                m = v;
                best = (int)(ky * kw + kx);
            }
        });
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
        dc_for_each_reader(y, xx, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w,
                           [&](long long ky, long long kx, long long oy, long long ox) {
            const long long o = plane + oy * out_w + ox;
            if (argmax[o] == ky * kw + kx) sum += gy[o];
        });
        gx[i] = sum;
    }
}
