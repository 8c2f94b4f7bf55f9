"""Real photographs end to end: a folder of scikit-image's sample photos (cropped, mirrored, resized to JPEGs) loads,
is stamped, teaches the quick biased model the shortcut, and grades a one-method grid."""

from __future__ import annotations

import json

import numpy as np

PER_CLASS = 300  # photos per class in the real_photo_folder fixture (tests/conftest.py)


def test_the_folder_loader_reads_real_photos(real_photo_folder):
    from benchmark.data.folders import load_image_folder

    x, y, paths = load_image_folder(real_photo_folder, 32)
    assert x.shape == (2 * PER_CLASS, 3, 32, 32) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [PER_CLASS, PER_CLASS] and all(p.suffix == ".jpg" for p in paths)
    assert x.std() > 20  # photographs, not flat colour


def test_real_photos_learn_the_shortcut_and_grade_one_method(real_photo_folder, tmp_path, run_child):
    # About 2 minutes on 2 cores: the quick profile trains 57 epochs (its 282-step budget) with flips on 510 photos.
    # One training seed: this is about photographs loading, teaching the shortcut and grading; the profile's four
    # seeds (pooled as tests/test_model_seeds.py checks) would train twelve such models, about 9 minutes here.
    proc = run_child.pytest(
        "suites/test_watermark_localisation.py", "-q", "--bench-profile", "quick", "--bench-data", "folder",
        "--bench-data-root", real_photo_folder, "--bench-methods", "Saliency", "--bench-cache-dir", tmp_path / "cache",
        "--bench-reports-dir", tmp_path / "reports", "--bench-model-seeds", "1")
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1) and "Traceback" not in out and "INTERNALERROR" not in out, out[-3000:]
    run = json.loads((tmp_path / "reports" / "run.json").read_text())
    data = run["run"]["data"]
    assert data["counts"]["train"] == {"cat": 255, "dog": 255} and data["counts"]["test"] == {"cat": 45, "dog": 45}
    # The watermark is stamped: on ~60% of training dogs and no cat (biased), on every stamped test image.
    assert data["stamp_rates"]["train_biased"]["cat"] == 0.0 and data["stamp_rates"]["train_biased"]["dog"] == 0.6
    assert data["watermark"]["footprint_fraction"] <= 0.04
    biased = run["run"]["models"]["biased"]
    assert biased["flip_rate"] >= 0.8 and biased["mean_p_dog_on_flips"] >= 0.9, biased
    assert biased["augment"] == "random left-right flips" and biased["optimiser_steps"] >= 282
    cells = [c for c in run["cells"] if c["method"] == "Saliency"]
    assert len(cells) == 4 and all(c["outcome"] in ("PASS", "FAIL", "INCONCLUSIVE") for c in cells), [c["message"] for c in cells]
