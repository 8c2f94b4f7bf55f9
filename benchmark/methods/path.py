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
    params = {
        "cheap": {"baselines": 0.0, "n_steps": 16, "method": "gausslegendre", "internal_batch_size": 128},
        "paper": {"baselines": 0.0, "n_steps": 50, "method": "gausslegendre", "internal_batch_size": 128},
    }
    batch_size = 16
    # Gradients in passes of 32 rows (images x steps) within Captum's 128: 1.25-1.65x faster per image on the quick CNN
    # over three runs, 5-7 % slower on a ResNet-20 at 32 px, with the same bits (benchmarks/pass_size.py, RESULTS.md).
    pass_rows = 32
