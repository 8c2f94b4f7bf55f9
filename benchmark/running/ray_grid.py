"""The grid's cells (and the strength sweep's) computed by Ray workers: one actor per device holds the models, the
controller schedules methods.

The controller has built (or loaded) the run's world, and each sweep level's, once; they go to the workers through
Ray's object store, so no worker trains, reads the cache or needs a shared filesystem. Each worker is an actor holding
one :class:`benchmark.grading.grader.Grader` per world it has been asked about (its maps and memos live as long as the actor),
and is handed one (world, method)'s cells at a time, so a method's maps on a world are computed once, by one worker.
A cell's verdict depends only on the seed and the inputs (every memo is exact), so the reports are those of a serial
run. A worker that dies mid-batch (killed, out of memory, node lost) is replaced and its batch is given to a worker
again; after :data:`MAX_ATTEMPTS` losses its cells become ERROR cells that say so. Nothing is graded twice: each cell
is kept from the first batch that returns it.
"""

from __future__ import annotations

# Ray is imported inside the functions that use it: it is an optional extra (pip install -e '.[ray]'), and
# importing it costs 0.22 s (python -X importtime, this 2-core machine) that an in-process run never needs.
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.grading.grader import Grader
from benchmark.methods import discover
from benchmark.models import fused
from benchmark.running.jobs import GRID, CellJob, ContractJob, FigureJob, Job
from benchmark.running.run_context import RunContext
from benchmark.running.scheduling import work_group
from benchmark.running.sweep import level_cells
from benchmark.session import Bench
from benchmark.suite import PropertySuite

MAX_ATTEMPTS = 3
# Seconds between progress lines while batches run: often enough to show life, rarely enough for a CI log.
PROGRESS_EVERY_S = 10
LOCAL, IN_PROCESS = "ray", "in-process"


def parse_executor(text: str | None) -> str | None:
    """--bench-executor: None for in-process, "ray" for a local Ray started for the run, else a cluster address."""
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
    """A Ray actor's body: the run's worlds (the grid's, each sweep level's) on one device, and the cells it is handed
    graded with their models."""

    def __init__(self, worlds: dict, seed: int | None):
        torch.set_num_threads(1)  # one actor per CPU: more threads oversubscribe the cores (field notes)
        discover()
        self.worlds = worlds  # world -> ObjectRef of its Bench; fetched when a batch first needs it
        self.seed = seed
        self.graders: dict = {}

    def grader(self, world: str):
        """The Grader of one world's models, made when first asked (a sweep level no batch needs is never fetched)."""
        if world not in self.graders:
            import ray

            bench = ray.get(self.worlds[world])
            if torch.cuda.is_available() and bench.device.type == "cpu":
                # A worker granted a GPU grades on it even when the controller (a laptop, say) has none; Ray's
                # CUDA_VISIBLE_DEVICES makes it this worker's own device.
                to_gpu(bench)
            self.graders[world] = Grader(bench, seed=self.seed)
        return self.graders[world]

    def where(self) -> tuple[str, int]:
        """(node id, process id) of this worker."""
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def grade(self, jobs: list) -> tuple[list[tuple[tuple, object]], list[str]]:
        """Every job's (key, result), failures included, never exceptions; and this process's fused fallbacks."""
        return [(job.key, job.run(self.grader(job.world))) for job in jobs], fused.fallbacks()


def to_gpu(bench: Bench) -> None:
    """Move every model of ``bench`` onto this process's CUDA device (``bench.device`` follows the models)."""
    for trained in bench.all_models().values():
        trained.model.to("cuda")


@dataclass
class _Slot:
    actor: object
    node: str
    pid: int
    batch: list | None = None  # (method, jobs) in flight
    ref: object = None


class RayGrid:
    """Grades cells on Ray workers, a method at a time per worker, replacing workers that die."""

    def __init__(self, bench: Bench, *, seed: int | None = None, workers: int | None = None,
                 on_progress: Callable[[str], None] | None = None, levels: dict | None = None):
        import ray

        # The grid's Bench and each sweep level's (label -> Bench), each put once in the object store.
        self.world_refs = {GRID: ray.put(bench), **{label: ray.put(b) for label, b in (levels or {}).items()}}
        self.seed = seed
        res = ray.cluster_resources()
        self.gpus = int(res.get("GPU", 0))
        self.n_workers = workers or max(1, self.gpus or int(res.get("CPU", 1)))
        self.on_progress = on_progress or (lambda line: None)
        self.retries = 0
        self.slots: list[_Slot] = []
        self.fallbacks: set[str] = set()  # the workers' fused-inference fallbacks, for the run record

    def _new_slot(self) -> _Slot:
        import ray

        options = {"num_gpus": 1, "num_cpus": 1} if self.gpus else {"num_cpus": 1}
        actor = ray.remote(GradingWorker).options(**options, max_restarts=0).remote(self.world_refs, self.seed)
        node, pid = ray.get(actor.where.remote())
        return _Slot(actor, node, pid)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (what a fault-tolerance test kills)."""
        return [s.pid for s in self.slots]

    def busy_pids(self) -> list[int]:
        """Process ids of the workers grading a batch now."""
        return [s.pid for s in self.slots if s.batch is not None]

    def run(self, jobs: list) -> dict[tuple, object]:
        """{job key: Cell or ContractOutcome} for every job, in no particular order; each graded exactly once."""
        import ray
        from ray.exceptions import RayActorError, WorkerCrashedError

        queue = [(label, batch, 1) for label, batch in batches(jobs)]
        done: dict[tuple, object] = {}
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
                    results, fallbacks = ray.get(slot.ref)
                    self.fallbacks.update(fallbacks)
                    for job, (key, payload) in zip(batch, results, strict=True):
                        done.setdefault(tuple(key), job.decode(payload))
                except (RayActorError, WorkerCrashedError) as exc:
                    self.retries += 1
                    self._replace(slot)
                    if attempt < MAX_ATTEMPTS:
                        queue.insert(0, (method, batch, attempt + 1))
                    else:
                        for job in batch:
                            done.setdefault(job.key, job.lost(attempt, exc))
            if time.monotonic() - last_report > PROGRESS_EVERY_S or not (queue or any(s.batch for s in self.slots)):
                last_report = time.monotonic()
                self.on_progress(self.progress_line(sum(k[0] != "figure" for k in done),
                                                    sum(not isinstance(j, FigureJob) for j in jobs)))
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
        running = sum(not isinstance(j, FigureJob) for s in self.slots if s.batch for j in s.batch[1])
        nodes: dict[str, list[str]] = {}
        for s in self.slots:
            nodes.setdefault(s.node[:8], []).append(s.batch[0] if s.batch else "idle")
        per_node = "; ".join(f"node {n}: {', '.join(ms)}" for n, ms in nodes.items())
        return (f"ray: {n_done} cells done, {running} running, {n_total - n_done - running} left"
                f"{f', {self.retries} worker losses retried' if self.retries else ''} ({per_node})")


def batches(jobs: list) -> list[tuple[str, list]]:
    """(label, jobs) per world and work group, in the jobs' order: a batch shares its method's maps (a group's, what
    its methods compute in common), so they are computed once, on one worker."""
    by_group: dict[tuple[str, str], list] = {}
    for job in jobs:
        by_group.setdefault((job.world, work_group(job.method)), []).append(job)
    return [(_label(*key), batch) for key, batch in by_group.items()]


def _label(world: str, group: str) -> str:
    return f"{group} @ {world}" if world else group


def shutdown() -> None:
    """Leave Ray (a local instance started for the run stops with it)."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


# --- the pytest hand-off: collected items -> jobs -> results the tests assert ------------------------------


def grid_jobs(ctx: RunContext, items: list[pytest.Item]) -> list[Job]:
    """What the collected items will assert: the grid's (property, metric, method) cells, each method's contract
    checks, the localisation cells of each method at each sweep level whose models learned the shortcut, and each
    graded method's maps for the report's figure."""
    jobs: list[Job] = []
    for item in items:
        cls, params = getattr(item, "cls", None), getattr(getattr(item, "callspec", None), "params", {})
        if "bench_method" not in params:
            continue
        method = params["bench_method"]
        if cls is not None and issubclass(cls, PropertySuite):
            key = cls.prop.key
            jobs.append(CellJob(key, params["bench_metric"], method, tuple(sorted(ctx.thresholds.get(key, {}).items()))))
        elif "arch" in params and "split" in params:  # the method contract suite
            jobs.append(ContractJob(method, params["arch"], params["split"]))
        elif "sweep_level" in params and ctx.sweep.get(params["sweep_level"].label, (None, None))[1] is not None:
            label = params["sweep_level"].label  # an excluded level (no grader) has no cells: its tests skip
            jobs += [CellJob(prop.key, m.name, method, world=label) for prop, m in level_cells()]
    # Last in each method's batch: the worker that graded the method's cells hands over its maps for the figure.
    graded = [j.method for j in jobs if isinstance(j, CellJob) and j.world == GRID]
    return list(dict.fromkeys([*jobs, *(FigureJob(m) for m in dict.fromkeys(graded))]))


def run_on_ray(ctx: RunContext, jobs: list[Job], say: Callable[[str], None]) -> dict[tuple, object]:
    """Compute ``jobs`` on Ray before the tests run ({job key: result}); the tests then assert them."""
    try:
        joined = connect(ctx.executor)
    except (Exception, SystemExit) as exc:  # an unreachable cluster (Ray exits after its connect timeout)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--bench-executor {ctx.executor}: could not start or join Ray: {first}") from None
    say(f"shortcut-bench: {joined}; grading {sum(not isinstance(j, FigureJob) for j in jobs)} cells")
    t0 = time.perf_counter()
    worlds = {job.world for job in jobs}
    levels = {label: grader.bench for label, (_, grader) in ctx.sweep.items() if label in worlds}
    grid = RayGrid(ctx.bench, levels=levels, on_progress=say)
    try:
        done = grid.run(jobs)
    finally:
        shutdown()
    for text in sorted(grid.fallbacks):  # warned again here, so pytest records them as it does xdist workers'
        warnings.warn(text, fused.FusedFallback, stacklevel=2)
    say(f"shortcut-bench: Ray graded {sum(k[0] != 'figure' for k in done)} cells in {time.perf_counter() - t0:.1f}s "
        f"({grid.n_workers} workers, {grid.retries} worker losses retried)")
    return done
