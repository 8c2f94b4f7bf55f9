"""A perturbation method that no stored grid has seen, for timing a grid that adds it (``benchmarks/store_speed.py``).

Loaded only through ``$SHORTCUT_BENCH_METHODS``, never by discovery of the package.
"""

from benchmark.methods import register
from benchmark.methods.perturbation import KernelShap


@register
class AddedKernelShapBlack(KernelShap):
    """Shapley values of 4×4 patches (at 32 px) from a Shapley-kernel weighted linear fit, removed patches black.

    Reference: Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017.
    """

    name = "AddedKernelShapBlack"
    # KernelShap's samples and patches, so it costs what KernelShap costs; only the removed patches' value differs.
    params = {level: {**p, "baselines": 0.0} for level, p in KernelShap.params.items()}
