"""`pytest suites/ --bench-arch vit` end to end: the ViT trains, transformer methods grade, CNN-only methods are N/A
with their reason, the contract covers the ViT, and the CNN's and ViT's reports show each other."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmark.models.train import arch_name
from benchmark.profiles import VIT_SHAPE

VIT_NAME = arch_name("vit", *VIT_SHAPE)  # the card's architecture name

METHODS = "AttentionRollout,GradAttentionRollout,ConservativeLRP,LRPEpsilon,GradCAM,Saliency,Random,Oracle"
SUITES = ["suites/test_watermark_localisation.py", "suites/test_randomisation.py", "suites/test_method_contract.py"]


@pytest.fixture(scope="module")
def runs(quick_cache, tmp_path_factory, run_child):
    root = tmp_path_factory.mktemp("arch-reports")
    out = {}
    for arch, reports in (("vit", root / "reports" / "vit"), ("cnn", root / "reports")):
        proc = run_child.pytest(*SUITES, "-q", "-rA", "--bench-cache-dir", quick_cache, "--bench-reports-dir", reports,
                                "--bench-methods", METHODS, "--bench-model-seeds", "1",
                                *(["--bench-arch", arch] if arch == "vit" else []),
                                env={"SHORTCUT_BENCH_PROFILE": "quick"})
        # FAIL cells fail their tests (exit 1); anything else (usage error, internal error) is harness breakage.
        assert proc.returncode in (0, 1), proc.stdout[-4000:] + proc.stderr[-4000:]
        out[arch] = (proc, reports)
    return out


def _board(reports: Path) -> dict:
    return json.loads((reports / "leaderboard.json").read_text())


def test_the_vit_learns_the_shortcut_and_its_run_says_so(runs):
    proc, reports = runs["vit"]
    run = json.loads((reports / "run.json").read_text())["run"]
    assert run["profile"]["arch"] == "vit"
    card = run["models"]["biased"]
    assert card["arch_name"] == VIT_NAME and card["flip_rate"] >= 0.8 and card["mean_p_dog_on_flips"] >= 0.9
    assert run["models"]["control"]["flip_rate"] <= 0.1
    assert proc.returncode in (0, 1)


def test_transformer_methods_grade_and_captum_lrp_is_na_with_its_reason(runs):
    cells = _board(runs["vit"][1])["cells"]
    by = {}
    for c in cells:
        by.setdefault(c["method"], set()).add(c["outcome"])
    assert "ERROR" not in set().union(*by.values()), [c for c in cells if c["outcome"] == "ERROR"]
    for m in ("AttentionRollout", "GradAttentionRollout", "ConservativeLRP"):
        assert by[m] - {"N/A"}, f"{m} was not graded on the ViT"
    assert by["LRPEpsilon"] == {"N/A"}
    record = json.loads((runs["vit"][1] / "run.json").read_text())
    assert all("Captum's LRP has no rule for LayerNorm" in c["message"].replace("AttentionProbe, ", "")
               for c in record["cells"] if c["method"] == "LRPEpsilon")
    cnn = _board(runs["cnn"][1])["cells"]
    assert {c["outcome"] for c in cnn if c["method"] == "AttentionRollout"} == {"N/A"}


def test_the_contract_covers_the_vit(runs):
    out = runs["vit"][0].stdout
    for m in ("AttentionRollout", "GradAttentionRollout", "ConservativeLRP", "Saliency"):
        assert re.search(rf"PASSED suites/test_method_contract\.py::\S*{m}\S*vit", out), f"{m}'s contract on the ViT"
    assert re.search(r"SKIPPED .*Captum's LRP has no rule for", out)  # N/A, said, not silently missing
    assert "violates the method contract" not in out


def test_each_architecture_report_shows_the_other(runs):
    for arch, other in (("cnn", VIT_NAME), ("vit", "SmallCNN-16")):
        reports = runs[arch][1]
        assert "## Architectures" in (reports / "leaderboard.md").read_text()
        assert other in (reports / "index.html").read_text()
        assert _board(reports)["architectures"][0]["rows"]


def test_the_pinned_vit_baseline_compares_with_no_regression(quick_cache, tmp_path, run_child):
    # The committed ViT baseline pins its twelve models: compare mode trains nothing and must find the same cells.
    root = Path(__file__).resolve().parents[1]
    proc = run_child.pytest("suites/test_watermark_localisation.py", "suites/test_randomisation.py", "-q",
                            "--bench-arch", "vit", "--bench-compare", root / "reports" / "baseline-vit.json",
                            "--bench-cache-dir", quick_cache, "--bench-reports-dir", tmp_path,
                            "--bench-methods", "AttentionRollout,GradAttentionRollout,Saliency,GradCAM",
                            env={"SHORTCUT_BENCH_PROFILE": "quick"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "graded on the 12 models the baseline pins (no training)" in proc.stdout
    assert re.search(r"compare: .*\b0 regressed|no regressions", proc.stdout), proc.stdout[-2000:]
