"""The harness's block and thread orders catch kernels that only work in one order.

A GPU runs blocks and threads in no promised order. The harness runs each thread
to completion, forward, reversed or shuffled (dualconv/testing/fake_cupy/_native.py,
``$DUALCONV_EMULATE_ORDER``): a kernel is right only if its result is the same in all
three. The negative controls here are kernels written wrong on purpose, kept in this
file: a col2im that scatters (``x[p] += ...``, each column entry added into its pixel,
which on a GPU also loses updates) and a kernel whose thread reads another's write.
Both pass in forward order and fail in the other two. .ci/run runs the emulated kernel
tests (``-m cuda_emulated``) once in each order, so dualconv's own kernels pass in all.
"""
from __future__ import annotations

import numpy as np
import pytest

import cuda_emulator
from dualconv.kernels import cpu
from dualconv.testing.fake_cupy import _native
from kernel_cases import HAND_PICKED, assert_bitwise_equal, values

pytestmark = pytest.mark.cuda_emulated

WRONG_ON_PURPOSE = r"""
// One thread per column entry col[c, ky, kx, oy, ox, n], added into the pixel it was
// read from: a scatter. Sequentially in forward order each pixel sums ky outer, kx
// inner, from 0, as the gather col2im does; in any other order the sum rounds otherwise.
template <typename T>
__global__ void scatter_col2im(const T* col, T* x, int C, int H, int W, int N, int kh, int kw,
                               int sy, int sx, int ph, int pw, int dy, int dx, int out_h,
                               int out_w) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)C * kh * kw * out_h * out_w * N) return;
    const int n = i % N, ox = i / N % out_w, oy = i / N / out_w % out_h;
    const int kx = i / N / out_w / out_h % kw, ky = i / N / out_w / out_h / kw % kh;
    const int c = i / N / out_w / out_h / kw / kh;
    const int y = oy * sy - ph + ky * dy, x_ = ox * sx - pw + kx * dx;
    if (y >= 0 && y < H && x_ >= 0 && x_ < W) x[((c * H + y) * W + x_) * N + n] += col[i];
}

// Thread i reads what thread i - 1 wrote: a running count that only forward order builds.
__global__ void count_after_the_previous_thread(int* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = i == 0 ? 1 : out[i - 1] + 1;
}
"""
NAMES = ("scatter_col2im<float>", "count_after_the_previous_thread")


@pytest.fixture(scope="module")
def wrong(tmp_path_factory: pytest.TempPathFactory) -> _native.NativeModule:
    if cuda_emulator.CXX is None:
        pytest.skip("g++ not found on PATH")
    return _native.NativeModule(_native.build(WRONG_ON_PURPOSE, NAMES, tmp_path_factory.mktemp("order")))


def scatter_col2im(module: _native.NativeModule, case, seed: int, order: str) -> tuple[np.ndarray, np.ndarray]:
    """(what the scattering kernel made, cpu.col2im's answer), both (N, C, H, W)."""
    win = case.window
    out_h, out_w = win.out_size(case.H, case.W)
    col = values(np.random.default_rng(seed), (case.C, win.kh, win.kw, out_h, out_w, case.N),
                 np.float32, "spread")
    x = np.zeros((case.C, case.H, case.W, case.N), np.float32)
    args = [np.int32(v) for v in (case.C, case.H, case.W, case.N, *win, out_h, out_w)]
    module.launch(NAMES[0], (-(-col.size // 64),), (64,), [col, x, *args], order=order)
    return x.transpose(3, 0, 1, 2), cpu.col2im(col.transpose(0, 1, 2, 5, 3, 4), case.H, case.W, win)


OVERLAPPING = [HAND_PICKED[i] for i in (0, 1, 3, 4)]  # pixels that several windows read


def test_a_scattering_col2im_passes_in_forward_order(wrong):
    for i, case in enumerate(OVERLAPPING):
        assert_bitwise_equal(*scatter_col2im(wrong, case, i, "forward"), f"{case}")


@pytest.mark.parametrize("order", ["reverse", "shuffle"])
def test_a_scattering_col2im_fails_in_another_order(wrong, order):
    failed = 0
    for i, case in enumerate(OVERLAPPING):
        got, expected = scatter_col2im(wrong, case, i, order)
        failed += not np.array_equal(got, expected)
    assert failed == len(OVERLAPPING), f"the scatter passed {len(OVERLAPPING) - failed} cases in {order} order"


@pytest.mark.parametrize("order", _native.ORDERS)
def test_a_thread_reading_another_threads_write_shows_in_reverse_and_shuffled_order(wrong, order):
    out = np.zeros(300, np.int32)
    wrong.launch(NAMES[1], (3,), (128,), [out, np.int32(out.size)], order=order)
    assert np.array_equal(out, np.arange(1, 301)) == (order == "forward"), out[:8]


def test_the_order_comes_from_the_environment(wrong, monkeypatch):
    monkeypatch.setenv(_native.ORDER_ENV, "reverse")
    out = np.zeros(4, np.int32)
    wrong.launch(NAMES[1], (1,), (4,), [out, np.int32(4)])
    assert out.tolist() == [1, 1, 1, 1]  # each read the zero its left neighbour had not yet replaced
    monkeypatch.setenv(_native.ORDER_ENV, "sideways")
    with pytest.raises(ValueError, match="DUALCONV_EMULATE_ORDER must be one of"):
        wrong.launch(NAMES[1], (1,), (4,), [out, np.int32(4)])
