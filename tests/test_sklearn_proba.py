"""CNNClassifier.predict_proba gives Sequential.predict_proba's probabilities: the
softmax of the logits, or, for a model that ends in a Softmax layer, its outputs
(never a second softmax over them).

Oracle: a float64 softmax written here over the model's own outputs. Tolerance: the
model's float32 softmax over C classes is within about (C + 3) ulp of 1 per element
(exp, a C-term sum, a division); doubled for the float64 renormalization.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import dualconv as dc
from dualconv.sklearn import CNNClassifier
from test_sklearn import _blobs

C = 3
TOL = 2 * (C + 3) * np.finfo(np.float32).eps


def softmax64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("ends_in_softmax", [False, True])
def test_predict_proba_is_the_models_own(ends_in_softmax):
    X, y = _blobs()

    def tiny(num_classes, seed):
        head = [dc.Softmax()] if ends_in_softmax else []
        return dc.Sequential([dc.Dense(None, 8), dc.Tanh(), dc.Dense(None, num_classes), *head], seed=seed)

    clf = CNNClassifier(model=tiny, epochs=3, random_state=0).fit(X, y)
    outputs = np.asarray(clf.model_.predict(X.astype(np.float32)), dtype=np.float64)
    expected = outputs if ends_in_softmax else softmax64(outputs)
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float64 and proba.shape == (len(X), C)
    assert_allclose(proba, expected, rtol=0, atol=TOL)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=4 * np.finfo(np.float64).eps)
    assert_allclose(clf.predict_proba(X), clf.model_.predict_proba(X.astype(np.float32)), rtol=0, atol=TOL)
