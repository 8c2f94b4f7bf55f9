"""Pass sizes of the gradient methods (benchmarks/pass_size.py): ``pass_rows`` and ``pass_images`` keep every map's bits,
a smaller ``internal_batch_size`` moves maps by float rounding only, and the script times every sized method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from captum._utils.gradient import compute_gradients

from benchmark.methods import explain, get_method
from benchmark.methods._captum import gradients_in_groups, target_rows
from benchmark.methods._variants import HELD
from benchmark.models.arch import SmallCNN

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "pass_size.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=gen).numpy(), torch.randint(0, 2, (n,), generator=gen).numpy()


def _cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval().to(memory_format=torch.channels_last)  # as the grader explains on the CPU


def test_the_script_finds_every_sized_method(script):
    knobs = script.sized_methods()
    assert {name: knobs.get(name) for name in ("IntegratedGradients", "SmoothGrad", "VarGrad", "GradientShap",
                                               "DeepLiftShap", "InternalInfluence", "Saliency")} == {
        "IntegratedGradients": "pass_rows", "SmoothGrad": "pass_rows", "VarGrad": "pass_rows",
        "GradientShap": "pass_rows", "DeepLiftShap": "pass_images", "InternalInfluence": "internal_batch_size",
        "Saliency": None}


@pytest.mark.parametrize("name", ["IntegratedGradients", "SmoothGrad", "SmoothGradSq", "VarGrad", "GradientShap"])
def test_gradients_in_groups_keep_every_maps_bits_and_draws(name, monkeypatch):
    cls = get_method(name)
    assert cls.pass_rows is not None
    model = _cnn()
    x, y = _data(cls.batch_size + 3)
    groups = []
    monkeypatch.setattr("benchmark.methods._captum.compute_gradients",
                        lambda fn, inputs, *a: groups.append(len(inputs[0])) or compute_gradients(fn, inputs, *a))
    with HELD.paused():  # Captum's own passes (IG's with InternalInfluence's held: tests/test_shared_passes.py)
        grouped = explain(name, model, x, y, seed=4)
    assert max(groups) <= cls.pass_rows < sum(groups)  # the passes were split
    monkeypatch.setattr(cls, "pass_rows", None)
    whole = explain(name, model, x, y, seed=4)
    assert grouped.tobytes() == whole.tobytes()  # same draws (noise, baselines, coefficients) and same bits


def test_gradients_in_groups_split_targets_with_their_rows():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.rand(10, 3, 32, 32, requires_grad=True)
    y = torch.arange(10) % 2
    (whole,) = compute_gradients(model, (x,), y)
    for target in (y, y.tolist(), 1):
        for rows in (1, 3, 4):  # 3: a last row joins the group before it (one row runs other kernels); 1 is 2
            (ours,) = gradients_in_groups(rows, model, (x,), target)
            (want,) = compute_gradients(model, (x,), target)
            assert torch.equal(ours, want)
    assert torch.equal(gradients_in_groups(4, model, x, y)[0], whole)  # a bare tensor is one input


@pytest.mark.parametrize("name", ["InternalInfluence"])
def test_declared_internal_batch_size_moves_maps_by_float_rounding_only(name):
    model = _cnn()
    x, y = _data(20)
    declared = get_method(name).params["cheap"]["internal_batch_size"]
    ours = explain(name, model, x, y, seed=0)
    whole = explain(name, model, x, y, seed=0, params={"internal_batch_size": 16 * 17})  # every step in one pass
    assert declared < 16 * 16 and ours.shape == whole.shape
    np.testing.assert_allclose(ours, whole, rtol=1e-5, atol=1e-6 * float(np.abs(whole).max()))


def test_the_script_prints_each_size_for_each_method(script, capsys):
    script.main(["--images", "2", "--repeats", "1", "--sizes", "8,2", "--image-sizes", "1",
                 "--methods", "IntegratedGradients,DeepLiftShap,InternalInfluence", "--archs", "cnn"])
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("  cnn ")}
    assert set(rows) == {"IntegratedGradients", "DeepLiftShap", "InternalInfluence"}
    assert rows["IntegratedGradients"].count("same") == 3 and rows["DeepLiftShap"].count("same") == 2
    assert get_method("IntegratedGradients").pass_rows == 32 and "pass_rows" not in vars(get_method("SmoothGrad"))


@pytest.mark.parametrize("names, says", [("Saliency", "no pass size to vary for Saliency"),
                                         ("IntegratedGradient", "unknown method(s) IntegratedGradient")])
def test_the_script_refuses_a_method_it_cannot_size(script, names, says, capsys):
    with pytest.raises(SystemExit):
        script.main(["--images", "2", "--repeats", "1", "--methods", names])
    assert says in capsys.readouterr().err


def test_target_rows_slice_only_a_target_of_one_class_per_row():
    t = torch.tensor([0, 1, 1, 0])
    assert target_rows(t, 4, 1, 3).tolist() == [1, 1] and target_rows([0, 1, 1, 0], 4, 2, 4) == [1, 0]
    assert target_rows(1, 4, 1, 3) == 1 and target_rows(None, 4, 0, 2) is None
    assert target_rows(torch.tensor(1), 4, 0, 2).item() == 1  # one class for every row, as a 0-d tensor
