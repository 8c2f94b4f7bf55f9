"""The region forward (benchmark.methods._region): one-patch copies' logits bit for bit, used only where probed exact."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmark.methods import _region, explain
from benchmark.methods._chunked import no_grad_forward
from benchmark.models import fused as fusion
from benchmark.models.arch import CifarResNet, SmallCNN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cnn(seed: int = 0, size: int = 16) -> SmallCNN:
    """A graded-like copy: eval mode, BatchNorm statistics that are not the identity, channels-last, fusion allowed."""
    torch.manual_seed(seed)
    model = SmallCNN(width=size).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model = model.to(memory_format=torch.channels_last)
    fusion.allow(model)
    return model


def _images(n: int, px: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, px, px, generator=torch.Generator().manual_seed(seed))


def _region_way(seed: int, n: int):
    """(model, inputs, their fused forward, its region forward) of a fresh graded-like SmallCNN."""
    model, bases = _cnn(seed=seed), _images(n)
    whole = no_grad_forward(model, bases)
    forward = _region.region_forward(model, whole, bases)
    assert isinstance(forward, _region.RegionForward)
    return model, bases, whole, forward


@pytest.mark.parametrize("px", [32, 64])
@pytest.mark.parametrize("method", ["Occlusion", "FeatureAblation", "FeaturePermutation"])
def test_one_patch_methods_give_the_same_maps_the_region_way(method, px, monkeypatch):
    model = _cnn()
    x, y = _images(6, px), torch.tensor([0, 1, 0, 1, 1, 0])
    used = []
    logits = _region.RegionPlan.logits
    monkeypatch.setattr(_region.RegionPlan, "logits", lambda self, *a: used.append(1) or logits(self, *a))
    region = explain(method, model, x, y)
    assert used, "the region way was not taken"
    monkeypatch.setattr(_region, "region_forward", lambda model, forward, inputs: forward)
    monkeypatch.setattr("benchmark.methods._captum.region_forward", lambda model, forward, inputs: forward)
    whole = explain(method, model, x, y)
    assert region.tobytes() == whole.tobytes()


def test_copies_changed_anywhere_come_back_bit_for_bit():
    _, bases, whole, forward = _region_way(seed=3, n=4)
    copies = []
    for top, left, side in ((0, 0, 1), (0, 29, 3), (30, 0, 2), (13, 17, 5), (28, 28, 4), (7, 0, 6)):
        x = bases.clone()
        x[:, :, top : top + side, left : left + side] = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
        copies.append(x)
    copies.append(bases.clone())  # unchanged copies
    x = torch.cat(copies)
    with torch.no_grad():
        assert torch.equal(forward(x), whole(x))


def test_making_a_plan_draws_no_random_number():
    model = _cnn(seed=11)
    bases = _images(2)
    whole = no_grad_forward(model, bases)
    state = torch.get_rng_state()
    assert isinstance(_region.region_forward(model, whole, bases), _region.RegionForward)
    assert torch.equal(torch.get_rng_state(), state)


def test_anything_else_goes_the_whole_way(monkeypatch):
    _, bases, whole, forward = _region_way(seed=0, n=2)
    monkeypatch.setattr(_region.RegionPlan, "logits", lambda *a: pytest.fail("the region way was taken"))
    big = bases.clone()
    big[:, :, :20, :20] = 0.5  # more than the region way pays for
    with torch.no_grad():
        for x in (big, bases[:1], _images(3)):  # a large change; not whole copies of the inputs
            assert torch.equal(forward(x), whole(x))
    with torch.enable_grad():
        assert forward(bases).requires_grad  # with gradients: the model itself


def test_a_plan_that_differs_in_one_bit_is_never_used(monkeypatch):
    model = _cnn(seed=5)
    bases = _images(2)
    logits = _region.RegionPlan.logits
    monkeypatch.setattr(_region.RegionPlan, "logits",
                        lambda self, *a: torch.nextafter(logits(self, *a), torch.tensor(float("inf"))))
    whole = no_grad_forward(model, bases)
    assert _region.region_forward(model, whole, bases) is whole


def test_plans_are_kept_per_input_shape_and_dropped_when_the_weights_change(monkeypatch):
    model = _cnn(seed=9)
    small, large = _images(2, 32), _images(2, 64)
    made = []
    init = _region.RegionPlan.__init__
    monkeypatch.setattr(_region.RegionPlan, "__init__", lambda self, m: made.append(1) or init(self, m))
    for bases in (small, large, small, large):  # two shapes in turn: each planned (and probed) once
        _region.region_forward(model, no_grad_forward(model, bases), bases)
    assert len(made) == 2
    with torch.no_grad():
        model.fc.weight.add_(0.01)  # new weights: both shapes' plans are stale
    for bases in (small, large):
        forward = _region.region_forward(model, no_grad_forward(model, bases), bases)
        assert isinstance(forward, _region.RegionForward)
    assert len(made) == 4
    assert set(fusion.shared_for(model)["region plans"]) == {tuple(small.shape[1:]), tuple(large.shape[1:])}


def test_a_copy_allowed_from_the_model_shares_its_plans_while_its_weights_are_the_same(monkeypatch):
    """MPRT's randomised copies: a plan is made once per weights, whichever copy of the model meets them first."""
    model = _cnn(seed=9)
    bases = _images(2, 32)
    made = []
    init = _region.RegionPlan.__init__
    monkeypatch.setattr(_region.RegionPlan, "__init__", lambda self, m: made.append(1) or init(self, m))
    twins = [copy.deepcopy(model) for _ in range(3)]
    for twin in twins:
        fusion.allow_copy(model, twin)
    for twin in twins[:2]:
        with torch.no_grad():
            twin.fc.weight.mul_(-1.0)  # the same new weights in both
    for twin in (model, *twins):
        forward = _region.region_forward(twin, no_grad_forward(twin, bases), bases)
        assert isinstance(forward, _region.RegionForward)
        x = bases.clone()
        x[:, :, 3:7, 5:9] = 0.0
        with torch.no_grad():
            assert torch.equal(forward(x), no_grad_forward(twin, bases)(x))
    assert len(made) == 2  # the model's weights (model, third twin) and the changed ones (first two twins)


def test_only_the_fused_copy_of_a_small_cnn_goes_the_region_way():
    bases = _images(2)
    resnet = CifarResNet(depth=8).eval()
    fusion.allow(resnet)
    assert not isinstance(_region.region_forward(resnet, no_grad_forward(resnet, bases), bases),
                          _region.RegionForward)
    plain = SmallCNN().eval()  # not allowed a fused copy: the method forwards the model as it is
    assert no_grad_forward(plain, bases).fast is plain
    x, y = _images(2), torch.tensor([0, 1])
    assert explain("FeatureAblation", plain, x, y).shape == (2, 1, 32, 32)


def test_the_region_forward_follows_its_fused_copy_back_to_the_model():
    model, bases, whole, forward = _region_way(seed=7, n=2)
    with pytest.warns(fusion.FusedFallback):
        fusion._refuse(whole.fast.entry, "a test")  # the fused copy fails later: the model answers from then on
    x = bases.clone()
    x[:, :, :4, :4] = 0.5
    with torch.no_grad():
        assert torch.equal(forward(x), model(x))


def test_changed_boxes_bound_exactly_what_differs():
    bases = _images(2, px=8)
    x = torch.cat([bases, bases])
    x[0, 1, 2, 3] = 9.0
    x[3, :, 5:7, 0:2] = 0.0
    rows, (y0, y1, x0, x1) = _region.changed_boxes(x, bases)
    assert rows.tolist() == [0, 1, 0, 1]
    assert (y0.tolist(), y1.tolist(), x0.tolist(), x1.tolist()) == ([2, 0, 0, 5], [3, 1, 1, 7], [3, 0, 0, 0],
                                                                       [4, 1, 1, 2])
    assert _region.changed_boxes(x[:3], bases) is None


def test_region_way_rows_are_held_for_the_fused_forwards_later_calls():
    """FeatureAblation's one-patch copies, run the region way, answer a later fused call with the same copies (KernelShap's
    samples with one patch off) from the row memo, with the fused forward's bits."""
    model, bases, whole, forward = _region_way(seed=5, n=4)
    copies = bases.repeat(3, 1, 1, 1)
    for i in range(len(copies)):
        copies[i, :, 4 * i : 4 * i + 4, 8:12] = 0.5
    graph_rows = []
    graph = whole.fast.graph
    whole.fast.graph = lambda t: graph_rows.append(len(t)) or graph(t)
    with torch.no_grad():
        region = forward(copies)
        before = sum(graph_rows)
        again = whole(copies[[5, 0, 11]])
    assert sum(graph_rows) == before  # answered from the memo, nothing forwarded
    assert torch.equal(again, region[[5, 0, 11]])
    with torch.no_grad():
        assert torch.equal(again, graph(copies[[5, 0, 11]].contiguous(memory_format=torch.channels_last)))
