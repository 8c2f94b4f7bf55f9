"""Compare mode, shards and the HTML report end to end: `pytest suites/` in subprocesses on the quick world."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from benchmark.grading.properties import PROPERTIES

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "regression_methods.py"
METHODS = "Saliency,Random,Sobel,Oracle"
# The cheap suite (no re-explaining metrics) plus the method contract, so cells and checks are both covered.
SUITES = ["suites/test_watermark_localisation.py", "suites/test_method_contract.py"]


def run(run_child, cache: Path, reports: Path, *extra: str, methods: str = METHODS, env_extra: dict | None = None,
        suites=SUITES) -> subprocess.CompletedProcess:
    env = {"SHORTCUT_BENCH_METHODS": str(FIXTURE), "SHORTCUT_BENCH_PROFILE": "quick", **(env_extra or {})}
    return run_child.pytest(*suites, "-q", "--bench-cache-dir", cache, "--bench-reports-dir", reports,
                            "--bench-methods", methods, *extra, env=env, unset=["SHORTCUT_BENCH_BREAK"])


def _out(proc) -> str:
    return proc.stdout[-6000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def recorded(quick_cache, tmp_path_factory, run_child):
    """A baseline written by the suites (--bench-update-baseline) and the run's reports folder."""
    root = tmp_path_factory.mktemp("compare")
    proc = run(run_child, quick_cache, root / "base", "--bench-update-baseline", str(root / "baseline.json"))
    # Without --bench-compare the exit status is pytest's own: the controls' FAIL cells fail their tests.
    assert proc.returncode == 1, _out(proc)
    assert "baseline updated" in proc.stdout, _out(proc)
    return root, json.loads((root / "baseline.json").read_text())


def test_baseline_is_compact_and_covers_cells_and_checks(recorded):
    _, base = recorded
    assert base["kind"] == "shortcut-bench baseline" and base["profile"] == "quick" and base["seed"] == 0
    assert base["cells"]["watermark_localisation::AUC::Oracle"]["outcome"] == "PASS"
    assert base["cells"]["watermark_localisation::AUC::Random"]["outcome"] == "FAIL"
    n_metrics = len(PROPERTIES["watermark_localisation"].metrics)
    # 4 methods × (biased, control) × 3 architectures (the ViT's checks are recorded as skipped on a CNN profile)
    assert len(base["cells"]) == n_metrics * 4 and len(base["checks"]) == 4 * 2 * 3
    assert sum(v == "skipped" for v in base["checks"].values()) == 4 * 2  # the ViT's: not covered by quick's contract
    # Per-sample scores, paired by the graded images' test-set ids, per training seed (the profile's default seeds).
    # Localisation reads only the maps, so it grades each seed's share of the map-only budget; the others less.
    from benchmark.profiles import PROFILES

    seeds = [str(s) for s in range(PROFILES["quick"].model_seeds)]
    assert base["model_seeds"] == [int(s) for s in seeds] and sorted(base["samples"]) == seeds
    per_seed = sum(len(ids) for ids in base["samples"].values())
    assert all(len(ids) > 4 for ids in base["samples"].values())
    assert all(len(c["scores"]) == per_seed for c in base["cells"].values() if c["outcome"] in ("PASS", "FAIL"))
    # Every model the grid used is pinned beside the baseline, with its sha256 and card: every seed's arms.
    root = recorded[0]
    arms = {"biased", "control", "absent"}
    assert set(base["models"]) == arms | {f"{a}-seed{s}" for a in arms for s in seeds[1:]} | {
        "contract-resnet-biased", "contract-resnet-control"}
    from benchmark.cache import file_sha256

    for m in base["models"].values():
        assert file_sha256(root / m["file"]) == m["sha256"] and m["card"]["weights_sha256"] == m["sha256"]
    assert base["machine"]["cpu"] and base["machine"]["torch"]


def test_new_method_is_listed_as_new_and_an_improvement_exits_0(recorded, quick_cache, run_child):
    root, base = recorded
    # Pretend the baseline recorded a failure, 0.3 lower on every image, where Saliency now passes: a strict XPASS,
    # an improvement the paired change supports.
    edited = json.loads(json.dumps(base))
    auc = edited["cells"]["watermark_localisation::AUC::Saliency"]
    auc.update(outcome="FAIL", scores=[v - 0.3 for v in auc["scores"]])
    # A verdict that moved on the same scores (a threshold on the edge) is borderline: listed, not failing.
    edited["cells"]["watermark_localisation::RelevanceRankAccuracy::Oracle"]["outcome"] = "FAIL"
    (root / "edited.json").write_text(json.dumps(edited))
    proc = run(run_child, quick_cache, root / "new", "--bench-compare", str(root / "edited.json"),
               methods=METHODS + ",ThrowAwayGradient")
    out = _out(proc)
    assert proc.returncode == 0, out
    n_metrics = len(PROPERTIES["watermark_localisation"].metrics)
    assert f"NEW  method ThrowAwayGradient: {n_metrics} cell(s)" in proc.stdout, out
    assert "IMPROVED  watermark_localisation::AUC::Saliency: FAIL" in proc.stdout, out
    assert re.search(r"BORDERLINE  watermark_localisation::RelevanceRankAccuracy::Oracle: FAIL [0-9.]+ → PASS "
                     r"[0-9.]+ \(borderline: verdict moved within tolerance", proc.stdout), out
    assert "XPASS" in out and "xfailed" in out  # the baseline's failing controls are expected failures
    report = json.loads((root / "new" / "compare.json").read_text())
    assert report["regressed"] is False and report["counts"]["improved"] == 1 and report["counts"]["borderline"] == 1
    assert report["counts"]["new"] == n_metrics + 6  # its localisation cells and 6 contract checks (2 per architecture)
    assert "ThrowAwayGradient" in (root / "new" / "compare.md").read_text()


def test_broken_method_exits_nonzero_naming_the_cell(recorded, quick_cache, run_child):
    root, _ = recorded
    proc = run(run_child, quick_cache, root / "broken", "--bench-compare", str(root / "baseline.json"),
               env_extra={"SHORTCUT_BENCH_BREAK": "Saliency"})
    out = _out(proc)
    assert proc.returncode == 1, out
    # The compare section precedes pytest's short summary, which can push it out of the tail shown on failure.
    # The verdict may already be FAIL in the baseline: the paired score change is what regresses.
    assert re.search(r"REGRESSED  watermark_localisation::\w+::Saliency: (PASS|FAIL) [0-9.]+ → FAIL", proc.stdout), out
    assert "REGRESSED: exit status 1" in proc.stdout, out
    report = json.loads((root / "broken" / "compare.json").read_text())
    assert report["regressed"] is True
    assert all("Saliency" in c["key"] for c in report["changes"] if c["status"] == "regressed")


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "No baseline at"),
    ("malformed", "is not valid JSON"),
    ("other-profile", "this run is profile 'standard'"),
    ("altered-weights", "the file was altered or replaced"),
    ("missing-weights", "which is missing"),
    ("older-baseline", "pins no absent model, which this run grades"),
])
def test_unusable_baselines_are_usage_errors_and_nothing_is_overwritten(recorded, quick_cache, tmp_path, setup,
                                                                        message, run_child):
    root, base = recorded
    import shutil

    path = tmp_path / "baseline.json"
    if setup == "malformed":
        path.write_text("{oops")
    elif setup == "other-profile":
        path.write_text(json.dumps(base))
    elif setup == "older-baseline":  # recorded before the absent arm existed
        older = json.loads(json.dumps(base))
        del older["models"]["absent"]
        path.write_text(json.dumps(older))
        shutil.copytree(root / "baseline-models", tmp_path / "baseline-models")
    elif setup.endswith("weights"):
        path.write_text(json.dumps(base))
        shutil.copytree(root / "baseline-models", tmp_path / "baseline-models")
        weights = tmp_path / base["models"]["biased"]["file"]
        if setup == "missing-weights":
            weights.unlink()
        else:
            data = bytearray(weights.read_bytes())
            data[-64] ^= 0xFF
            weights.write_bytes(bytes(data))
    before = path.read_bytes() if path.exists() else None
    extra = ["--bench-profile", "standard"] if setup == "other-profile" else []
    # No --collect-only: a usable baseline would grade; this one must stop before anything is built or written.
    proc = run(run_child, quick_cache, tmp_path / "reports", "--bench-compare", str(path), "--bench-update-baseline", *extra)
    assert proc.returncode == 2, _out(proc)
    assert message in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert (path.read_bytes() if path.exists() else None) == before
    assert not (tmp_path / "reports").exists()


ARITHMETIC_METHODS = "Saliency,GradCAM,IntegratedGradients,Random,Sobel,Oracle"


def test_the_same_models_graded_with_other_float_arithmetic_report_no_regression(quick_cache, quick_bench, tmp_path,
                                                                                run_child):
    """Every suite, baseline written with channels-last models, compared with the standard memory format: other
    oneDNN kernels, other float rounding, as on another machine. Compared on the pinned models from a cache with no
    models at all, so a retrained model would show as a models/ folder."""
    import shutil

    suites = ["suites/"]
    first = run(run_child, quick_cache, tmp_path / "first", "--bench-update-baseline", str(tmp_path / "baseline.json"),
                "--bench-channels-last", "on", methods=ARITHMETIC_METHODS, suites=suites)
    assert "baseline updated" in first.stdout, _out(first)
    empty = tmp_path / "no-models"
    # The quick world's data alone: under xdist another worker may be building other worlds in datasets/ meanwhile.
    world = quick_bench.world.path
    shutil.copytree(world, empty / "datasets" / world.name)
    second = run(run_child, empty, tmp_path / "second", "--bench-compare", str(tmp_path / "baseline.json"),
                 "--bench-channels-last", "off", methods=ARITHMETIC_METHODS, suites=suites)
    out = _out(second)
    assert second.returncode == 0, out
    assert not (empty / "models").exists(), "compare mode trained or cached a model instead of loading the pinned ones"
    report = json.loads((tmp_path / "second" / "compare.json").read_text())
    assert report["regressed"] is False and report["counts"]["regressed"] == 0, out
    run_record = json.loads((tmp_path / "second" / "run.json").read_text())
    graded = len(run_record["cells"]) + len(run_record["checks"])
    assert report["counts"]["unchanged"] + report["counts"]["borderline"] == graded, report
    pinned = json.loads((tmp_path / "baseline.json").read_text())["models"]
    assert {k: w["sha256"] for k, w in run_record["run"]["weights"].items()} == {k: m["sha256"] for k, m in pinned.items()}
    assert all(w["pinned_by"] for w in run_record["run"]["weights"].values())
    # The arithmetic really differed: some per-sample score moved (else this test would prove nothing).
    base_cells = json.loads((tmp_path / "baseline.json").read_text())["cells"]
    moved = [c for c in run_record["cells"] if c["scores"]
             and c["scores"] != base_cells[f"{c['suite']}::{c['metric']}::{c['method']}"]["scores"]]
    assert moved
    # ... and every verdict is the same under both arithmetics.
    outcomes = [{(c["suite"], c["metric"], c["method"]): c["outcome"]
                 for c in json.loads((tmp_path / d / "run.json").read_text())["cells"]} for d in ("first", "second")]
    assert outcomes[0] == outcomes[1]


def test_report_command_rebuilds_html_byte_identical_and_it_renders(recorded, tmp_path, chromium, run_child):
    root, _ = recorded
    reports = root / "base"
    out = tmp_path / "rebuilt"
    proc = run_child.bench("report", reports / "run.json", "--out", out)
    assert proc.returncode == 0, proc.stderr
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "index.html"):
        assert (out / name).read_bytes() == (reports / name).read_bytes(), name
    dom, console = chromium(reports / "index.html")
    assert console == [], console
    assert 'data-ready="1"' in dom and 'data-images-loaded="1"' in dom
    for method in METHODS.split(","):
        assert f"<td>{method}</td>" in dom, method


def test_shards_merge_into_the_unsharded_leaderboard(recorded, quick_cache, tmp_path, run_child):
    root, _ = recorded
    records = []
    for i in (1, 2):
        proc = run(run_child, quick_cache, tmp_path / f"shard{i}", "--bench-shard", f"{i}/2",
                   suites=["suites/test_watermark_localisation.py"])
        assert proc.returncode == 1, _out(proc)  # each shard holds a control whose cells FAIL
        records.append(str(tmp_path / f"shard{i}" / "run.json"))
    methods = [{c["method"] for c in json.loads(Path(r).read_text())["cells"]} for r in records]
    assert methods[0] and methods[1] and not methods[0] & methods[1]
    proc = run_child.bench("merge", *records, "--out", tmp_path / "merged")
    assert proc.returncode == 0, proc.stderr
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert (tmp_path / "merged" / name).read_bytes() == (root / "base" / name).read_bytes(), name
    assert (tmp_path / "merged" / "index.html").exists()
