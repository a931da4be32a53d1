// CPU emulation harness: the kernels/*.cu sources compiled by g++ (through
// emulation.h), plus a cuLaunchKernel-like C entry point that runs a whole grid
// sequentially. Python (cuda_emulator.py) drives it through ctypes.
//
// Two files are generated per build by cuda_emulator.py:
//   kernel_sources.inc   #include of every kernels/*.cu
//   kernel_registry.inc  DC_REGISTER(im2col<float>) ... for every name in
//                        dualconv.kernels.cuda.NAME_EXPRESSIONS
#include <cstddef>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#include "emulation.h"
#include "kernel_sources.inc"

namespace {

struct Entry {
    const char* name;
    std::function<void(void**)> run;  // calls the kernel with unpacked params
    std::vector<int> is_pointer;      // per parameter
    std::vector<int> size;            // sizeof the scalar, or of the pointee
};

template <typename... A, std::size_t... I>
void invoke(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(params[I])...);
}

template <typename A>
constexpr int param_size() {
    if constexpr (std::is_pointer_v<A>) return sizeof(std::remove_pointer_t<A>);
    else return sizeof(A);
}

template <typename... A>
Entry make_entry(const char* name, void (*kernel)(A...)) {
    return Entry{
        name,
        [kernel](void** params) { invoke(kernel, params, std::index_sequence_for<A...>{}); },
        {std::is_pointer_v<A>...},
        {param_size<A>()...},
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

}  // namespace

extern "C" {

// Number of registered kernels, and the name of the i-th.
int dc_count() { return (int)registry().size(); }
const char* dc_name(int i) { return registry().at(i).name; }

// Parameter list of kernel `name`: fills is_pointer[] and size[] (up to cap
// entries) and returns the parameter count, or -1 if there is no such kernel.
int dc_signature(const char* name, int* is_pointer, int* size, int cap) {
    const Entry* e = find(name);
    if (!e) return -1;
    const int n = (int)e->size.size();
    for (int i = 0; i < n && i < cap; ++i) {
        is_pointer[i] = e->is_pointer[i];
        size[i] = e->size[i];
    }
    return n;
}

// Runs name<<<grid, block>>>(params...) on the CPU: every block, every thread,
// in order. params[i] points at the value of parameter i, as for
// cuLaunchKernel. Returns 0, or -1 if there is no such kernel.
int dc_launch(const char* name, const unsigned* grid, const unsigned* block, void** params) {
    const Entry* e = find(name);
    if (!e) return -1;
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
