"""LayerGradientShap's layer passes (benchmark.methods._layer_rows): each distinct row's layer outputs computed once and
the layer gradients in smaller passes keep every map's bits, and a shortcut that does not is dropped for Captum's pass."""

from __future__ import annotations

import pytest
import torch
from captum._utils import gradient as captum_gradient

from benchmark.methods import _layer_rows, explain, get_method
from benchmark.methods.base import resolve_layer
from benchmark.models.arch import SmallCNN, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _fresh_checks(monkeypatch):
    monkeypatch.setattr(_layer_rows, "_exact", {})


def _model(arch: str):
    torch.manual_seed(0)
    model = SmallCNN() if arch == "cnn" else build_model("resnet", depth=20, image_size=32)
    return model.eval().to(memory_format=torch.channels_last)  # as the grader explains on the CPU


def _rows_forwarded(model, call) -> int:
    rows = []
    handle = model.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    try:
        call()
    finally:
        handle.remove()
    return sum(rows)


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_layer_gradient_shap_keeps_every_maps_bits_with_fewer_rows(arch, monkeypatch):
    cls = get_method("LayerGradientShap")
    model = _model(arch)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(21, 3, 32, 32, generator=gen).numpy(), torch.randint(0, 2, (21,), generator=gen).numpy()
    first = explain("LayerGradientShap", model, x, y, seed=3)  # checks each shape of call against Captum's pass
    assert _layer_rows._exact and all(_layer_rows._exact.values())
    fast = []
    ours = _rows_forwarded(model, lambda: fast.append(explain("LayerGradientShap", model, x, y, seed=3)))
    monkeypatch.setattr(cls, "layer_pass_rows", None)
    captums = []
    theirs = _rows_forwarded(model, lambda: captums.append(explain("LayerGradientShap", model, x, y, seed=3)))
    assert first.tobytes() == fast[0].tobytes() == captums[0].tobytes()
    assert ours < theirs / 2  # 21 images x 8 samples: 168 rows differentiated, 2 x 168 forwarded for 25 distinct


def test_a_shortcut_with_other_bits_is_dropped_for_captums_pass():
    calls = {"shortcut": 0, "exact": 0}

    def shortcut():
        calls["shortcut"] += 1
        return (torch.ones(2),)

    def exact():
        calls["exact"] += 1
        return (torch.tensor([1.0, 1.0 + 2**-20]),)

    for _ in range(3):
        assert torch.equal(_layer_rows.checked(("k",), shortcut, exact)[0], exact()[0])
    assert calls["shortcut"] == 1 and _layer_rows._exact[("k",)] is False  # never asked again after its check


def test_a_shortcut_that_raises_on_its_check_leaves_the_call_to_captum():
    def shortcut():
        raise RuntimeError("a call the shortcut cannot take")

    assert _layer_rows.checked(("r",), shortcut, lambda: (torch.zeros(1),))[0].item() == 0
    assert _layer_rows._exact[("r",)] is False


def test_a_shortcut_in_another_layout_is_not_taken_for_captums():
    x = torch.rand(2, 3, 4, 4)
    assert not _layer_rows._same((x,), (x.contiguous(memory_format=torch.channels_last),))
    assert _layer_rows._same(((x,), (x + 0,)), ((x.clone(),), (x,)))


def _layer_evals(model, x, monkeypatch) -> tuple[tuple, list[int]]:
    layer = resolve_layer(model, "inner_layer")
    passes = []
    own = captum_gradient._forward_layer_eval
    monkeypatch.setattr(captum_gradient, "_forward_layer_eval",
                        lambda fn, inputs, *a: passes.append(len(torch.cat(tuple(inputs) if isinstance(inputs, tuple)
                                                                           else (inputs,)))) or own(fn, inputs, *a))
    ours = _layer_rows.distinct_rows_layer_eval(model, (x,), layer)
    assert torch.equal(ours[0], own(model, (x,), layer)[0])
    return ours, passes


def test_rows_are_told_apart_by_their_bits(monkeypatch):
    model = _model("cnn")
    zeros = torch.zeros(1, 3, 32, 32)
    x = torch.cat([zeros, -zeros, torch.rand(1, 3, 32, 32)] * 3)  # 0.0 and -0.0: equal as numbers, two rows as bits
    _, passes = _layer_evals(model, x, monkeypatch)
    assert passes == [3, 9]  # the shortcut's pass of the three distinct rows, then Captum's (the check)


def test_a_single_distinct_row_is_forwarded_in_a_pass_of_two(monkeypatch):
    model = _model("cnn")
    x = torch.rand(1, 3, 32, 32).expand(6, -1, -1, -1).contiguous()
    _, passes = _layer_evals(model, x, monkeypatch)
    assert passes == [2, 6]  # one row alone runs other kernels here


def test_a_model_in_training_mode_is_checked_apart_and_keeps_captums_rows(monkeypatch):
    model = _model("cnn")
    x = torch.rand(3, 3, 32, 32)[torch.tensor([0, 0, 0, 0, 0, 1, 2, 2])]
    _layer_evals(model, x, monkeypatch)  # eval mode: the shortcut holds
    model.train()  # batch statistics tie each row to its batch mates: the 3 distinct rows' mean is not the 8 rows'
    ours = _layer_rows.distinct_rows_layer_eval(model, (x,), resolve_layer(model, "inner_layer"))
    assert torch.equal(ours[0], captum_gradient._forward_layer_eval(model, (x,), resolve_layer(model, "inner_layer"))[0])
    assert sorted(_layer_rows._exact.values()) == [False, True]
