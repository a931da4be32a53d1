// im2col: unfold receptive fields into columns.
// x: (N, C, H, W) -> col: (C, kh, kw, N, out_h, out_w),
// col[c, ky, kx, n, oy, ox] = x[n, c, oy*sy - ph + ky*dy, ox*sx - pw + kx*dx]
// (0 in the padding). One thread per col element.
#include "common.cuh"

template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ col, DC_GEOMETRY_PARAMS) {
    const long long total = C * kh * kw * N * out_h * out_w;
    DC_GRID_STRIDE_LOOP(i, total) {
        long long r = i;
        const long long ox = r % out_w; r /= out_w;
        const long long oy = r % out_h; r /= out_h;
        const long long n = r % N; r /= N;
        const long long kx = r % kw; r /= kw;
        const long long ky = r % kh;
        const long long c = r / kh;
        const long long y = dc_src(oy, ky, sy, ph, dy);
        const long long xx = dc_src(ox, kx, sx, pw, dx);
        const bool inside = y >= 0 && y < H && xx >= 0 && xx < W;
        col[i] = inside ? x[((n * C + c) * H + y) * W + xx] : T(0);
    }
}
