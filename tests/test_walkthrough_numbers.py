"""The worked numbers of two published examples, rebuilt with dualconv layers.

A from-scratch CNN walkthrough prints a two-layer fully connected
head: the flattened feature map [15, 8, 20, 5], weights W1..W3 / b1..b3 into a
ReLU hidden layer (16.6, 12.1, 6.4), then W4..W6 / b4..b6 to the logits
(7.86, 8.78, 9.64), softmax (0.1059, 0.2658, 0.6282) and, for the class
"elephant" (index 2), a cross-entropy of 0.464866. Inputs and weights are
copied from the walkthrough; it writes one weight per output neuron, so
Dense's (in, out) weight is their transpose. (The walkthrough's working line for h1
shows "5 x (0.8)", a typo: W1's last weight 0.1 is what gives its 16.6.)

A PyTorch book runs Conv2d(1, 1, 3) on a 4x4 image, MaxPool2d(2),
ReLU, Flatten, Linear(1, 1), Sigmoid and prints only: the conv output
``sumprod`` [[-0.0143, -0.0636], [-0.0834, -0.0500]], the linear output
-1.6398 and the sigmoid 0.1625. Its image and weights are not printed, so the
test builds an image and a filter that give that ``sumprod`` (worked out below),
then checks each stage: the pool's max -0.0143, ReLU's 0, and a linear layer
whose output from 0 is its bias, -1.6398, so the sigmoid is 0.1625.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import dualconv as dc

# -- the CNN walkthrough -----------------------------------------------------------

FEATURE_MAP = np.array([[15.0, 8.0], [20.0, 5.0]])
W1, b1 = [0.5, 0.8, 0.1, 0.1], 0.2
W2, b2 = [0.2, 0.5, 0.1, 0.6], 0.1
W3, b3 = [0.1, 0.2, 0.1, 0.2], 0.3
W4, b4 = [0.2, 0.2, 0.3], 0.2
W5, b5 = [0.3, 0.2, 0.2], 0.1
W6, b6 = [0.2, 0.4, 0.2], 0.2
HIDDEN = [16.6, 12.1, 6.4]
LOGITS = [7.86, 8.78, 9.64]
SOFTMAX = [0.1059, 0.2658, 0.6282]
CROSS_ENTROPY = 0.464866


def walkthrough_head() -> dc.Sequential:
    hidden = dc.Dense(4, 3)
    out = dc.Dense(3, 3)
    model = dc.Sequential([dc.Flatten(), hidden, dc.ReLU(), out], dtype=np.float64)
    hidden.params["weight"][...] = np.array([W1, W2, W3]).T
    hidden.params["bias"][...] = [b1, b2, b3]
    out.params["weight"][...] = np.array([W4, W5, W6]).T
    out.params["bias"][...] = [b4, b5, b6]
    return model


def test_seed_004_flatten_is_row_major() -> None:
    flat = dc.Flatten().forward(FEATURE_MAP.reshape(1, 1, 2, 2))
    assert flat.tolist() == [[15.0, 8.0, 20.0, 5.0]]


def test_seed_004_hidden_layer() -> None:
    model = walkthrough_head()
    x = FEATURE_MAP.reshape(1, 1, 2, 2)
    h = model.layers[2].forward(model.layers[1].forward(model.layers[0].forward(x)))
    assert_allclose(h, [HIDDEN], rtol=1e-12)


def test_seed_004_output_layer() -> None:
    logits = walkthrough_head().forward(FEATURE_MAP.reshape(1, 1, 2, 2))
    assert_allclose(logits, [LOGITS], rtol=1e-12)


def test_seed_004_softmax() -> None:
    p = dc.Softmax().forward(np.array([LOGITS]))
    assert_allclose(p, [SOFTMAX], atol=5e-5)  # the walkthrough rounds to 4 places


@pytest.mark.parametrize("target", [np.array([2]), np.array([[0.0, 0.0, 1.0]])], ids=["label", "one-hot"])
def test_seed_004_cross_entropy(target: np.ndarray) -> None:
    loss = dc.SoftmaxCrossEntropy()
    value = float(loss.forward(np.array([LOGITS]), target))
    assert value == pytest.approx(CROSS_ENTROPY, abs=5e-7)  # the walkthrough prints 6 places
    # dL/dlogits = softmax - one-hot (batch of one)
    assert_allclose(loss.backward(), [[SOFTMAX[0], SOFTMAX[1], SOFTMAX[2] - 1]], atol=5e-5)


def test_seed_004_whole_pipeline_float32() -> None:
    model = walkthrough_head().astype(np.float32)
    loss = dc.SoftmaxCrossEntropy()
    value = float(loss.forward(model.forward(FEATURE_MAP.reshape(1, 1, 2, 2)), np.array([2])))
    assert value == pytest.approx(CROSS_ENTROPY, abs=1e-4)


# -- the PyTorch book --------------------------------------------------------------

SUMPROD = np.array([[-0.0143, -0.0636], [-0.0834, -0.0500]])
LINEAR_OUT = -1.6398
SIGMOID_OUT = 0.1625


def book_model() -> tuple[dc.Sequential, np.ndarray]:
    """The book's network with a hand-made image and filter that give its ``sumprod``.

    Filter: 2 at its bottom-right tap, 0 elsewhere, bias 0.01, so the output at
    (i, j) is 2 * x[i + 2, j + 2] + 0.01 (cross-correlation, as Conv2d is);
    the image's bottom-right 2x2 block is (sumprod - 0.01) / 2 =
    [[-0.01215, -0.0368], [-0.0467, -0.0300]], the rest anything (here 1..12,
    which the filter never reads). Linear: weight 0.75 (any value: its input is
    0), bias -1.6398.
    """
    conv, linear = dc.Conv2D(1, 1, 3), dc.Dense(1, 1)
    model = dc.Sequential([conv, dc.MaxPool2D(2, 2), dc.ReLU(), dc.Flatten(), linear, dc.Sigmoid()],
                          dtype=np.float64)
    conv.params["weight"][...] = 0.0
    conv.params["weight"][0, 0, 2, 2] = 2.0
    conv.params["bias"][...] = 0.01
    linear.params["weight"][...] = 0.75
    linear.params["bias"][...] = LINEAR_OUT
    image = np.zeros((4, 4))
    image.flat[:] = np.arange(1.0, 17.0)
    image[2:, 2:] = [[-0.01215, -0.0368], [-0.0467, -0.0300]]
    return model, image.reshape(1, 1, 4, 4)


def test_seed_000_each_stage() -> None:
    model, x = book_model()
    conv, pool, relu, flatten, linear, sigmoid = model.layers
    sumprod = conv.forward(x)
    assert_allclose(sumprod, SUMPROD.reshape(1, 1, 2, 2), rtol=1e-12, atol=1e-15)
    pooled = pool.forward(sumprod)
    assert_allclose(pooled, [[[[-0.0143]]]], rtol=1e-12)
    activated = relu.forward(pooled)
    assert activated.tolist() == [[[[0.0]]]]
    z = linear.forward(flatten.forward(activated))
    assert_allclose(z, [[LINEAR_OUT]], rtol=1e-12)
    assert float(sigmoid.forward(z)[0, 0]) == pytest.approx(SIGMOID_OUT, abs=5e-5)


def test_book_relu_then_max_as_the_book_computes_it() -> None:
    """The book clamps sumprod first and then takes the max; in either order the pool gives 0."""
    relu_first = dc.MaxPool2D(2).forward(dc.ReLU().forward(SUMPROD.reshape(1, 1, 2, 2)))
    assert relu_first.tolist() == [[[[0.0]]]]


def test_seed_000_whole_model() -> None:
    model, x = book_model()
    out = model.forward(x)
    assert out.shape == (1, 1)
    assert float(out[0, 0]) == pytest.approx(SIGMOID_OUT, abs=5e-5)
    assert float(out[0, 0]) == pytest.approx(1 / (1 + np.exp(1.6398)), rel=1e-12)


def test_hand_computed_conv_pool_relu() -> None:
    """A 4x4 image, an asymmetric 3x3 filter, bias 0.5, worked out by hand.

    x = [[1, 2, 0, 1],      w = [[ 1, 2, 0],
         [0, 1, 3, 1],           [ 0, 1, 0],
         [2, 1, 0, 0],           [-1, 0, 0]]
         [1, 0, 1, 2]]
    y[i, j] = x[i, j] + 2 x[i, j+1] + x[i+1, j+1] - x[i+2, j] + 0.5:
      y00 = 1 + 4 + 1 - 2 + 0.5 = 4.5     y01 = 2 + 0 + 3 - 1 + 0.5 = 4.5
      y10 = 0 + 2 + 1 - 1 + 0.5 = 2.5     y11 = 1 + 6 + 0 - 0 + 0.5 = 7.5
    (A true, flipped convolution would give y00 = 3.5 instead.) Max-pool 2: 7.5.
    """
    conv = dc.Conv2D(1, 1, 3).astype(np.float64)
    conv.params["weight"][...] = [[[[1, 2, 0], [0, 1, 0], [-1, 0, 0]]]]
    conv.params["bias"][...] = 0.5
    x = np.array([[1, 2, 0, 1], [0, 1, 3, 1], [2, 1, 0, 0], [1, 0, 1, 2]], dtype=np.float64)
    y = conv.forward(x.reshape(1, 1, 4, 4))
    assert_allclose(y, [[[[4.5, 4.5], [2.5, 7.5]]]], rtol=1e-12)
    pooled = dc.ReLU().forward(dc.MaxPool2D(2).forward(y))
    assert pooled.tolist() == [[[[7.5]]]]
