"""Reliability: injected faults are contained, bad input is refused clearly, interrupted work is never used.

Every test here records what it tried through the ``record_fault`` / ``record_bad_input`` fixtures
(tests/conftest.py), and the end of ``pytest tests/`` prints the figures computed from those records::

    reliability: faults injected N, contained N, results lost 0, bad inputs tried N, with clear errors N

and writes them, with one entry per fault or input, to ``reports/reliability.json``
(``$SHORTCUT_BENCH_RELIABILITY_JSON`` overrides the path). The figures mean:

* faults injected: faulty methods graded in a real ``pytest suites/`` run (raise, NaN, inf, wrong shape,
  all-zero, constant, hang, hook leak, weight edit), damaged or hostile cache artefacts, concurrent
  cold-cache builders, and SIGINT/SIGKILL during training and report writing (also counted by
  tests/test_models.py and tests/test_data.py for the cache damage they inject);
* contained: the fault became an ERROR cell naming its reason (or a warning and a rebuild, or a refusal),
  no other cell changed, the run finished, and nothing partial was left to be used later;
* results lost: grid cells missing from the leaderboard, or healthy cells whose scores differ from a
  run without the faulty methods (must be 0);
* bad inputs tried / with clear errors: unknown names, bad options and unusable data folders; "clear"
  means a non-zero exit, a message that names the problem, and pre-existing reports left untouched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FAULTY = ROOT / "tests" / "fixtures" / "faulty_methods.py"
# Every property suite (the method contract has no cells), so a new suite is covered without editing this file.
PROPERTY_SUITES = sorted(f"suites/{p.name}" for p in (ROOT / "suites").glob("test_*.py")
                         if p.name != "test_method_contract.py")
HEALTHY = ["Saliency", "Random", "Sobel", "Oracle"]
# The reason each faulty method's ERROR cells must give (tests/fixtures/faulty_methods.py).
FAULT_REASONS = {
    "ThrowAwayRaises": "injected failure",
    "ThrowAwayNaN": "non-finite values",
    "ThrowAwayInf": "non-finite values",
    # One sample too many per chunk of 32 (maps are computed for every graded image, in chunks).
    "ThrowAwayWrongShape": "attribute returned shape (33, 1, 32, 32) for 32 inputs",
    "ThrowAwayAllZero": "all-zero map for every graded sample",
    "ThrowAwayAllZeroClipped": "all-zero map for every graded sample",
    "ThrowAwayConstant": "constant map for every graded sample",
    "ThrowAwayLeaksHook": "forward_hooks left on <model>",  # one hook per chunk of maps: the count follows the graded set
    "ThrowAwayChangesWeights": "left the model modified (restored by the benchmark): parameters/buffers changed",
}
HANG = "ThrowAwayHangs"
HANG_LIMIT_S = 20  # far above a healthy quick cell (< 1 s warm, ~4 s cold on a busy 2-core box)
HANG_CELLS = {("randomisation", "MPRT")}  # one metric: the hang costs the limit once


def run_suites(run_child, cache: Path, reports: Path, methods: list[str], *extra: str, suites=PROPERTY_SUITES):
    return run_child.pytest(*suites, "-q", "--bench-cache-dir", cache, "--bench-reports-dir", reports,
                            "--bench-methods", ",".join(methods), *extra,
                            env={"SHORTCUT_BENCH_METHODS": str(FAULTY), "SHORTCUT_BENCH_PROFILE": "quick"})


def _cells(reports: Path) -> dict[tuple, dict]:
    run = json.loads((reports / "run.json").read_text())
    return {(c["suite"], c["metric"], c["method"]): c for c in run["cells"]}


def _expected_keys(methods, only: set[tuple] | None = None) -> set[tuple]:
    from benchmark.grading.properties import PROPERTIES

    # Metrics undefined on the two-class world (RandomLogit) are N/A for every method, faulty or not.
    keys = {(s, m.name, meth) for s in PROPERTIES for m in PROPERTIES[s].metrics if m.min_classes <= 2
            for meth in methods}
    return {k for k in keys if only is None or k[:2] in only}


def _healthy_view(cell: dict) -> tuple:
    return cell["outcome"], cell["score"], cell["comparisons"], cell["scores"], cell["informative"]


# --------------------------------------------------------------------------------------------------------
# Faulty methods in a real `pytest suites/` run


@pytest.fixture(scope="module")
def healthy_run(quick_cache, tmp_path_factory, run_child):
    reports = tmp_path_factory.mktemp("healthy")
    proc = run_suites(run_child, quick_cache, reports, HEALTHY)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return _cells(reports)


@pytest.fixture(scope="module")
def faulty_run(quick_cache, tmp_path_factory, run_child):
    reports = tmp_path_factory.mktemp("faulty")
    # Faulty methods first, so every healthy cell is graded after them in the same process.
    proc = run_suites(run_child, quick_cache, reports, [*FAULT_REASONS, *HEALTHY])
    return proc, reports


@pytest.fixture(scope="module")
def hang_run(quick_cache, tmp_path_factory, run_child):
    reports = tmp_path_factory.mktemp("hang")
    proc = run_suites(run_child, quick_cache, reports, ["Saliency", "Random", "Sobel", HANG], "--bench-cell-timeout",
                      str(HANG_LIMIT_S), "-k", "MPRT and not EfficientMPRT", suites=["suites/test_randomisation.py"])
    return proc, reports


def _containment(cells: dict, healthy_run: dict, method: str, reason: str, only=None) -> tuple[bool, int, list]:
    """(contained, results lost, problems) for one faulty method in a run's cells."""
    expected = _expected_keys([method], only)
    problems = [f"missing cell {k}" for k in sorted(expected - cells.keys())]
    lost = len(problems)
    for k in sorted(expected & cells.keys()):
        c = cells[k]
        if c["outcome"] != "ERROR" or reason not in c["message"]:
            problems.append(f"{k}: {c['outcome']}: {c['message'][:200]}")
    healthy = {k: c for k, c in cells.items() if k[2] in HEALTHY}
    changed = [k for k, c in healthy.items() if k in healthy_run and _healthy_view(c) != _healthy_view(healthy_run[k])]
    missing_healthy = [k for k in _expected_keys([m for m in HEALTHY if m in {k[2] for k in cells}], only)
                       if k not in cells]
    lost += len(changed) + len(missing_healthy)
    problems += [f"healthy cell changed: {k}" for k in changed] + [f"healthy cell missing: {k}" for k in missing_healthy]
    return not problems, lost, problems


@pytest.mark.parametrize("method", list(FAULT_REASONS))
def test_faulty_method_is_an_error_cell_and_changes_nothing_else(method, faulty_run, healthy_run, record_fault):
    proc, reports = faulty_run
    finished = proc.returncode == 1 and "INTERNALERROR" not in proc.stdout + proc.stderr
    cells = _cells(reports) if (reports / "run.json").exists() else {}
    contained, lost, problems = _containment(cells, healthy_run, method, FAULT_REASONS[method])
    record_fault(f"method: {method}", finished and contained, lost)
    assert finished, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not problems, "\n".join(problems[:20])
    board = json.loads((reports / "leaderboard.json").read_text())
    assert all(v[method] == "ERROR" for v in board["verdicts"].values())


def test_hanging_method_times_out_per_cell_and_the_run_goes_on(hang_run, healthy_run, record_fault):
    proc, reports = hang_run
    finished = proc.returncode == 1 and "INTERNALERROR" not in proc.stdout + proc.stderr
    cells = _cells(reports) if (reports / "run.json").exists() else {}
    reason = f"exceeded the per-cell time limit of {HANG_LIMIT_S} s (--bench-cell-timeout)"
    contained, lost, problems = _containment(cells, healthy_run, HANG, reason, only=HANG_CELLS)
    record_fault(f"method: {HANG}", finished and contained, lost)
    assert finished, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not problems, "\n".join(problems)
    # Each hanging cell stops at the limit (plus the unwinding), never at the hour the method asks for.
    assert all(c["seconds"] < HANG_LIMIT_S + 5 for k, c in cells.items() if k[2] == HANG)
    assert (reports / "flipped_examples.png").stat().st_size > 0  # the figure's own limit stopped it too


def test_run_record_carries_what_reproduces_the_run(faulty_run, hang_run):
    from benchmark.reporting.report import PACKAGES

    runs = [json.loads((r / "run.json").read_text())["run"] for _, r in (faulty_run, hang_run)]
    for run in runs:
        assert run["seed"] == 0 and run["profile"]["name"] == "quick"
        assert set(PACKAGES) <= set(run["versions"]) and run["git"]
        hashes = run["config_hashes"]
        assert hashes["data"] == run["data"]["key"]
        assert hashes["biased_model"] == run["models"]["biased"]["key"]
        assert hashes["biased_weights_sha256"] == run["models"]["biased"]["weights_sha256"]
    assert runs[0]["config_hashes"] == runs[1]["config_hashes"]  # same seed and profile, same artefacts
    assert runs[1]["options"]["cell_timeout_s"] == HANG_LIMIT_S and runs[0]["options"]["cell_timeout_s"] is None


# --------------------------------------------------------------------------------------------------------
# The per-cell time limit in process


def test_time_limit_interrupts_and_restores_an_outer_alarm():
    from benchmark.timelimit import CellTimeout, time_limit

    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(True))
    signal.setitimer(signal.ITIMER_REAL, 3.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(CellTimeout, match=r"time limit of 0.2 s \(unit test\)"):
            with time_limit(0.2, "unit test"):
                time.sleep(30)
        assert time.monotonic() - t0 < 2
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 3.0  # the outer timer is re-armed with what it had left
        with time_limit(5, "fast block"):
            pass
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not fired


def test_time_limit_off_the_main_thread_warns_and_runs_unlimited():
    from benchmark.timelimit import TimeLimitUnavailable, time_limit

    caught = []

    def body():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with time_limit(0.01, "thread"):
                time.sleep(0.05)
        caught.extend(w)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert [w.category for w in caught] == [TimeLimitUnavailable]


def test_a_timeout_during_the_model_restore_waits_for_it():
    from benchmark.timelimit import CellTimeout, shielded, time_limit

    done = []
    with pytest.raises(CellTimeout):
        with time_limit(0.05, "unit test"):
            with shielded():
                time.sleep(0.2)  # the alarm arrives here and is deferred
                done.append(True)
    assert done == [True]


@pytest.mark.parametrize("value, message", [("-1", ">= 0"), ("soon", "number of seconds"), ("inf", "finite")])
def test_cell_timeout_values_are_checked(value, message):
    from benchmark.errors import ConfigError
    from benchmark.timelimit import check_timeout

    with pytest.raises(ConfigError, match=message):
        check_timeout(value, "--bench-cell-timeout")
    assert check_timeout("0") == 0 and check_timeout("2.5") == 2.5 and check_timeout(None) is None


def test_timed_out_attributions_are_not_retried_and_the_model_is_restored(quick_bench, record_fault):
    """The profile's limit applies; the hang (which left a hook) is restored, cached as no result, and not retried."""
    import dataclasses

    from benchmark.grading.grader import Grader, grade_cell
    from benchmark.grading.properties import RANDOMISATION
    from benchmark.methods import register, unregister
    from benchmark.methods.base import AttributionMethod, Capabilities, hook_count
    from benchmark.profiles import override

    calls = []

    @register
    class HangsOnce(AttributionMethod):
        """Hangs on its first call after hooking the model, then behaves like Input x 1.

        Reference: none (fault injection for shortcut-bench's own tests).
        """

        name = "ThrowAwayHangsOnce"
        family = "gradient"
        capabilities = Capabilities(gradient=True)

        def attribute(self, model, inputs, target, params, **context):
            calls.append(1)
            if len(calls) == 1:
                model.register_forward_hook(lambda *a: None)
                time.sleep(3600)
            return inputs.detach().clone()

    bench = dataclasses.replace(quick_bench, profile=override(quick_bench.profile, cell_timeout_s=3))
    model = bench.biased.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = hook_count(model)
    metric = RANDOMISATION.metric("EfficientMPRT")
    try:
        grader = Grader(bench)
        grader.runner.anchors(RANDOMISATION, metric)  # controls scored up front: the limit is for the method
        grader.runner.scores(RANDOMISATION, metric, "Random")
        first = grade_cell(grader, RANDOMISATION, metric, HangsOnce.name)
        second = grade_cell(grader, RANDOMISATION, metric, HangsOnce.name)
    finally:
        unregister(HangsOnce.name)
    restored = hook_count(model) == hooks and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # A hang repeats, so the next cell of the method is an ERROR at once instead of another wait.
    ok = (first.outcome == "ERROR" and "per-cell time limit of 3 s (profile quick)" in first.message
          and second.outcome == "ERROR" and "not retried" in second.message and len(calls) == 1 and restored)
    record_fault("method hangs (in-process, profile limit)", ok)
    assert first.outcome == "ERROR" and first.message.endswith("exceeded the per-cell time limit of 3 s (profile quick)")
    assert second.outcome == "ERROR" and "3 s (profile quick) while computing its maps earlier" in second.message
    assert len(calls) == 1 and grader.store._attr.get((HangsOnce.name, "biased")) is None
    assert restored


def test_relu_clipped_methods_may_return_zero_maps_for_some_samples():
    from benchmark.grading.grader import check_not_constant
    from benchmark.methods import AttributionError

    maps = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    maps[1] = 0
    check_not_constant("GradCAM", maps, relu_clipped=True)
    with pytest.raises(AttributionError, match=r"all-zero map for 1 of 4 graded samples \[1\]"):
        check_not_constant("Saliency", maps)
    maps[2] = 0.3
    with pytest.raises(AttributionError, match=r"constant map for 1 of 4 graded samples \[2\]"):
        check_not_constant("GradCAM", maps, relu_clipped=True)


# --------------------------------------------------------------------------------------------------------
# Faulty and hostile artefacts

def _tiny():
    from benchmark.profiles import PROFILES, override

    return override(PROFILES["quick"], n_train=128, n_test=64, epochs=2, batch_size=32, min_steps=0)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, trains):
    # Its tests train on it (``trains``: they are slow).
    from benchmark.data import DataSpec, build_world

    return build_world(DataSpec(n_train=128, n_test=64, seed=5), tmp_path_factory.mktemp("tiny-data"))


class _Bomb:
    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_pickle_bomb_checkpoint_is_refused_not_executed(tiny_world, tmp_path, record_fault):
    import io

    from benchmark.cache import file_sha256
    from benchmark.models.train import get_trained_model

    first = get_trained_model(tiny_world, "biased", _tiny(), cache_dir=tmp_path, device="cpu", progress=False)
    marker = tmp_path / "PWNED"
    buf = io.BytesIO()
    torch.save({"weight": _Bomb(marker)}, buf)
    (first.path / "model.pt").write_bytes(buf.getvalue())
    card = json.loads((first.path / "card.json").read_text())
    card["weights_sha256"] = file_sha256(first.path / "model.pt")  # an attacker can fix the checksum too
    (first.path / "card.json").write_text(json.dumps(card))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = get_trained_model(tiny_world, "biased", _tiny(), cache_dir=tmp_path, device="cpu", progress=False)
    warned = any("Weights only load failed" in str(w.message) and "Retraining" in str(w.message) for w in caught)
    ok = not marker.exists() and warned and not again.cache_hit
    record_fault("checkpoint: pickle that runs code when loaded", ok)
    assert not marker.exists(), "the checkpoint's pickle ran code"
    assert warned and not again.cache_hit


def test_checkpoint_from_another_config_is_refused(tiny_world, tmp_path, record_fault):
    from benchmark.cache import file_sha256
    from benchmark.models.train import get_trained_model
    from benchmark.profiles import override

    cnn = get_trained_model(tiny_world, "biased", _tiny(), cache_dir=tmp_path, device="cpu", progress=False)
    wide = get_trained_model(tiny_world, "biased", override(_tiny(), width=8), cache_dir=tmp_path, device="cpu",
                             progress=False)
    # Another config's weights dropped in, with the checksum updated to match: the key check passes,
    # the strict state-dict load must not.
    (cnn.path / "model.pt").write_bytes((wide.path / "model.pt").read_bytes())
    card = json.loads((cnn.path / "card.json").read_text())
    card["weights_sha256"] = file_sha256(cnn.path / "model.pt")
    (cnn.path / "card.json").write_text(json.dumps(card))
    with pytest.warns(UserWarning, match="Retraining") as caught:
        again = get_trained_model(tiny_world, "biased", _tiny(), cache_dir=tmp_path, device="cpu", progress=False)
    same = all(torch.equal(a, b) for a, b in zip(cnn.model.state_dict().values(), again.model.state_dict().values()))
    record_fault("checkpoint: weights of another config", not again.cache_hit and same)
    assert "size mismatch" in str(caught[0].message)
    assert not again.cache_hit and same


def _prepare_in_child(cache_dir: str):
    torch.set_num_threads(1)
    from benchmark.options import BenchOptions
    from benchmark.session import prepare

    bench = prepare(_tiny(), BenchOptions(cache_root=Path(cache_dir), device="cpu", seed=5), progress=False,
                    gate=None)  # a 128-image world learns no shortcut; this test is about the cache
    models = bench.all_models()
    return (bench.world.cache_hit, *(m.cache_hit for m in models.values()),
            bench.world.manifest["arrays_sha256"], *(m.card["weights_sha256"] for m in models.values()))


def test_four_processes_on_a_cold_cache_build_everything_once(tmp_path, record_fault, spawn_context):
    with spawn_context.Pool(4) as pool:
        results = pool.map(_prepare_in_child, [str(tmp_path)] * 4)
    n = len(results[0]) // 2  # the world, then every model (trained and the contract's untrained ones)
    builds = [sum(not r[i] for r in results) for i in range(n)]  # per artefact: how many processes built it
    identical = len({r[n:] for r in results}) == 1
    record_fault("4 processes on a cold cache", builds == [1] * n and identical)
    # The world, biased, control and absent of each training seed, and two contract models.
    assert n == 1 + 3 * _tiny().model_seeds + 2 and builds == [1] * n, results
    assert identical
    assert len(list((tmp_path / "datasets").glob("*/manifest.json"))) == 1
    assert len(list((tmp_path / "models").glob("*/card.json"))) == n - 1


# --------------------------------------------------------------------------------------------------------
# Interruption: Ctrl-C or a kill during training or report writing

_TRAIN_CHILD = """
import faulthandler, signal, sys, time
from pathlib import Path
import torch
# A shell starts background jobs with SIGINT ignored and children inherit that, as they inherit a blocked signal
# mask; Ctrl-C in a terminal is what this test stands for, so restore Python's handler and unblock SIGINT whatever
# launched pytest.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
faulthandler.register(signal.SIGUSR1)  # the parent asks for every thread's stack before it gives up on this child
torch.set_num_threads(1)
import benchmark.models.train as train
from benchmark.data import DataSpec, build_world
from benchmark.profiles import PROFILES, override

cache, stage, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
profile = override(PROFILES["quick"], n_train=128, n_test=64, epochs=epochs, batch_size=32, min_steps=0)
world = build_world(DataSpec(n_train=128, n_test=64, seed=5), cache / "datasets")
fit, sha = train._fit, train.file_sha256

def announce_fit(*args, **kwargs):
    print("STAGE training", flush=True)
    return fit(*args, **kwargs)

def stall():
    # Short sleeps, as training's own Python code would be: a signal the kernel hands to another of the process'
    # threads only flags the main thread, which one long sleep would not notice for 600 s.
    for _ in range(6000):
        time.sleep(0.1)

def stall_after_weights(path):
    # model.pt is on disk, card.json not yet: the moment a checkpoint is most easily left half-done.
    print("STAGE checkpoint", flush=True)
    stall()
    return sha(path)

step = torch.optim.AdamW.step
steps = []

def stall_at_second_step(self, *args, **kwargs):
    # Training stalls before its second step until the parent's signal ends it, so it cannot finish first however
    # late the parent (held up by an xdist neighbour on a busy CPU) reads "STAGE training". A stretch of 0.25 s a
    # step (>= 10 s in all) still lost that race once, in a fresh-clone CI.
    steps.append(1)
    if len(steps) == 2:
        stall()
    return step(self, *args, **kwargs)

train._fit = announce_fit
if stage == "training":
    torch.optim.AdamW.step = stall_at_second_step
if stage == "checkpoint":
    train.file_sha256 = stall_after_weights
train.get_trained_model(world, "biased", profile, cache_dir=cache / "models", device="cpu", progress=False)
print("DONE", flush=True)
"""


def _interrupt(run_child, script: str, args: list[str], stage: str, sig: int,
               delay: float) -> subprocess.CompletedProcess:
    proc = run_child.popen([sys.executable, "-c", script, *args])
    deadline = time.monotonic() + 300
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.strip() == f"STAGE {stage}":
            time.sleep(delay)
            proc.send_signal(sig)
            break
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # say where the child sat (its stacks on stderr), then end it
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the child had not exited 120 s after signal {sig}; its output:\n{''.join(lines)}{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + out, err)


@pytest.mark.parametrize("sig, stage", [(signal.SIGINT, "training"), (signal.SIGKILL, "training"),
                                        (signal.SIGKILL, "checkpoint")],
                         ids=["SIGINT-training", "SIGKILL-training", "SIGKILL-checkpoint"])
def test_interrupted_training_leaves_nothing_usable_and_the_next_run_recovers(tiny_world, tmp_path, sig, stage,
                                                                              record_fault, run_child):
    from benchmark.cache import file_sha256, lock_for
    from benchmark.data import DataSpec, build_world
    from benchmark.models.train import get_trained_model
    from benchmark.profiles import override

    epochs = 10
    build_world(DataSpec(n_train=128, n_test=64, seed=5), tmp_path / "datasets")  # the child trains at once
    proc = _interrupt(run_child, _TRAIN_CHILD, [str(tmp_path), stage, str(epochs)], stage, sig, 0.3)
    interrupted = proc.returncode != 0 and "DONE" not in proc.stdout and f"STAGE {stage}" in proc.stdout
    model_dirs = list((tmp_path / "models").glob("cnn-biased-*"))
    completed = [d for d in model_dirs if (d / "card.json").exists()]
    # The lock died with the process (flock): the next run gets it at once instead of waiting an hour.
    lock_free = True
    for d in model_dirs:
        lock = lock_for(d, timeout=10)
        try:
            lock.acquire()
            lock.release()
        except Exception:
            lock_free = False
    profile = override(_tiny(), epochs=epochs)
    world = build_world(DataSpec(n_train=128, n_test=64, seed=5), tmp_path / "datasets")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = get_trained_model(world, "biased", profile, cache_dir=tmp_path / "models", device="cpu",
                                  progress=False)
    recovered = (not again.cache_hit and again.card["weights_sha256"] == file_sha256(again.path / "model.pt"))
    leftovers = [p.name for p in again.path.iterdir() if p.name.endswith(".tmp")]
    ok = interrupted and not completed and lock_free and recovered and (sig == signal.SIGKILL or not leftovers)
    record_fault(f"{signal.Signals(sig).name} during {stage}", ok)
    assert interrupted, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not completed, "an interrupted build left a card.json, which marks a complete checkpoint"
    assert lock_free
    assert recovered
    if stage == "checkpoint":
        assert any("card.json is missing (interrupted build?)" in str(w.message) for w in caught)
    if sig == signal.SIGINT:
        assert not leftovers
    assert get_trained_model(world, "biased", profile, cache_dir=tmp_path / "models", device="cpu",
                             progress=False).cache_hit


def _record(seed: int) -> dict:
    from benchmark.grading.properties import LOCALISATION
    from benchmark.grading.verdict import error, judge
    from benchmark.reporting.report import build_record

    auc = LOCALISATION.metric("AUC")
    rng = np.random.default_rng(seed)
    cells = [judge(LOCALISATION, auc, "Saliency", rng.uniform(0.8, 1.0, 16), {"Random": rng.uniform(0.4, 0.6, 16)}),
             error(LOCALISATION, auc, "Broken", "boom")]
    return build_record(cells, {"profile": {"name": "quick"}, "seed": seed})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_ctrl_c_while_writing_reports_keeps_each_report_whole(tmp_path, monkeypatch, record_fault):
    from benchmark.reporting.report import write_reports

    out = tmp_path / "reports"
    write_reports(_record(0), out)
    old = _snapshot(out)
    write_reports(_record(1), tmp_path / "new")
    new = _snapshot(tmp_path / "new")
    real_write = Path.write_text

    def interrupted_write(self, text, *args, **kwargs):
        if self.name.startswith(".leaderboard.json."):
            real_write(self, text[: len(text) // 2], *args, **kwargs)
            raise KeyboardInterrupt  # what SIGINT becomes in Python
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        write_reports(_record(1), out)
    monkeypatch.undo()
    after = _snapshot(out)
    whole = set(after) == set(old) and all(after[n] in (old[n], new[n]) for n in after)
    record_fault("SIGINT during report writing", whole and after["leaderboard.json"] == old["leaderboard.json"])
    assert set(after) == set(old), "a temporary or partial file was left behind"
    assert whole and after["leaderboard.json"] == old["leaderboard.json"]
    write_reports(_record(1), out)
    assert _snapshot(out) == new


_REPORT_CHILD = """
import json, sys, time
from pathlib import Path
from benchmark.reporting.report import write_reports

record, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
real_write = Path.write_text

def stalled_write(self, text, *args, **kwargs):
    real_write(self, text[: len(text) // 2], *args, **kwargs)
    print("STAGE writing", flush=True)
    time.sleep(600)

Path.write_text = stalled_write
write_reports(record, out)
print("DONE", flush=True)
"""


def test_kill_while_writing_reports_leaves_the_old_reports(tmp_path, record_fault, run_child):
    from benchmark.reporting.report import write_reports

    out = tmp_path / "reports"
    write_reports(_record(0), out)
    old = _snapshot(out)
    (tmp_path / "record.json").write_text(json.dumps(_record(1)))
    proc = _interrupt(run_child, _REPORT_CHILD, [str(tmp_path / "record.json"), str(out)], "writing", signal.SIGKILL, 0.1)
    after = {n: b for n, b in _snapshot(out).items() if not n.startswith(".")}
    record_fault("SIGKILL during report writing", proc.returncode == -signal.SIGKILL and after == old)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert after == old  # the half-written text sits in a hidden temporary file, never under a report's name
    write_reports(_record(1), out)
    assert json.loads((out / "run.json").read_text())["run"]["seed"] == 1


# --------------------------------------------------------------------------------------------------------
# Bad input from users


def _pytest_run(run_child, *args: str, collect_only: bool = True) -> subprocess.CompletedProcess:
    return run_child.pytest("suites/test_randomisation.py", "-q", *(["--collect-only"] if collect_only else []), *args,
                            unset=["SHORTCUT_BENCH_PROFILE"], timeout=300)


@pytest.fixture
def old_reports(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "leaderboard.md").write_text("the previous run's leaderboard\n")
    return reports


def _clear(proc, message: str, old_reports: Path, code: int | None = 4) -> bool:
    survived = (old_reports / "leaderboard.md").read_text() == "the previous run's leaderboard\n"
    only_old = sorted(p.name for p in old_reports.iterdir()) == ["leaderboard.md"]
    exit_ok = proc.returncode != 0 if code is None else proc.returncode == code
    return exit_ok and message in proc.stderr + proc.stdout and survived and only_old


def _as_file(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text("not a folder")
    return str(path)


BAD_OPTIONS = [
    ("negative seed", lambda t: ["--bench-seed", "-1"], "seed must be a non-negative integer, got -1"),
    ("unknown device type", lambda t: ["--bench-device", "tpu"], "device 'tpu' is not"),
    ("cuda without a GPU", lambda t: ["--bench-device", "cuda"], "torch sees no CUDA GPU here"),
    ("reports dir is a file", lambda t: ["--bench-reports-dir", _as_file(t, "r.txt")], "is not a folder"),
    ("cache dir is a file", lambda t: ["--bench-cache-dir", _as_file(t, "c.txt")], "--bench-cache-dir"),
    ("cell timeout negative", lambda t: ["--bench-cell-timeout", "-3"], "--bench-cell-timeout must be a finite"),
    ("cell timeout not a number", lambda t: ["--bench-cell-timeout", "soon"], "--bench-cell-timeout must be a number"),
]


@pytest.mark.parametrize("kind, args, message", BAD_OPTIONS, ids=[b[0] for b in BAD_OPTIONS])
def test_bad_options_fail_before_anything_is_built(tmp_path, old_reports, kind, args, message, record_bad_input,
                                                   run_child):
    if kind == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    extra = args(tmp_path)
    defaults = []
    if "--bench-reports-dir" not in extra:
        defaults += ["--bench-reports-dir", str(old_reports)]
    if "--bench-cache-dir" not in extra:
        defaults += ["--bench-cache-dir", str(tmp_path / "cache")]
    proc = _pytest_run(run_child, *defaults, *extra)
    clear = _clear(proc, message, old_reports) and not (tmp_path / "cache").exists()
    record_bad_input(kind, clear)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert message in proc.stderr
    assert clear


def _png(path: Path, size=(40, 40), mode="RGB", seed=0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)
    else:
        Image.new(mode, size).save(path)


def _folder(root: Path, kind: str) -> str:
    classes = ("cat",) if kind == "one class" else ("cat", "dog")
    for name in classes:
        for i in range(3):
            _png(root / name / f"{name}{i}.png", seed=i)
    if kind == "corrupt image":
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    elif kind == "wrong extensions":
        for i in range(3):
            (root / "dog" / f"dog{i}.png").rename(root / "dog" / f"dog{i}.txt")
    elif kind == "huge image":
        _png(root / "dog" / "huge.png", size=(8000, 6000), mode="1")  # 48 MP; 1 bit per pixel to write
    return str(root)


BAD_FOLDERS = [
    ("one class", "needs both: add a folder"),
    ("corrupt image", "broken.png"),
    ("wrong extensions", "(found 3 × .txt); add dog images"),
    ("huge image", "huge.png: image has 48,000,000 pixels"),
]


@pytest.mark.parametrize("kind, message", BAD_FOLDERS, ids=[b[0] for b in BAD_FOLDERS])
def test_unusable_data_folder_is_refused_and_names_the_problem(tmp_path, old_reports, kind, message,
                                                              record_bad_input, run_child):
    root = _folder(tmp_path / "photos", kind)
    proc = _pytest_run(run_child, "--bench-data", "folder", "--bench-data-root", root, "--bench-reports-dir",
                       str(old_reports), "--bench-cache-dir", str(tmp_path / "cache"), collect_only=False)
    half_built = [str(p) for p in (tmp_path / "cache").rglob("*") if p.suffix in (".npz", ".json", ".pt")]
    clear = _clear(proc, message, old_reports, code=None) and not half_built
    record_bad_input(f"data folder: {kind}", clear)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "could not prepare its data/models" in proc.stdout + proc.stderr
    assert clear, half_built


BAD_NAMES = ["../evil", "a/b", "bad\nname", "with space", "x,y", "\x1b[31mred"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_method_names_that_could_escape_a_path_are_refused_at_register(name, record_bad_input):
    from benchmark.errors import ConfigError
    from benchmark.methods import all_methods, register
    from benchmark.methods.base import AttributionMethod

    cls = type("Evil", (AttributionMethod,), {"__doc__": "Evil.\n\nReference: none.", "name": name,
                                               "family": "gradient", "attribute": lambda self, *a, **k: None})
    with pytest.raises(ConfigError, match="is not allowed: use 1-64 characters") as info:
        register(cls)
    record_bad_input(f"method name {name!r}", name not in all_methods() and repr(name) in str(info.value))
    assert name not in all_methods()


def test_report_files_stay_in_the_reports_folder_whatever_a_method_is_called(tmp_path):
    from benchmark.grading.properties import LOCALISATION
    from benchmark.grading.verdict import error
    from benchmark.reporting.report import build_record, write_reports

    auc = LOCALISATION.metric("AUC")
    cells = [error(LOCALISATION, auc, name, "boom") for name in ("../../evil", "/etc/passwd", "a/b")]
    out = tmp_path / "deep" / "reports"
    write_reports(build_record(cells, {"profile": {"name": "quick"}, "seed": 0}), out)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [f"deep/reports/{n}" for n in ("heatmap.png", "leaderboard.csv", "leaderboard.json",
                                                    "leaderboard.md", "run.json")]


def test_build_command_rejects_a_bad_device_with_a_message(tmp_path, record_bad_input, run_child):
    proc = run_child.bench("build", "--device", "tpu", "--cache-dir", tmp_path / "cache", timeout=300)
    clear = proc.returncode == 2 and "error: device 'tpu' is not" in proc.stderr and "Traceback" not in proc.stderr
    record_bad_input("build --device tpu", clear and not (tmp_path / "cache").exists())
    assert clear, proc.stderr[-2000:]
    assert not (tmp_path / "cache").exists()
