// Average pooling, forward and backward; padding counts as zeros.
#include "common.cuh"

// x: (N, C, H, W) -> y: (N, C, out_h, out_w). The window sum starts from the
// window's (0, 0) element and adds the rest ky outer, kx inner (padding adds
// +0, as in the NumPy reference), then is divided by kh*kw. One thread per
// output.
template <typename T>
__global__ void avg_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                 DC_GEOMETRY_PARAMS) {
    const long long total = N * C * out_h * out_w;
    DC_GRID_STRIDE_LOOP(i, total) {
        const long long ox = i % out_w;
        const long long oy = (i / out_w) % out_h;
        const T* plane = x + (i / (out_w * out_h)) * H * W;  // x[n, c]
        T sum = T(0);
        dc_for_each_in_window(plane, T(0), oy, ox, H, W, kh, kw, sy, sx, ph, pw, dy, dx,
                              [&](long long ky, long long kx, T v) {
            sum = (ky == 0 && kx == 0) ? v : sum + v;
        });
        y[i] = sum / T(kh * kw);
    }
}

// gy: (N, C, out_h, out_w) -> gx: (N, C, H, W). Each output gradient is
// divided by kh*kw; one thread per pixel sums, from 0, ky outer and kx inner,
// those of the windows that cover it.
template <typename T>
__global__ void avg_pool_backward(const T* __restrict__ gy, T* __restrict__ gx,
                                  DC_GEOMETRY_PARAMS) {
    const long long total = N * C * H * W;
    const T area = T(kh * kw);
    DC_GRID_STRIDE_LOOP(i, total) {
        const long long xx = i % W;
        const long long y = (i / W) % H;
        const long long plane = (i / (W * H)) * out_h * out_w;  // offset of gy[n, c]
        T sum = T(0);
        dc_for_each_reader(y, xx, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w,
                           [&](long long, long long, long long oy, long long ox) {
            sum += gy[plane + oy * out_w + ox] / area;
        });
        gx[i] = sum;
    }
}
