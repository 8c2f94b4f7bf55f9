"""The Ray executor: same leaderboard bytes as a run in one process, and no cell lost when a worker dies."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.running.ray_grid import CellJob, parse_executor

ray = pytest.importorskip("ray", reason="Ray is in the dev extra: pip install -e '.[dev]'")

SMALL_GRID = "Saliency,GradCAM,Random,Sobel,Oracle"

CRASHER = '''
import os
from benchmark.methods import register
from benchmark.methods.base import AttributionMethod, Capabilities


@register
class WorkerKillerForRayTest(AttributionMethod):
    """Ends the process that explains with it (a worker lost on every attempt)."""

    name = "WorkerKillerForRayTest"
    family = "control"
    capabilities = Capabilities(control=True, model_independent=True)

    def attribute(self, model, inputs, target, params, **context):
        os._exit(3)
'''


def test_executor_option_is_parsed_and_checked():
    assert parse_executor(None) is None and parse_executor("in-process") is None
    assert [parse_executor(t) for t in ("ray", "auto", "ray://head:10001", "10.0.0.2:6379")] == [
        "ray", "auto", "ray://head:10001", "10.0.0.2:6379"]
    with pytest.raises(BenchmarkError, match="ray://HOST:PORT"):
        parse_executor("dask")


def test_executor_with_xdist_is_a_usage_error(tmp_path, run_child):
    proc = run_child.pytest("suites/", "-q", "-n", "2", "--bench-executor", "ray", "--bench-cache-dir", tmp_path,
                            timeout=300)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "drop -n" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unreachable_cluster_is_a_one_line_usage_error(quick_cache, run_child):
    proc = run_child.pytest("suites/", "-q", "--bench-cache-dir", quick_cache, "--bench-methods", "Saliency",
                            "--bench-executor", "127.0.0.1:1", timeout=300)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no Ray cluster answers at 127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr


def test_ray_leaderboards_are_byte_identical_to_in_process(quick_cache, tmp_path, run_child, starts_ray):
    """A local Ray of this machine's CPUs (2 in CI) against the default executor, same seed, same small grid."""
    outs, tallies = {}, {}
    for executor in ("ray", "in-process"):
        out = tmp_path / executor
        proc = run_child.pytest(
            "suites/", "-q", "-rA", "--bench-cache-dir", quick_cache, "--bench-reports-dir", out, "--bench-methods",
            SMALL_GRID, "--bench-executor", executor, "-k", "localisation or randomisation or faithfulness or contract",
            timeout=900)
        assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # FAIL cells fail tests
        outs[executor] = out
        # Every test's outcome, the contract's included (-rA lists them; durations differ, so no summary line).
        tallies[executor] = sorted(line for line in proc.stdout.splitlines()
                                   if line.startswith(("PASSED ", "FAILED ", "SKIPPED ", "ERROR ")))
        if executor == "ray":
            assert "local Ray" in proc.stdout and "cells done" in proc.stdout, proc.stdout[-3000:]
    assert any("test_contract[" in line for line in tallies["ray"]), tallies["ray"][:5]
    assert tallies["ray"] == tallies["in-process"]
    # The figure too: Ray's workers hand over the maps they graded, as an in-process run draws its own.
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "flipped_examples.png"):
        assert (outs["ray"] / name).read_bytes() == (outs["in-process"] / name).read_bytes(), name


def test_the_sweep_on_ray_reports_what_it_reports_in_process(quick_cache, tmp_path, run_child, starts_ray):
    """-m sweep on a local Ray: a learned level graded by the workers, a faint one excluded; same report bytes."""
    from benchmark.grading.properties import LOCALISATION

    results = {}
    for executor in ("ray", "in-process"):
        out = tmp_path / executor
        proc = run_child.pytest(
            "suites/", "-m", "sweep", "-q", "--bench-cache-dir", quick_cache, "--bench-reports-dir", out,
            "--bench-methods", "Oracle,Random,Saliency", "--bench-sweep-levels", "0.04,0.04@0.02", "--bench-executor",
            executor, timeout=1200)
        assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # Random fails: a real verdict
        if executor == "ray":
            # Only the learned level's cells go to the workers (3 methods x localisation's metrics).
            graded = f"Ray graded {3 * len(LOCALISATION.metrics)} cells"
            assert graded in proc.stdout and "excluded" in proc.stdout, proc.stdout[-3000:]
        results[executor] = ((out / "sweep.md").read_bytes(), json.loads((out / "sweep.json").read_text()))
    (md_ray, ray_json), (md_local, local_json) = results["ray"], results["in-process"]
    assert md_ray == md_local
    for key in ("levels", "methods", "detection_limits"):
        assert ray_json[key] == local_json[key], key
    assert ray_json["detection_limits"]["Oracle"] == "4%" and ray_json["run"]["executor"] == "ray"


def test_a_ray_workers_fallback_to_plain_inference_reaches_the_run_record(quick_cache, tmp_path, run_child,
                                                                           starts_ray):
    # A methods file every process imports (the controller and each Ray worker): every fused copy then disagrees
    # with its model, so each graded model falls back to plain inference in the worker that grades it.
    forcing = tmp_path / "force_fallback.py"
    forcing.write_text("from benchmark.models import fused\nfused.TOLERANCE = -1.0\n")
    out = tmp_path / "reports"
    proc = run_child.pytest("suites/test_faithfulness.py", "-q", "--bench-cache-dir", quick_cache,
                            "--bench-reports-dir", out, "--bench-methods", "Saliency", "--bench-executor", "ray",
                            env={"SHORTCUT_BENCH_METHODS": str(forcing)}, timeout=900)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Ray graded" in proc.stdout, proc.stdout[-3000:]
    inference = json.loads((out / "run.json").read_text())["run"]["inference"]
    assert inference["fused_inference"] and inference["fused_fallbacks"], inference
    assert all(text.startswith("shortcut-bench: fused inference off for a SmallCNN, it runs plain: fused logits "
                               "differ") for text in inference["fused_fallbacks"])


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory, starts_ray):
    from benchmark.running.ray_grid import connect, shutdown

    crasher = tmp_path_factory.mktemp("methods") / "crasher.py"
    crasher.write_text(CRASHER)
    before = os.environ.get("SHORTCUT_BENCH_METHODS")
    os.environ["SHORTCUT_BENCH_METHODS"] = str(crasher)  # the workers discover it at start
    try:
        connect("ray", num_cpus=2)
        yield
    finally:
        shutdown()
        if before is None:
            os.environ.pop("SHORTCUT_BENCH_METHODS", None)
        else:
            os.environ["SHORTCUT_BENCH_METHODS"] = before


def _jobs(methods) -> list[CellJob]:
    from benchmark.grading.properties import LOCALISATION, RANDOMISATION

    return [CellJob(p.key, m.name, method) for method in methods for p in (LOCALISATION, RANDOMISATION)
            for m in p.metrics]


def test_a_killed_worker_is_replaced_and_no_cell_is_lost_or_duplicated(quick_bench, local_ray):
    from benchmark.grading.grader import Grader, grade_cell
    from benchmark.grading.properties import PROPERTIES
    from benchmark.running.ray_grid import RayGrid

    jobs = _jobs(["Saliency", "GradCAM", "Sobel"])
    grid = RayGrid(quick_bench, seed=0, workers=2)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(grid.run(jobs)))
    runner.start()
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        busy = grid.busy_pids()
        if busy:
            killed = busy[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    runner.join(timeout=900)
    assert killed is not None and not runner.is_alive()
    assert grid.retries >= 1 and killed not in grid.worker_pids()
    assert sorted(result) == sorted(j.key for j in jobs)  # every cell once, none missing
    torch.set_num_threads(1)  # as in each worker: the thread count changes float rounding
    grader = Grader(quick_bench)
    for job in jobs:
        prop = PROPERTIES[job.prop]
        expected = grade_cell(grader, prop, prop.metric(job.metric), job.method)
        got = result[job.key]
        assert got.outcome == expected.outcome, job
        np.testing.assert_allclose(np.array(got.scores, dtype=float), np.array(expected.scores, dtype=float),
                                   rtol=1e-5, atol=1e-6, err_msg=str(job))


def test_a_cell_whose_worker_dies_on_every_attempt_is_an_error_cell(quick_bench, local_ray):
    from benchmark.grading.contract import ERROR, OK
    from benchmark.running.ray_grid import MAX_ATTEMPTS, ContractJob, RayGrid

    contract = [ContractJob(m, quick_bench.profile.arch, "biased") for m in ("WorkerKillerForRayTest", "Sobel")]
    jobs = _jobs(["WorkerKillerForRayTest", "Sobel"]) + contract
    grid = RayGrid(quick_bench, seed=0, workers=2)
    result = grid.run(jobs)
    assert sorted(result) == sorted(j.key for j in jobs)
    killed = [c for k, c in result.items() if k[0] == "" and k[3] == "WorkerKillerForRayTest"]
    assert killed and all(c.outcome == "ERROR" and f"died on each of {MAX_ATTEMPTS} attempts" in c.message
                          for c in killed)
    assert all(c.outcome != "ERROR" for k, c in result.items() if k[0] == "" and k[3] == "Sobel")
    # The contract check shares its method's batch: lost with it, an ERROR outcome whose test fails with the reason.
    lost, fine = result[contract[0].key], result[contract[1].key]
    assert lost.status == ERROR and f"died on each of {MAX_ATTEMPTS} attempts" in lost.detail
    assert fine.status == OK, fine.detail
    assert grid.retries == MAX_ATTEMPTS
