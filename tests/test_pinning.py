"""Pinned model weights beside a baseline: written exactly, verified before use, refused with the fix."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from benchmark import pinning
from benchmark.cache import file_sha256
from benchmark.models.arch import build_model


def _save(path, arch="cnn", seed=0, depth=0, width=4):
    torch.manual_seed(seed)
    torch.save(build_model(arch, depth=depth or 20, width=width).state_dict(), path)
    return {"file": str(path), "sha256": file_sha256(path), "arch": arch, "depth": depth, "width": width,
            "card": {"split": path.stem}}


@pytest.fixture
def pinned(tmp_path):
    """A baseline path with biased and control CNNs pinned beside it (the entries as the baseline stores them)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    weights = {"biased": _save(cache / "biased.pt", seed=0), "control": _save(cache / "control.pt", seed=1)}
    path = tmp_path / "reports" / "baseline.json"
    models = pinning.pin_models(path, weights)
    path.write_text(json.dumps({"models": models}))
    return path, {"models": models}, weights


def test_pinned_weights_round_trip_bit_for_bit(pinned):
    path, baseline, weights = pinned
    folder = pinning.models_dir(path)
    assert folder == path.parent / "baseline-models"
    assert sorted(p.name for p in folder.iterdir()) == [f"biased-{weights['biased']['sha256'][:12]}.pt",
                                                       f"control-{weights['control']['sha256'][:12]}.pt"]
    loaded = pinning.load_pinned(baseline, path, {"biased": "cnn", "control": "cnn"})
    for name in ("biased", "control"):
        model, card, file = loaded.models[name]
        ref = torch.load(weights[name]["file"], weights_only=True)
        assert all(torch.equal(ref[k], v) for k, v in model.state_dict().items())
        assert card["weights_sha256"] == weights[name]["sha256"] and file_sha256(file) == card["weights_sha256"]
    assert sum(m["bytes"] for m in baseline["models"].values()) == sum(f.stat().st_size for f in folder.iterdir())


def test_unreferenced_weights_are_removed_after_an_update(pinned, tmp_path):
    path, baseline, weights = pinned
    new = {**weights, "biased": _save(tmp_path / "cache" / "biased2.pt", seed=5)}
    models = pinning.pin_models(path, new)
    assert len(list(pinning.models_dir(path).glob("biased-*.pt"))) == 2  # the old baseline stays valid until replaced
    pinning.remove_unpinned(path, models)
    assert [p.name for p in pinning.models_dir(path).glob("biased-*.pt")] == [f"biased-{new['biased']['sha256'][:12]}.pt"]


@pytest.mark.parametrize(("damage", "message"), [
    ("missing", "which is missing"),
    ("altered", "the file was altered or replaced"),
    ("unloadable", "not a plain weights checkpoint"),
    ("other-architecture", "does not fit the cnn architecture"),
    ("other-profile", "this run's profile grades a resnet"),
    ("no-models", "pins no biased and control models"),
])
def test_bad_pinned_weights_are_refused_with_the_fix(pinned, damage, message, record_bad_input):
    path, baseline, _ = pinned
    file = path.parent / baseline["models"]["biased"]["file"]
    archs = {"biased": "cnn", "control": "cnn"}
    if damage == "missing":
        file.unlink()
    elif damage == "altered":
        data = bytearray(file.read_bytes())
        data[-64] ^= 0xFF
        file.write_bytes(bytes(data))
    elif damage == "unloadable":
        # A checkpoint that would run code when unpickled: weights_only=True must refuse it, never execute it.
        file.write_bytes(pickle.dumps(print))
        baseline["models"]["biased"]["sha256"] = file_sha256(file)
    elif damage == "other-architecture":
        torch.save(build_model("resnet", depth=20, width=4).state_dict(), file)
        baseline["models"]["biased"]["sha256"] = file_sha256(file)
    elif damage == "other-profile":
        archs = {"biased": "resnet", "control": "resnet"}
    elif damage == "no-models":
        baseline = {}
    with pytest.raises(pinning.PinnedModelError) as exc:
        pinning.load_pinned(baseline, path, archs)
    text = str(exc.value)
    clear = message in text and ("git checkout" in text or "--bench-update-baseline" in text)
    record_bad_input(f"pinned weights: {damage}", clear)
    assert clear, text


def test_pinning_refuses_weights_that_changed_since_the_run(pinned, tmp_path):
    path, _, weights = pinned
    _save(tmp_path / "cache" / "biased.pt", seed=9)  # the cache entry was rebuilt with other weights
    with pytest.raises(pinning.PinnedModelError, match="no longer holds the weights the run graded"):
        pinning.pin_models(path, weights)
