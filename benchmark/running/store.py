"""A persistent, content-addressed store of graded cells and contract outcomes, under the cache directory."""

from __future__ import annotations

import ast
import base64
import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.cache import CorruptEntry, lock_for, read_checked, stable_hash, write_checked
from benchmark.grading.contract import ERROR as CONTRACT_ERROR
from benchmark.grading.contract import ContractOutcome
from benchmark.grading.grader import graded_indices
from benchmark.grading.properties import MetricSpec, Property
from benchmark.grading.verdict import ERROR, Cell
from benchmark.methods import get_method
from benchmark.methods.base import AttributionMethod
from benchmark.options import channels_last_on, fused_inference_on
from benchmark.profiles import Profile
from benchmark.reporting.report import package_versions
from benchmark.running.source_closure import PACKAGE_DIR, closure_hash
from benchmark.session import Bench
from benchmark.timelimit import TIMEOUT_TEXT

STORE_DIR = "results"
SCHEMA = 1
# SciPy solves ROAD's imputation, scikit-learn fits Lime's and KernelShap's surrogates, scikit-image draws IROF's
# superpixels: their versions decide scores as much as the others'.
VERSIONED = ("torch", "captum", "quantus", "zennit", "numpy", "scipy", "scikit-learn", "scikit-image")
# The modules whose code computes a cell from maps: a change to any of them invalidates every stored result.
# models/arch.py holds every graded model's forward, which every map is computed through; the methods' shared call
# path (base, _captum, _chunked) runs the region forward, DeepLIFT's rules and the chunk seeds (rng) for every method.
# A method's own helpers are keyed per method instead (helpers_hash), but a covered module's imports are not followed
# there, so every helper the call path imports is listed here (tests/test_store.py holds it).
GRADING_CODE = ("grading", "methods/base.py", "methods/__init__.py", "methods/_chunked.py", "methods/_captum.py",
                "methods/_region.py", "methods/_deeplift_rules.py", "rng.py", "models/arch.py", "models/fused.py",
                "session.py", "shortcut.py", "timelimit.py")


@functools.lru_cache(maxsize=1)
def _grading_code_files() -> frozenset[Path]:
    root = PACKAGE_DIR
    return frozenset(p for name in GRADING_CODE for p in ((root / name).rglob("*.py") if (root / name).is_dir()
                                                           else [root / name]))


def _in_grading_code(path: Path) -> bool:
    return path in _grading_code_files()


@functools.lru_cache(maxsize=1)
def grading_code_hash() -> str:
    """SHA-256 of the source of every module that turns maps into scores and verdicts (the grading package whole)."""
    h = hashlib.sha256()
    for path in sorted(_grading_code_files()):
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def method_fingerprint(name: str, level: str) -> dict:
    """What decides a method's maps: the source of its class and of those it inherits from, its helpers, its
    parameters at ``level``, its batch size and capabilities."""
    return _class_fingerprint(get_method(name), name, level)


@functools.cache
def _class_fingerprint(cls: type, name: str, level: str) -> dict:
    # Keyed by the class object: a method re-registered under the same name (a changed module) is fingerprinted anew.
    # Every class it inherits behaviour from counts (a PatchMethod's mask, a CaptumMethod's call), up to the base
    # class, whose module is part of the grading code; so do its module's other code and the project modules it
    # imports (helpers_hash).
    h = hashlib.sha256()
    for klass in cls.__mro__:
        if klass is AttributionMethod:
            break
        try:
            h.update(inspect.getsource(klass).encode())
        except (OSError, TypeError):  # a class defined where no source survives: its module's path stands in
            h.update(repr(getattr(inspect.getmodule(klass), "__file__", klass.__qualname__)).encode())
    return {"name": name, "source": h.hexdigest(), "helpers": helpers_hash(cls),
            "params": json.dumps(cls.resolve_params(level), sort_keys=True, default=repr),
            "batch_size": cls.batch_size, "capabilities": repr(cls.capabilities)}


def helpers_hash(cls: type) -> str:
    """SHA-256 of the code a method's class calls besides its own classes: the rest of its module (functions,
    constants, helper classes; other methods' classes excepted) and every project module it imports, transitively,
    outside the grading code (which the run fingerprint covers)."""
    module = inspect.getmodule(cls)
    if module is None:  # no module survives: the class's name stands in
        return hashlib.sha256(repr(cls.__qualname__).encode()).hexdigest()
    return _module_helpers_hash(module)


@functools.cache
def _module_helpers_hash(module) -> str:
    # Keyed by the module object (a re-imported, edited module is hashed anew); the same for every method it holds,
    # since every method class is left out, so each module is read and parsed once per process.
    try:
        path = Path(inspect.getsourcefile(module))
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):  # no source survives: the module's name stands in
        return hashlib.sha256(repr(module.__name__).encode()).hexdigest()
    h = hashlib.sha256()
    for node in tree.body:
        other = getattr(module, node.name, None) if isinstance(node, ast.ClassDef) else None
        # A method class is fingerprinted on its own: its edits must not invalidate its module neighbours' results.
        if isinstance(other, type) and issubclass(other, AttributionMethod):
            continue
        h.update((ast.get_source_segment(source, node) or "").encode())
    h.update(closure_hash(path, module.__name__, _in_grading_code).encode())
    return h.hexdigest()


def run_fingerprint(bench: Bench, graded_ids: dict[str, list[int]], *, seed: int, channels_last: bool,
                    fused: bool = False) -> dict:
    """What every result of a run depends on besides its cell: the models' weights, the world and its graded images,
    the seed, the memory format, fused inference and device, the grading code, the profile and the libraries'
    versions."""
    return {"weights": {name: m.card.get("weights_sha256") for name, m in sorted(bench.all_models().items())},
            "world": bench.world.key, "graded": graded_ids, "seed": seed, "channels_last": channels_last,
            "fused_inference": fused, "device": bench.device.type,
            "profile": stable_hash(bench.profile), "code": grading_code_hash(), "versions": package_versions(VERSIONED),
            "schema": SCHEMA}


def cell_key(run: dict, prop: Property, metric: MetricSpec, method: str, profile) -> str:
    """The store key of one cell: the run, the property as declared (every builder setting), the metric with its
    threshold, and the fingerprints of the method and of every control it is judged against."""
    level = profile.method_level
    controls = sorted(prop.controls - {method})
    # The property as declared, with this metric's entry alone: a cell is judged on its own metric's scores.
    declared = prop.describe(profile, only=metric.name)
    return stable_hash({"kind": "cell", "run": run, "property": declared, "metric": metric.name,
                        "threshold": metric.threshold, "pass_level": prop.pass_level,
                        "method": method_fingerprint(method, level),
                        "controls": [method_fingerprint(m, level) for m in controls]}, length=40)


def contract_key(run: dict, method: str, arch: str, split: str, profile) -> str:
    """The store key of one method's contract check on one architecture's model of one split."""
    return stable_hash({"kind": "contract", "run": run, "method": method_fingerprint(method, profile.method_level),
                        "arch": arch, "split": split}, length=40)


def scores_key(run: dict, prop: Property, metric: MetricSpec, method: str, model_key: str, model: str,
               profile) -> str:
    """The store key of a control's per-sample scores on one metric: the run, the property as declared with this
    metric alone, the control's fingerprint, and the model (its role and its weights' fingerprint)."""
    declared = prop.describe(profile, only=metric.name)
    return stable_hash({"kind": "scores", "run": run, "property": [prop.key, prop.version, declared],
                        "metric": metric.name, "threshold": metric.threshold,
                        "method": method_fingerprint(method, profile.method_level), "model": [model_key, model]},
                       length=40)


def encode_array(a: np.ndarray, what: str) -> dict:
    """A float array as a JSON payload, tagged with ``what`` it holds, that decodes to the same dtype and bits."""
    a = np.ascontiguousarray(a)
    return {"what": what, "dtype": a.dtype.str, "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(payload: Any, what: str) -> np.ndarray | None:
    """The float array :func:`encode_array` encoded as ``what``, or None for a payload that does not hold one."""
    try:
        dtype = np.dtype(payload["dtype"])
        if payload["what"] != what or dtype.kind != "f":
            return None
        return np.frombuffer(base64.b64decode(payload["data"]), dtype=dtype).reshape(payload["shape"]).copy()
    except (KeyError, TypeError, ValueError):
        return None


def encode_scores(scores: np.ndarray) -> dict:
    """Per-sample scores as a JSON payload that decodes to the same dtype and bits (NaN included)."""
    return encode_array(scores, "scores")


def decode_scores(payload: Any) -> np.ndarray | None:
    """The scores :func:`encode_scores` encoded, or None for a payload that does not hold them."""
    return decode_array(payload, "scores")


FIGURE_EXAMPLES = 3  # the flipped cats the report's figure shows


def figure_key(run: dict, method: str, profile) -> str:
    """The store key of a method's maps in the report's figure: its first graded maps on the biased model."""
    return stable_hash({"kind": "figure", "run": run, "method": method_fingerprint(method, profile.method_level)},
                       length=40)


def encode_maps(maps: np.ndarray) -> dict:
    """Maps as a JSON payload that decodes to the same float32 bits."""
    return encode_array(np.asarray(maps, dtype="<f4"), "maps")


def decode_maps(payload: Any) -> np.ndarray | None:
    """The maps :func:`encode_maps` encoded, or None for a payload that does not hold them."""
    return decode_array(payload, "maps")


@dataclass
class ResultStore:
    """Stored results by key, each a checksummed JSON file written atomically (safe for concurrent writers)."""

    root: Path
    read: bool = True  # False (--bench-fresh): results are recomputed, and stored afresh
    hits: int = 0
    misses: int = 0
    corrupt: list[str] = field(default_factory=list)

    def summary_line(self) -> str:
        """What the store answered in this process, for the terminal."""
        where = f"result store {Path(self.root) / STORE_DIR}"
        if not self.read:
            return f"{where}: not read (--bench-fresh); {self.misses} results graded and stored afresh"
        corrupt = f"; {len(self.corrupt)} corrupt entries found and regraded" if self.corrupt else ""
        return f"{where}: {self.hits} results reused, {self.misses} graded{corrupt}"

    def _path(self, key: str) -> Path:
        return Path(self.root) / STORE_DIR / key[:2] / f"{key}.json"

    def get(self, key: str, *, count: bool = True) -> Any | None:
        """The stored payload, or None when absent, ignored, or corrupt (reported, removed and recomputed); a lookup
        with ``count`` false (the figure's maps) is left out of the hits and misses, which count results."""
        if not self.read:
            self.misses += count
            return None
        path = self._path(key)
        try:
            payload = read_checked(path)
        except FileNotFoundError:
            self.misses += count
            return None
        except CorruptEntry:
            self.corrupt.append(str(path))
            warnings.warn(f"shortcut-bench: stored result {path} is corrupt or truncated; it is graded again",
                          stacklevel=2)
            path.unlink(missing_ok=True)
            self.misses += count
            return None
        self.hits += count
        os.utime(path)  # "unused for N days" is what `python -m benchmark cache prune --older-than N` removes
        return payload

    def put(self, key: str, payload: Any) -> None:
        """Store ``payload`` under ``key`` (atomic replace: a concurrent writer of the same key writes the same)."""
        write_checked(self._path(key), payload)

    @contextlib.contextmanager
    def lock(self, key: str):
        """A cross-process lock of ``key``'s entry: whoever holds it computes the entry, the others wait and read."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_for(path)
        try:
            with lock:
                yield
        finally:
            # No lock file is left in the store. The lock only saves a second computation; the entry's atomic write
            # keeps it whole, so a process that locks a fresh file meanwhile reads the entry or computes it again.
            Path(lock.lock_file).unlink(missing_ok=True)


ENTRY_KINDS = ("cells", "contract checks", "controls' scores", "figures' maps")


def _kind(payload: Any) -> str:
    if isinstance(payload, str):  # a cell's JSON (Cell.to_json)
        return "cells"
    keys = set(payload) if isinstance(payload, dict) else set()
    if keys and keys <= {"status", "detail"}:
        return "contract checks"
    arrays = {"scores": "controls' scores", "maps": "figures' maps"}
    return arrays.get(payload.get("what"), "other") if "what" in keys else "other"


def store_contents(root: Path) -> dict[str, tuple[int, int]]:
    """(entries, bytes) under ``root``'s store by kind (:data:`ENTRY_KINDS`, then "other" and "corrupt" if any)."""
    found: dict[str, list[int]] = {kind: [0, 0] for kind in ENTRY_KINDS}
    base = Path(root) / STORE_DIR
    for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
        try:
            kind = _kind(read_checked(path))
        except (CorruptEntry, OSError):
            kind = "corrupt"
        count = found.setdefault(kind, [0, 0])
        count[0] += 1
        count[1] += path.stat().st_size
    return {kind: (n, size) for kind, (n, size) in found.items()}


def prune(root: Path, *, older_than_days: float | None = None) -> tuple[int, int]:
    """Remove stored results (all, or those unused for ``older_than_days``) and stray temporary files;
    (files removed, bytes freed)."""
    base = Path(root) / STORE_DIR
    if not base.is_dir():
        return 0, 0
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    removed = freed = 0
    for path in list(base.rglob("*")):
        if not path.is_file():
            continue
        stale = cutoff is None or path.name.endswith(".tmp") or os.stat(path).st_mtime < cutoff
        if stale:
            freed += path.stat().st_size
            path.unlink()
            removed += 1
    return removed, freed


def storable_cell(cell: Cell) -> bool:
    """Whether a cell depends on its inputs alone: never an ERROR, nor anything a time limit decided."""
    text = f"{cell.message} {cell.validity_reason or ''}"
    return cell.outcome != ERROR and TIMEOUT_TEXT not in text


def storable_outcome(outcome: ContractOutcome) -> bool:
    """Whether a contract outcome depends on its inputs alone (not lost with a worker, not a time limit)."""
    return outcome.status != CONTRACT_ERROR and TIMEOUT_TEXT not in outcome.detail


@dataclass
class RunStore:
    """One world's view of the store: cells and contract checks keyed by that world's run fingerprint."""

    results: ResultStore
    run: dict
    profile: Profile

    def cell(self, prop: Property, metric: MetricSpec, method: str, compute: Callable[[], Cell]) -> Cell:
        """The stored cell, else ``compute()``'s (stored when it depends on its inputs alone)."""
        key = cell_key(self.run, prop, metric, method, self.profile)  # hashed once: a miss is looked up, then put
        found = self._cell_at(key)
        if found is not None:
            return found
        cell = compute()
        self._put_cell_at(key, cell)
        return cell

    def stored_cell(self, prop: Property, metric: MetricSpec, method: str) -> Cell | None:
        """The stored cell, or None."""
        return self._cell_at(cell_key(self.run, prop, metric, method, self.profile))

    def put_cell(self, prop: Property, metric: MetricSpec, method: str, cell: Cell) -> None:
        """Store a cell computed elsewhere (a Ray worker's)."""
        self._put_cell_at(cell_key(self.run, prop, metric, method, self.profile), cell)

    def _cell_at(self, key: str) -> Cell | None:
        found = self.results.get(key)
        return None if found is None else Cell.from_json(found)

    def _put_cell_at(self, key: str, cell: Cell) -> None:
        if storable_cell(cell):
            self.results.put(key, cell.to_json())

    def contract(self, method: str, arch: str, split: str, compute: Callable[[], ContractOutcome]) -> ContractOutcome:
        """The stored contract outcome, else ``compute()``'s (stored when it depends on its inputs alone)."""
        found = self.stored_contract(method, arch, split)
        if found is not None:
            return found
        outcome = compute()
        self.put_contract(method, arch, split, outcome)
        return outcome

    def stored_contract(self, method: str, arch: str, split: str) -> ContractOutcome | None:
        """The stored contract outcome, or None."""
        found = self.results.get(contract_key(self.run, method, arch, split, self.profile))
        return None if found is None else ContractOutcome(**found)

    def put_contract(self, method: str, arch: str, split: str, outcome: ContractOutcome) -> None:
        """Store a contract outcome that depends on its inputs alone."""
        if storable_outcome(outcome):
            self.results.put(contract_key(self.run, method, arch, split, self.profile), dataclasses.asdict(outcome))

    def control_scores(self, prop: Property, metric: MetricSpec, method: str, model_key: str, model: str,
                       compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The stored scores of a control, else ``compute()``'s, stored; one process computes them while the others
        wait for them (not counted as results: they are parts of cells)."""
        key = scores_key(self.run, prop, metric, method, model_key, model, self.profile)
        if not self.results.read:  # --bench-fresh: every process computes what it needs, and stores it afresh
            scores = compute()
            self.results.put(key, encode_scores(scores))
            return scores
        with self.results.lock(key):
            found = decode_scores(self.results.get(key, count=False))
            if found is not None:
                return found
            scores = compute()
            self.results.put(key, encode_scores(scores))
            return scores

    def stored_maps(self, method: str) -> np.ndarray | None:
        """The figure's stored maps of ``method`` (its first graded maps on the biased model), or None."""
        found = self.results.get(figure_key(self.run, method, self.profile), count=False)
        return None if found is None else decode_maps(found)

    def put_maps(self, method: str, maps: np.ndarray) -> None:
        """Keep the figure's maps of ``method``: its first graded maps on the biased model."""
        self.results.put(figure_key(self.run, method, self.profile), encode_maps(maps))


def open_run_store(results: ResultStore, bench: Bench) -> RunStore:
    """The store's view for ``bench``'s world (its graded images are found with one forward pass per seed)."""
    graded = {str(r.seed): [int(i) for i in graded_indices(bench.for_seed(r))] for r in bench.seeds()}
    run = run_fingerprint(bench, graded, seed=bench.options.seed,
                          channels_last=channels_last_on(bench.options.channels_last, bench.device.type),
                          fused=fused_inference_on(bench.options.fused_inference, bench.device.type))
    return RunStore(results, run, bench.profile)
