"""NoisyGradient, the noise-stability suite's unstable control: a real estimator, deterministic per input, redrawn by
any change of the input."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmark.methods import explain, get_method


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2)).eval()


def _relative_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def test_noisy_gradient_is_one_sample_of_smoothgrad_seeded_by_the_input():
    model = _model()
    x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    t = np.array([0, 1, 0, 1])
    first = explain("NoisyGradient", model, x, t, seed=0)
    # Deterministic for an input, and the same noise whether explained alone or in a batch (float rounding aside).
    np.testing.assert_array_equal(first, explain("NoisyGradient", model, x, t, seed=0))
    np.testing.assert_allclose(first[2:], explain("NoisyGradient", model, x[2:], t[2:], seed=0, batch_size=1),
                               rtol=1e-5, atol=1e-9)
    # A change far below the noise (1e-4 on a 0.15 sd) redraws the noise: the map moves much more than Saliency's.
    nudged = x + np.float32(1e-4)
    noisy_move = _relative_change(first, explain("NoisyGradient", model, nudged, t, seed=0))
    plain_move = _relative_change(explain("Saliency", model, x, t), explain("Saliency", model, nudged, t))
    assert noisy_move > 0.1 and noisy_move > 100 * plain_move
    assert get_method("NoisyGradient").params["cheap"]["stdevs"] == get_method("SmoothGrad").params["cheap"]["stdevs"]


def test_noisy_gradient_depends_on_the_model():
    x = np.random.default_rng(1).random((2, 3, 8, 8)).astype(np.float32)
    model, other = _model(), _model()
    with torch.no_grad():
        other[0].weight.mul_(-1.0)
    a = explain("NoisyGradient", model, x, [0, 1], seed=0)
    assert _relative_change(a, explain("NoisyGradient", other, x, [0, 1], seed=0)) > 0.1
