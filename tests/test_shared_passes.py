"""SmoothGrad, SmoothGrad² and VarGrad from one set of noisy gradients (benchmark.methods._variants): each map served
from a sibling's call keeps its own call's bits and RNG state, is served once, only for the very same computation, and
the schedulers hand the three to one worker."""

from __future__ import annotations

import copy
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmark.methods import _captum as captum_wrapper
from benchmark.methods import explain, get_method, register, unregister
from benchmark.methods._variants import HeldMaps, share_key
from benchmark.methods.noise_tunnel import HELD, SaliencyNoiseTunnel, SmoothGrad
from benchmark.models.arch import SmallCNN
from benchmark.running.scheduling import order_by_cost, work_group

FAMILY = ("SmoothGrad", "SmoothGradSq", "VarGrad")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int = 19, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=gen).numpy(), torch.randint(0, 2, (n,), generator=gen).numpy()


def _cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval().to(memory_format=torch.channels_last)  # as the grader explains on the CPU


@pytest.fixture
def passes(monkeypatch):
    """The rows of every gradient pass the noise tunnel runs."""
    rows: list[int] = []
    real = captum_wrapper.gradients_in_groups

    def counted(size, forward_fn, inputs, *args, **kwargs):
        rows.append(len(inputs[0]))
        return real(size, forward_fn, inputs, *args, **kwargs)

    monkeypatch.setattr(captum_wrapper, "gradients_in_groups", counted)
    return rows


def _alone(model, x, y) -> dict[str, np.ndarray]:
    maps = {}
    for name in FAMILY:
        HELD.clear()
        maps[name] = explain(name, model, x, y, seed=3)
    HELD.clear()
    return maps


@pytest.mark.parametrize("order", list(itertools.permutations(FAMILY)))
def test_each_map_served_from_a_siblings_call_keeps_its_own_bits(order, passes):
    model, (x, y) = _cnn(), _data()
    alone = _alone(model, x, y)
    passes.clear()
    first = explain(order[0], model, x, y, seed=3)
    computed = sum(passes)
    served = {name: explain(name, model, x, y, seed=3) for name in order[1:]}
    assert sum(passes) == computed > 0  # the siblings ran no gradient pass
    assert first.tobytes() == alone[order[0]].tobytes()
    for name, maps in served.items():
        assert maps.tobytes() == alone[name].tobytes(), name
    assert len(HELD) == 0  # every held map was handed out


def test_a_served_call_draws_as_its_own_call_would():
    model, (x, y) = _cnn(), _data(8)
    inputs, target = torch.from_numpy(x), torch.from_numpy(y)
    method, sibling = get_method("VarGrad")(), get_method("SmoothGrad")()
    params, sibling_params = method.resolve_params("cheap"), sibling.resolve_params("cheap")

    def call(m, p):
        torch.manual_seed(11)
        out = m.attribute(model, inputs, target, p)
        return out, torch.get_rng_state()

    own_maps, own_state = call(method, params)
    assert len(HELD) == 2  # its call held SmoothGrad's and SmoothGrad²'s maps
    HELD.clear()
    call(sibling, sibling_params)
    served_maps, served_state = call(method, params)
    assert torch.equal(served_maps, own_maps)
    assert torch.equal(served_state, own_state)  # the noise a served call leaves drawn is its own call's


def test_a_held_map_is_handed_out_once(passes):
    model, (x, y) = _cnn(), _data(8)
    explain("SmoothGrad", model, x, y, seed=3)
    passes.clear()
    explain("VarGrad", model, x, y, seed=3)
    assert passes == []  # served
    again = explain("VarGrad", model, x, y, seed=3)
    assert passes  # computed: a second call (the contract's determinism check) meets a real computation
    HELD.clear()
    assert again.tobytes() == explain("VarGrad", model, x, y, seed=3).tobytes()


@pytest.mark.parametrize("change", ["weights", "inputs", "targets", "seed", "params", "memory format"])
def test_a_different_computation_is_never_served(change, passes):
    model, (x, y) = _cnn(), _data(8)
    explain("SmoothGrad", model, x, y, seed=3)
    other_model, other_x, other_y, seed, params = model, x, y, 3, None
    if change == "weights":
        other_model = copy.deepcopy(model)
        with torch.no_grad():
            next(other_model.parameters())[0, 0, 0, 0] += 1e-3
    elif change == "inputs":
        other_x = x.copy()
        other_x[0, 0, 0, 0] += 1e-3
    elif change == "targets":
        other_y = 1 - y
    elif change == "seed":
        seed = 4
    elif change == "params":
        params = {"stdevs": 0.2}
    else:
        other_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    passes.clear()
    got = explain("VarGrad", other_model, other_x, other_y, seed=seed, params=params)
    assert passes  # computed, not served
    HELD.clear()
    assert got.tobytes() == explain("VarGrad", other_model, other_x, other_y, seed=seed, params=params).tobytes()


def test_a_hooked_or_training_model_or_a_gpu_input_shares_nothing():
    model, (x, y) = _cnn(), _data(4)
    inputs, target = torch.from_numpy(x), torch.from_numpy(y)
    assert share_key(model, inputs, target, {}) is not None
    handle = model.register_forward_hook(lambda *a: None)
    assert share_key(model, inputs, target, {}) is None
    handle.remove()
    assert share_key(model.train(), inputs, target, {}) is None


def test_held_maps_past_the_budget_drop_the_oldest():
    held = HeldMaps(budget=3 * 4 * 10)  # three maps of ten floats
    state = torch.get_rng_state()
    for i in range(4):
        held.put(bytes([i]), ("smoothgrad", True), torch.zeros(10), state)
    assert len(held) == 3 and held.take(bytes([0]), ("smoothgrad", True)) is None
    assert held.take(bytes([3]), ("smoothgrad", True)) is not None and len(held) == 2
    assert held.take(bytes([3]), ("smoothgrad", True)) is None


def test_a_subclass_that_changes_the_computation_shares_nothing():
    class Changed(SmoothGrad):
        """SmoothGrad over a changed Saliency (for this test).

        Reference: none (a test double).
        """

        name = "ChangedSmoothGrad"

        def build(self, model, params):
            return super().build(model, params)

    register(Changed)
    try:
        assert Changed.variants() == []
        assert ("smoothgrad", True) in SmoothGrad.variants()
        assert all(v in SmoothGrad.variants() for v in (("smoothgrad_sq", False), ("vargrad", False)))
    finally:
        unregister("ChangedSmoothGrad")


def test_the_family_is_one_work_group_and_its_tests_stay_together_in_collection_order():
    groups = {work_group(name) for name in FAMILY}
    assert groups == {SaliencyNoiseTunnel.shares_work} and work_group("Saliency") == "Saliency"
    ids = [f"suites/test_{suite}.py::T::test_cell[{m}-X]" for suite in ("a", "b")
           for m in ("Saliency", "SmoothGrad", "SmoothGradSq", "Occlusion", "VarGrad")]
    items = [SimpleNamespace(nodeid=i) for i in ids]
    costs = {"Saliency": 1.0, "SmoothGrad": 2.0, "SmoothGradSq": 2.0, "VarGrad": 2.0, "Occlusion": 5.0}
    order_by_cost(items, costs)
    got = [i.nodeid.split("[")[1].split("-")[0] + "@" + i.nodeid.split("test_")[1][0] for i in items]
    # The group (6.0) before Occlusion (5.0); its three methods suite by suite, as collected.
    assert got == ["SmoothGrad@a", "SmoothGradSq@a", "VarGrad@a", "SmoothGrad@b", "SmoothGradSq@b", "VarGrad@b",
                   "Occlusion@a", "Occlusion@b", "Saliency@a", "Saliency@b"]


def test_ray_hands_the_family_to_one_worker_in_one_batch():
    from benchmark.running.jobs import GRID, CellJob, ContractJob, FigureJob
    from benchmark.running.ray_grid import batches

    jobs = [CellJob("complexity", "Sparseness", m) for m in ("Occlusion", "SmoothGrad", "VarGrad")]
    jobs += [ContractJob("SmoothGradSq", "cnn", "biased"), FigureJob("SmoothGrad"), FigureJob("Occlusion")]
    got = {label: [type(j).__name__ + ":" + j.method for j in batch] for label, batch in batches(jobs)}
    assert got == {"Occlusion": ["CellJob:Occlusion", "FigureJob:Occlusion"],
                   SaliencyNoiseTunnel.shares_work: ["CellJob:SmoothGrad", "CellJob:VarGrad", "ContractJob:SmoothGradSq",
                                                     "FigureJob:SmoothGrad"]}
    assert all(j.world == GRID for j in jobs)


def test_paused_sharing_computes_every_call_and_keeps_what_is_held(passes):
    model, (x, y) = _cnn(), _data(8)
    explain("SmoothGrad", model, x, y, seed=3)
    held = len(HELD)
    with HELD.paused():  # plain Quantus' half of benchmarks/quantus_vs_bench.py
        passes.clear()
        explain("SmoothGradSq", model, x, y, seed=3)
        assert passes and len(HELD) == held  # computed, nothing taken or added
    passes.clear()
    explain("SmoothGradSq", model, x, y, seed=3)
    assert passes == []  # the bench's half is still served


# --- InternalInfluence from Integrated Gradients' passes ------------------------------------------------------------


@pytest.fixture
def layer_passes(monkeypatch):
    """How many layer-gradient passes InternalInfluence's Captum code computes (not replayed)."""
    import benchmark.methods.layer as layer_methods

    count = [0]
    real = layer_methods.captum_internal_influence.compute_layer_gradients_and_eval

    def counted(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(layer_methods.captum_internal_influence, "compute_layer_gradients_and_eval", counted)
    return count


def _resnet():
    from benchmark.models.arch import build_model

    torch.manual_seed(0)
    return build_model("resnet", depth=8).eval().to(memory_format=torch.channels_last)


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
@pytest.mark.parametrize("n", [16, 19, 3])
def test_internal_influence_from_integrated_gradients_passes_keeps_its_bits(arch, n, layer_passes):
    model, (x, y) = (_cnn() if arch == "cnn" else _resnet()), _data(n)
    with HELD.paused():  # Captum's own input-gradient passes
        ig_alone = explain("IntegratedGradients", model, x, y, seed=3)
    layer_passes[0] = 0
    influence_alone = explain("InternalInfluence", model, x, y, seed=3)
    computed_alone = layer_passes[0]
    ig = explain("IntegratedGradients", model, x, y, seed=3)
    layer_passes[0] = 0
    influence = explain("InternalInfluence", model, x, y, seed=3)
    assert ig.tobytes() == ig_alone.tobytes() and influence.tobytes() == influence_alone.tobytes()
    # A chunk of 16 images: IG's 32-row passes are InternalInfluence's (2 steps of 16), so none is computed again; a
    # chunk of 3 is not (IG's groups of 32 rows against InternalInfluence's 10 steps of 3): it computes its own.
    assert layer_passes[0] == computed_alone - 8 * (n // 16)  # 16 steps in passes of 2 per full chunk: all served
    assert len(HELD) == 0


def test_internal_influence_served_once_and_only_for_its_own_computation(layer_passes):
    model, (x, y) = _cnn(), _data(16)
    explain("IntegratedGradients", model, x, y, seed=3)
    layer_passes[0] = 0
    explain("InternalInfluence", model, x, y, seed=3, params={"n_steps": 8})  # another path: computed
    assert layer_passes[0] > 0
    layer_passes[0] = 0
    explain("InternalInfluence", model, x, y, seed=3)
    assert layer_passes[0] == 0  # served
    explain("InternalInfluence", model, x, y, seed=3)
    assert layer_passes[0] > 0  # the second call (the contract's determinism check) computes


def test_integrated_gradients_holds_nothing_when_influence_is_not_registered_as_is():
    model, (x, y) = _cnn(), _data(16)
    with HELD.paused():
        explain("IntegratedGradients", model, x, y, seed=3)
    assert len(HELD) == 0
    unregister("InternalInfluence")
    try:
        explain("IntegratedGradients", model, x, y, seed=3)
        assert len(HELD) == 0
    finally:
        from benchmark.methods.layer import InternalInfluence

        register(InternalInfluence)


def test_integrated_gradients_and_internal_influence_are_one_work_group():
    assert work_group("IntegratedGradients") == work_group("InternalInfluence") != work_group("LayerConductance")


def test_a_layer_tap_on_a_layer_off_the_output_path_keeps_the_input_gradients_and_shares_nothing():
    from captum._utils.gradient import compute_gradients

    from benchmark.methods._variants import LayerTap

    class Branched(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused, self.idle = torch.nn.Linear(4, 2), torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)

        def forward(self, x):
            self.unused(x)  # runs, but the output does not depend on it
            return self.used(x)

    torch.manual_seed(0)
    model, x, y = Branched(), torch.rand(5, 4, requires_grad=True), torch.tensor([0, 1, 0, 1, 1])
    (want,) = compute_gradients(model, (x,), y)
    for layer in (model.unused, model.idle):  # on no path to the output; never run
        tap = LayerTap(layer)
        (got,) = tap(model, (x,), y)
        assert torch.equal(got, want) and not tap.complete and tap.passes == []
    tap = LayerTap(model.used)
    (got,) = tap(model, (x,), y)
    assert torch.equal(got, want) and tap.complete and len(tap.passes) == 1
