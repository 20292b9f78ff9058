"""The data sets that need no file: scikit-learn's bundled sets and two generated ones."""

import math
from collections.abc import Callable

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine

BUILTIN_LOADERS: dict[str, Callable] = {
    "digits": load_digits,
    "iris": load_iris,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
}
GENERATED_TASKS = {"xor": "classification", "sine": "regression"}


def make_xor(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The XOR problem: points at the corners of the unit square, label ``x1 XOR x2``.

    The corners get ``n_samples // 4`` points each (the first ``n_samples % 4`` corners one
    more), in random order, with gaussian noise of std ``noise`` added to the inputs.

    Returns:
        ``x`` ``(n_samples, 2)`` float64 and ``labels`` ``(n_samples,)`` int64 in {0, 1}.
    """
    rng = np.random.default_rng(seed)
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (4, 2)
    corner_labels = np.array([0, 1, 1, 0])  # (4,)
    corner = rng.permutation(np.arange(n_samples) % 4)  # (n,)
    x = corners[corner] + noise * rng.standard_normal((n_samples, 2))  # (n, 2)
    return x, corner_labels[corner]


def make_sine(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One period of a sine: ``x ~ U[-pi, pi]``, ``y = sin(x) + noise * N(0, 1)``.

    Returns:
        ``x`` ``(n_samples, 1)`` and ``y`` ``(n_samples, 1)``, both float64.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-math.pi, math.pi, size=(n_samples, 1))  # (n, 1)
    y = np.sin(x) + noise * rng.standard_normal((n_samples, 1))  # (n, 1)
    return x, y
