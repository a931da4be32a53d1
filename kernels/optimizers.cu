// Fused optimizer updates: one launch per parameter, every element updated in
// place by one thread. Each kernel does, operation for operation, what the
// optimizer's NumPy expressions do (dualconv/optim.py); the module is compiled
// with --fmad=false, so no a*b + c is contracted and the results are bitwise
// equal to NumPy's.
#include "common.cuh"

// SGD (PyTorch's form), for n elements:
//   g <- g + weight_decay * w   (when weight_decay != 0)
//   w <- w - lr * g             (momentum == 0; v is not touched)
//   v <- v * momentum + g;  w <- w - lr * (nesterov ? g + momentum * v : v)
template <typename T, typename I>
__global__ void sgd_update(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ v,
                           I n, T lr, T momentum, T weight_decay, int nesterov) {
    DC_GRID_STRIDE_LOOP(I, i, n) {
        const T wi = w[i];
        T gi = g[i];
        if (weight_decay != T(0)) gi = gi + weight_decay * wi;
        if (momentum == T(0)) {
            w[i] = wi - lr * gi;
            continue;
        }
        const T vi = v[i] * momentum + gi;
        v[i] = vi;
        w[i] = wi - lr * (nesterov ? gi + momentum * vi : vi);
    }
}

// Adam, for n elements, with c1 = 1 - b1, c2 = 1 - b2, and the bias
// corrections bc1 = 1 - b1^t, bc2 = 1 - b2^t computed on the host:
//   g <- g + weight_decay * w   (when weight_decay != 0)
//   m <- m * b1 + c1 * g;  v <- v * b2 + c2 * (g * g)
//   w <- w - lr * (m / bc1) / (sqrt(v / bc2) + eps)
template <typename T, typename I>
__global__ void adam_update(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ m,
                            T* __restrict__ v, I n, T lr, T b1, T b2, T c1, T c2, T bc1,
                            T bc2, T eps, T weight_decay) {
    DC_GRID_STRIDE_LOOP(I, i, n) {
        const T wi = w[i];
        T gi = g[i];
        if (weight_decay != T(0)) gi = gi + weight_decay * wi;
        const T mi = m[i] * b1 + c1 * gi;
        const T vi = v[i] * b2 + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        w[i] = wi - lr * (mi / bc1) / (sqrt(vi / bc2) + eps);
    }
}
