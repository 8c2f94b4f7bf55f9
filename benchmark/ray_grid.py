"""The grid's cells computed by Ray workers: one actor per device holds the models, the controller schedules methods.

The controller has built (or loaded) the world once; it goes to the workers through Ray's object store, so no
worker trains, reads the cache or needs a shared filesystem. Each worker is an actor holding one
:class:`benchmark.grading.Grader` (its maps and memos live as long as the actor), and is handed one method's cells
at a time, so a method's maps are computed once, by one worker. A cell's verdict depends only on the seed and the
inputs (every memo is exact), so the leaderboards are those of a serial run. A worker that dies mid-batch (killed,
out of memory, node lost) is replaced and its batch is given to a worker again; after :data:`MAX_ATTEMPTS` losses
its cells become ERROR cells that say so. Nothing is graded twice: each cell is kept from the first batch that
returns it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_ATTEMPTS = 3
LOCAL, IN_PROCESS = "ray", "in-process"


@dataclass(frozen=True)
class CellJob:
    """One (property, metric, method) cell to grade, with the property's threshold overrides."""

    prop: str  # property key
    metric: str
    method: str
    thresholds: tuple = ()  # ((metric, value), ...) from --bench-threshold

    @property
    def key(self) -> tuple[str, str, str]:
        """(property key, metric, method): what a test looks its cell up by."""
        return self.prop, self.metric, self.method


def parse_executor(text: str | None) -> str | None:
    """--bench-executor: None for in-process, "ray" for a local Ray started for the run, else a cluster address."""
    from benchmark.errors import ConfigError

    if text in (None, "", IN_PROCESS):
        return None
    if text == LOCAL or text == "auto" or text.startswith("ray://") or _host_port(text):
        return text
    raise ConfigError(f"--bench-executor {text!r}: use 'in-process' (default), 'ray' (a local Ray started for the run), "
                      "'auto' (the cluster `ray start` set up on this machine) or ray://HOST:PORT (a remote cluster)")


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit())


def connect(executor: str, *, num_cpus: int | None = None) -> str:
    """Start or join Ray for ``executor``; a line saying which."""
    import ray

    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name in ("PYTHONPATH", "SHORTCUT_BENCH_METHODS"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    if executor == LOCAL:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env}, configure_logging=False)
        return f"local Ray, {int(ray.cluster_resources().get('CPU', 0))} CPUs"
    _check_reachable(executor)
    ray.init(address=executor, log_to_driver=False, runtime_env={"env_vars": env}, configure_logging=False)
    res = ray.cluster_resources()
    return (f"Ray cluster at {executor}: {len(ray.nodes())} nodes, {int(res.get('CPU', 0))} CPUs, "
            f"{int(res.get('GPU', 0))} GPUs")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    # Ray retries an unreachable address for minutes; a TCP connect says at once whether anything listens there.
    import socket

    from benchmark.errors import ConfigError

    target = address.removeprefix("ray://")
    if not _host_port(target):
        return  # "auto": Ray finds the local cluster itself and says when there is none
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address} ({exc}); start one there with `ray start --head`, "
                          "or use --bench-executor ray for a local one") from None


class GradingWorker:
    """A Ray actor's body: the run's models on one device, and the cells it is handed graded with them."""

    def __init__(self, bench, seed: int):
        import torch

        from benchmark.grading import Grader
        from benchmark.methods import discover

        torch.set_num_threads(1)  # one actor per CPU: more threads oversubscribe the cores (field notes)
        discover()
        if torch.cuda.is_available() and bench.device.type == "cpu":
            # A worker granted a GPU grades on it even when the controller (a laptop, say) has none; Ray's
            # CUDA_VISIBLE_DEVICES makes it this worker's own device.
            for trained in bench.all_models().values():
                trained.model.to("cuda")
        self.grader = Grader(bench, seed=seed)

    def where(self) -> tuple[str, int]:
        """(node id, process id) of this worker."""
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def grade(self, jobs: list[CellJob]) -> list[tuple[tuple, str]]:
        """Every job's cell as (key, Cell JSON): verdicts, failures included, never exceptions."""
        from benchmark.properties import PROPERTIES

        out = []
        for job in jobs:
            prop = PROPERTIES[job.prop].with_thresholds(dict(job.thresholds))
            out.append((job.key, self.grader.cell(prop, prop.metric(job.metric), job.method).to_json()))
        return out


@dataclass
class _Slot:
    actor: object
    node: str
    pid: int
    batch: list | None = None  # (method, jobs) in flight
    ref: object = None


class RayGrid:
    """Grades cells on Ray workers, a method at a time per worker, replacing workers that die."""

    def __init__(self, bench, *, seed: int, workers: int | None = None, on_progress: Callable[[str], None] | None = None):
        import ray

        self.bench_ref = ray.put(bench)
        self.seed = seed
        res = ray.cluster_resources()
        self.gpus = int(res.get("GPU", 0))
        self.n_workers = workers or max(1, self.gpus or int(res.get("CPU", 1)))
        self.on_progress = on_progress or (lambda line: None)
        self.retries = 0
        self.slots: list[_Slot] = []

    def _new_slot(self) -> _Slot:
        import ray

        options = {"num_gpus": 1, "num_cpus": 1} if self.gpus else {"num_cpus": 1}
        actor = ray.remote(GradingWorker).options(**options, max_restarts=0).remote(self.bench_ref, self.seed)
        node, pid = ray.get(actor.where.remote())
        return _Slot(actor, node, pid)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (what a fault-tolerance test kills)."""
        return [s.pid for s in self.slots]

    def busy_pids(self) -> list[int]:
        """Process ids of the workers grading a batch now."""
        return [s.pid for s in self.slots if s.batch is not None]

    def run(self, jobs: list[CellJob]) -> dict[tuple, object]:
        """{cell key: Cell} for every job, in no particular order; each cell graded exactly once."""
        import ray
        from ray.exceptions import RayActorError, WorkerCrashedError

        from benchmark.verdict import Cell

        by_method: dict[str, list[CellJob]] = {}
        for job in jobs:
            by_method.setdefault(job.method, []).append(job)
        queue = [(m, js, 1) for m, js in by_method.items()]
        done: dict[tuple, Cell] = {}
        self.slots = [self._new_slot() for _ in range(min(self.n_workers, len(queue)))]
        last_report = 0.0
        while queue or any(s.batch for s in self.slots):
            for slot in self.slots:
                if slot.batch is None and queue:
                    slot.batch = queue.pop(0)
                    slot.ref = slot.actor.grade.remote(slot.batch[1])
            refs = [s.ref for s in self.slots if s.batch is not None]
            ready, _ = ray.wait(refs, num_returns=1, timeout=5.0)
            for slot in [s for s in self.slots if s.batch is not None and s.ref in ready]:
                method, batch, attempt = slot.batch
                slot.batch = None
                try:
                    for key, cell_json in ray.get(slot.ref):
                        done.setdefault(tuple(key), Cell.from_json(cell_json))
                except (RayActorError, WorkerCrashedError) as exc:
                    self.retries += 1
                    self._replace(slot)
                    if attempt < MAX_ATTEMPTS:
                        queue.insert(0, (method, batch, attempt + 1))
                    else:
                        for job in batch:
                            done.setdefault(job.key, _lost(job, attempt, exc))
            if time.monotonic() - last_report > 10 or not (queue or any(s.batch for s in self.slots)):
                last_report = time.monotonic()
                self.on_progress(self.progress_line(len(done), len(jobs)))
        for slot in self.slots:
            ray.kill(slot.actor)
        return done

    def _replace(self, slot: _Slot) -> None:
        import ray

        try:
            ray.kill(slot.actor)
        except Exception:  # already gone
            pass
        fresh = self._new_slot()
        slot.actor, slot.node, slot.pid, slot.ref = fresh.actor, fresh.node, fresh.pid, None

    def progress_line(self, n_done: int, n_total: int) -> str:
        """Cells done, running and left, and what each node is grading."""
        running = sum(len(s.batch[1]) for s in self.slots if s.batch)
        nodes: dict[str, list[str]] = {}
        for s in self.slots:
            nodes.setdefault(s.node[:8], []).append(s.batch[0] if s.batch else "idle")
        per_node = "; ".join(f"node {n}: {', '.join(ms)}" for n, ms in nodes.items())
        return (f"ray: {n_done} cells done, {running} running, {n_total - n_done - running} left"
                f"{f', {self.retries} worker losses retried' if self.retries else ''} ({per_node})")


def _lost(job: CellJob, attempts: int, exc: BaseException) -> object:
    from benchmark.properties import PROPERTIES
    from benchmark.verdict import error

    prop = PROPERTIES[job.prop].with_thresholds(dict(job.thresholds))
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return error(prop, prop.metric(job.metric), job.method,
                 f"its Ray worker died on each of {attempts} attempts (last: {type(exc).__name__}: {reason[:200]})")


def shutdown() -> None:
    """Leave Ray (a local instance started for the run stops with it)."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
