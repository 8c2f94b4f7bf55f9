"""Path-integral methods: Integrated Gradients."""

from __future__ import annotations

from benchmark.methods import register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods.base import Capabilities


@register
class IntegratedGradients(CaptumMethod):
    """Gradients integrated along the straight path from a black image to the input (Gauss-Legendre).

    Reference: Sundararajan, Taly & Yan, Axiomatic Attribution for Deep Networks, ICML 2017.
    """

    name = "IntegratedGradients"
    family = "path"
    captum_class = "IntegratedGradients"
    capabilities = Capabilities(gradient=True, needs_baselines=True)
    # Rows (images x steps) per forward-backward pass: 32 ran 1.6x faster per image than 128 on the quick CNN and 1.4x
    # on a ResNet-20 at 64 px, 4 % slower on one at 32 px (benchmarks/internal_batch.py, RESULTS.md); the steps' partial
    # sums group differently, so maps move by float rounding only (largest change measured 4e-9).
    params = {
        "cheap": {"baselines": 0.0, "n_steps": 16, "method": "gausslegendre", "internal_batch_size": 32},
        "paper": {"baselines": 0.0, "n_steps": 50, "method": "gausslegendre", "internal_batch_size": 32},
    }
    batch_size = 16
