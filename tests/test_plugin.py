"""Bad options fail fast with a clear message, exit status 4, and nothing built or written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def _pytest(run_child, tmp_path: Path, *args: str, collect_only: bool = True) -> subprocess.CompletedProcess:
    return run_child.pytest("suites/test_randomisation.py", "-q", "--bench-cache-dir", tmp_path / "cache",
                            "--bench-reports-dir", tmp_path / "reports", *(["--collect-only"] if collect_only else []),
                            *args, unset=["SHORTCUT_BENCH_PROFILE"], timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bench-profile", "quik"], "Unknown profile 'quik'; choose one of ['paper', 'quick', 'standard']. Did you mean 'quick'?"),
        (["--bench-threshold", "AUC=1.5"], "Threshold 1.5 for AUC is invalid: give a finite number in [0.0, 1.0]"),
        (["--bench-threshold", "AUCC=0.5"], "unknown metric 'AUCC'"),
        (["--bench-threshold", "AUC"], "'AUC' is not METRIC=VALUE"),
        (["--bench-threshold", "MPRT=nan"], "Threshold nan for MPRT is invalid"),
        (["--bench-threshold", "AUC=high"], "threshold for AUC must be a number, got 'high'"),
        (["--bench-methods", "Saliency,IntegratedGradient"], "Did you mean 'IntegratedGradients'?"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, message, record_bad_input, run_child):
    proc = _pytest(run_child, tmp_path, *args)
    record_bad_input(" ".join(args), proc.returncode == 4 and message in proc.stderr and not (tmp_path / "cache").exists()
                     and not (tmp_path / "reports").exists())
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "reports").exists()


def test_bad_data_folder_names_the_problem(tmp_path, record_bad_input, run_child):
    proc = _pytest(run_child, tmp_path, "--bench-data", "kaggle", "--bench-data-root", str(tmp_path / "missing"),
                   collect_only=False)
    out = proc.stdout + proc.stderr
    record_bad_input("data folder: missing", proc.returncode != 0 and str(tmp_path / "missing") in out
                     and not (tmp_path / "reports").exists())
    assert proc.returncode != 0
    assert "shortcut-bench could not prepare its data/models" in out and str(tmp_path / "missing") in out
    assert not (tmp_path / "reports").exists()


def test_threshold_override_reaches_the_verdict(tmp_path):
    from benchmark.running.configure import parse_thresholds

    assert parse_thresholds(["AUC=0.8", "MPRT=0.3"]) == {"watermark_localisation": {"AUC": 0.8},
                                                           "randomisation": {"MPRT": 0.3}}
