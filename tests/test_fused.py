"""Fused inference (benchmark.models.fused): float rounding only, used only where the grader allowed it and gradients
are off, a plain fallback that never crashes, and its own store key."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.grading import contract
from benchmark.grading.explain_cache import PredictionMemo
from benchmark.grading.grader import Grader
from benchmark.grading.properties import LOCALISATION
from benchmark.methods import _chunked, all_methods, explain
from benchmark.methods._captum import CaptumMethod
from benchmark.methods._chunked import ChunkedForward, fused_forward, no_grad_forward
from benchmark.models import fused as fusion
from benchmark.models.arch import build_model
from benchmark.options import BenchOptions, fused_inference_on
from benchmark.profiles import PROFILES
from benchmark.running import store

QUICK = PROFILES["quick"]


@pytest.fixture(autouse=True)
def fixed_chunk(monkeypatch):
    """Chunks of 16 instead of the measured fastest: the choice times forward passes, and tests time nothing."""
    monkeypatch.setattr(_chunked, "_chosen", {})
    monkeypatch.setattr(_chunked, "_measure", lambda model, x: (16, model(x)))


def _tiny(arch: str, seed: int = 0) -> nn.Module:
    """A small random-weight model in eval mode with BatchNorm statistics far from the identity (so folding matters)."""
    torch.manual_seed(seed)
    model = build_model(arch, depth=8, width=8)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _images(n: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_logits_equal_the_models_within_1e5(arch, channels_last):
    model = _tiny(arch)
    x = _images()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fusion.allow(model)
    forward = fused_forward(model, x)
    assert forward is not None, fusion.reason(model)
    assert fusion.reason(model) == ""
    with torch.no_grad():
        plain, fused = model(x), forward(x)
    assert isinstance(forward.fast, fusion.FusedForward)
    assert float((fused - plain).abs().max()) <= 1e-5


def test_a_vits_fused_copy_runs_its_attention_fused_and_the_model_keeps_its_probes():
    torch.manual_seed(0)
    model = build_model("vit", depth=2, width=16, image_size=32).eval()
    x = _images()
    fusion.allow(model)
    forward = fusion.forward_of(model, x)
    assert forward is not None, fusion.reason(model)
    with torch.no_grad():
        assert float((forward(x) - model(x)).abs().max()) <= 1e-5
    assert "scaled_dot_product_attention" in str(forward.graph.graph)
    assert not any(block.attn.fused for block in model.blocks)


def test_fusing_leaves_the_model_as_it_was():
    model = _tiny("cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attrs = {name: set(vars(m)) for name, m in model.named_modules()}
    fusion.allow(model)
    assert fusion.forward_of(model, _images()) is not None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert attrs == {name: set(vars(m)) for name, m in model.named_modules()}
    assert not model.training


def test_switched_off_the_model_itself_runs():
    """A model the grader did not allow (fused inference off, a copy nobody allowed) is forwarded as it is."""
    model = _tiny("cnn")
    x = _images()
    assert fusion.forward_of(model, x) is None and fusion.reason(model) is None
    assert fused_forward(model, x) is None
    assert no_grad_forward(model, x).fast is model
    fusion.allow(model)
    randomised = copy.deepcopy(model)  # a copy is fused only when allowed from its source (fusion.allow_copy)
    assert fusion.forward_of(randomised, x) is None
    assert no_grad_forward(randomised, x).fast is randomised


def _cascade(model: nn.Module, seed: int = 7):
    """MPRT's randomised copy of ``model`` at each state of its cascade (learnable layers, top down), with the digest
    of its weights then: the copy the methods explain, changed in place from one state to the next."""
    from quantus.helpers.model.pytorch_model import PyTorchModel

    from benchmark.grading.quantus_adapters import learnable_only

    wrapped = PyTorchModel(model=model, channel_first=True, softmax=False, device="cpu")
    learnable_only(wrapped)
    for _, twin in wrapped.get_random_layer_generator(seed=seed):
        yield twin, fusion.weights_digest(twin)


def test_mprt_copies_of_an_allowed_model_are_fused_one_graph_per_randomised_state(monkeypatch):
    """MPRT's randomised copies of a model the grader fuses are fused too, each state once for every method that
    explains it, with logits within the tolerance; copies of a model it does not fuse run plain."""
    made = []
    fuse = fusion.fuse_module
    monkeypatch.setattr(fusion, "fuse_module", lambda m: made.append(fusion.weights_digest(m)) or fuse(m))
    model, x = _tiny("cnn"), _images()
    first, _ = next(_cascade(model))
    assert fusion.forward_of(first, x) is None  # not allowed: nothing fused
    fusion.allow(model)
    states = []
    for _ in range(2):  # two methods' MPRT: the same seeded cascade, a new copy each time
        for copy_, digest in _cascade(model):
            assert fusion.is_allowed(copy_) and copy_ is not model
            forward = fusion.forward_of(copy_, x)
            assert forward is not None and fusion.weights_digest(copy_) == digest
            with torch.no_grad():
                want = copy_(x)
                got = forward(x)
            assert torch.allclose(got, want, rtol=0, atol=fusion.TOLERANCE * max(1.0, float(want.abs().max())))
            states.append(digest)
    distinct = list(dict.fromkeys(states))
    assert len(distinct) == len(states) // 2 > 1  # every state differs from the one before
    assert made == distinct  # each fused once, in the order first met


def test_fused_graphs_are_shared_within_one_allowed_models_copies_only():
    """Two allowed models with equal weights fuse apart (their settings outside the tensors may differ); a copy
    allowed from one shares that one's graphs; the digest follows an in-place edit and the memory format."""
    a = _tiny("cnn")
    b = copy.deepcopy(a)
    fusion.allow(a)
    fusion.allow(b)
    twin = copy.deepcopy(a)
    fusion.allow_copy(a, twin)
    x = _images()
    assert fusion.forward_of(a, x).graph is not fusion.forward_of(b, x).graph
    assert fusion.forward_of(twin, x).graph is fusion.forward_of(a, x).graph
    digest = fusion.weights_digest(twin)
    assert fusion.weights_digest(b) == digest
    with torch.no_grad():
        twin.fc.weight.mul_(2.0)
    assert fusion.weights_digest(twin) != digest
    assert fusion.forward_of(twin, x).graph is not fusion.forward_of(a, x).graph
    assert fusion.weights_digest(copy.deepcopy(a).to(memory_format=torch.channels_last)) != digest


def test_no_copy_is_allowed_from_a_model_whose_fused_copy_was_refused():
    model, x = _tiny("cnn"), _images()
    fusion.allow(model)
    early = copy.deepcopy(model)
    fusion.allow_copy(model, early)  # not fused yet: the copy may try
    assert fusion.is_allowed(early)
    assert fusion.forward_of(model, x) is not None
    with pytest.warns(fusion.FusedFallback):
        fusion._refuse(fusion._allowed[model], "a test")
    late = copy.deepcopy(model)
    fusion.allow_copy(model, late)
    assert not fusion.is_allowed(late) and fusion.forward_of(late, x) is None


def test_the_weights_are_hashed_once_per_state_not_once_per_call(monkeypatch):
    hashed = []
    digest = fusion.weights_digest
    monkeypatch.setattr(fusion, "weights_digest", lambda m: hashed.append(1) or digest(m))
    model = _tiny("cnn")
    assert fusion.shared_for(model) is None and not hashed  # not allowed: no table, nothing hashed
    fusion.allow(model)
    table = fusion.shared_for(model)
    assert fusion.shared_for(model) is table and len(hashed) == 1
    saved = model.fc.bias.detach().clone()
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    assert fusion.shared_for(model) is not table and len(hashed) == 2
    with torch.no_grad():
        model.fc.bias.copy_(saved)  # back to the first weights' bytes: their table again
    assert fusion.shared_for(model) is table and len(hashed) == 3


def _fake_bench(fused_inference: bool | None) -> SimpleNamespace:
    arms = {k: SimpleNamespace(model=_tiny("cnn", seed)) for seed, k in enumerate(("biased", "control", "absent"))}
    bench = SimpleNamespace(profile=QUICK, options=BenchOptions(fused_inference=fused_inference),
                            device=torch.device("cpu"), seeds=lambda: [SimpleNamespace(seed=0)], **arms)
    bench.for_seed = lambda r: bench
    return bench


@pytest.mark.parametrize("switch", [False, True])
def test_the_grader_fuses_its_own_copies_only_when_switched_on(switch):
    bench = _fake_bench(switch)
    grader = Grader(bench, channels_last=False)
    x = _images()
    assert grader.fused is switch
    for key, model in grader.store.models.items():
        loaded = getattr(bench, key).model
        assert not fusion.is_allowed(loaded)  # the run's loaded models are never fused
        if switch:
            assert model is not loaded and fusion.is_allowed(model)
            assert isinstance(grader.store.forward_of(model, x).fast, fusion.FusedForward)
        else:
            assert model is loaded  # identity: no copy, nothing fused
            assert grader.store.forward_of(model, x) is None
            assert no_grad_forward(model, x).fast is model
    fused = {"biased": "fused", "control": "fused", "absent": "fused"}
    assert grader.store.fusion() == (fused if switch else {k: "plain" for k in fused})


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_contract_checks_the_stores_graded_copies_and_leaves_the_loaded_models_alone(channels_last):
    bench = _fake_bench(True)
    other = _tiny("resnet", seed=7)
    grader = Grader(bench, channels_last=channels_last)
    store = grader.store
    assert store.graded(bench.biased.model) is store.models["biased"]  # the run's arms: the store's own copies
    copy_ = store.graded(other)
    assert copy_ is not other and store.graded(other) is copy_  # another model: one copy, made once
    assert fusion.is_allowed(copy_) and not fusion.is_allowed(other)
    weights = [p for p in copy_.parameters() if p.dim() == 4][0]
    assert weights.is_contiguous(memory_format=torch.channels_last) is channels_last
    loaded = [p for p in other.parameters() if p.dim() == 4][0]
    assert not loaded.is_contiguous(memory_format=torch.channels_last)


def test_contract_outcome_checks_the_graded_copy_not_the_loaded_model(monkeypatch):
    bench = _fake_bench(True)
    other = _tiny("resnet", seed=7)
    bench.contract_models = lambda: {"cnn": {"biased": bench.biased.model}, "resnet": {"control": other}}
    grader = Grader(bench, channels_last=True)
    grader.images = SimpleNamespace(sample_set=SimpleNamespace(
        x=_images(4).numpy(), y=np.zeros(4, dtype=np.int64), masks=np.ones((4, 1, 32, 32), dtype=np.float32)))
    grader.book = SimpleNamespace(seconds=None, source="")
    checked = []
    monkeypatch.setattr(contract, "check_method", lambda method, model, *a, **k: checked.append(model) or [])
    for arch, split in (("cnn", "biased"), ("resnet", "control")):
        assert contract.contract_outcome(grader, "Saliency", arch, split).status == contract.OK
    assert checked == [grader.store.models["biased"], grader.store.graded(other)]


def test_auto_means_on_for_the_cpu_off_on_cuda():
    assert fused_inference_on(None, "cpu") and not fused_inference_on(None, "cuda")
    assert fused_inference_on(True, "cuda") and not fused_inference_on(False, "cpu")


def test_a_model_that_cannot_be_fused_runs_plain_with_its_reason():
    class Unscriptable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return torch.as_tensor(np.asarray(self.conv(x).mean((2, 3))))  # numpy: TorchScript cannot compile it

    model = Unscriptable().eval()
    fusion.allow(model)
    with pytest.warns(fusion.FusedFallback, match="could not be fused"):
        forward = no_grad_forward(model, _images(4))
    assert forward.fast is model
    assert "could not be fused" in fusion.reason(model)
    with torch.no_grad():
        assert forward(_images(4)).shape == (4, 2)
    kept = fusion.fallbacks()[-1]  # for the run record
    assert kept.startswith(fusion.FALLBACK_TEXT + "Unscriptable, it runs plain: it could not be fused")


def test_the_collector_keeps_only_fallback_warnings(tmp_path):
    from benchmark.running.collector import CellCollector

    collector = CellCollector(SimpleNamespace())
    for text in (fusion.FALLBACK_TEXT + "SmallCNN, it runs plain: why", "some other warning"):
        collector.pytest_warning_recorded(SimpleNamespace(message=UserWarning(text)), "call", "t", None)
    assert collector.fallbacks == {fusion.FALLBACK_TEXT + "SmallCNN, it runs plain: why"}


def test_a_fused_graph_that_fails_on_a_call_falls_back_to_the_model():
    model = _tiny("cnn")
    fusion.allow(model)
    forward = fusion.forward_of(model, _images())
    forward.graph = lambda x: (_ for _ in ()).throw(RuntimeError("boom"))
    x = _images(3)
    with torch.no_grad(), pytest.warns(fusion.FusedFallback, match="boom"):
        assert torch.equal(forward(x), model(x))
    assert "boom" in fusion.reason(model)
    assert fusion.forward_of(model, x) is None  # plain from then on


def test_a_fused_graph_that_disagrees_with_the_model_is_refused(monkeypatch):
    model = _tiny("cnn")
    fusion.allow(model)
    monkeypatch.setattr(fusion, "fuse_module", lambda m: (lambda x: m(x) + 1e-2))
    with pytest.warns(fusion.FusedFallback, match="differ"):
        assert fusion.forward_of(model, _images()) is None
    assert "differ from the model's" in fusion.reason(model)


def test_changed_weights_are_fused_again():
    model = _tiny("cnn")
    fusion.allow(model)
    x = _images()
    first = fusion.forward_of(model, x)
    with torch.no_grad():
        model.fc.weight.mul_(2.0)
        again = fusion.forward_of(model, x)
        assert again is not first
        assert float((again(x) - model(x)).abs().max()) <= 1e-5


def test_chunked_forward_sends_gradients_to_the_model_itself():
    model = _tiny("cnn")
    fusion.allow(model)
    x = _images(8)
    forward = no_grad_forward(model, x)
    assert isinstance(forward.fast, fusion.FusedForward)
    out = forward(x.clone().requires_grad_())
    assert out.grad_fn is not None  # the model's own autograd graph, not the frozen copy


def _spy(monkeypatch) -> tuple[list, list]:
    """(fused calls, models handed to Captum classes) while a method runs."""
    calls, built = [], []
    call, build = fusion.FusedForward.__call__, CaptumMethod.build

    def counted(self, x):
        calls.append(tuple(x.shape))
        return call(self, x)

    def recorded(self, model, params):
        built.append(model)
        return build(self, model, params)

    monkeypatch.setattr(fusion.FusedForward, "__call__", counted)
    monkeypatch.setattr(CaptumMethod, "build", recorded)
    return calls, built


# Gradient methods that apply to the CNN (the transformer methods are N/A there and get no fused module anyway).
GRADIENT_METHODS = [name for name, cls in all_methods().items()
                    if cls.capabilities.gradient and not cls.capabilities.attention]


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_a_method_that_needs_gradients_never_gets_the_fused_module(method, monkeypatch):
    model = _tiny("cnn")
    fusion.allow(model)
    x = _images(2).numpy()
    calls, built = _spy(monkeypatch)
    explain(method, model, x, np.array([1, 0]), seed=0)
    assert calls == []
    assert all(m is model for m in built)


def test_a_perturbation_method_forwards_through_the_fused_module(monkeypatch):
    model = _tiny("cnn")
    fusion.allow(model)
    x = _images(2).numpy()
    calls, built = _spy(monkeypatch)
    fused_maps = explain("Occlusion", model, x, np.array([1, 0]), seed=0)
    from benchmark.methods._region import RegionForward

    forward = built[0].whole if isinstance(built[0], RegionForward) else built[0]  # the region way wraps it
    assert calls and isinstance(forward, ChunkedForward) and forward.model is model
    plain_maps = explain("Occlusion", copy.deepcopy(model), x, np.array([1, 0]), seed=0)
    assert np.abs(fused_maps - plain_maps).max() <= 1e-5


def test_quantus_predictions_go_through_the_fused_copy_without_gradients_only(monkeypatch):
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model = _tiny("cnn")
    fusion.allow(model)
    x = _images(6).numpy()
    calls, _ = _spy(monkeypatch)
    wrapper = PyTorchModel(model, channel_first=True, softmax=True, device="cpu")
    plain = wrapper.predict(x)
    with PredictionMemo().active(lambda m: b"fp" if m is model else None, fused_forward):
        fused = wrapper.predict(x)
        assert calls
        calls.clear()
        wrapper.predict(x, grad=True)
        assert calls == []
    assert np.abs(fused - plain).max() <= 1e-5


def _store_bench(fused_inference: bool | None, device: str = "cpu") -> SimpleNamespace:
    model = SimpleNamespace(card={"weights_sha256": "ab" * 32})
    bench = SimpleNamespace(profile=QUICK, options=BenchOptions(fused_inference=fused_inference, channels_last=True),
                            device=torch.device(device), world=SimpleNamespace(key="w"),
                            all_models=lambda: {"biased": model}, seeds=lambda: [SimpleNamespace(seed=0)])
    bench.for_seed = lambda r: bench
    return bench


def test_the_store_key_differs_between_fused_and_plain(monkeypatch):
    monkeypatch.setattr(store, "graded_indices", lambda bench: [1, 2, 3])
    runs = {switch: store.open_run_store(store.ResultStore("/nonexistent"), _store_bench(switch)).run
            for switch in (None, True, False)}
    assert runs[True]["fused_inference"] is True and runs[False]["fused_inference"] is False
    assert runs[None] == runs[True]  # auto on the CPU
    prop = LOCALISATION
    keys = {s: store.cell_key(runs[s], prop, prop.metrics[0], "Saliency", QUICK) for s in (True, False)}
    assert keys[True] != keys[False]
    assert store.contract_key(runs[True], "Saliency", "cnn", "biased", QUICK) != \
        store.contract_key(runs[False], "Saliency", "cnn", "biased", QUICK)


def test_the_run_records_fallbacks_are_the_warned_ones_or_this_processs(monkeypatch):
    from benchmark.running.collector import _inference

    ctx = SimpleNamespace(bench=SimpleNamespace(device=torch.device("cpu")), options=BenchOptions())
    monkeypatch.setattr(fusion, "_fallbacks", ["this process's"])
    assert _inference(ctx, None) == {"channels_last": True, "fused_inference": True,
                                     "fused_fallbacks": ["this process's"]}
    assert _inference(ctx, {"a worker's"})["fused_fallbacks"] == ["a worker's"]  # a pytest run: what was warned
