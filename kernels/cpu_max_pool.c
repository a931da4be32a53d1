/* Max-pool over windows that tile the image (stride = kernel, no padding, no dilation),
 * for the CPU: the compiled twin of dualconv/kernels/cpu.py's max_pool_forward and
 * max_pool_backward on those windows, loaded by dualconv/kernels/native.py.
 *
 * Layout: images batch-last, x and gx (C, H, W, N); outputs y, gy and argmax
 * (C, out_h, out_w, N); all C-contiguous. out_h = H / kh and out_w = W / kw, rounded
 * down: rows and columns past the last whole window belong to no window.
 *
 * The rule kept (the kernel contract of dualconv/kernels/__init__.py): the first
 * maximum in row-major window order wins ties (-0.0 and +0.0 tie); a NaN replaces a
 * number and nothing replaces a NaN; argmax is ky*kw + kx, int32. Backward writes each
 * pixel once, 0 + gy where it won its window (which turns -0.0 into +0.0) and +0.0
 * elsewhere. Nothing here rounds, so the results are the NumPy twin's bits.
 *
 * Every inner loop runs over the batch, N contiguous numbers, with selects instead of
 * branches, so the compiler vectorizes it. Build flags: no -ffast-math (it would drop
 * the NaN tests and the + 0).
 */
#include <stddef.h>
#include <stdint.h>

/* Whether v replaces the running maximum b: greater, or a NaN over a number. */
#define TAKES(v, b) ((v) > (b) || ((v) != (v) && (b) == (b)))

#define MAX_POOL_KERNELS(T, S)                                                                  \
/* One 2x2 window per batch run: the four offsets' runs p0..p3 into y and argmax. */            \
__attribute__((noinline)) static void max4_##S(                                                 \
    const T *restrict p0, const T *restrict p1, const T *restrict p2, const T *restrict p3,   \
    T *restrict y, int32_t *restrict argmax, ptrdiff_t N) {                                     \
  for (ptrdiff_t n = 0; n < N; ++n) {                                                           \
    T best = p0[n], v;                                                                          \
    int32_t at = 0;                                                                             \
    v = p1[n]; at = TAKES(v, best) ? 1 : at; best = TAKES(v, best) ? v : best;                  \
    v = p2[n]; at = TAKES(v, best) ? 2 : at; best = TAKES(v, best) ? v : best;                  \
    v = p3[n]; at = TAKES(v, best) ? 3 : at; best = TAKES(v, best) ? v : best;                  \
    y[n] = best;                                                                                \
    argmax[n] = at;                                                                             \
  }                                                                                             \
}                                                                                               \
                                                                                                \
/* Offset k's run p into the running maximum y and its argmax (k > 0). */                       \
__attribute__((noinline)) static void max_into_##S(                                             \
    const T *restrict p, int32_t k, T *restrict y, int32_t *restrict argmax, ptrdiff_t N) {    \
  for (ptrdiff_t n = 0; n < N; ++n) {                                                           \
    T v = p[n], best = y[n];                                                                    \
    argmax[n] = TAKES(v, best) ? k : argmax[n];                                                 \
    y[n] = TAKES(v, best) ? v : best;                                                           \
  }                                                                                             \
}                                                                                               \
                                                                                                \
void max_pool_tiled_forward_##S(const T *x, T *y, int32_t *argmax, ptrdiff_t C, ptrdiff_t H,   \
                                ptrdiff_t W, ptrdiff_t N, ptrdiff_t kh, ptrdiff_t kw) {         \
  ptrdiff_t out_h = H / kh, out_w = W / kw;                                                     \
  for (ptrdiff_t c = 0; c < C; ++c)                                                             \
    for (ptrdiff_t oy = 0; oy < out_h; ++oy)                                                    \
      for (ptrdiff_t ox = 0; ox < out_w; ++ox) {                                                \
        const T *corner = x + ((c * H + oy * kh) * W + ox * kw) * N;                            \
        ptrdiff_t at = ((c * out_h + oy) * out_w + ox) * N;                                     \
        if (kh == 2 && kw == 2) {                                                               \
          max4_##S(corner, corner + N, corner + W * N, corner + (W + 1) * N, y + at,           \
                   argmax + at, N);                                                             \
          continue;                                                                             \
        }                                                                                       \
        for (ptrdiff_t n = 0; n < N; ++n) {                                                     \
          y[at + n] = corner[n];                                                                \
          argmax[at + n] = 0;                                                                   \
        }                                                                                       \
        for (ptrdiff_t ky = 0; ky < kh; ++ky)                                                   \
          for (ptrdiff_t kx = (ky == 0); kx < kw; ++kx)                                         \
            max_into_##S(corner + (ky * W + kx) * N, (int32_t)(ky * kw + kx), y + at,          \
                         argmax + at, N);                                                       \
      }                                                                                         \
}                                                                                               \
                                                                                                \
/* gx's runs for one window's pixels p0..p3 (2x2): 0 + gy where it won, else +0.0. */         \
__attribute__((noinline)) static void route4_##S(                                               \
    const T *restrict gy, const int32_t *restrict argmax, T *restrict p0, T *restrict p1,      \
    T *restrict p2, T *restrict p3, ptrdiff_t N) {                                              \
  for (ptrdiff_t n = 0; n < N; ++n) {                                                           \
    T g = gy[n] + (T)0;                                                                         \
    int32_t at = argmax[n];                                                                     \
    p0[n] = at == 0 ? g : (T)0;                                                                 \
    p1[n] = at == 1 ? g : (T)0;                                                                 \
    p2[n] = at == 2 ? g : (T)0;                                                                 \
    p3[n] = at == 3 ? g : (T)0;                                                                 \
  }                                                                                             \
}                                                                                               \
                                                                                                \
/* gx's run for the pixel at offset k of a window: 0 + gy where it won, else +0.0. */          \
__attribute__((noinline)) static void route_##S(                                                \
    const T *restrict gy, const int32_t *restrict argmax, int32_t k, T *restrict gx,           \
    ptrdiff_t N) {                                                                              \
  for (ptrdiff_t n = 0; n < N; ++n) gx[n] = argmax[n] == k ? gy[n] + (T)0 : (T)0;             \
}                                                                                               \
                                                                                                \
void max_pool_tiled_backward_##S(const T *gy, const int32_t *argmax, T *gx, ptrdiff_t C,      \
                                 ptrdiff_t H, ptrdiff_t W, ptrdiff_t N, ptrdiff_t kh,          \
                                 ptrdiff_t kw) {                                                \
  ptrdiff_t out_h = H / kh, out_w = W / kw;                                                     \
  for (ptrdiff_t c = 0; c < C; ++c)                                                             \
    for (ptrdiff_t iy = 0; iy < H; ++iy)                                                        \
      for (ptrdiff_t ix = 0; ix < W; ++ix)                                                      \
        if (iy >= out_h * kh || ix >= out_w * kw) { /* in no window */                          \
          T *out = gx + ((c * H + iy) * W + ix) * N;                                            \
          for (ptrdiff_t n = 0; n < N; ++n) out[n] = (T)0;                                      \
        }                                                                                       \
  for (ptrdiff_t c = 0; c < C; ++c)                                                             \
    for (ptrdiff_t oy = 0; oy < out_h; ++oy)                                                    \
      for (ptrdiff_t ox = 0; ox < out_w; ++ox) {                                                \
        T *corner = gx + ((c * H + oy * kh) * W + ox * kw) * N;                                 \
        ptrdiff_t at = ((c * out_h + oy) * out_w + ox) * N;                                     \
        if (kh == 2 && kw == 2) {                                                               \
          route4_##S(gy + at, argmax + at, corner, corner + N, corner + W * N,                 \
                     corner + (W + 1) * N, N);                                                  \
          continue;                                                                             \
        }                                                                                       \
        for (ptrdiff_t ky = 0; ky < kh; ++ky)                                                   \
          for (ptrdiff_t kx = 0; kx < kw; ++kx)                                                 \
            route_##S(gy + at, argmax + at, (int32_t)(ky * kw + kx),                           \
                      corner + (ky * W + kx) * N, N);                                           \
      }                                                                                         \
}

MAX_POOL_KERNELS(float, f32)
MAX_POOL_KERNELS(double, f64)
