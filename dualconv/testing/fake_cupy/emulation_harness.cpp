// CPU emulation harness: a RawModule's CUDA C source compiled by g++ (through
// emulation.h), plus a cuLaunchKernel-like C entry point that runs a whole grid
// sequentially. Python (_native.py) drives it through ctypes.
//
// Two files are generated per build by _native.py:
//   module.cu            the module's source
//   kernel_registry.inc  DC_REGISTER(im2col<float>) ... for every kernel name
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

#define DC_REGISTER(expr) make_entry(#expr, &expr),

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
// in order. params[i] points at the value of parameter i, as for
// cuLaunchKernel. Returns 0, or -1 if there is no such kernel.
int dc_launch(const char* name, const unsigned* grid, const unsigned* block, void** params) {
    const Entry* e = find(name);
    if (!e) return -1;
    FlushSubnormals ftz(e->single_precision);
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    for (unsigned bz = 0; bz < grid[2]; ++bz)
        for (unsigned by = 0; by < grid[1]; ++by)
            for (unsigned bx = 0; bx < grid[0]; ++bx) {
                blockIdx = dim3{bx, by, bz};
                for (unsigned tz = 0; tz < block[2]; ++tz)
                    for (unsigned ty = 0; ty < block[1]; ++ty)
                        for (unsigned tx = 0; tx < block[0]; ++tx) {
                            threadIdx = dim3{tx, ty, tz};
                            e->run(params);
                        }
            }
    return 0;
}

}  // extern "C"
