"""The ViT arm: the architecture, reading its attention, the transformer methods' own properties, --bench-arch, and
the CNN-versus-ViT section of the reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.grading.properties import PROPERTIES
from benchmark.grading.verdict import FAIL, INCONCLUSIVE, NA, PASS, Cell
from benchmark.methods import all_methods, explain, get_method
from benchmark.methods._attention import recorded_attention
from benchmark.models.arch import SmallViT, build_model, fused_attention
from benchmark.models.train import TrainConfig, arch_name
from benchmark.profiles import PROFILES, VIT_SHAPE, VIT_STEPS, with_arch
from benchmark.reporting.architectures import compare, rank_correlation, sibling_records
from benchmark.reporting.html import render_html, write_sibling_reports
from benchmark.reporting.report import build_record, write_reports
from benchmark.running.configure import reports_dir

TRANSFORMER = sorted(name for name, cls in all_methods().items() if cls.capabilities.attention)


def _vit(seed: int = 0, **kw) -> SmallViT:
    torch.manual_seed(seed)
    return SmallViT(32, 4, depth=kw.pop("depth", 2), width=kw.pop("width", 32), **kw).eval()


def test_the_vit_builds_by_name_with_its_token_grid():
    m = build_model("vit", depth=4, width=64, image_size=32)
    assert isinstance(m, SmallViT) and m.side == 8 and len(m.attention_probes()) == 4
    assert m(torch.rand(3, 3, 32, 32)).shape == (3, 2)
    assert build_model("vit", depth=2, width=32, image_size=64).side == 16
    with pytest.raises(ValueError, match="does not tile"):
        SmallViT(30, 4)
    assert arch_name("vit", 4, 64) == "ViT-4x64"


def test_reading_attention_leaves_the_logits_bit_identical():
    m, x = _vit(), torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        plain = m(x)
        with recorded_attention(m) as maps:
            read = m(x)
    assert torch.equal(plain, read)
    assert all(a.shape == (4, 4, 64, 64) for a in maps)
    assert torch.allclose(maps[0].sum(-1), torch.ones(4, 4, 64))  # each query's attention is a distribution
    assert not any(p._forward_hooks for p in m.attention_probes())  # the hooks are gone afterwards


def test_fused_attention_computes_the_same_logits_unprobed_and_only_inside_its_block():
    m, x = _vit(), torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        plain = m(x)
        with fused_attention(m), recorded_attention(m) as maps:
            fast = m(x)
        assert maps == [None, None]  # the fused kernel never forms the attention, so no probe sees it
        with recorded_attention(m) as after:
            again = m(x)
    assert float((fast - plain).abs().max()) <= 1e-5
    assert torch.equal(again, plain) and all(a is not None for a in after)  # switched back: probed, bit-identical
    assert not any(block.attn.fused for block in m.blocks)


def test_the_layer_grids_are_reshapes_of_the_tokens():
    m = _vit()
    tokens = torch.rand(2, 64, 32)
    grid = m.grid(tokens)
    assert grid.shape == (2, 32, 8, 8)
    assert torch.equal(grid.flatten(2).transpose(1, 2), tokens)
    assert torch.equal(grid[:, :, 1, 2], tokens[:, 1 * 8 + 2])  # row-major: token i sits at (i // side, i % side)


def _bias_free_vit() -> SmallViT:
    m = _vit(seed=3)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or name == "pos":
                p.zero_()
            elif name.endswith("weight") and p.dim() == 1:  # LayerNorm gains away from 1, to test them too
                p.uniform_(0.5, 1.5)
    return m


def test_conservative_lrp_conserves_the_logit_on_a_bias_free_vit():
    m = _bias_free_vit()
    x, target = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 1])
    relevance = get_method("ConservativeLRP")().attribute(m, x, target, {})
    with torch.no_grad():
        logits = m(x).gather(1, target.view(-1, 1)).squeeze(1)
    assert torch.allclose(relevance.sum(dim=(1, 2, 3)), logits, rtol=1e-4, atol=1e-5)


def test_conservation_fails_for_plain_gradient_times_input_so_the_test_can_tell():
    # The same bias-free ViT, attention left live: Gradient×Input no longer sums to the logit (softmax is not
    # homogeneous), so the conservation test above can fail.
    m = _bias_free_vit()
    x, target = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 1])
    x.requires_grad_(True)
    logit = m(x).gather(1, target.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(logit, x)
    assert not torch.allclose((g * x).sum(), logit.detach(), rtol=1e-3)


def test_attention_rollout_of_uniform_attention_is_uniform():
    m, x = _vit(), torch.rand(2, 3, 32, 32)

    def uniform(module, inputs, output):
        return torch.full_like(output, 1.0 / output.shape[-1])

    handles = [p.register_forward_hook(uniform) for p in m.attention_probes()]
    try:
        out = get_method("AttentionRollout")().attribute(m, x, torch.tensor([1, 1]), {"residual": 0.5})
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(out, torch.full_like(out, 1 / 64))


def test_grad_rollout_follows_the_target_and_leaves_no_gradients_behind():
    m, x = _vit(seed=1), torch.rand(2, 3, 32, 32)
    a = explain("GradAttentionRollout", m, x.numpy(), np.array([0, 0]), seed=0)
    b = explain("GradAttentionRollout", m, x.numpy(), np.array([1, 1]), seed=0)
    assert a.shape == (2, 1, 32, 32) and not np.allclose(a, b)
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize("method", TRANSFORMER)
def test_every_transformer_method_gives_finite_maps_and_is_na_on_a_cnn(method):
    m, x = _vit(), torch.rand(2, 3, 32, 32)
    out = explain(method, m, x.numpy(), np.array([1, 0]), seed=0)
    assert out.shape == (2, 1, 32, 32) and np.isfinite(out).all()
    assert "attention" in get_method(method).unsupported(build_model("cnn", width=8))
    assert get_method(method).reference(), f"{method} cites no reference"


def test_with_arch_swaps_in_the_vit_and_refuses_other_names():
    quick = PROFILES["quick"]
    vit = with_arch(quick, "vit")
    assert (vit.arch, (vit.depth, vit.width), vit.min_steps, vit.contract_archs) == (
        "vit", VIT_SHAPE, VIT_STEPS["quick"], ("vit",))
    assert with_arch(quick, None) is quick and with_arch(quick, "cnn") is quick
    with pytest.raises(ConfigError, match="vit"):
        with_arch(quick, "vitt")


def test_the_cnn_cache_keys_do_not_change_with_the_vit_field():
    cfg = TrainConfig("cnn", 0, 16, 6, 128, 3e-3, 5e-4, 0, "cpu", False)
    assert "image_size" not in cfg.key_fields() and "sdpa" not in cfg.key_fields()
    assert TrainConfig("vit", 4, 64, 6, 128, 1e-3, 5e-4, 0, "cpu", False, 32).key_fields()["image_size"] == 32


def test_only_the_vit_on_cpu_trains_its_attention_fused():
    quick, cpu = PROFILES["quick"], torch.device("cpu")
    vit = TrainConfig.from_profile(with_arch(quick, "vit"), 0, cpu)
    assert vit.sdpa and vit.key_fields()["sdpa"] is True  # other float sums, other weights: another cache key
    assert not TrainConfig.from_profile(with_arch(quick, "vit"), 0, torch.device("cuda")).sdpa  # unmeasured there
    assert not TrainConfig.from_profile(quick, 0, cpu).sdpa


def test_a_vit_trained_with_fused_attention_explains_through_its_probes(tmp_path, trains, monkeypatch):
    import dataclasses

    import torch.nn.functional as F

    from benchmark.data import DataSpec, build_world
    from benchmark.models.train import get_trained_model

    kernel, calls = F.scaled_dot_product_attention, []
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    tiny = dataclasses.replace(with_arch(PROFILES["quick"], "vit"), n_train=128, n_test=32, epochs=1, batch_size=64,
                               min_steps=0, depth=1, width=16)
    world = build_world(DataSpec(n_train=128, n_test=32, seed=3), tmp_path / "data")
    trained = get_trained_model(world, "biased", tiny, cache_dir=tmp_path, device="cpu", progress=False)
    assert trained.card["train_config"]["sdpa"] is True
    assert len(calls) == 2  # one block, two training steps: every step ran the kernel, the card's evaluation did not
    assert not any(block.attn.fused for block in trained.model.blocks)
    with torch.no_grad(), recorded_attention(trained.model) as maps:
        trained.model(torch.rand(2, 3, 32, 32))
    assert all(a is not None for a in maps)


def test_a_vit_run_reports_beside_the_cnn_run(tmp_path):
    def get(values):
        return lambda option: values.get(option)

    assert reports_dir(get({}), tmp_path) == tmp_path / "reports"
    assert reports_dir(get({"--bench-arch": "vit"}), tmp_path) == tmp_path / "reports" / "vit"
    assert reports_dir(get({"--bench-arch": "vit", "--bench-reports-dir": "x"}), tmp_path).name == "x"


# -- the CNN-versus-ViT report ------------------------------------------------------------------------------------
def _cell(method, outcome, mean, metric="RelevanceRankAccuracy", suite="watermark_localisation"):
    prop = PROPERTIES[suite]
    m = prop.metric(metric)
    score = None if outcome == NA else {"mean": mean, "ci_low": mean - 0.01, "ci_high": mean + 0.01, "n": 8}
    return Cell(suite=suite, suite_version=prop.version, property=prop.name, metric=metric, method=method,
                direction=m.direction, threshold=m.threshold, outcome=outcome, message="m", score=score,
                informative=True)


def _run(arch, name):
    return {"profile": {"name": "quick", "arch": arch}, "seed": 0, "data": {"key": "k"}, "model_seeds": [0],
            "git": "g", "device": "cpu", "models": {"biased": {"arch_name": name}}}


def _records():
    cnn = [_cell("Saliency", PASS, 0.8), _cell("Occlusion", FAIL, 0.3), _cell("InputXGradient", PASS, 0.7),
           _cell("AttentionRollout", NA, 0)]
    vit = [_cell("Saliency", PASS, 0.6), _cell("Occlusion", INCONCLUSIVE, 0.5), _cell("InputXGradient", PASS, 0.9),
           _cell("AttentionRollout", FAIL, 0.2)]
    return build_record(cnn, _run("cnn", "SmallCNN-16")), build_record(vit, _run("vit", "ViT-4x64"))


def test_compare_lists_changed_verdicts_and_the_rank_correlation():
    cnn, vit = _records()
    cmp = compare(cnn, vit)
    assert (cmp["a"], cmp["b"]) == ("SmallCNN-16", "ViT-4x64")
    changed = {(c["method"], c["a"], c["b"]) for c in cmp["changed"]}
    assert changed == {("Occlusion", FAIL, INCONCLUSIVE), ("AttentionRollout", NA, FAIL)}
    assert (cmp["spearman"], cmp["n_ranked"]) == (None, 0)  # these cells carry no per-image scores: no effects


def test_rank_correlation_is_spearmans_over_the_methods_ranked_on_both():
    a = {"A": {"mean": 0.1}, "B": {"mean": 0.2}, "C": {"mean": 0.3}, "D": {"mean": 0.4}, "E": None}
    b = {"A": {"mean": 0.9}, "B": {"mean": 0.5}, "C": {"mean": 0.4}, "D": {"mean": 0.1}, "E": {"mean": 0.3}}
    assert rank_correlation(a, b, list("ABCDE")) == (pytest.approx(-1.0), 4)
    assert rank_correlation(a, a, list("ABCDE")) == (pytest.approx(1.0), 4)
    assert rank_correlation(a, b, list("AB")) == (None, 2)  # too few to rank
    flat = {m: {"mean": 0.5} for m in "ABCD"}
    assert rank_correlation(a, flat, list("ABCD")) == (None, 4)  # undefined on a constant side


def test_reports_find_the_other_architecture_and_show_both(tmp_path):
    cnn, vit = _records()
    out_cnn, out_vit = tmp_path / "reports", tmp_path / "reports" / "vit"
    write_reports(cnn, out_cnn)
    assert "## Architectures" not in (out_cnn / "leaderboard.md").read_text()  # nothing beside it yet
    write_reports(vit, out_vit)
    assert [p for p, _ in sibling_records(out_vit, vit)] == [out_cnn / "run.json"]
    write_sibling_reports(vit, out_vit)  # the CNN's reports gain the ViT's verdicts
    for out in (out_cnn, out_vit):
        text = (out / "leaderboard.md").read_text()
        assert "## Architectures" in text
        assert ("SmallCNN-16 against ViT-4x64" in text) if out == out_cnn else ("ViT-4x64 against SmallCNN-16" in text)
        assert ("FAIL / INCONCLUSIVE ≠" in text) if out == out_cnn else ("INCONCLUSIVE / FAIL ≠" in text)
        assert json.loads((out / "leaderboard.json").read_text())["architectures"][0]["changed"]
    assert "Architectures: SmallCNN-16 and ViT-4x64" in render_html(cnn, out_cnn)


def test_the_report_command_refreshes_the_other_architectures_reports(tmp_path, capsys):
    from benchmark.__main__ import main

    cnn, vit = _records()
    out_cnn, out_vit = tmp_path / "reports", tmp_path / "reports" / "vit"
    write_reports(cnn, out_cnn)
    write_reports(vit, out_vit)  # written after the CNN's: only the ViT's reports show both so far
    assert "## Architectures" not in (out_cnn / "leaderboard.md").read_text()
    assert main(["report", str(out_vit / "run.json")]) == 0
    assert str(out_cnn / "leaderboard.md") in capsys.readouterr().out.split()
    assert "ViT-4x64" in (out_cnn / "leaderboard.md").read_text().split("## Architectures")[1]


def test_the_header_says_a_vit_replaced_the_profiles_model():
    from benchmark.plugin import profile_line

    assert "--bench-arch" not in profile_line(PROFILES["quick"], "default without a GPU")
    line = profile_line(with_arch(PROFILES["quick"], "vit"), "default without a GPU")
    assert "small plain CNN" in line and line.endswith("--bench-arch vit: a vision transformer trains and is graded "
                                                       "in place of that model")


def test_another_world_is_not_a_sibling(tmp_path):
    cnn, vit = _records()
    vit["run"]["data"]["key"] = "another"
    write_reports(cnn, tmp_path / "reports")
    write_reports(vit, tmp_path / "reports" / "vit")
    assert sibling_records(tmp_path / "reports" / "vit", vit) == []
    assert "## Architectures" not in (tmp_path / "reports" / "vit" / "leaderboard.md").read_text()


def test_a_constant_map_is_collapsed_for_every_localisation_metric():
    from benchmark.grading import metrics as mx

    maps = np.zeros((3, 1, 4, 4))
    maps[1, 0, 2, 2] = 1.0
    maps[2] += 0.5  # constant but not zero: still no location
    out = mx.nan_where_constant(np.array([0.0, 0.7, 1.0]), maps)
    assert np.isnan(out[0]) and out[1] == 0.7 and np.isnan(out[2])
    assert all(m.collapse == mx.POINTS_NOWHERE for m in PROPERTIES["watermark_localisation"].metrics)


def test_an_unknown_architecture_is_a_one_line_usage_error_naming_the_commands_option(capsys):
    from benchmark.__main__ import main

    assert main(["build", "--profile", "quick", "--arch", "vitt", "--cache-dir", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --arch: unknown architecture 'vitt'") and "Traceback" not in err
    assert "did you mean 'vit'" in err.lower() or "'vit'" in err


def test_attnlrp_leaves_the_logits_bit_identical_and_the_model_as_found():
    from benchmark.methods.attn_lrp import attnlrp_rules

    m, x = _vit(seed=2), torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        plain = m(x)
        with attnlrp_rules(m):
            ruled = m(x)
    assert torch.allclose(plain, ruled, atol=1e-6)  # LayerNorm is recomputed with its scale held: rounding only
    assert all("forward" not in vars(b.attn) for b in m.blocks)
    assert not any(n._forward_hooks for n in m.modules())


def test_attnlrp_conserves_the_logit_less_what_the_softmax_rule_absorbs():
    # On a bias-free ViT the only sink of AttnLRP's relevance is the softmax rule's bias term: per attention row,
    # sum(s * g) - sum(x * J^T g), with s the probabilities, g their (modified) gradient and x the scores (log s will do:
    # a per-row constant adds sum(J^T g) = 0). Input relevance plus those sinks must give the target logit back; the
    # uniform rule's halves, the identity rules and LRP-0 are all inside that sum, so any of them wrong breaks it.
    from benchmark.methods.attn_lrp import attnlrp_rules

    m = _bias_free_vit()
    x, target = torch.rand(2, 3, 32, 32, requires_grad=True), torch.tensor([0, 1])
    with attnlrp_rules(m), recorded_attention(m) as maps:
        logit = m(x).gather(1, target.view(-1, 1)).sum()
    grads = torch.autograd.grad(logit, [x, *maps])
    relevance = (grads[0] * x).sum()
    absorbed = 0.0
    for s, g in zip(maps, grads[1:]):
        r_out = s * g
        jtg = r_out - s * r_out.sum(-1, keepdim=True)
        absorbed = absorbed + r_out.sum() - (torch.log(s) * jtg).sum()
    assert torch.allclose(relevance + absorbed, logit.detach(), rtol=1e-3, atol=1e-4)
    # And the relevance AttnLRP returns is that Gradient×Input, not something near it.
    out = get_method("AttnLRP")().attribute(m, x.detach(), target, {})
    assert torch.allclose(out.sum(), relevance.detach(), rtol=1e-5, atol=1e-6)


def test_attnlrp_is_na_on_a_transformer_whose_attention_it_has_no_rules_for():
    class Foreign(torch.nn.Module):
        def attention_probes(self):
            return []

    assert "SelfAttention" in get_method("AttnLRP").unsupported(Foreign())
    assert get_method("AttnLRP").unsupported(_vit()) == ""
