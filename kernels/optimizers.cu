// Fused optimizer updates: one launch per parameter, every element updated in
// place by one thread. Each kernel does, operation for operation, what the
// optimizer's NumPy expressions do (dualconv/optim.py); the module is compiled
// with --fmad=false, so no a*b + c is contracted and the results are bitwise
// equal to NumPy's.
//
// The *_guarded kernels are the same updates under fit's divergence guard
// (dualconv/divergence.py), which keeps one int32, the verdict, on the device:
// NO_FAILURE (2^31 - 1) while every step was finite, else 2s when the loss of
// guard step s was NaN or infinite (flag_nonfinite_loss), or 2s + 1 when step
// s's update left a weight or state element non-finite. Step s's kernels get
// code = 2s and
//   * run only when verdict > code (no earlier step failed and this step's loss
//     is finite), else leave every array untouched: a failed step and the ones
//     after it change nothing, and nothing is read back to the host;
//   * first copy each element they update into its last-good array (w_last,
//     v_last, m_last), which then holds the state before step s;
//   * store code + 1 into the verdict from any thread whose results are not
//     finite. Every such store writes the same value, and code + 1 > code, so
//     the rest of step s still runs, whatever the order of threads and
//     launches: a benign, deterministic store, not an atomic.
#include "common.cuh"

// SGD (PyTorch's form) on one element, in place:
//   g <- g + weight_decay * w   (when weight_decay != 0)
//   w <- w - lr * g             (momentum == 0; v is not touched)
//   v <- v * momentum + g;  w <- w - lr * (nesterov ? g + momentum * v : v)
template <typename T>
__device__ __forceinline__ void dc_sgd_element(T& w, T g, T& v, T lr, T momentum, T weight_decay,
                                               int nesterov) {
    if (weight_decay != T(0)) g = g + weight_decay * w;
    if (momentum == T(0)) {
        w = w - lr * g;
        return;
    }
    v = v * momentum + g;
    w = w - lr * (nesterov ? g + momentum * v : v);
}

// Adam on one element, in place, with c1 = 1 - b1, c2 = 1 - b2, and the bias
// corrections bc1 = 1 - b1^t, bc2 = 1 - b2^t computed on the host:
//   g <- g + weight_decay * w   (when weight_decay != 0)
//   m <- m * b1 + c1 * g;  v <- v * b2 + c2 * (g * g)
//   w <- w - lr * (m / bc1) / (sqrt(v / bc2) + eps)
template <typename T>
__device__ __forceinline__ void dc_adam_element(T& w, T g, T& m, T& v, T lr, T b1, T b2, T c1,
                                                T c2, T bc1, T bc2, T eps, T weight_decay) {
    if (weight_decay != T(0)) g = g + weight_decay * w;
    m = m * b1 + c1 * g;
    v = v * b2 + c2 * (g * g);
    w = w - lr * (m / bc1) / (sqrt(v / bc2) + eps);
}

// x is neither NaN nor infinite: x - x is exactly 0 for every finite x (a
// subnormal flushed to zero included) and NaN otherwise.
template <typename T>
__device__ __forceinline__ bool dc_isfinite(T x) { return x - x == T(0); }

// SGD for n elements (v is not read or written when momentum is 0).
template <typename T, typename I>
__global__ void sgd_update(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ v,
                           I n, T lr, T momentum, T weight_decay, int nesterov) {
    DC_GRID_STRIDE_LOOP(I, i, n) {
        T wi = w[i];
        T vi = momentum == T(0) ? T(0) : v[i];
        dc_sgd_element(wi, g[i], vi, lr, momentum, weight_decay, nesterov);
        w[i] = wi;
        if (momentum != T(0)) v[i] = vi;
    }
}

// Adam for n elements.
template <typename T, typename I>
__global__ void adam_update(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ m,
                            T* __restrict__ v, I n, T lr, T b1, T b2, T c1, T c2, T bc1,
                            T bc2, T eps, T weight_decay) {
    DC_GRID_STRIDE_LOOP(I, i, n) {
        T wi = w[i], mi = m[i], vi = v[i];
        dc_adam_element(wi, g[i], mi, vi, lr, b1, b2, c1, c2, bc1, bc2, eps, weight_decay);
        m[i] = mi;
        v[i] = vi;
        w[i] = wi;
    }
}

// The guarded updates on element i, shared by the kernels that take the rate and
// the step code as arguments, the *_at kernels that read them from device
// memory and the list kernels below: copy what changes into its last-good
// array, update, flag a non-finite result. The caller has checked the verdict.
template <typename T, typename I>
__device__ __forceinline__ void dc_sgd_guarded_element(T* __restrict__ w, const T* __restrict__ g,
                                                       T* __restrict__ v, T* __restrict__ w_last,
                                                       T* __restrict__ v_last,
                                                       int* __restrict__ verdict, I i, T lr,
                                                       T momentum, T weight_decay, int nesterov,
                                                       int code) {
    T wi = w[i];
    T vi = momentum == T(0) ? T(0) : v[i];
    w_last[i] = wi;
    if (momentum != T(0)) v_last[i] = vi;
    dc_sgd_element(wi, g[i], vi, lr, momentum, weight_decay, nesterov);
    w[i] = wi;
    if (momentum != T(0)) v[i] = vi;
    if (!dc_isfinite(wi) || !dc_isfinite(vi)) *verdict = code + 1;
}

template <typename T, typename I>
__device__ __forceinline__ void dc_adam_guarded_element(T* __restrict__ w, const T* __restrict__ g,
                                                        T* __restrict__ m, T* __restrict__ v,
                                                        T* __restrict__ w_last,
                                                        T* __restrict__ m_last,
                                                        T* __restrict__ v_last,
                                                        int* __restrict__ verdict, I i, T lr,
                                                        T b1, T b2, T c1, T c2, T bc1, T bc2,
                                                        T eps, T weight_decay, int code) {
    T wi = w[i], mi = m[i], vi = v[i];
    w_last[i] = wi;
    m_last[i] = mi;
    v_last[i] = vi;
    dc_adam_element(wi, g[i], mi, vi, lr, b1, b2, c1, c2, bc1, bc2, eps, weight_decay);
    m[i] = mi;
    v[i] = vi;
    w[i] = wi;
    if (!dc_isfinite(wi) || !dc_isfinite(mi) || !dc_isfinite(vi)) *verdict = code + 1;
}

// The guarded updates of one array of n elements.
template <typename T, typename I>
__device__ __forceinline__ void dc_sgd_guarded(T* __restrict__ w, const T* __restrict__ g,
                                               T* __restrict__ v, T* __restrict__ w_last,
                                               T* __restrict__ v_last, int* __restrict__ verdict,
                                               I n, T lr, T momentum, T weight_decay, int nesterov,
                                               int code) {
    if (*verdict <= code) return;
    DC_GRID_STRIDE_LOOP(I, i, n) {
        dc_sgd_guarded_element(w, g, v, w_last, v_last, verdict, i, lr, momentum, weight_decay,
                               nesterov, code);
    }
}

template <typename T, typename I>
__device__ __forceinline__ void dc_adam_guarded(T* __restrict__ w, const T* __restrict__ g,
                                                T* __restrict__ m, T* __restrict__ v,
                                                T* __restrict__ w_last, T* __restrict__ m_last,
                                                T* __restrict__ v_last, int* __restrict__ verdict,
                                                I n, T lr, T b1, T b2, T c1, T c2, T bc1, T bc2,
                                                T eps, T weight_decay, int code) {
    if (*verdict <= code) return;
    DC_GRID_STRIDE_LOOP(I, i, n) {
        dc_adam_guarded_element(w, g, m, v, w_last, m_last, v_last, verdict, i, lr, b1, b2, c1,
                                c2, bc1, bc2, eps, weight_decay, code);
    }
}

// sgd_update under the guard (see the top of this file); verdict: one int.
template <typename T, typename I>
__global__ void sgd_update_guarded(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ v,
                                   T* __restrict__ w_last, T* __restrict__ v_last,
                                   int* __restrict__ verdict, I n, T lr, T momentum,
                                   T weight_decay, int nesterov, int code) {
    dc_sgd_guarded(w, g, v, w_last, v_last, verdict, n, lr, momentum, weight_decay, nesterov, code);
}

// adam_update under the guard (see the top of this file); verdict: one int.
template <typename T, typename I>
__global__ void adam_update_guarded(T* __restrict__ w, const T* __restrict__ g,
                                    T* __restrict__ m, T* __restrict__ v,
                                    T* __restrict__ w_last, T* __restrict__ m_last,
                                    T* __restrict__ v_last, int* __restrict__ verdict, I n,
                                    T lr, T b1, T b2, T c1, T c2, T bc1, T bc2, T eps,
                                    T weight_decay, int code) {
    dc_adam_guarded(w, g, m, v, w_last, m_last, v_last, verdict, n, lr, b1, b2, c1, c2, bc1, bc2,
                    eps, weight_decay, code);
}

// The guard's check of step code / 2's loss (one thread): a NaN or infinite
// loss marks the step as failed, unless an earlier step already failed.
template <typename T>
__global__ void flag_nonfinite_loss(const T* __restrict__ loss, int* __restrict__ verdict,
                                    int code) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && !dc_isfinite(*loss) && *verdict > code)
        *verdict = code;
}

// The *_at kernels: the guarded updates and the loss check of a captured step
// (kernels/step.cu), which read the per-step values from device memory instead
// of taking them as arguments: *lr (SGD), rates = {lr, 1 - b1^t, 1 - b2^t}
// (Adam), *code (the guard's step code) and *step (the step's index in the
// epoch). Otherwise each is the kernel above, operation for operation.
template <typename T, typename I>
__global__ void sgd_update_guarded_at(T* __restrict__ w, const T* __restrict__ g,
                                      T* __restrict__ v, T* __restrict__ w_last,
                                      T* __restrict__ v_last, int* __restrict__ verdict, I n,
                                      const T* __restrict__ lr, T momentum, T weight_decay,
                                      int nesterov, const int* __restrict__ code) {
    dc_sgd_guarded(w, g, v, w_last, v_last, verdict, n, *lr, momentum, weight_decay, nesterov,
                   *code);
}

template <typename T, typename I>
__global__ void adam_update_guarded_at(T* __restrict__ w, const T* __restrict__ g,
                                       T* __restrict__ m, T* __restrict__ v,
                                       T* __restrict__ w_last, T* __restrict__ m_last,
                                       T* __restrict__ v_last, int* __restrict__ verdict, I n,
                                       const T* __restrict__ rates, T b1, T b2, T c1, T c2,
                                       T eps, T weight_decay, const int* __restrict__ code) {
    dc_adam_guarded(w, g, m, v, w_last, m_last, v_last, verdict, n, rates[0], b1, b2, c1, c2,
                    rates[1], rates[2], eps, weight_decay, *code);
}

// flag_nonfinite_loss with the code read from *code; it also keeps the loss in
// losses[*step], where the host finds a failed step's loss after later replays
// have overwritten the loss buffer.
template <typename T>
__global__ void flag_nonfinite_loss_at(const T* __restrict__ loss, int* __restrict__ verdict,
                                       const int* __restrict__ step,
                                       const int* __restrict__ code, T* __restrict__ losses) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const T value = *loss;
    losses[*step] = value;
    if (!dc_isfinite(value) && *verdict > *code) *verdict = *code;
}

// ---------------------------------------------------------------- list kernels
// The *_many kernels: one launch updates up to DC_LIST_TENSORS arrays of one
// dtype (every parameter of a model, as PyTorch's multi-tensor apply), so a
// step's update costs the host one launch instead of one per parameter. The
// arrays' addresses travel in the launch's arguments, in a DcTensorList passed
// by value (the host fills one and passes it as a one-element NumPy array, which
// CuPy copies into the launch parameters): no host-to-device copy, no atomics.
// Thread i updates element i of the arrays laid end to end, with the same
// element functions as the kernels above, so the results are the same bits.
#define DC_LIST_TENSORS 32
#define DC_LIST_ROLES 7

struct DcTensorList {
    long long end[DC_LIST_TENSORS];  // elements of tensors 0..t together (ascending)
    unsigned long long ptr[DC_LIST_ROLES][DC_LIST_TENSORS];  // ptr[role][t]: the array's address
    long long count;                 // tensors in the list, 1..DC_LIST_TENSORS
};

// The tensor that element i (0 <= i < end[count - 1]) falls in: a binary search.
__device__ __forceinline__ int dc_tensor_of(const DcTensorList& list, long long i) {
    int lo = 0, hi = static_cast<int>(list.count) - 1;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (i < list.end[mid]) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

template <typename T>
__device__ __forceinline__ T* dc_role(const DcTensorList& list, int role, int t) {
    return reinterpret_cast<T*>(list.ptr[role][t]);
}

// Roles: SGD w, g, v, w_last, v_last (v and v_last unused when momentum is 0);
// Adam w, g, m, v, w_last, m_last, v_last. The unguarded kernels use the first
// three (SGD) or four (Adam).
#define DC_LIST_ELEMENT(list, i, t, j)                                              \
    const int t = dc_tensor_of(list, i);                                             \
    const long long j = i - (t == 0 ? 0 : list.end[t - 1])

template <typename T>
__global__ void sgd_update_many(const DcTensorList list, T lr, T momentum, T weight_decay,
                                int nesterov) {
    DC_GRID_STRIDE_LOOP(long long, i, list.end[list.count - 1]) {
        DC_LIST_ELEMENT(list, i, t, j);
        T* w = dc_role<T>(list, 0, t);
        T* v = dc_role<T>(list, 2, t);
        T wi = w[j];
        T vi = momentum == T(0) ? T(0) : v[j];
        dc_sgd_element(wi, dc_role<T>(list, 1, t)[j], vi, lr, momentum, weight_decay, nesterov);
        w[j] = wi;
        if (momentum != T(0)) v[j] = vi;
    }
}

template <typename T>
__global__ void adam_update_many(const DcTensorList list, T lr, T b1, T b2, T c1, T c2, T bc1,
                                 T bc2, T eps, T weight_decay) {
    DC_GRID_STRIDE_LOOP(long long, i, list.end[list.count - 1]) {
        DC_LIST_ELEMENT(list, i, t, j);
        T* w = dc_role<T>(list, 0, t);
        T* m = dc_role<T>(list, 2, t);
        T* v = dc_role<T>(list, 3, t);
        T wi = w[j], mi = m[j], vi = v[j];
        dc_adam_element(wi, dc_role<T>(list, 1, t)[j], mi, vi, lr, b1, b2, c1, c2, bc1, bc2, eps,
                        weight_decay);
        m[j] = mi;
        v[j] = vi;
        w[j] = wi;
    }
}

template <typename T>
__global__ void sgd_update_guarded_many(const DcTensorList list, int* __restrict__ verdict, T lr,
                                        T momentum, T weight_decay, int nesterov, int code) {
    if (*verdict <= code) return;
    DC_GRID_STRIDE_LOOP(long long, i, list.end[list.count - 1]) {
        DC_LIST_ELEMENT(list, i, t, j);
        dc_sgd_guarded_element(dc_role<T>(list, 0, t), dc_role<T>(list, 1, t),
                               dc_role<T>(list, 2, t), dc_role<T>(list, 3, t),
                               dc_role<T>(list, 4, t), verdict, j, lr, momentum, weight_decay,
                               nesterov, code);
    }
}

template <typename T>
__global__ void adam_update_guarded_many(const DcTensorList list, int* __restrict__ verdict, T lr,
                                         T b1, T b2, T c1, T c2, T bc1, T bc2, T eps,
                                         T weight_decay, int code) {
    if (*verdict <= code) return;
    DC_GRID_STRIDE_LOOP(long long, i, list.end[list.count - 1]) {
        DC_LIST_ELEMENT(list, i, t, j);
        dc_adam_guarded_element(dc_role<T>(list, 0, t), dc_role<T>(list, 1, t),
                                dc_role<T>(list, 2, t), dc_role<T>(list, 3, t),
                                dc_role<T>(list, 4, t), dc_role<T>(list, 5, t),
                                dc_role<T>(list, 6, t), verdict, j, lr, b1, b2, c1, c2, bc1, bc2,
                                eps, weight_decay, code);
    }
}
