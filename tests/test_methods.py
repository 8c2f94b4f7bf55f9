"""Tests for the attribution-method layer: registry, shared call path, contract, LRP, docs.

Self-contained: models are seeded and fitted for a few SGD steps on a synthetic stamp task
(no trained artefacts needed). The fit matters for ReLU-clipped Grad-CAM: an untrained net
often has negative evidence for both classes, so every Grad-CAM map of a batch can be empty.
"""

from __future__ import annotations

import copy
import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.errors import ConfigError
from benchmark.grading.contract import check_method, randomised_copy
from benchmark.methods import (
    AttributionError,
    AttributionMethod,
    all_methods,
    explain,
    get_method,
    quantus_explain_func,
    register,
    unregister,
)
from benchmark.methods.base import FAMILIES, hook_count, run_chunk
from benchmark.models.arch import CifarResNet, SmallCNN, SmallViT

METHODS = list(all_methods())
ARCHS = ("cnn", "resnet", "vit")
_SHAPES = {"cnn": SmallCNN, "resnet": lambda: CifarResNet(8), "vit": lambda: SmallViT(32, 4, depth=2, width=32)}
# Every (method, architecture) pair the method applies to; the others are N/A cells, tested below.
APPLICABLE = [(m, a) for a in ARCHS for m in METHODS if not get_method(m).unsupported(_SHAPES[a]())]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two threads on a shared 2-core box are many times slower than one (field notes).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stamped_images(n: int, generator: torch.Generator):
    """Smooth random 32 px images; class 1 carries a white 6×6 stamp (its mask is returned)."""
    low = F.interpolate(
        torch.rand(n, 3, 4, 4, generator=generator), size=32, mode="bilinear", align_corners=False
    )
    x = 0.7 * low + 0.3 * torch.rand(n, 3, 32, 32, generator=generator)
    y = torch.arange(n) % 2
    masks = torch.zeros(n, 32, 32, dtype=torch.bool)
    pos = torch.randint(0, 26, (n, 2), generator=generator)
    for i in range(n):
        if y[i]:
            r, c = pos[i].tolist()
            x[i, :, r : r + 6, c : c + 6] = 1.0
            masks[i, r : r + 6, c : c + 6] = True
    return x.clamp(0, 1), y, masks


def fitted(model: torch.nn.Module, steps: int, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        x, y, _ = stamped_images(32, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cnn = fitted(SmallCNN(), steps=30)
    torch.manual_seed(0)
    resnet = fitted(CifarResNet(20), steps=20)
    torch.manual_seed(0)
    vit = fitted(SmallViT(32, 4, depth=2, width=32), steps=30)
    return {"cnn": cnn, "resnet": resnet, "vit": vit}


@pytest.fixture(scope="module")
def batch():
    x, y, masks = stamped_images(4, torch.Generator().manual_seed(100))
    # Each image has one class with a stamp-free region; make sure masks are non-empty for Oracle.
    masks[~masks.flatten(1).any(1), 10:16, 10:16] = True
    return x, y, masks


# -- contract -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "arch"), APPLICABLE)
def test_contract(method, arch, models, batch):
    x, _, masks = batch
    model = models[arch]
    with torch.no_grad():
        targets = model(x).argmax(1)  # explain the model's own decisions
    # A method that needs the positional prior gets one (here the batch's mean mask stands in for the training set's).
    prior = masks.float().mean(0).numpy() if get_method(method).capabilities.prior else None
    violations = check_method(method, model, x, targets, masks=masks, prior=prior)
    assert not violations, f"{method} on {arch} violates the method contract:\n  " + "\n  ".join(violations)


def test_every_method_applies_to_some_architecture_and_says_why_not_elsewhere():
    for method in METHODS:
        reasons = {a: get_method(method).unsupported(_SHAPES[a]()) for a in ARCHS}
        assert not all(reasons.values()), f"{method} applies to no architecture: {reasons}"
        for arch, reason in reasons.items():
            assert reason == "" or method in reason or "LRP" in reason, (method, arch, reason)


def test_transformer_methods_are_na_on_a_cnn_and_captum_lrp_on_a_vit():
    cnn, vit = _SHAPES["cnn"](), _SHAPES["vit"]()
    transformer = [m for m in METHODS if get_method(m).capabilities.attention]
    assert len(transformer) >= 4
    for m in transformer:
        assert "attention" in get_method(m).unsupported(cnn)
        assert get_method(m).unsupported(vit) == ""
    assert "LayerNorm" in get_method("LRPEpsilon").unsupported(vit)


def test_contract_reports_bad_methods(models, batch):
    @register
    class _Flat(AttributionMethod):
        """Returns zeros."""

        name = "_TestFlat"
        family = "control"

        def attribute(self, model, inputs, target, params, **context):
            return torch.zeros_like(inputs)

    try:
        x, y, _ = batch
        violations = check_method("_TestFlat", models["cnn"], x, y)
    finally:
        unregister("_TestFlat")
    text = "\n".join(violations)
    assert "Reference:" in text and "constant" in text and "randomised" in text


# -- registry ---------------------------------------------------------------------------------------
def test_registry_is_sorted_and_well_formed():
    methods = all_methods()
    assert list(methods) == sorted(methods, key=str.lower)
    assert len(methods) >= 35
    for name, cls in methods.items():
        assert cls.name == name and cls.family in FAMILIES
        assert set(cls.params) >= {"cheap", "paper"}
        assert cls.summary() and cls.reference(), name


def test_unknown_method_suggests_a_name():
    with pytest.raises(ConfigError, match="Did you mean 'Saliency'"):
        get_method("Salency")
    assert get_method("smoothgrad").name == "SmoothGrad"  # case-insensitive fallback


def test_method_registered_from_env_var_file(tmp_path, monkeypatch):
    plugin = tmp_path / "my_methods.py"
    plugin.write_text(
        textwrap.dedent('''
        import torch
        from benchmark.methods import register
        from benchmark.methods.base import AttributionMethod, Capabilities

        @register
        class Ones(AttributionMethod):
            """Constant-plus-input map for registry tests.

            Reference: none (test double).
            """

            name = "_TestPluginOnes"
            family = "control"
            capabilities = Capabilities(control=True, model_independent=True)

            def attribute(self, model, inputs, target, params, **context):
                return inputs + 1.0
    ''')
    )
    monkeypatch.setenv("SHORTCUT_BENCH_METHODS", str(plugin))
    try:
        assert "_TestPluginOnes" in all_methods()
        out = explain("_TestPluginOnes", SmallCNN(), torch.zeros(2, 3, 8, 8), [0, 1])
        assert out.shape == (2, 1, 8, 8) and np.allclose(out, 3.0)
    finally:
        unregister("_TestPluginOnes")
    assert "_TestPluginOnes" not in all_methods()


def test_duplicate_name_raises():
    with pytest.raises(ConfigError, match="Duplicate"):

        @register
        class Saliency(AttributionMethod):  # the name clash is the point
            name = "Saliency"
            family = "gradient"

            def attribute(self, model, inputs, target, params, **context):
                return inputs


def test_abstract_class_cannot_be_registered():
    with pytest.raises(ConfigError, match="abstract"):

        @register
        class _NoAttribute(AttributionMethod):
            name = "_TestAbstract"
            family = "control"


def test_missing_module_in_env_var_is_a_config_error(monkeypatch):
    monkeypatch.setenv("SHORTCUT_BENCH_METHODS", "no_such_module_xyz")
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        all_methods()


# -- shared call path --------------------------------------------------------------------------------
class _NaN(AttributionMethod):
    """Returns NaN.

    Reference: none (test double).
    """

    name = "_TestNaN"
    family = "control"

    def attribute(self, model, inputs, target, params, **context):
        return torch.full_like(inputs, float("nan"))


class _Leaky(AttributionMethod):
    """Hooks the model, sets a Captum-style rule attribute, then raises.

    Reference: none (test double).
    """

    name = "_TestLeaky"
    family = "control"

    def attribute(self, model, inputs, target, params, **context):
        model.fc.register_forward_hook(lambda *args: None)
        model.features[0].register_full_backward_hook(lambda *args: None)
        model.features[2].register_forward_pre_hook(lambda *args: None)
        model.fc.rule = object()
        model.fc.weight.requires_grad_(False)
        raise RuntimeError("boom")


def test_nan_map_raises_attribution_error():
    with pytest.raises(AttributionError, match="_TestNaN.*non-finite"):
        explain(_NaN(), SmallCNN(), torch.rand(2, 3, 32, 32), [0, 1])


def test_raising_method_leaves_model_clean():
    model = SmallCNN().train()
    before = hook_count(model)
    with pytest.raises(RuntimeError, match="boom"):
        explain(_Leaky(), model, torch.rand(2, 3, 32, 32), [0, 1])
    assert hook_count(model) == before == 0
    assert "rule" not in vars(model.fc)
    assert model.fc.weight.requires_grad and model.training


def test_check_method_turns_exceptions_into_violations(models, batch):
    register(_Leaky)
    try:
        violations = check_method("_TestLeaky", models["cnn"], *batch[:2])
    finally:
        unregister("_TestLeaky")
    assert any("RuntimeError: boom" in v for v in violations)
    assert any("forward_hooks left on fc" in v for v in violations)


def test_explain_keeps_model_state_and_global_rng(models, batch):
    model = copy.deepcopy(models["resnet"]).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch_rng, np_rng = torch.get_rng_state(), np.random.get_state()
    explain("GradientShap", model, batch[0], batch[1])
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN stats untouched
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert np.array_equal(np.random.get_state()[1], np_rng[1])


def test_batch_size_independence_and_seeding(models, batch):
    model, (x, y, _) = models["cnn"], batch
    one = explain("IntegratedGradients", model, x, y, batch_size=1)
    four = explain("IntegratedGradients", model, x.numpy(), y.numpy(), batch_size=4)
    np.testing.assert_allclose(one, four, rtol=1e-5, atol=1e-7)
    a = explain("Random", model, x, y, seed=3)
    assert np.array_equal(a, explain("Random", model, x, y, seed=3))
    assert not np.array_equal(a, explain("Random", model, x, y, seed=4))


def test_min_batch_and_oracle_requirements(models, batch):
    model, (x, y, masks) = models["cnn"], batch
    with pytest.raises(ConfigError, match="at least 2"):
        explain("FeaturePermutation", model, x[:1], y[:1])
    # A trailing single image is merged into the previous chunk instead of failing.
    assert explain("FeaturePermutation", model, x[:3], y[:3], batch_size=2).shape == (3, 1, 32, 32)
    with pytest.raises(ConfigError, match="masks"):
        explain("Oracle", model, x, y)
    np.testing.assert_array_equal(explain("Oracle", model, x, y, masks=masks)[:, 0], masks.numpy())


def test_the_positional_prior_needs_the_prior_and_gives_it_for_every_image(models, batch):
    model, (x, y, _) = models["cnn"], batch
    with pytest.raises(ConfigError, match="training set's mean watermark mask: pass prior=\\(H, W\\)"):
        explain("PositionalPrior", model, x, y)
    with pytest.raises(ConfigError, match="prior=\\(H, W\\)"):
        explain("PositionalPrior", model, x, y, prior=np.ones((8, 8)))  # the wrong size is no prior either
    prior = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    maps = explain("PositionalPrior", model, x, y, prior=prior)
    assert maps.shape == (len(x), 1, 32, 32) and all(np.array_equal(m[0], prior) for m in maps)
    # Only a method that declares it needs the prior is given one (the test masks never reach it).
    assert get_method("PositionalPrior").capabilities.prior and not get_method("Oracle").capabilities.prior


def test_quantus_explain_func_uses_the_model_it_is_given(models, batch):
    model, (x, y, _) = models["resnet"], batch
    func = quantus_explain_func("GradCAM")
    randomised = randomised_copy(model, seed=1)
    out = func(model=randomised, inputs=x.numpy(), targets=y.numpy(), device="cpu")
    assert isinstance(out, np.ndarray) and out.shape == (4, 1, 32, 32)
    np.testing.assert_array_equal(out, explain("GradCAM", randomised, x, y))
    assert not np.array_equal(out, func(model=model, inputs=x.numpy(), targets=y.numpy()))


def test_gradcam_on_cam_layer_equals_gradient_x_activation(models, batch):
    # Why the layer family runs on inner_layer: on cam_layer these two are the same map.
    model, (x, y, _) = models["cnn"], batch
    cam = explain("GradCAM", model, x, y, params={"relu_attributions": False})
    gxa = explain("LayerGradientXActivation", model, x, y, params={"layer": "cam_layer"})
    np.testing.assert_allclose(cam, gxa, rtol=1e-4, atol=1e-6 * np.abs(cam).max())


# -- LRP -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method", ["LRPEpsilon", "ZennitEpsilonPlusFlat", "ZennitEpsilonGammaBox", "ZennitEpsilonAlpha2Beta1"]
)
def test_lrp_conserves_relevance_on_bias_free_cnn(method):
    torch.manual_seed(0)
    model = SmallCNN(bias_free=True).eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    cls = get_method(method)
    params = cls.resolve_params("cheap")
    if method != "LRPEpsilon":  # tiny stabilisers: the random net's logits are ~1e-3
        params.update(epsilon=1e-12, stabilizer=1e-12)
    relevance = run_chunk(cls(), model, x, target, params, seed=0).detach()
    np.testing.assert_allclose(relevance.sum((1, 2, 3)), logits[torch.arange(4), target], rtol=1e-3)


def _resnet_with_random_bn():
    torch.manual_seed(0)
    model = CifarResNet(20)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial BN so merging matters
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model.eval()


def test_resnet_canonizer_changes_relevance_and_restores_model():
    import zennit.composites

    from benchmark.methods.zennit_lrp import canonizers, lrp_relevance

    model = _resnet_with_random_bn()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    logit = logits[torch.arange(4), target]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_modules()]
    attrs = {n: set(vars(m)) for n, m in model.named_modules()}

    canon = lrp_relevance(model, x, target, zennit.composites.EpsilonPlusFlat(canonizers=canonizers()))
    plain = lrp_relevance(model, x, target, zennit.composites.EpsilonPlusFlat())
    ratio_canon = (canon.sum((1, 2, 3)) / logit).abs()
    ratio_plain = (plain.sum((1, 2, 3)) / logit).abs()
    assert torch.isfinite(canon).all()
    assert ((ratio_canon > 0.1) & (ratio_canon < 10)).all(), ratio_canon
    # Without routing the skip addition through Sum, relevance is copied into both branches.
    assert (ratio_plain > 50).all(), ratio_plain

    assert [n for n, _ in model.named_modules()] == names
    assert {n: set(vars(m)) for n, m in model.named_modules()} == attrs
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(
        model.get_submodule(n).bias is None
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and n != "conv1"
    )
    assert hook_count(model) == 0
    with torch.no_grad():
        assert torch.equal(model(x), logits)


def test_captum_lrp_on_resnet_is_bounded():
    model = _resnet_with_random_bn()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    relevance = run_chunk(get_method("LRPEpsilon")(), model, x, target, {}, seed=0).detach()
    ratio = (relevance.sum((1, 2, 3)) / logits[torch.arange(4), target]).abs()
    assert torch.isfinite(relevance).all()
    assert ((ratio > 0.1) & (ratio < 10)).all(), ratio  # without Addition_Module rules: |R| ~ 1e12
    assert relevance.abs().max() < 10 * logits.abs().max()


# -- docs and listing ----------------------------------------------------------------------------------
def test_every_captum_export_is_accounted_for():
    from benchmark.methods.captum_coverage import problems

    found = problems()
    assert not found, "captum.attr coverage is incomplete:\n  " + "\n  ".join(found)


def test_the_coverage_figure_counts_wrapped_attribution_methods():
    import captum.attr

    from benchmark.methods.captum_coverage import (
        abstract_bases,
        attribution_exports,
        coverage,
        coverage_figure,
        coverage_phrase,
        is_attribution_method,
    )

    methods = all_methods()
    n, m = coverage_figure(methods)
    exports = attribution_exports()
    included = {name for name, status, _ in coverage(methods) if status == "included"}
    assert (n, m) == (len(included & set(exports)), len(exports)) and n == len(included)
    assert is_attribution_method(captum.attr.Saliency) and is_attribution_method(captum.attr.NeuronGradient)
    assert not any(is_attribution_method(x) for x in (captum.attr.GradientAttribution, captum.attr.Max, None))
    assert {"Attribution", "LayerAttribution"} <= set(abstract_bases()) and not set(abstract_bases()) & set(exports)
    # One more wrapped attribution method moves N, and only N; wrapping a base class moves nothing.
    extra = {"_TestShapley": type("S", (), {"captum_class": "ShapleyValues"}),
             "_TestBase": type("B", (), {"captum_class": "GradientAttribution"})}
    assert coverage_figure({**methods, **extra}) == (n + 1, m)
    assert coverage_phrase(methods) == f"{n} of the {m} attribution methods exported by `captum.attr`"


def test_docs_are_up_to_date():
    import warnings

    from benchmark.methods.docs import REGENERATE, stale_reason, undocumented

    reason = stale_reason()
    assert reason is None, reason
    missing = undocumented()
    if missing:
        # A new method file is graded at once; its row in the generated doc can follow (adding a method is one file).
        warnings.warn(f"docs/methods.md does not list {', '.join(missing)} yet; run `{REGENERATE}`", stacklevel=1)


def test_docs_check_refuses_hand_edits_and_unregistered_methods():
    from benchmark.methods.captum_coverage import PHRASE_PATTERN
    from benchmark.methods.docs import DOCS_PATH, stale_reason

    text = DOCS_PATH.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `Saliency` | gradient |"))
    # A row deleted by hand leaves the header's count and the coverage figure behind: not what the generator makes.
    assert "differs from what" in stale_reason(text.replace(row + "\n", ""))
    ghost = row.replace("`Saliency`", "`_TestGhost`")
    assert "not registered: _TestGhost" in stale_reason(text.replace(row, row + "\n" + ghost))
    # A figure that is not the computed one is stale too.
    bumped = PHRASE_PATTERN.sub(lambda m: m[0].replace(m[1], str(int(m[1]) + 1), 1), text, count=1)
    assert bumped != text and stale_reason(bumped) is not None


_DOCS_CHECK_WITH_EXTRA_METHODS = """
import json, os, sys

import benchmark.methods as methods

dropin_dir, plugin_file = sys.argv[1:3]
# Both documented ways to add a method: a module in benchmark/methods/ (here one git does not track, as a
# new file is before it is committed) and a file named in $SHORTCUT_BENCH_METHODS.
methods.__path__.append(dropin_dir)
os.environ[methods.ENV_VAR] = plugin_file

from benchmark.methods import docs

registered = methods.all_methods()
print(json.dumps({
    "registered": sorted({"_TestDropIn", "_TestPlugin"} & set(registered)),
    "builtin": "_TestDropIn" in docs.builtin_methods(),
    "undocumented": sorted({"_TestDropIn", "_TestPlugin"} & set(docs.undocumented())),
    "exact_match": docs.DOCS_PATH.read_text() == docs.render(),
    "stale_reason": docs.stale_reason(),
    "check_exit": docs.main(["--check"]),
}))
"""

_EXTRA_METHOD = '''
from benchmark.methods import register
from benchmark.methods.base import AttributionMethod, Capabilities


@register
class Extra(AttributionMethod):
    """Input times two, a stand-in for a user's method.

    Reference: none (test double).
    """

    name = "{name}"
    family = "control"
    capabilities = Capabilities(control=True, model_independent=True)

    def attribute(self, model, inputs, target, params, **context):
        return 2 * inputs
'''


def test_a_new_method_file_alone_keeps_the_docs_check_green(tmp_path, run_child):
    from benchmark.methods.docs import ROOT

    dropin = tmp_path / "dropin"
    dropin.mkdir()
    (dropin / "zz_test_dropin.py").write_text(_EXTRA_METHOD.format(name="_TestDropIn"))
    plugin = tmp_path / "plugin_methods.py"
    plugin.write_text(_EXTRA_METHOD.format(name="_TestPlugin"))
    # A subprocess: registration is global, and the drop-in must be found by the package's own discovery.
    proc = run_child.python("-c", _DOCS_CHECK_WITH_EXTRA_METHODS, dropin, plugin, cwd=ROOT, timeout=600,
                            env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["registered"] == ["_TestDropIn", "_TestPlugin"]
    # The drop-in counts as built-in, so the old exact comparison with render() would have failed here ...
    assert result["builtin"] and not result["exact_match"]
    # ... while the check accepts the doc of the methods it lists, and names the new one for a warning; the strict
    # maintainer command (--check) asks for the regeneration.
    assert result["stale_reason"] is None and result["undocumented"] == ["_TestDropIn"]
    assert result["check_exit"] == 1


@pytest.mark.parametrize("name", ["KernelShap", "Lime"])
@pytest.mark.parametrize("graded", [False, True])
def test_vectorised_lime_loop_gives_captums_maps_bit_for_bit(name, graded, models, monkeypatch):
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import KernelShap as CaptumKernelShap
    from captum.attr import Lime as CaptumLime

    from benchmark.methods import _lime
    from benchmark.models import fused

    model = copy.deepcopy(models["cnn"])
    if graded:  # as the grader explains: channels-last, no-grad passes through the fused copy
        model = model.to(memory_format=torch.channels_last)
        fused.allow(model)
    x, _, _ = stamped_images(6, torch.Generator().manual_seed(5))
    targets = torch.tensor([0, 1, 1, 0, 1, 0])
    vectorised = []
    monkeypatch.setattr(_lime, "_outputs", lambda *a, real=_lime._outputs: vectorised.append(1) or real(*a))
    # Six images in one chunk: a draw out of Captum's order in one image's loop changes every later image's map.
    ours = explain(name, model, x, targets, seed=3, batch_size=6)
    assert len(vectorised) == 6  # each image went through the vectorised loop, not Captum's
    cls = get_method(name)
    captums = {"KernelShap": lambda self, m, params: CaptumKernelShap(m),
               "Lime": lambda self, m, params: CaptumLime(m, interpretable_model=SkLearnRidge(alpha=params["ridge_alpha"]))}
    monkeypatch.setattr(cls, "build", captums[name])
    assert np.array_equal(ours, explain(name, model, x, targets, seed=3, batch_size=6))


def test_kernel_shap_draws_repeated_from_one_generator_state_are_served_exactly_and_leave_the_same_state():
    from torch.distributions.categorical import Categorical

    from benchmark.methods import _lime

    memo = _lime._DrawMemo(entries=2)
    dist = Categorical(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    probs = dist.probs.reshape(-1, dist._num_events)

    def from_seed(seed, n=20):
        torch.manual_seed(seed)
        fresh = _lime._fresh_draws(n, 5, probs)
        after = torch.get_rng_state()
        torch.manual_seed(seed)
        return fresh, after

    for seed in (0, 1, 0, 2, 0, 1):  # a hit, then an eviction (two entries) and a miss again
        fresh, after = from_seed(seed)
        got = memo.draws(20, 5, probs)
        assert got.dtype == fresh.dtype and torch.equal(got, fresh)
        assert torch.equal(torch.get_rng_state(), after)  # the next draw is the one drawing would have left
    assert (memo.hits, memo.misses) == (2, 4)
    fresh, after = from_seed(0, n=21)  # another sample count is another entry
    assert torch.equal(memo.draws(21, 5, probs), fresh) and memo.misses == 5
    from captum.attr import KernelShap as CaptumKernelShap

    torch.manual_seed(7)  # against Captum's own generator, computed and then served from the shared memo
    generator = CaptumKernelShap(torch.nn.Identity()).kernel_shap_perturb_generator(
        torch.zeros(1), num_interp_features=5, num_select_distribution=dist)
    captums = torch.cat([next(generator) for _ in range(20)])
    after = torch.get_rng_state()
    for _ in range(2):
        torch.manual_seed(7)
        assert torch.equal(_lime._kernel_shap_draws(20, 5, dist, "cpu"), captums)
        assert torch.equal(torch.get_rng_state(), after)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_lime_kernel_weights_of_all_samples_at_once_are_captums_bit_for_bit(size):
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    from benchmark.methods import _lime

    g = torch.Generator().manual_seed(size)
    x = torch.rand(1, 3, size, size, generator=g).to(memory_format=torch.channels_last)
    on = torch.rand(200, 3, size, size, generator=g) > torch.rand(200, 1, 1, 1, generator=g)
    perturbed = on * x + ~on * 0.5
    for width in (1.0, 0.25, 3.0):
        kernel = get_exp_kernel_similarity_function("cosine", width)
        assert _lime._exp_kernel_width(kernel) == width
        one_at_a_time = torch.tensor([kernel(x, perturbed[i : i + 1], None) for i in range(len(perturbed))])
        assert torch.equal(_lime._cosine_exp_kernel(x, perturbed, width), one_at_a_time)
    # Any other similarity keeps Captum's one-sample calls.
    assert _lime._exp_kernel_width(get_exp_kernel_similarity_function("euclidean", 1.0)) is None
    assert _lime._exp_kernel_width(lambda a, b, c, **kw: 1.0) is None


def test_lime_maps_from_coefficients_in_one_gather_are_captums_bit_for_bit():
    from captum.attr import Lime as CaptumLime

    from benchmark.methods import _lime
    from benchmark.methods._lime import VectorisedLime

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 3, 32, 32, generator=g),)
    mask = (torch.arange(64).reshape(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1)[None, None],)
    ours, captums = VectorisedLime(lambda a: a), CaptumLime(lambda a: a)
    coefs = torch.randn(1, 64, generator=g)
    coefs[0, :3] = torch.tensor([-0.0, 0.0, 1e-45])  # a negative zero: Captum's sum of zeros makes it 0.0
    cases = [(x, mask, coefs), (x, mask, coefs.double()),  # float64 coefficients round as Captum's .item() * mask
             (x, (mask[0].expand(1, 3, 32, 32),), coefs)]
    for inputs, feature_mask, c in cases:
        assert _lime._gathered(inputs, feature_mask, c, 64) is not None  # the gather, not Captum's sum, gave ours
        for tupled, one in ((False, False), (True, True)):
            a = ours._convert_output_shape(inputs, feature_mask, c, 64, tupled, one)
            b = captums._convert_output_shape(inputs, feature_mask, c, 64, tupled, one)
            a, b = (a[0], b[0]) if tupled else (a, b)
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
            assert torch.equal(a.view(torch.int32), b.view(torch.int32))  # the bits, signs of zeros included
    # Captum's way where a gather would differ: a non-finite coefficient, a mask value outside the features.
    odd = coefs.clone()
    odd[0, 5] = float("nan")
    for feature_mask, c in (((mask[0] + 1,), coefs), (mask, odd)):
        assert _lime._gathered(x, feature_mask, c, 64) is None
        a, b = (m._convert_output_shape(x, feature_mask, c, 64, False) for m in (ours, captums))
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def test_the_vectorised_lime_loop_leaves_what_it_cannot_vectorise_to_captums(models):
    from captum.attr import Lime as CaptumLime

    from benchmark.methods._lime import VectorisedLime

    x, _, _ = stamped_images(2, torch.Generator().manual_seed(6))
    mask = torch.arange(64).reshape(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1)[None, None]
    out = {}
    for cls in (VectorisedLime, CaptumLime):
        torch.manual_seed(0)
        # Tuple inputs and an extra forward argument take Captum's own loop.
        algo = cls(lambda a, scale: models["cnn"](a) * scale)
        out[cls] = algo.attribute((x[:1],), target=1, additional_forward_args=(2.0,), feature_mask=(mask,),
                                  n_samples=20, perturbations_per_eval=4)[0]
    assert torch.equal(out[VectorisedLime], out[CaptumLime])


@pytest.mark.parametrize("arch", ["cnn", "resnet", "vit"])
def test_layer_feature_ablation_on_one_images_head_gives_captums_maps_bit_for_bit(arch, models, batch, monkeypatch):
    from benchmark.methods import _layer_cut

    x, _, _ = batch
    targets = torch.tensor([0, 1, 1, 0])
    heads = []
    monkeypatch.setattr(_layer_cut.HeadOnOneImage, "__call__",
                        lambda self, x, real=_layer_cut.HeadOnOneImage.__call__: heads.append(len(x)) or real(self, x))
    ours = explain("LayerFeatureAblation", models[arch], x, targets)
    cls = get_method("LayerFeatureAblation")
    monkeypatch.setattr(cls, "forward_for", lambda self, model, inputs, params: model)  # Captum's, whole model
    assert np.array_equal(ours, explain("LayerFeatureAblation", models[arch], x, targets))
    model = models[arch]
    cut = _layer_cut.is_cut(model, model.get_submodule(model.inner_layer), x)
    assert cut or arch == "vit"  # the CNN's and the ResNet's inner layers are cuts
    assert bool(heads) == cut  # and only a cut's passes go through the one-image head


def test_a_layer_that_the_rest_of_the_model_bypasses_is_no_cut():
    from benchmark.methods._layer_cut import is_cut

    class Skip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.fc((self.inner(x) + x).mean((2, 3)))  # x reaches the output around the layer

    torch.manual_seed(0)
    model = Skip().eval()
    assert not is_cut(model, model.inner, torch.rand(4, 3, 8, 8))
    chain = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(192, 2)).eval()
    assert is_cut(chain, chain[1], torch.rand(4, 3, 8, 8))


def test_a_cut_is_probed_per_model_state_not_per_architecture():
    from benchmark.methods._layer_cut import is_cut

    class GatedSkip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.gate = torch.nn.Parameter(torch.zeros(1))  # closed: the bypass carries nothing
            self.fc = torch.nn.Linear(3, 2)
            self.inner_layer = "inner"

        def forward(self, x):
            return self.fc((self.inner(x) + self.gate * x).mean((2, 3)))

    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    closed, opened = GatedSkip().eval(), GatedSkip().eval()
    with torch.no_grad():
        opened.gate.fill_(1.0)  # the same architecture, whose bypass carries the inputs (as a randomised copy may)
    assert is_cut(closed, closed.inner, x)
    assert not is_cut(opened, opened.inner, x)
    with torch.no_grad():
        closed.gate.fill_(1.0)  # new weights in place: probed again
    assert not is_cut(closed, closed.inner, x)
    targets = torch.tensor([0, 1, 1, 0])
    ours = explain("LayerFeatureAblation", opened, x, targets)  # the opened copy's maps: its passes run whole
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(get_method("LayerFeatureAblation"), "forward_for", lambda self, model, inputs, params: model)
        assert np.array_equal(ours, explain("LayerFeatureAblation", opened, x, targets))  # Captum's, whole model


@pytest.mark.parametrize("name", ["DeepLift", "DeepLiftShap", "LayerDeepLift", "LayerDeepLiftShap"])
@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_deeplift_rules_without_duplicate_halves_or_copies_give_captums_maps_bit_for_bit(name, arch, models,
                                                                                         monkeypatch):
    import contextlib

    from captum.attr._core import deep_lift

    from benchmark.methods import _deeplift_rules

    model = copy.deepcopy(models[arch]).to(memory_format=torch.channels_last)  # as the grader explains on the CPU
    x, _, _ = stamped_images(6, torch.Generator().manual_seed(5))
    targets = torch.tensor([0, 1, 1, 0, 1, 0])
    used = []
    for rule in ("_nonlinear", "_maxpool"):
        real = getattr(_deeplift_rules, rule)
        monkeypatch.setattr(_deeplift_rules, rule, lambda *a, real=real, **k: used.append(1) or real(*a, **k))
    monkeypatch.setattr(_deeplift_rules, "_REPLACED", {deep_lift.nonlinear: _deeplift_rules._nonlinear,
                                                       deep_lift.maxpool2d: _deeplift_rules._maxpool2d})
    kept = []
    monkeypatch.setattr(_deeplift_rules, "_kept", lambda t, real=_deeplift_rules._kept: kept.append(1) or real(t))
    table = dict(deep_lift.SUPPORTED_NON_LINEAR)
    ours = explain(name, model, x, targets, seed=3)
    assert used and kept and deep_lift.SUPPORTED_NON_LINEAR == table  # the rules and hooks ran; Captum's table is back
    monkeypatch.setattr(_deeplift_rules, "rules", lambda *a, **k: contextlib.nullcontext())  # Captum's rules and hooks
    assert ours.tobytes() == explain(name, model, x, targets, seed=3).tobytes()


class _ReusedInput(torch.nn.Module):
    """A ReLU whose input is changed in place after the ReLU read it (legal for autograd: ReLU keeps its output)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x)
        y = self.relu(h)
        h.add_(1.0)
        return self.fc(torch.flatten(self.pool(y), 1))


def test_deeplift_runs_again_with_captums_copies_when_a_kept_input_was_modified(monkeypatch):
    import contextlib

    from benchmark.methods import _deeplift_rules

    torch.manual_seed(0)
    model = _ReusedInput().eval()
    x, _, _ = stamped_images(4, torch.Generator().manual_seed(5))
    targets = torch.tensor([0, 1, 1, 0])
    runs = []
    real = _deeplift_rules.rules

    def rules(algo=None, copies=False):
        runs.append(copies)
        return real(algo, copies=copies)

    monkeypatch.setattr(_deeplift_rules, "rules", rules)
    record = {}
    ours = explain("DeepLift", model, x, targets, seed=3, _record=record)
    assert runs == [False, True] and record["leaks"] == []  # kept, modified, run again; nothing left on the model
    monkeypatch.setattr(_deeplift_rules, "rules", lambda *a, **k: contextlib.nullcontext())  # Captum's rules and hooks
    assert ours.tobytes() == explain("DeepLift", model, x, targets, seed=3).tobytes()


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_images_attributed_in_groups_keep_the_whole_chunks_maps_bit_for_bit(arch, models, monkeypatch):
    from benchmark.methods.shap import DeepLiftShap

    assert DeepLiftShap.pass_images < DeepLiftShap.batch_size  # a chunk of the method's size is split
    model = copy.deepcopy(models[arch]).to(memory_format=torch.channels_last)  # as the grader explains on the CPU
    x, _, _ = stamped_images(DeepLiftShap.batch_size + 3, torch.Generator().manual_seed(6))
    targets = torch.arange(len(x)) % 2
    calls = []
    real = DeepLiftShap._in_groups
    monkeypatch.setattr(DeepLiftShap, "_in_groups", lambda self, algo, inputs, *a: calls.append(len(inputs)) or
                        real(self, algo, inputs, *a))
    grouped = explain("DeepLiftShap", model, x, targets, seed=3)
    monkeypatch.setattr(DeepLiftShap, "pass_images", None)  # one Captum call per chunk
    assert np.array_equal(grouped, explain("DeepLiftShap", model, x, targets, seed=3))
    assert calls[:2] == [DeepLiftShap.batch_size, 3]


@pytest.mark.parametrize("name, swapped", [("Saliency", False), ("SmoothGrad", False), ("DeepLift", True),
                                           ("LayerDeepLiftShap", True)])
def test_deeplift_rules_are_put_in_captums_table_for_deeplift_methods_only(name, swapped, models):
    from captum.attr import NeuronDeepLift, NoiseTunnel
    from captum.attr._core import deep_lift

    from benchmark.methods._deeplift_rules import _uses_deeplift

    model = copy.deepcopy(models["cnn"])
    seen = []
    for module in model.modules():
        if isinstance(module, torch.nn.ReLU):  # what each forward finds in the table for a ReLU
            module.register_forward_hook(lambda *_: seen.append(deep_lift.SUPPORTED_NON_LINEAR[torch.nn.ReLU]))
    x, _, _ = stamped_images(2, torch.Generator().manual_seed(5))
    explain(name, model, x, torch.tensor([0, 1]), seed=3)
    assert seen and all((rule is not deep_lift.nonlinear) == swapped for rule in seen), seen
    # NeuronDeepLift builds its DeepLift inside, and a NoiseTunnel may wrap one: both read the table too.
    assert _uses_deeplift(NeuronDeepLift(model, model.get_submodule(model.inner_layer)))
    assert _uses_deeplift(NoiseTunnel(deep_lift.DeepLift(model)))


def test_deeplift_rules_leave_captums_table_as_it_was_after_an_error():
    from captum.attr._core import deep_lift

    from benchmark.methods._deeplift_rules import rules

    table = dict(deep_lift.SUPPORTED_NON_LINEAR)
    with pytest.raises(ValueError), rules():
        assert deep_lift.SUPPORTED_NON_LINEAR != table
        raise ValueError("a method failed")
    assert deep_lift.SUPPORTED_NON_LINEAR == table
