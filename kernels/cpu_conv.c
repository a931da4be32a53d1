/* The convolution's forward for the CPU, as direct sums over a batch-last image: the
 * compiled twin of dualconv/kernels/cpu_conv.py's conv2d_forward, loaded by
 * dualconv/kernels/native.py.
 *
 * Layout: x (C, Hp, Wp, N) batch-last, already padded (zeros around it); w (O, C, kh, kw);
 * b (O,) or NULL; y (O, out_h, out_w, N). All C-contiguous.
 *
 * y[o, oy, ox, n] = (sum over c, ky, kx of w[o, c, ky, kx] * x[c, oy*sy + ky*dy,
 * ox*sx + kx*dx, n]) + b[o]: each dot product starts at 0 and takes its terms in
 * (c, ky, kx) order, one fused multiply-add each where the CPU has them (the build's
 * -ffp-contract), padding's zeros included, then the bias, as the GEMM twin's
 * [w | b] @ [col; 1] orders them. So it is that product's dot product, summed in one
 * order BLAS may use; the two agree within the product's rounding bound.
 *
 * Register blocking: 2*LANES samples (two vectors) by OUT_BLOCK output channels of sums
 * stay in registers while the C*kh*kw terms stream past; each term is two vectors of x
 * against OUT_BLOCK weights. So N must be a multiple of 2*LANES (with AVX-512 32 floats,
 * 16 doubles; half that with AVX2) and O of OUT_BLOCK: the caller pads the batch and the
 * weights with zeros (native_conv.py, from conv_blocks).
 *
 * The file also holds the input gradient and the weight gradient, with the same layout.
 */
#include <stddef.h>
#include <string.h>

/* Outputs along an axis of P padded pixels, for a kernel of k taps, stride s, dilation d
 * (the Window contract's out_h and out_w; P is at least the dilated kernel's extent). */
#define OUT_SIZE(P, k, s, d) (((P) - (d) * ((k) - 1) - 1) / (s) + 1)

/* The register blocks, sized for the build's vector registers: AVX-512's 32 of 64 bytes,
 * else AVX2's 16 of 32 bytes. VECTOR_BYTES 0: neither, where the blocks would spill and
 * run many times slower than BLAS (conv_blocks tells native_conv.py). */
#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#define OUT_BLOCK 8
#define IN_BLOCK 4
#define ROW_BLOCK 12
#else
#if defined(__AVX2__) && defined(__FMA__)
#define VECTOR_BYTES 32
#else
#define VECTOR_BYTES 0
#endif
#define OUT_BLOCK 4
#define IN_BLOCK 4
#define ROW_BLOCK 6
#endif
#define VEC_BYTES (VECTOR_BYTES ? VECTOR_BYTES : 32) /* what the kernels compile with */

#define CONV_KERNELS(T, S, LANES)                                                               \
typedef T vec_##S __attribute__((vector_size(VEC_BYTES)));                                     \
                                                                                                \
/* The sums of output pixel (oy, ox), channels o0 .. o0+OUT_BLOCK-1, samples n0 .. n0+2*LANES-1. */  \
static void pixel_block_##S(const T *restrict x, const T *restrict w, const T *restrict b,    \
                            T *restrict y, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,            \
                            ptrdiff_t N, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sy,             \
                            ptrdiff_t sx, ptrdiff_t dy, ptrdiff_t dx, ptrdiff_t out_h,         \
                            ptrdiff_t out_w, ptrdiff_t oy, ptrdiff_t ox, ptrdiff_t o0,         \
                            ptrdiff_t n0) {                                                    \
  ptrdiff_t K = C * kh * kw;                                                                   \
  vec_##S sum[OUT_BLOCK][2];                                                                   \
  for (int i = 0; i < OUT_BLOCK; ++i) sum[i][0] = sum[i][1] = (vec_##S){0};                    \
  const T *wo = w + o0 * K;                                                                    \
  for (ptrdiff_t c = 0; c < C; ++c)                                                            \
    for (ptrdiff_t ky = 0; ky < kh; ++ky) {                                                    \
      const T *row = x + ((c * Hp + oy * sy + ky * dy) * Wp + ox * sx) * N + n0;              \
      const T *wk = wo + (c * kh + ky) * kw;                                                   \
      for (ptrdiff_t kx = 0; kx < kw; ++kx) {                                                  \
        vec_##S v0, v1;                                                                        \
        memcpy(&v0, row + kx * dx * N, sizeof v0);                                             \
        memcpy(&v1, row + kx * dx * N + LANES, sizeof v1);                                     \
        for (int i = 0; i < OUT_BLOCK; ++i) {                                                  \
          sum[i][0] += wk[i * K + kx] * v0;                                                    \
          sum[i][1] += wk[i * K + kx] * v1;                                                    \
        }                                                                                      \
      }                                                                                        \
    }                                                                                          \
  for (int i = 0; i < OUT_BLOCK; ++i) {                                                        \
    T *out = y + (((o0 + i) * out_h + oy) * out_w + ox) * N + n0;                               \
    vec_##S out0 = b ? sum[i][0] + b[o0 + i] : sum[i][0];                                      \
    vec_##S out1 = b ? sum[i][1] + b[o0 + i] : sum[i][1];                                      \
    memcpy(out, &out0, sizeof out0);                                                           \
    memcpy(out + LANES, &out1, sizeof out1);                                                   \
  }                                                                                            \
}                                                                                              \
                                                                                                \
void conv_forward_##S(const T *x, const T *w, const T *b, T *y, ptrdiff_t C, ptrdiff_t Hp,     \
                      ptrdiff_t Wp, ptrdiff_t N, ptrdiff_t O, ptrdiff_t kh, ptrdiff_t kw,      \
                      ptrdiff_t sy, ptrdiff_t sx, ptrdiff_t dy, ptrdiff_t dx) {                \
  ptrdiff_t out_h = OUT_SIZE(Hp, kh, sy, dy), out_w = OUT_SIZE(Wp, kw, sx, dx);                \
  for (ptrdiff_t oy = 0; oy < out_h; ++oy)                                                     \
    for (ptrdiff_t ox = 0; ox < out_w; ++ox)                                                   \
      for (ptrdiff_t o0 = 0; o0 < O; o0 += OUT_BLOCK)                                          \
        for (ptrdiff_t n0 = 0; n0 < N; n0 += 2 * LANES)                                        \
          pixel_block_##S(x, w, b, y, C, Hp, Wp, N, kh, kw, sy, sx, dy, dx, out_h, out_w, oy,  \
                          ox, o0, n0);                                                         \
}                                                                                                \
/* The input gradient of pixel (iy, ix) of the padded image, channels c0 .. c0+IN_BLOCK-1,     \
 * samples n0 .. n0+2*LANES-1: over (ky, kx) in order, each reaching output (oy, ox), the      \
 * term sum over o of wt[ky, kx, c, o] * gy[o, oy, ox, n] (from 0, o in order), added to a     \
 * sum that starts at +0.0: col2im's order of the GEMM twin's terms. */                        \
static void input_pixel_block_##S(const T *restrict gy, const T *restrict wt, T *restrict gx,  \
                                  ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t N,        \
                                  ptrdiff_t O, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sy,       \
                                  ptrdiff_t sx, ptrdiff_t dy, ptrdiff_t dx, ptrdiff_t out_h,   \
                                  ptrdiff_t out_w, ptrdiff_t iy, ptrdiff_t ix, ptrdiff_t c0,   \
                                  ptrdiff_t n0) {                                              \
  vec_##S sum[IN_BLOCK][2];                                                                    \
  for (int i = 0; i < IN_BLOCK; ++i) sum[i][0] = sum[i][1] = (vec_##S){0};                     \
  for (ptrdiff_t ky = 0; ky < kh; ++ky) {                                                      \
    ptrdiff_t oy = iy - ky * dy; /* the output row, times sy: divided only where sy > 1 */     \
    if (oy < 0) break; /* later ky reach higher rows only */                                   \
    if (sy > 1) {                                                                              \
      if (oy % sy) continue;                                                                   \
      oy /= sy;                                                                                \
    }                                                                                          \
    if (oy >= out_h) continue;                                                                 \
    for (ptrdiff_t kx = 0; kx < kw; ++kx) {                                                    \
      ptrdiff_t ox = ix - kx * dx;                                                             \
      if (ox < 0) break;                                                                       \
      if (sx > 1) {                                                                            \
        if (ox % sx) continue;                                                                 \
        ox /= sx;                                                                              \
      }                                                                                        \
      if (ox >= out_w) continue;                                                               \
      const T *g = gy + (oy * out_w + ox) * N + n0;                                            \
      const T *wk = wt + ((ky * kw + kx) * C + c0) * O;                                        \
      vec_##S term[IN_BLOCK][2];                                                               \
      for (int i = 0; i < IN_BLOCK; ++i) term[i][0] = term[i][1] = (vec_##S){0};               \
      for (ptrdiff_t o = 0; o < O; ++o) {                                                      \
        vec_##S g0, g1;                                                                        \
        memcpy(&g0, g + o * out_h * out_w * N, sizeof g0);                                     \
        memcpy(&g1, g + o * out_h * out_w * N + LANES, sizeof g1);                             \
        for (int i = 0; i < IN_BLOCK; ++i) {                                                   \
          term[i][0] += wk[i * O + o] * g0;                                                    \
          term[i][1] += wk[i * O + o] * g1;                                                    \
        }                                                                                      \
      }                                                                                        \
      for (int i = 0; i < IN_BLOCK; ++i) {                                                     \
        sum[i][0] += term[i][0];                                                               \
        sum[i][1] += term[i][1];                                                               \
      }                                                                                        \
    }                                                                                          \
  }                                                                                            \
  for (int i = 0; i < IN_BLOCK; ++i) {                                                         \
    T *out = gx + (((c0 + i) * Hp + iy) * Wp + ix) * N + n0;                                    \
    memcpy(out, &sum[i][0], sizeof sum[i][0]);                                                 \
    memcpy(out + LANES, &sum[i][1], sizeof sum[i][1]);                                         \
  }                                                                                            \
}                                                                                              \
                                                                                                \
/* gx (C, Hp, Wp, N), the padded image's gradient, from gy (O, out_h, out_w, N) and the        \
 * weights transposed, wt (kh, kw, C, O). */                                                   \
void conv_input_gradient_##S(const T *gy, const T *wt, T *gx, ptrdiff_t C, ptrdiff_t Hp,       \
                             ptrdiff_t Wp, ptrdiff_t N, ptrdiff_t O, ptrdiff_t kh,             \
                             ptrdiff_t kw, ptrdiff_t sy, ptrdiff_t sx, ptrdiff_t dy,           \
                             ptrdiff_t dx) {                                                   \
  ptrdiff_t out_h = OUT_SIZE(Hp, kh, sy, dy), out_w = OUT_SIZE(Wp, kw, sx, dx);                \
  for (ptrdiff_t iy = 0; iy < Hp; ++iy)                                                        \
    for (ptrdiff_t ix = 0; ix < Wp; ++ix)                                                      \
      for (ptrdiff_t c0 = 0; c0 < C; c0 += IN_BLOCK)                                           \
        for (ptrdiff_t n0 = 0; n0 < N; n0 += 2 * LANES)                                        \
          input_pixel_block_##S(gy, wt, gx, C, Hp, Wp, N, O, kh, kw, sy, sx, dy, dx, out_h,    \
                                out_w, iy, ix, c0, n0);                                        \
}                                                                                              \

/* One pass of the weight gradient: rows r0.. (their offsets in start, `rows` of them kept)
 * by V vectors of output channels from o0. */
#define WEIGHT_PASS(T, S, V)                                                                    \
static void weight_pass_##S##_##V(const T *x, const T *gyt, T *gw_t, const ptrdiff_t *start,  \
                                  ptrdiff_t r0, ptrdiff_t rows, ptrdiff_t o0, ptrdiff_t N,     \
                                  ptrdiff_t O, ptrdiff_t Wp, ptrdiff_t sy, ptrdiff_t sx,       \
                                  ptrdiff_t out_h, ptrdiff_t out_w) {                          \
  wvec_##S sum[ROW_BLOCK][V];                                                                  \
  for (int r = 0; r < ROW_BLOCK; ++r)                                                          \
    for (int v = 0; v < V; ++v) sum[r][v] = (wvec_##S){0};                                     \
  for (ptrdiff_t oy = 0; oy < out_h; ++oy)                                                     \
    for (ptrdiff_t ox = 0; ox < out_w; ++ox) {                                                 \
      const T *xs = x + (oy * sy * Wp + ox * sx) * N;                                          \
      const T *gs = gyt + (oy * out_w + ox) * N * O + o0;                                      \
      for (ptrdiff_t n = 0; n < N; ++n) {                                                      \
        wvec_##S g[V];                                                                         \
        for (int v = 0; v < V; ++v) memcpy(&g[v], gs + n * O + v * LANES_##S, sizeof g[v]);    \
        for (int r = 0; r < ROW_BLOCK; ++r) {                                                  \
          T a = xs[start[r] + n];                                                              \
          for (int v = 0; v < V; ++v) sum[r][v] += a * g[v];                                   \
        }                                                                                      \
      }                                                                                        \
    }                                                                                          \
  for (ptrdiff_t r = 0; r < rows; ++r)                                                         \
    memcpy(gw_t + (r0 + r) * O + o0, sum[r], sizeof sum[r]);                                   \
}

/* gw as the product gw.T = col @ gy.T, with output channels in vectors of BYTES bytes (a
 * register's; half that for a count that fills only half of one), two at a time where O
 * has them, and ROW_BLOCK of col's rows (c, ky, kx) in registers: each sum runs over the columns
 * (oy, ox, n) in order, one multiply-add each. gyt is gy transposed, (out_h*out_w*N, O), O
 * a multiple of LANES; gw_t (C*kh*kw, O). A last block of fewer rows repeats its last
 * row, not stored. */
#define WEIGHT_GRADIENT(T, S, BYTES)                                                            \
typedef T wvec_##S __attribute__((vector_size(BYTES)));                                        \
enum { LANES_##S = BYTES / sizeof(T) };                                                        \
WEIGHT_PASS(T, S, 1)                                                                           \
WEIGHT_PASS(T, S, 2)                                                                           \
void conv_weight_gradient_##S(const T *x, const T *gyt, T *gw_t, ptrdiff_t C, ptrdiff_t Hp,    \
                              ptrdiff_t Wp, ptrdiff_t N, ptrdiff_t O, ptrdiff_t kh,            \
                              ptrdiff_t kw, ptrdiff_t sy, ptrdiff_t sx, ptrdiff_t dy,          \
                              ptrdiff_t dx) {                                                  \
  ptrdiff_t out_h = OUT_SIZE(Hp, kh, sy, dy), out_w = OUT_SIZE(Wp, kw, sx, dx);                \
  ptrdiff_t K = C * kh * kw;                                                                   \
  for (ptrdiff_t r0 = 0; r0 < K; r0 += ROW_BLOCK) {                                            \
    ptrdiff_t start[ROW_BLOCK], rows = K - r0 < ROW_BLOCK ? K - r0 : ROW_BLOCK;                \
    for (int r = 0; r < ROW_BLOCK; ++r) {                                                      \
      ptrdiff_t row = r0 + r < K ? r0 + r : K - 1, c = row / (kh * kw), ky = row / kw % kh;   \
      start[r] = ((c * Hp + ky * dy) * Wp + row % kw * dx) * N;                                \
    }                                                                                          \
    ptrdiff_t o0 = 0;                                                                          \
    for (; o0 + 2 * LANES_##S <= O; o0 += 2 * LANES_##S)                                       \
      weight_pass_##S##_2(x, gyt, gw_t, start, r0, rows, o0, N, O, Wp, sy, sx, out_h, out_w);  \
    if (o0 < O)                                                                                \
      weight_pass_##S##_1(x, gyt, gw_t, start, r0, rows, o0, N, O, Wp, sy, sx, out_h, out_w);  \
  }                                                                                            \
}

/* This build's register blocks, for native_conv.py: out[0..3] = VECTOR_BYTES, OUT_BLOCK,
 * IN_BLOCK, ROW_BLOCK. Returns 0 where the build has neither AVX-512 nor AVX2 with FMA:
 * there the compiler splits each vector and spills the blocks, and the kernels run many
 * times slower than BLAS, so native_conv.py leaves such machines to the GEMM twin. */
int conv_blocks(ptrdiff_t *out) {
  out[0] = VECTOR_BYTES;
  out[1] = OUT_BLOCK;
  out[2] = IN_BLOCK;
  out[3] = ROW_BLOCK;
  return VECTOR_BYTES != 0;
}

CONV_KERNELS(float, f32, VEC_BYTES / 4)
CONV_KERNELS(double, f64, VEC_BYTES / 8)
WEIGHT_GRADIENT(float, f32, VEC_BYTES)
WEIGHT_GRADIENT(float, f32_half, VEC_BYTES / 2)
WEIGHT_GRADIENT(double, f64, VEC_BYTES)
WEIGHT_GRADIENT(double, f64_half, VEC_BYTES / 2)
