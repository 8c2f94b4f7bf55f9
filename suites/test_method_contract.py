"""Method contract suite: every registered attribution method × every architecture.

Uses fixtures provided by the benchmark plugin:

* ``contract_models``: ``{arch: {"biased": nn.Module, "control": nn.Module}}``
* ``contract_batch``: ``(x (8,3,32,32) float in [0,1], y (8,) int, masks (8,32,32) bool)`` from the
  stamped test set; the grader gives a method that declares ``capabilities.prior`` the training set's mean
  watermark mask.

Methods come from the registry through the plugin's ``bench_method`` parametrisation (honouring
``--bench-methods``), so a method added as a module in
``benchmark/methods/``, an entry point or ``$SHORTCUT_BENCH_METHODS`` is checked without editing
this file. Targets are the model's own predictions: the benchmark explains decisions, and a
ReLU-clipped method (Grad-CAM) has no positive evidence to show for a class the model rejects.
"""

from __future__ import annotations

import pytest

from benchmark.contract import check_method, eval_logits
from benchmark.models.arch import ARCHITECTURES
from benchmark.timelimit import CellTimeout, time_limit


@pytest.mark.parametrize("split", ["biased", "control"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
class TestMethodContract:
    def test_contract(self, bench_method, arch, split, contract_models, contract_batch, grader):
        method = bench_method
        if arch not in contract_models:
            pytest.skip(f"this profile's contract does not cover {arch!r} (covers {sorted(contract_models)})")
        model = contract_models[arch][split]
        x, _, masks = contract_batch
        device = next(model.parameters()).device
        targets = eval_logits(model, x.to(device)).argmax(1).cpu()
        try:
            # A hanging method fails its own contract cell at the profile's per-cell limit; the run goes on.
            with time_limit(grader.cell_timeout_s, grader.cell_timeout_source):
                violations = check_method(method, model, x, targets, masks=masks, prior=grader.prior_for(method))
        except CellTimeout as exc:
            pytest.fail(f"{method} on the {split} {arch}: {exc}", pytrace=False)
        listing = "\n  ".join(violations)
        assert not violations, f"{method} on the {split} {arch} violates the method contract:\n  {listing}"
