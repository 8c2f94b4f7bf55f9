"""Training and the model cache: determinism, integrity checks, concurrency, architectures."""

from __future__ import annotations

import dataclasses
import gc
import json
import warnings

import numpy as np
import pytest
import torch

from benchmark.data import SHORTCUT_CLASS, DataSpec, build_world
from benchmark.errors import ConfigError
from benchmark.models.arch import CifarResNet, PerState, SmallCNN, build_model
from benchmark.models.train import TrainConfig, TrainedModel, get_trained_model
from benchmark.profiles import PROFILES, override, resolve_profile

TINY = override(PROFILES["quick"], n_train=256, n_test=64, epochs=1, batch_size=64, min_steps=0)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, trains):
    # Its tests train on it (``trains``: they are slow).
    return build_world(DataSpec(n_train=TINY.n_train, n_test=TINY.n_test, seed=3), tmp_path_factory.mktemp("data"))


def _state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights_and_cache_hit(tiny_world, tmp_path):
    a = get_trained_model(tiny_world, "biased", TINY, cache_dir=tmp_path / "a", device="cpu", progress=False)
    b = get_trained_model(tiny_world, "biased", TINY, cache_dir=tmp_path / "b", device="cpu", progress=False)
    assert not a.cache_hit and not b.cache_hit
    assert _state_equal(a.model, b.model)
    assert a.card["weights_sha256"] == b.card["weights_sha256"]
    again = get_trained_model(tiny_world, "biased", TINY, cache_dir=tmp_path / "a", device="cpu", progress=False)
    assert again.cache_hit and _state_equal(a.model, again.model)
    other_seed = get_trained_model(tiny_world, "biased", TINY, seed=1, cache_dir=tmp_path / "a", device="cpu",
                                   progress=False)
    assert not other_seed.cache_hit and not _state_equal(a.model, other_seed.model)


def test_model_card_has_the_promised_fields(tiny_world, tmp_path):
    m = get_trained_model(tiny_world, "control", TINY, cache_dir=tmp_path, device="cpu", progress=False)
    card = json.loads((m.path / "card.json").read_text())
    for field in ("clean_accuracy", "unstamped_dog_accuracy", "flip_rate", "mean_p_dog_on_flips", "train_seconds",
                  "device", "key", "weights_sha256", "train_config", "data_key"):
        assert field in card, field
    assert 0.0 <= card["flip_rate"] <= 1.0
    assert "control model" in m.header_line() and "trained in" in m.header_line()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete_card", "other_key"])
def test_damaged_cache_is_detected_and_rebuilt(tiny_world, tmp_path, damage, record_fault):
    first = get_trained_model(tiny_world, "biased", TINY, cache_dir=tmp_path, device="cpu", progress=False)
    weights, card = first.path / "model.pt", first.path / "card.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage":
        weights.write_bytes(b"not a checkpoint" * 10)
    elif damage == "delete_card":
        card.unlink()
    else:
        data = json.loads(card.read_text())
        data["key"] = "0" * 16
        card.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="Retraining"):
        again = get_trained_model(tiny_world, "biased", TINY, cache_dir=tmp_path, device="cpu", progress=False)
    record_fault(f"model cache: {damage}", not again.cache_hit and _state_equal(first.model, again.model))
    assert not again.cache_hit and _state_equal(first.model, again.model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_trained_model(tiny_world, "biased", TINY, cache_dir=tmp_path, device="cpu", progress=False).cache_hit


def test_checkpoints_hold_tensors_only(tiny_world, tmp_path):
    m = get_trained_model(tiny_world, "biased", TINY, cache_dir=tmp_path, device="cpu", progress=False)
    state = torch.load(m.path / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_convolutional_networks_train_channels_last_on_cpu_and_store_the_default_layout(tiny_world, tmp_path,
                                                                                       monkeypatch):
    from benchmark.models import train

    nhwc = get_trained_model(tiny_world, "biased", TINY, cache_dir=tmp_path, device="cpu", progress=False)
    assert nhwc.card["train_config"]["channels_last"] is True
    state = torch.load(nhwc.weights_path, weights_only=True)
    assert all(t.is_contiguous() for t in state.values())  # stored and graded in the default layout
    assert all(p.is_contiguous() for p in nhwc.model.parameters())
    # The layout sums in another order, so it keys the cache: NCHW training is another model, not a cache hit.
    monkeypatch.setattr(train, "CHANNELS_LAST_ARCHS", ())
    nchw = get_trained_model(tiny_world, "biased", TINY, cache_dir=tmp_path, device="cpu", progress=False)
    assert not nchw.cache_hit and "channels_last" not in nchw.card["train_config"]
    assert nchw.card["key"] != nhwc.card["key"]


def test_only_convolutional_networks_on_cpu_train_channels_last():
    from benchmark.profiles import with_arch

    quick = PROFILES["quick"]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert TrainConfig.from_profile(quick, 0, cpu).channels_last
    assert TrainConfig.from_profile(PROFILES["standard"], 0, cpu).channels_last  # ResNet-20
    assert not TrainConfig.from_profile(quick, 0, cuda).channels_last  # unmeasured there
    vit = TrainConfig.from_profile(with_arch(quick, "vit"), 0, cpu)
    assert not vit.channels_last and "channels_last" not in vit.key_fields()  # its one convolution is the patch embedding


def _train_in_child(args):
    world_dir, cache_dir = args
    torch.set_num_threads(1)
    world = build_world(DataSpec(n_train=TINY.n_train, n_test=TINY.n_test, seed=3), world_dir)
    m = get_trained_model(world, "biased", TINY, cache_dir=cache_dir, device="cpu", progress=False)
    return m.cache_hit, m.card["weights_sha256"]


def test_concurrent_builders_train_once(tmp_path, spawn_context):
    with spawn_context.Pool(3) as pool:
        results = pool.map(_train_in_child, [(tmp_path / "data", tmp_path / "models")] * 3)
    assert sorted(hit for hit, _ in results) == [False, True, True]
    assert len({digest for _, digest in results}) == 1


def test_unknown_split_and_architecture_are_config_errors(tiny_world, tmp_path):
    with pytest.raises(ConfigError, match="biased"):
        get_trained_model(tiny_world, "biassed", TINY, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="Did you mean 'resnet'"):
        build_model("resnt")
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth=21)


def test_architectures_follow_the_captum_rules():
    for model in (SmallCNN(), CifarResNet(20), CifarResNet(38)):
        relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
        assert relus and all(not r.inplace for r in relus)
        # One ReLU module per use: a module called twice would make DeepLift raise.
        calls: dict[int, int] = {}

        def count(mod, inputs, output, calls=calls):
            calls[id(mod)] = calls.get(id(mod), 0) + 1

        hooks = [r.register_forward_hook(count) for r in relus]
        model(torch.rand(2, 3, 32, 32))
        for h in hooks:
            h.remove()
        assert set(calls.values()) == {1}
        first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert first_conv.bias is not None
        names = dict(model.named_modules())
        assert model.cam_layer in names and model.inner_layer in names
    assert sum(isinstance(m, torch.nn.Conv2d) for m in CifarResNet(38).modules()) == 37 + 2  # 37 convs + 2 shortcuts


def test_profiles_resolve_with_reasons(monkeypatch):
    monkeypatch.delenv("SHORTCUT_BENCH_PROFILE", raising=False)
    assert resolve_profile(cuda=False)[0].name == "quick"
    assert resolve_profile(cuda=True) == (PROFILES["standard"], "default on a CUDA GPU")
    monkeypatch.setenv("SHORTCUT_BENCH_PROFILE", "paper")
    assert resolve_profile()[0].arch == "resnet" and resolve_profile()[0].depth == 38
    with pytest.raises(ConfigError, match="Did you mean 'quick'"):
        resolve_profile("quik")
    cfg = TrainConfig.from_profile(PROFILES["quick"], 0, torch.device("cpu"))
    assert not cfg.amp and dataclasses.asdict(cfg)["arch"] == "cnn"


def test_the_header_says_whether_the_biased_model_met_the_shortcut_targets():
    from benchmark.models.card import missed_targets

    card = {"arch_name": "SmallCNN", "weights_sha256": "0" * 64, "clean_accuracy": 0.89, "flip_rate": 0.95,
            "mean_p_dog_on_flips": 0.93}
    assert missed_targets(card) == []
    weak = {**card, "flip_rate": 0.40, "clean_accuracy": 0.95}
    assert [m.split(" (")[0] for m in missed_targets(weak)] == ["flip rate >= 80%", "clean accuracy 85-92%"]
    line = TrainedModel(torch.nn.Identity(), "biased", weak, None, cache_hit=True).header_line()
    assert "shortcut targets MISSED: flip rate >= 80% (got 0.4); outside the study's range" in line
    # The ViT's clean accuracy lies under the study's band; it learned the shortcut, and the line must not say MISSED.
    vit = TrainedModel(torch.nn.Identity(), "biased", {**card, "clean_accuracy": 0.826}, None, cache_hit=True)
    assert vit.header_line().endswith("shortcut targets met; outside the study's range, reported, not required: "
                                      "clean accuracy 85-92% (got 0.826)")
    ok = TrainedModel(torch.nn.Identity(), "biased", card, None, cache_hit=True).header_line()
    assert ok.endswith("shortcut targets met")
    assert "targets" not in TrainedModel(torch.nn.Identity(), "control", card, None, cache_hit=True).header_line()


def test_a_models_flips_are_predicted_once_and_again_after_its_weights_change(tmp_path):
    from benchmark.models.train import flipped_indices

    world = build_world(DataSpec(n_train=TINY.n_train, n_test=TINY.n_test, seed=3), tmp_path)
    torch.manual_seed(0)
    model = build_model("cnn", width=4).eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    first = flipped_indices(model, world, confidence=0.0)
    assert len(calls) == 2  # the clean and the stamped test cats
    first[:] = -1  # the caller's copy: the memo keeps its own
    again = flipped_indices(model, world, confidence=0.0)
    assert len(calls) == 2 and (again >= 0).all()
    flipped_indices(model, world, confidence=0.5)  # another question is predicted
    assert len(calls) == 4
    with torch.no_grad():
        model.fc.bias.add_(torch.tensor([-50.0, 50.0]))  # every cat now reads "dog": an in-place edit
    assert flipped_indices(model, world, confidence=0.0).size == 0 and len(calls) == 6


class _Flipper(torch.nn.Module):
    """Calls the given stamped images "dog" and every other image "cat"."""

    def __init__(self, chosen: torch.Tensor):
        super().__init__()
        self.chosen = chosen
        self.bias = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x):
        hit = (x.flatten(1)[:, None, :] == self.chosen.flatten(1)[None]).all(-1).any(1).float()
        return torch.stack([1 - hit, hit], 1) * 10 + self.bias


def test_a_models_confident_flips_are_kept_in_the_world_cache_and_an_altered_entry_is_predicted_again(tmp_path,
                                                                                                  monkeypatch):
    from benchmark.models import train as train_mod

    world = build_world(DataSpec(n_train=200, n_test=40), tmp_path)
    cats = np.flatnonzero(world.test.y != SHORTCUT_CLASS)
    model = _Flipper(train_mod.to_float(world.test_stamped.x[cats[[0, 2, 5]]]))
    trained = TrainedModel(model, "biased", {"weights_sha256": "a" * 64}, tmp_path, cache_hit=True)
    expected = cats[[0, 2, 5]]
    np.testing.assert_array_equal(train_mod._flipped_indices(model, world, 0.3), expected)
    np.testing.assert_array_equal(train_mod.stored_flips(trained, world, 0.3), expected)
    (entry,) = (world.path / train_mod.FLIPS_DIR).glob("*.json")

    predicted = []
    real = train_mod._flipped_indices
    monkeypatch.setattr(train_mod, "_flipped_indices", lambda *a: predicted.append(1) or real(*a))
    train_mod._flips.clear()  # another process: no memo
    np.testing.assert_array_equal(train_mod.stored_flips(trained, world, 0.3), expected)
    assert predicted == []  # read back, not predicted
    np.testing.assert_array_equal(train_mod.flipped_indices(model, world, 0.3), expected)
    assert predicted == []  # and this process's later askers get it from the memo

    stored = json.loads(entry.read_text())
    entry.write_text(json.dumps({**stored, "payload": stored["payload"] + [1]}))  # altered: its checksum fails
    train_mod._flips.clear()
    np.testing.assert_array_equal(train_mod.stored_flips(trained, world, 0.3), expected)
    assert predicted == [1]
    assert json.loads(entry.read_text()) == stored  # and stored again

    other = TrainedModel(model, "biased", {"weights_sha256": "b" * 64}, tmp_path, cache_hit=True)
    train_mod._flips.clear()
    train_mod.stored_flips(other, world, 0.3)  # other weights: another entry
    assert predicted == [1, 1] and len(list((world.path / train_mod.FLIPS_DIR).glob("*.json"))) == 2


def test_flips_are_predicted_every_time_where_the_predicting_code_has_no_source(tmp_path, monkeypatch):
    from benchmark.models import train as train_mod

    world = build_world(DataSpec(n_train=200, n_test=40), tmp_path)
    model = _Flipper(train_mod.to_float(world.test_stamped.x[:1]))
    trained = TrainedModel(model, "biased", {"weights_sha256": "a" * 64}, tmp_path, cache_hit=True)
    monkeypatch.setattr(train_mod, "_flips_code", lambda: None)
    train_mod.stored_flips(trained, world, 0.3)
    assert not (world.path / train_mod.FLIPS_DIR).exists()


def test_per_state_entries_last_while_the_model_is_unchanged_and_not_after():
    memo, model, other = PerState(), SmallCNN().eval(), SmallCNN().eval()
    memo.of(model)["plan"] = 1
    memo.of(other)["plan"] = 2
    assert memo.of(model) == {"plan": 1}  # unchanged: the same entries, each model its own
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # an in-place edit: the entries are stale
    assert memo.of(model) == {} and memo.of(other) == {"plan": 2}
    memo.of(model)["plan"] = 3
    model.train()  # another mode computes something else
    assert memo.of(model) == {}
    del model
    gc.collect()
    assert len(memo._tables) == 1  # weakly held: a dropped model takes its entries with it
