"""The path methods' ``internal_batch_size`` (benchmarks/internal_batch.py): a smaller pass moves maps by float rounding
only, and the script times every path method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.methods import explain, get_method
from benchmark.models.arch import SmallCNN

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "internal_batch.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_script_finds_every_path_method(script):
    assert {"IntegratedGradients", "InternalInfluence", "LayerConductance", "LayerIntegratedGradients"} <= set(
        script.path_methods())


@pytest.mark.parametrize("name", ["IntegratedGradients", "InternalInfluence"])
def test_declared_internal_batch_size_moves_maps_by_float_rounding_only(name):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(20, 3, 32, 32, generator=gen).numpy(), torch.randint(0, 2, (20,), generator=gen).numpy()
    declared = get_method(name).params["cheap"]["internal_batch_size"]
    ours = explain(name, model, x, y, seed=0)
    whole = explain(name, model, x, y, seed=0, params={"internal_batch_size": 16 * 17})  # every step in one pass
    assert declared < 16 * 16 and ours.shape == whole.shape
    np.testing.assert_allclose(ours, whole, rtol=1e-5, atol=1e-6 * float(np.abs(whole).max()))


def test_the_script_prints_each_size_for_each_method(script, capsys):
    script.main(["--images", "2", "--repeats", "1", "--sizes", "32,16", "--methods", "IntegratedGradients",
                 "--archs", "cnn"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "IntegratedGradients" in line)
    assert row.split()[0] == "cnn" and row.count("x") >= 2 and "32 rows" in out and "16 rows" in out
