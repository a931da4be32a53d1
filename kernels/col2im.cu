// col2im: fold columns back into an image (the adjoint of im2col).
// col: (C, kh, kw, N, out_h, out_w) -> x: (N, C, H, W). Gather: one thread per
// pixel sums, from 0, ky outer and kx inner, every column entry read from it.
#include "common.cuh"

template <typename T>
__global__ void col2im(const T* __restrict__ col, T* __restrict__ x, DC_GEOMETRY_PARAMS) {
    const long long total = N * C * H * W;
    DC_GRID_STRIDE_LOOP(i, total) {
        long long r = i;
        const long long xx = r % W; r /= W;
        const long long y = r % H; r /= H;
        const long long c = r % C;
        const long long n = r / C;
        T sum = T(0);
        dc_for_each_reader(y, xx, kh, kw, sy, sx, ph, pw, dy, dx, out_h, out_w,
                           [&](long long ky, long long kx, long long oy, long long ox) {
            sum += col[((((c * kh + ky) * kw + kx) * N + n) * out_h + oy) * out_w + ox];
        });
        x[i] = sum;
    }
}
