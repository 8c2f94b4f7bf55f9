"""The newcomer path: a world that does not learn the shortcut stops before grading, session hooks never end in a
traceback, and the training budget is counted in optimiser steps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmark.options import BenchOptions

# The default mark at 2% opacity: the quick model does not learn it (flip rate ~0, tests/test_sweep.py).
FAINT = "0.04@0.02"


def _pytest(run_child, *args: str, cache: Path, reports: Path) -> subprocess.CompletedProcess:
    return run_child.pytest(*args, "-q", "--bench-profile", "quick", "--bench-cache-dir", cache, "--bench-reports-dir",
                            reports)


def test_a_world_that_does_not_learn_the_shortcut_stops_before_grading(quick_cache, tmp_path, run_child):
    proc = _pytest(run_child, "suites/", "--bench-mark", FAINT, cache=quick_cache, reports=tmp_path / "reports")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4 and "Traceback" not in out and "INTERNALERROR" not in out, out[-3000:]
    line = next(ln for ln in out.splitlines() if "stopped before grading" in ln)
    assert "did not learn the watermark shortcut" in line and "flip rate >= 80% (got" in line
    assert "Try more images per class" in line and "--bench-mark" in line
    assert not (tmp_path / "reports").exists()  # nothing half-written
    # It stopped right after the biased model: the control and absent arms of that world were never trained.
    cards = [json.loads(p.read_text()) for p in (quick_cache / "models").glob("*/card.json")]
    faint = {c["data_key"] for c in cards if c["split"] == "biased" and c.get("flip_rate", 1.0) < 0.5}
    assert faint and not [c for c in cards if c.get("data_key") in faint and c["split"] != "biased"]
    # The build command stops the same way, with one line and exit 2.
    build = run_child.bench("build", "--profile", "quick", "--mark", FAINT, "--cache-dir", quick_cache, timeout=900)
    assert build.returncode == 2 and "Traceback" not in build.stderr, build.stderr[-2000:]
    assert "error: the biased model (training seed 0) did not learn the watermark shortcut" in build.stderr


def test_no_session_hook_ends_in_a_traceback(quick_cache, tmp_path, run_child):
    # Every selected method is n/a for the selected property: one line, no report.
    na = _pytest(run_child, "suites/test_randomisation.py", "--bench-methods", "Oracle", cache=quick_cache,
                 reports=tmp_path / "na")
    out = na.stdout + na.stderr
    assert na.returncode == 0 and "Traceback" not in out and "INTERNALERROR" not in out, out[-3000:]
    assert "no cell was graded: Oracle is n/a for every selected property" in out
    assert not (tmp_path / "na").exists()
    # Only controls: the reports are written, and say in one line that they rank no real method.
    ctl = _pytest(run_child, "suites/test_watermark_localisation.py", "--bench-methods", "Random,Sobel", cache=quick_cache,
                  reports=tmp_path / "ctl")
    out = ctl.stdout + ctl.stderr
    assert ctl.returncode == 1 and "Traceback" not in out and "INTERNALERROR" not in out, out[-3000:]
    assert "only controls were graded (Random, Sobel)" in out and (tmp_path / "ctl" / "index.html").is_file()


def test_an_interrupted_grid_writes_no_reports(tmp_path):
    from benchmark.grading.verdict import PASS, Cell
    from benchmark.profiles import PROFILES
    from benchmark.running.collector import CellCollector
    from benchmark.running.run_context import RUN_KEY, RunContext

    ctx = RunContext(profile=PROFILES["quick"], profile_reason="", options=BenchOptions(),
                     compare=SimpleNamespace(checks={}))
    config = SimpleNamespace(stash={RUN_KEY: ctx}, rootpath=tmp_path, option=SimpleNamespace(numprocesses=0),
                             getoption=lambda name: str(tmp_path / "r") if name == "--bench-reports-dir" else None)
    collector = CellCollector(config)
    collector.cells = {"t": Cell("watermark_localisation", "1", "localisation", "AUC", "Saliency", "higher", None,
                                 PASS, "Saliency × AUC: ...")}
    collector.pytest_sessionfinish(None, pytest.ExitCode.INTERRUPTED)
    assert not (tmp_path / "r").exists()
    assert collector.written_note == "shortcut-bench: the run was interrupted: reports not written (run it again)"


def test_the_training_budget_counts_optimiser_steps():
    from benchmark.models.train import augmented, epochs_for
    from benchmark.profiles import PROFILES

    quick = PROFILES["quick"]
    # The procedural world trains exactly as before (6 epochs, 282 steps, no augmentation) ...
    assert epochs_for(quick, quick.n_train) == quick.epochs and not augmented(quick, quick.n_train)
    # ... and a 600-photo folder reaches the same step budget with flips instead of 30 steps.
    assert epochs_for(quick, 600) == 57 and augmented(quick, 600)
    assert epochs_for(quick, 600) * 5 >= quick.min_steps


def test_the_heartbeat_speaks_only_after_a_quiet_spell():
    import io
    import time

    from benchmark.running.progress import Heartbeat

    stream = io.StringIO()
    beat = Heartbeat(stream, 10, quiet_s=1.0, poll_s=0.02).start()
    for _ in range(5):  # tests finishing well within the quiet spell: nothing to say
        time.sleep(0.05)
        beat.tick()
    assert stream.getvalue() == ""
    time.sleep(1.6)
    beat.stop()
    assert "shortcut-bench: still grading, 5 of 10 tests done" in stream.getvalue()
