"""Training the models a run lacks side by side (benchmark.models.parallel): the same cache entries and weights as
training them one after another on one thread, no pool on a warm cache, and a worker's error or death reported."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import benchmark.models.parallel as parallel
from benchmark.cache import file_sha256, lock_for
from benchmark.data import build_world
from benchmark.errors import ConfigError
from benchmark.models.train import get_trained_model, model_dir_for
from benchmark.options import BenchOptions
from benchmark.profiles import PROFILES, override
from benchmark.running.threads import ENV_VAR
from benchmark.session import ARMS, prepare

TINY = override(PROFILES["quick"], n_train=128, n_test=64, epochs=1, batch_size=32, min_steps=0)
SEEDS = (0, 1)


def _options(root: Path) -> BenchOptions:
    return BenchOptions(cache_root=root, device="cpu", model_seeds=len(SEEDS))


def _prepare(root: Path):
    # A 128-image world learns no shortcut: these tests are about training and the cache, not the gate.
    return prepare(TINY, _options(root), progress=False, gate=None)


def _two_threads(mp: pytest.MonkeyPatch) -> None:
    """Give this process 2 threads, as outside xdist on 2 cores: the pool then runs 2 workers of 1 thread."""
    mp.setenv(ENV_VAR, "2")
    mp.delenv("PYTEST_XDIST_WORKER", raising=False)


class CountingPool(parallel.ProcessPoolExecutor):
    started = 0

    def __init__(self, *args, **kwargs):
        CountingPool.started += 1
        super().__init__(*args, **kwargs)


@pytest.fixture(scope="module")
def pooled(tmp_path_factory, trains, spawn_context):
    """A cold prepare of two training seeds on a 2-thread budget: (its Bench, its cache root, pools it started)."""
    root = tmp_path_factory.mktemp("pooled")
    with pytest.MonkeyPatch.context() as mp:
        _two_threads(mp)
        mp.setattr(parallel, "ProcessPoolExecutor", CountingPool)
        CountingPool.started = 0
        bench = _prepare(root)
    return bench, root, CountingPool.started


@pytest.fixture(scope="module")
def one_thread(tmp_path_factory, trains):
    """The same prepare on a 1-thread budget: every model trained in this process, one after another, on 1 thread."""
    root = tmp_path_factory.mktemp("sequential")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(ENV_VAR, "1")
            mp.setattr(parallel, "ProcessPoolExecutor", _no_pool)
            return _prepare(root), root
    finally:
        torch.set_num_threads(threads)


def _no_pool(*args, **kwargs):
    raise AssertionError("a process pool was started")


def _entries(root: Path) -> set[str]:
    return {p.parent.name for p in (root / "models").glob("*/card.json")}


def test_the_pool_trains_each_missing_model_once_and_says_so(pooled):
    bench, root, pools = pooled
    assert pools == 1  # the biased models, then each seed's control and absent ones once its biased model is gated
    models = bench.arm_models()
    assert len(models) == len(ARMS) * len(SEEDS)
    for r in bench.seeds():
        for arm in ARMS:
            m = getattr(r, arm)
            assert not m.cache_hit and "trained in" in m.header_line(), (arm, r.seed)  # this run trained it
            assert m.card["train_threads"] == 1 and m.path == model_dir_for(bench.world, arm, TINY, r.seed,
                                                                            root / "models", "cpu")
    assert len(_entries(root)) == len(models) + len(bench.contract)


def test_a_warm_prepare_starts_no_pool_and_loads_the_same_models(pooled, monkeypatch):
    bench, root, _ = pooled
    _two_threads(monkeypatch)
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", _no_pool)
    again = _prepare(root)
    for name, m in again.arm_models().items():
        assert m.cache_hit and m.card == bench.arm_models()[name].card, name


def test_pooled_weights_equal_those_trained_here_on_one_thread(pooled, one_thread):
    bench, root, _ = pooled
    seq, seq_root = one_thread
    assert _entries(root) == _entries(seq_root)  # the same cache keys
    for name, m in seq.arm_models().items():
        assert m.card["train_threads"] == 1 and not m.cache_hit, name
        assert m.card["weights_sha256"] == bench.arm_models()[name].card["weights_sha256"], name


@pytest.fixture
def tiny_world(tmp_path, trains):
    return build_world(_options(tmp_path).data_spec(TINY), tmp_path / "datasets")


def test_a_workers_error_surfaces_as_its_own_type(tiny_world, tmp_path, monkeypatch, spawn_context, record_fault):
    _two_threads(monkeypatch)
    broken = dataclasses.replace(TINY, arch="resnot")  # build_model refuses it, in the worker
    jobs = [("control", 0), ("absent", 0)]
    with pytest.raises(ConfigError, match="resnot") as caught:
        parallel.train_missing(tiny_world, broken, jobs, tmp_path / "models", "cpu")
    clear = caught.value.__cause__ is None  # the user's message, without the worker's traceback
    record_fault("model training: an error in a worker process", clear)
    assert clear and any("in a worker process" in note for note in caught.value.__notes__)
    assert not list((tmp_path / "models").glob("*/card.json"))


def test_sequential_training_asked_for_starts_no_pool(tiny_world, tmp_path, monkeypatch):
    _two_threads(monkeypatch)
    monkeypatch.setenv(parallel.SEQUENTIAL_ENV, "1")
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", _no_pool)
    assert parallel.train_missing(tiny_world, TINY, [("control", 0), ("absent", 0)], tmp_path / "models", "cpu") == set()
    assert parallel.missing_jobs(tiny_world, TINY, [("absent", 0), ("absent", 0)], tmp_path / "models", "cpu") == [
        ("absent", 0)]


def _kill_a_worker() -> None:
    deadline = time.monotonic() + 120
    while len(multiprocessing.active_children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into its imports or its training: either way nothing may be left half-written
    os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)


def test_a_killed_worker_leaves_no_half_written_model(tiny_world, tmp_path, monkeypatch, spawn_context, record_fault):
    _two_threads(monkeypatch)
    cache = tmp_path / "models"
    # Holding the absent model's lock keeps its worker waiting, so the pool cannot finish before the kill.
    with lock_for(model_dir_for(tiny_world, "absent", TINY, 0, cache, "cpu")):
        killer = threading.Thread(target=_kill_a_worker)
        killer.start()
        with pytest.warns(UserWarning, match="process died"):
            trained = parallel.train_missing(tiny_world, TINY, [("control", 0), ("absent", 0)], cache, "cpu")
        killer.join()
    cards = [(p.parent / "model.pt", json.loads(p.read_text())) for p in cache.glob("*/card.json")]
    complete = all(file_sha256(weights) == card["weights_sha256"] for weights, card in cards)
    record_fault("model training: a worker process killed", complete and trained <= {("control", 0)})
    assert complete and trained <= {("control", 0)}
    absent = get_trained_model(tiny_world, "absent", TINY, cache_dir=cache, device="cpu", progress=False)
    assert not absent.cache_hit  # the caller trains what the dead pool did not store


ORPHAN = """
import multiprocessing, os, time
from concurrent.futures import ProcessPoolExecutor
from benchmark.models.parallel import _start_worker
if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(1, os.getpid()))
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 120)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended; only its exit status waits to be collected


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux) to see the worker end")
def test_a_training_worker_ends_when_its_parent_is_killed(tmp_path, run_child):
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    proc = run_child.popen([sys.executable, str(script)])
    try:
        worker = int(proc.stdout.readline())
        assert _alive(worker)
        proc.send_signal(signal.SIGKILL)  # no cleanup runs: only the kernel can end the worker now
        proc.wait(10)
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the training worker outlived its killed parent"
    finally:
        proc.kill()


def test_a_seeds_other_arms_train_once_its_biased_model_passes_the_gate_not_after_every_seeds(tmp_path, monkeypatch,
                                                                                              trains, spawn_context):
    from benchmark.errors import ShortcutNotLearned

    _two_threads(monkeypatch)
    options = dataclasses.replace(_options(tmp_path), model_seeds=3)
    world = build_world(options.data_spec(TINY), tmp_path / "datasets")

    def stored(arm: str, seed: int) -> bool:
        return (model_dir_for(world, arm, TINY, seed, tmp_path / "models", "cpu") / "card.json").is_file()

    seen = []  # per gate call: (seed, biased models stored, whether that seed's other arms were stored)

    def gate(model, world, seed):  # seed 1's biased model "did not learn": nothing else of seed 1 may train
        seen.append((seed, sum(stored("biased", s) for s in range(3)), stored("control", seed) or stored("absent", seed)))
        if seed == 1:
            raise ShortcutNotLearned("seed 1 did not learn")

    with pytest.raises(ShortcutNotLearned, match="seed 1"):
        prepare(TINY, options, progress=False, gate=gate)
    # Whether the first gate runs before the last biased model is stored depends on how fast the tiny models train;
    # that the pool calls back as each job ends is held by the test below, with a job that cannot end first.
    assert not any(other for _, _, other in seen), seen  # no seed's other arms before its gate
    assert not stored("control", 1) and not stored("absent", 1)


def test_the_pool_calls_back_for_a_job_as_it_ends_not_after_the_pools_other_jobs(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    _two_threads(monkeypatch)
    world = build_world(_options(tmp_path).data_spec(TINY), tmp_path / "datasets")
    released, ended, calls = threading.Event(), [], []

    def train(spec, root, key, profile, arm, seed, cache_dir):
        if seed == 2:  # cannot end before a call-back has run, unless the pool waits for every job first (then: late)
            released.wait(timeout=10)
        ended.append(seed)
        return True

    def then(job, here):
        calls.append((job, list(ended)))
        released.set()
        return []

    # Threads stand in for the spawned processes: a test can hold a thread's job, not a fresh interpreter's.
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", lambda workers, **_: ThreadPoolExecutor(workers))
    monkeypatch.setattr(parallel, "_train", train)
    jobs = [("biased", seed) for seed in range(3)]
    assert parallel.train_missing(world, TINY, jobs, tmp_path / "models", "cpu", then=then) == set(jobs)
    assert 2 not in calls[0][1], calls  # the first job's call-back ran while the held job was still training
    assert sorted(job for job, _ in calls) == jobs


def test_the_pool_calling_back_for_a_seeds_other_arms_gates_that_seed_no_more(tmp_path, monkeypatch, trains):
    import benchmark.session as session

    options = _options(tmp_path)
    world = build_world(options.data_spec(TINY), tmp_path / "datasets")

    def pool(world, profile, jobs, cache_dir, device, *, progress=False, then=None):
        """One worker that, as the real pool does, calls back for every job it finishes, the jobs ``then`` queued
        too, and queues what the callback adds that the cache lacks."""
        queue, done = list(jobs), set()
        while queue:
            job = queue.pop(0)
            get_trained_model(world, job[0], profile, seed=job[1], cache_dir=cache_dir, device=device, progress=False)
            done.add(job)
            if then is not None:
                queue.extend(parallel.missing_jobs(world, profile, then(job, True), cache_dir, device))
        return done

    gated = []
    monkeypatch.setattr(session, "train_missing", pool)
    prepare(TINY, options, progress=False, world=world, gate=lambda model, world, seed: gated.append(seed))
    assert gated == list(SEEDS)  # each seed once, though the pool called back for its control and absent models too


def test_a_biased_model_another_process_stored_is_gated_and_loaded_not_claimed(tmp_path, monkeypatch, trains):
    import benchmark.session as session

    options = _options(tmp_path)
    world = build_world(options.data_spec(TINY), tmp_path / "datasets")
    queued = []

    def stored_elsewhere(world, profile, jobs, cache_dir, device, *, progress=False, then=None):
        """A pool whose every biased model another process stored meanwhile: it trained none (here=False)."""
        for arm, seed in jobs if then is not None else ():
            get_trained_model(world, arm, profile, seed=seed, cache_dir=cache_dir, device=device, progress=False)
            queued.extend(then((arm, seed), False))
        return set()

    gated = []
    monkeypatch.setattr(session, "train_missing", stored_elsewhere)
    bench = prepare(TINY, options, progress=False, world=world, gate=lambda model, world, seed: gated.append(seed))
    assert gated == list(SEEDS)  # each seed's biased model gated once, as it was stored
    assert queued == [(arm, seed) for seed in SEEDS for arm in ("control", "absent")]  # then its other arms queued
    for r in bench.seeds():
        assert r.biased.cache_hit, r.seed  # loaded: this run did not train it, and does not say it did
        assert not r.control.cache_hit and not r.absent.cache_hit, r.seed  # trained here, after the gate
