"""The optimizers refuse hyper-parameters that make no sense, as SGD's momentum check
does: an error naming the optimizer, the argument, its range and the value got."""
from __future__ import annotations

import numpy as np
import pytest

import dualconv as dc


def params():
    model = dc.Sequential([dc.Dense(4, 3)], seed=0)
    return model.parameters()


@pytest.mark.parametrize("kwargs, pattern", [
    ({"betas": (1.0, 0.999)}, r"^Adam: betas\[0\] \(b1\) must be in \[0, 1\), got 1.0$"),
    ({"betas": (-0.1, 0.999)}, r"^Adam: betas\[0\] \(b1\) must be in \[0, 1\), got -0.1$"),
    ({"betas": (0.9, 1.0)}, r"^Adam: betas\[1\] \(b2\) must be in \[0, 1\), got 1.0$"),
    ({"betas": (0.9, float("nan"))}, r"^Adam: betas\[1\] \(b2\) must be in \[0, 1\), got nan$"),
    ({"betas": (0.9,)}, r"^Adam: betas must be a pair \(b1, b2\), got \(0.9,\)$"),
    ({"eps": -1}, r"^Adam: eps must be positive, got -1$"),
    ({"eps": 0.0}, r"^Adam: eps must be positive, got 0.0$"),
    ({"weight_decay": -0.01}, r"^Adam: weight_decay must be >= 0, got -0.01$"),
])
def test_adam_rejects_bad_hyper_parameters(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        dc.Adam(params(), **kwargs)


def test_sgd_rejects_a_negative_weight_decay():
    with pytest.raises(ValueError, match=r"^SGD: weight_decay must be >= 0, got -1$"):
        dc.SGD(params(), weight_decay=-1)


@pytest.mark.parametrize("optimizer", [dc.SGD, dc.Adam])
def test_an_empty_parameter_list_is_refused(optimizer):
    name = optimizer.__name__
    with pytest.raises(ValueError, match=rf"^{name}: got an empty parameter list; pass model.parameters\(\)$"):
        optimizer([])


def test_the_edges_of_each_range_are_accepted():
    adam = dc.Adam(params(), betas=(0.0, np.nextafter(1.0, 0.0)), eps=1e-30, weight_decay=0.0)
    assert (adam.b1, adam.eps) == (0.0, 1e-30)
    # a lazy model's live view is empty until its first forward: accepted, checked at step
    lazy = dc.Sequential([dc.Flatten(), dc.Dense(None, 3)], seed=0)
    assert len(lazy.parameters()) == 0
    dc.SGD(lazy.parameters(), lr=0.1)
