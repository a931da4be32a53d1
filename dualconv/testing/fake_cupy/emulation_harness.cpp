// CPU emulation harness: a RawModule's CUDA C source compiled by g++ (through
// emulation.h), plus a cuLaunchKernel-like C entry point that runs a whole grid
// sequentially, each thread to completion, blocks and threads in one of three
// orders: forward, reversed, or shuffled (a fixed seed). A GPU promises no order,
// so a kernel is right only if its result is the same in all three: a non-atomic
// scatter (x[p] += ...) sums in another order, and a thread that reads what
// another thread wrote sees it or not. Python (_native.py) drives it through ctypes.
//
// Two files are generated per build by _native.py:
//   module.cu            the module's source
//   kernel_registry.inc  DC_REGISTER(im2col<float, int>) ... for every kernel name
//
// Kernels with a float (or float*) parameter run with the CPU's flush-to-zero
// and denormals-are-zero modes on, as CuPy compiles every kernel with
// -ftz=true: float32 subnormals read as zero and results that would be
// subnormal become zero. (On x86 these modes also apply to any double
// arithmetic in such a kernel; dualconv's kernels use one type per kernel.)
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#define DC_HAVE_FTZ 1
#else
#define DC_HAVE_FTZ 0
#endif

#include "emulation.h"
#include "module.cu"

namespace {

// Type codes of a parameter (or of the pointee of a pointer parameter).
enum Kind { SIGNED = 0, UNSIGNED = 1, FLOAT = 2, BOOL = 3, OTHER = 4 };

struct Entry {
    const char* name;
    std::function<void(void**)> run;  // calls the kernel with unpacked params
    std::vector<int> is_pointer;      // per parameter
    std::vector<int> size;            // sizeof the scalar, or of the pointee
    std::vector<int> kind;            // Kind of the scalar, or of the pointee
    bool single_precision;            // any float / float* parameter
};

template <typename... A, std::size_t... I>
void invoke(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(params[I])...);
}

template <typename A>
using Value = std::remove_cv_t<std::remove_pointer_t<A>>;

template <typename A>
constexpr int param_size() {
    if constexpr (std::is_void_v<Value<A>>) return 0;
    else return sizeof(Value<A>);
}

template <typename A>
constexpr int param_kind() {
    using V = Value<A>;
    if constexpr (std::is_same_v<V, bool>) return BOOL;
    else if constexpr (std::is_floating_point_v<V>) return FLOAT;
    else if constexpr (std::is_integral_v<V> && std::is_signed_v<V>) return SIGNED;
    else if constexpr (std::is_integral_v<V>) return UNSIGNED;
    else return OTHER;
}

template <typename... A>
Entry make_entry(const char* name, void (*kernel)(A...)) {
    return Entry{
        name,
        [kernel](void** params) { invoke(kernel, params, std::index_sequence_for<A...>{}); },
        {std::is_pointer_v<A>...},
        {param_size<A>()...},
        {param_kind<A>()...},
        (std::is_same_v<Value<A>, float> || ... || false),
    };
}

// Variadic: a name such as im2col<float, int> holds commas.
#define DC_REGISTER(...) make_entry(#__VA_ARGS__, &__VA_ARGS__),

const std::vector<Entry>& registry() {
    static const std::vector<Entry> entries = {
#include "kernel_registry.inc"
    };
    return entries;
}

const Entry* find(const char* name) {
    for (const Entry& e : registry())
        if (std::strcmp(e.name, name) == 0) return &e;
    return nullptr;
}

// Flush-to-zero and denormals-are-zero on for the lifetime of the object.
struct FlushSubnormals {
#if DC_HAVE_FTZ
    unsigned saved;
    explicit FlushSubnormals(bool on) : saved(_mm_getcsr()) {
        if (on) _mm_setcsr(saved | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
    }
    ~FlushSubnormals() { _mm_setcsr(saved); }
#else
    explicit FlushSubnormals(bool) {}
#endif
};

// The order blocks and threads run in (dc_launch's `order`).
enum Order { ORDER_FORWARD = 0, ORDER_REVERSE = 1, ORDER_SHUFFLE = 2 };

// 0 .. n-1 in the given order; ORDER_SHUFFLE: a Fisher-Yates shuffle driven by
// splitmix64 from a fixed seed mixed with `stream` (the block, for its threads),
// the same on every run and every machine.
std::vector<std::uint64_t> visit_order(std::uint64_t n, Order order, std::uint64_t stream) {
    std::vector<std::uint64_t> ids(n);
    for (std::uint64_t i = 0; i < n; ++i) ids[i] = order == ORDER_REVERSE ? n - 1 - i : i;
    if (order != ORDER_SHUFFLE) return ids;
    std::uint64_t state = 0x243F6A8885A308D3ull ^ (stream * 0x9E3779B97F4A7C15ull);
    for (std::uint64_t i = n; i > 1; --i) {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        std::swap(ids[i - 1], ids[(z ^ (z >> 31)) % i]);
    }
    return ids;
}

}  // namespace

extern "C" {

// Number of registered kernels, and the name of the i-th.
int dc_count() { return (int)registry().size(); }
const char* dc_name(int i) { return registry().at(i).name; }

// 1 when float kernels run with subnormals flushed (x86 SSE), else 0.
int dc_flushes_subnormals() { return DC_HAVE_FTZ; }

// Parameter list of kernel `name`: fills is_pointer[], size[] and kind[] (up
// to cap entries) and returns the parameter count, or -1 if there is no such kernel.
int dc_signature(const char* name, int* is_pointer, int* size, int* kind, int cap) {
    const Entry* e = find(name);
    if (!e) return -1;
    const int n = (int)e->size.size();
    for (int i = 0; i < n && i < cap; ++i) {
        is_pointer[i] = e->is_pointer[i];
        size[i] = e->size[i];
        kind[i] = e->kind[i];
    }
    return n;
}

// Runs name<<<grid, block>>>(params...) on the CPU: every block, every thread,
// each to completion, in the order `order` names (Order). params[i] points at
// the value of parameter i, as for cuLaunchKernel. Returns 0, -1 if there is no
// such kernel, or -2 for an unknown order.
int dc_launch(const char* name, const unsigned* grid, const unsigned* block, void** params,
              int order) {
    const Entry* e = find(name);
    if (!e) return -1;
    if (order < ORDER_FORWARD || order > ORDER_SHUFFLE) return -2;
    FlushSubnormals ftz(e->single_precision);
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    const std::vector<std::uint64_t> blocks =
        visit_order((std::uint64_t)grid[0] * grid[1] * grid[2], (Order)order, 0);
    for (const std::uint64_t b : blocks) {
        blockIdx = dim3{unsigned(b % grid[0]), unsigned(b / grid[0] % grid[1]),
                        unsigned(b / grid[0] / grid[1])};
        for (const std::uint64_t t :
             visit_order((std::uint64_t)block[0] * block[1] * block[2], (Order)order, b + 1)) {
            threadIdx = dim3{unsigned(t % block[0]), unsigned(t / block[0] % block[1]),
                             unsigned(t / block[0] / block[1])};
            e->run(params);
        }
    }
    return 0;
}

}  // extern "C"
