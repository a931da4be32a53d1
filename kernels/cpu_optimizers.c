/* The guarded SGD update for the CPU: the compiled twin of dualconv/kernels/cpu_fused.py's
 * sgd_update_guarded (itself the twin of kernels/optimizers.cu), loaded by
 * dualconv/kernels/native.py; native_optim.py calls it once per parameter.
 *
 * In place, on n numbers: w_last = w and v_last = v (v may be NULL: no velocity; w_last
 * and v_last NULL: no copies, the unguarded update); then
 *   g' = g + weight_decay * w          (where decay is set)
 *   w  = w - lr * g'                   (not moving: momentum 0; v, where given, is kept)
 *   v  = v * momentum;  v = v + g';  w = w - lr * (nesterov ? g' + momentum * v : v)
 * decay and moving are the Python values' truth (weight_decay != 0, momentum != 0), not
 * the rounded scalars'.
 * each operation rounded as written, in that order, with no fused multiply-add: GCC's
 * pragma below, and for clang the build's -ffp-contract=on, under which its pragma holds
 * (native.py); native_optim.py checks it once at load. So the results are the NumPy
 * twin's and the CUDA twin's bits (but a NaN's sign: of two NaN operands, which one an
 * operation passes on follows the order the compiler gives its operands). Returns 1
 * when every new w (and v) is finite, else 0: the guard's verdict is the caller's.
 *
 * The loop body takes its choices as constants, and the entry point calls it once for
 * each combination, so every loop the compiler makes is branch-free and vectorized.
 */
#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#define NO_FUSED_MULTIPLY_ADD _Pragma("clang fp contract(off)")
#else
#define NO_FUSED_MULTIPLY_ADD
#endif

/* x - x is 0 for a finite x, NaN for inf and NaN. */
#define FINITE(x) ((x) - (x) == 0)

/* velocity: 0 none, 1 kept as it is (momentum 0), 2 moving, 3 moving with Nesterov. */
#define SGD_BODY(T, S)                                                                          \
static inline __attribute__((always_inline)) int                                               \
sgd_body_##S(T *restrict w, const T *restrict g, T *restrict v, T *restrict w_last,            \
             T *restrict v_last, ptrdiff_t n, T lr, T momentum, T weight_decay,                \
             const int copy_w, const int copy_v, const int decay, const int velocity) {        \
  NO_FUSED_MULTIPLY_ADD                                                                        \
  int finite = 1;                                                                              \
  for (ptrdiff_t i = 0; i < n; ++i) {                                                          \
    T wi = w[i], gi = g[i];                                                                    \
    if (copy_w) w_last[i] = wi;                                                                \
    if (decay) gi = gi + weight_decay * wi;                                                    \
    if (velocity) {                                                                            \
      T vi = v[i];                                                                             \
      if (copy_v) v_last[i] = vi;                                                              \
      if (velocity >= 2) {                                                                     \
        vi = vi * momentum;                                                                    \
        vi = vi + gi;                                                                          \
        v[i] = vi;                                                                             \
        gi = velocity == 3 ? gi + momentum * vi : vi;                                          \
      }                                                                                        \
      finite &= FINITE(vi);                                                                    \
    }                                                                                          \
    wi = wi - lr * gi;                                                                         \
    w[i] = wi;                                                                                 \
    finite &= FINITE(wi);                                                                      \
  }                                                                                            \
  return finite;                                                                               \
}

#define SGD_VELOCITY(S, CW, CV, D)                                                              \
  switch (velocity) {                                                                          \
    case 0: return sgd_body_##S(w, g, v, w_last, v_last, n, lr, momentum, weight_decay, CW, CV, D, 0); \
    case 1: return sgd_body_##S(w, g, v, w_last, v_last, n, lr, momentum, weight_decay, CW, CV, D, 1); \
    case 2: return sgd_body_##S(w, g, v, w_last, v_last, n, lr, momentum, weight_decay, CW, CV, D, 2); \
    default: return sgd_body_##S(w, g, v, w_last, v_last, n, lr, momentum, weight_decay, CW, CV, D, 3); \
  }

#define SGD_GUARDED(T, S)                                                                       \
SGD_BODY(T, S)                                                                                 \
int sgd_update_guarded_##S(T *restrict w, const T *restrict g, T *restrict v,                   \
                           T *restrict w_last, T *restrict v_last, ptrdiff_t n, T lr,          \
                           T momentum, T weight_decay, int decay, int moving,                 \
                           int nesterov) {                                                     \
  int velocity = !v ? 0 : !moving ? 1 : nesterov ? 3 : 2;                                     \
  int copy_w = w_last != NULL, copy_v = v != NULL && v_last != NULL;                           \
  if (copy_w && copy_v) {                                                                      \
    if (decay) { SGD_VELOCITY(S, 1, 1, 1) } else { SGD_VELOCITY(S, 1, 1, 0) }                  \
  } else if (copy_w) {                                                                         \
    if (decay) { SGD_VELOCITY(S, 1, 0, 1) } else { SGD_VELOCITY(S, 1, 0, 0) }                  \
  } else if (copy_v) {                                                                         \
    if (decay) { SGD_VELOCITY(S, 0, 1, 1) } else { SGD_VELOCITY(S, 0, 1, 0) }                  \
  } else {                                                                                     \
    if (decay) { SGD_VELOCITY(S, 0, 0, 1) } else { SGD_VELOCITY(S, 0, 0, 0) }                  \
  }                                                                                            \
}

SGD_GUARDED(float, f32)
SGD_GUARDED(double, f64)

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
