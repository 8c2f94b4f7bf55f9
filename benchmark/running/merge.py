"""Shards: split the methods of a run deterministically, and merge the shards' run records into one."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.cache import read_json
from benchmark.errors import ConfigError
from benchmark.running.sweep import SWEEP_KIND, merge_outcomes, outcome_from_dict, sweep_record


class MergeError(ConfigError):
    """Run records that cannot be combined into one leaderboard; the message names the records and the field."""


def parse_shard(spec: str) -> tuple[int, int]:
    """'2/3' -> (2, 3); ConfigError unless 1 <= i <= n."""
    i, sep, n = str(spec).partition("/")
    try:
        index, total = int(i), int(n)
    except ValueError:
        index = total = 0
    if not sep or not 1 <= index <= total:
        raise ConfigError(f"--bench-shard {spec!r} must be I/N with 1 <= I <= N, e.g. 1/2 and 2/2 on two machines.")
    return index, total


def shard(methods: list[str], spec: str) -> list[str]:
    """The methods shard I of N grades: every N-th of the sorted names, starting at the I-th."""
    index, total = parse_shard(spec)
    return [m for j, m in enumerate(sorted(methods)) if j % total == index - 1]


def load_record(path: Path) -> dict:
    """A run record (reports/run.json), with a clear error when missing or malformed."""
    path = Path(path)
    record = read_json(path, MergeError, f"No run record at {path}",
                       "pass the run.json a `pytest suites/` run wrote, or restore it from the run that wrote it")
    if not isinstance(record, dict) or not isinstance(record.get("cells"), list) or not isinstance(record.get("run"), dict):
        raise MergeError(f"{path} is not a shortcut-bench run record (needs 'run' and 'cells').")
    return record


def _models(run: dict) -> dict:
    # The trained weights, not the card's timings: shards must have graded the very same models.
    return {k: (c.get("key"), c.get("weights_sha256")) for k, c in (run.get("models") or {}).items()}


# What every shard must share, and how to read it off a record.
INVARIANTS = {
    "profile": lambda r: r["run"].get("profile"),
    "seed": lambda r: r["run"].get("seed"),
    "data source": lambda r: {k: (r["run"].get("options") or {}).get(k) for k in ("data_source", "data_root")},
    "code version (git)": lambda r: r["run"].get("git"),
    "package versions": lambda r: r["run"].get("versions"),
    "trained models": lambda r: _models(r["run"]),
    "graded weights": lambda r: {k: w.get("sha256") for k, w in (r["run"].get("weights") or {}).items()},
    "graded images": lambda r: r["run"].get("samples"),
    "inference path": lambda r: {k: v for k, v in (r["run"].get("inference") or {}).items() if k != "fused_fallbacks"},
    "record schema": lambda r: r.get("schema"),
}


def _check_invariants(records: list[tuple[str, dict]], invariants: dict) -> None:
    first_name, first = records[0]
    for name, rec in records[1:]:
        for what, get in invariants.items():
            if get(rec) != get(first):
                raise MergeError(
                    f"{name} and {first_name} differ in {what} ({_short(get(rec))} vs {_short(get(first))}): "
                    "shards of one leaderboard must run the same code, profile, seed, data and models. "
                    "Re-run the odd shard with the same options (and share the models/ cache).")


def _check_cell(key: tuple, name: str, c: dict, seen: dict) -> bool:
    """Whether ``c`` is new in ``seen`` ({key: (record, cell)}); MergeError when it was graded differently before."""
    if key not in seen:
        seen[key] = (name, c)
        return True
    other_name, other = seen[key]
    if _graded(other) != _graded(c):
        raise MergeError(f"Cell {'/'.join(key)} was graded differently in {name} and {other_name} "
                         f"({c['outcome']} {c.get('score')} vs {other['outcome']} {other.get('score')}).")
    return False


def _shards(records: list[tuple[str, dict]], methods) -> list[dict]:
    return [{"record": name, "shard": r["run"].get("shard"), "started": r["run"].get("started"),
             "wall_seconds": r["run"].get("wall_seconds"), "device": r["run"].get("device"),
             "methods": methods(r)} for name, r in records]


def _merged_run(records: list[tuple[str, dict]], methods) -> dict:
    run = dict(records[0][1]["run"])
    run["started"] = min(r["run"].get("started", "") for _, r in records)
    run["wall_seconds"] = max(r["run"].get("wall_seconds", 0) for _, r in records)
    run["device"] = ", ".join(sorted({str(r["run"].get("device")) for _, r in records}))
    run["shards"] = _shards(records, methods)
    run.pop("shard", None)
    if "inference" in run:  # every shard's fallbacks: a model that ran plain in one shard ran plain in the merge
        fallbacks = {f for _, r in records for f in (r["run"].get("inference") or {}).get("fused_fallbacks", [])}
        run["inference"] = {**run["inference"], "fused_fallbacks": sorted(fallbacks)}
    return run


def is_sweep(path: Path) -> bool:
    """Whether ``path`` holds a sweep record (by its kind; a file that cannot be read is left to the loaders)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("kind") == SWEEP_KIND
    except (OSError, ValueError, AttributeError):
        return Path(path).name == "sweep.json"


def load_sweep(path: Path) -> dict:
    """A sweep record (reports/sweep.json), with a clear error when missing, malformed or of an older version."""
    path = Path(path)
    record = read_json(path, MergeError, f"No sweep record at {path}",
                       "pass the sweep.json a `pytest suites/ -m sweep` run wrote")
    if not isinstance(record, dict) or not isinstance(record.get("outcomes"), list) or not isinstance(record.get("run"), dict):
        raise MergeError(f"{path} is not a shortcut-bench sweep record with its levels' cells (needs 'run' and "
                         "'outcomes'; a sweep.json written before they were recorded cannot be merged: run the sweep "
                         "again).")
    if record.get("kind") != SWEEP_KIND:
        raise MergeError(f"{path} is not a sweep record (kind {record.get('kind')!r}).")
    return record


def _level_models(r: dict) -> dict:
    # Each level's biased models, by their trained weights: shards must have graded the very same ones.
    return {json.dumps(o["level"], sort_keys=True): [(c.get("key"), c.get("weights_sha256"))
                                                      for c in (o["card"], *(o.get("other_seeds") or {}).values())]
            for o in r["outcomes"]}


SWEEP_INVARIANTS = {**{k: v for k, v in INVARIANTS.items() if k in ("profile", "seed", "data source",
                                                                   "code version (git)", "package versions")},
                    "levels and their biased models": _level_models}


def merge_sweeps(records: list[tuple[str, dict]]) -> dict:
    """One sweep record from shard sweep records (each grading some methods at every level); MergeError when they
    differ in anything that decides scores, or grade the same cell differently."""
    if not records:
        raise MergeError("Nothing to merge: pass two or more sweep records.")
    _check_invariants(records, SWEEP_INVARIANTS)
    seen: dict[tuple, tuple[str, dict]] = {}
    parts = []
    for name, rec in records:
        for d in rec["outcomes"]:
            o = outcome_from_dict(d)
            fresh = [c for c, raw in zip(o.cells, d["cells"])
                     if _check_cell((o.level.label, c.suite, c.metric, c.method), name, json.loads(raw), seen)]
            o.cells = fresh
            parts.append(o)
    return sweep_record(merge_outcomes(parts), _merged_run(records, lambda r: sorted(
        {json.loads(c)["method"] for o in r["outcomes"] for c in o["cells"]})))


def merge_records(records: list[tuple[str, dict]]) -> dict:
    """One run record from shard records; MergeError when they differ in anything that decides scores,
    or when the same cell (or check) was graded differently."""
    if not records:
        raise MergeError("Nothing to merge: pass two or more run records.")
    first = records[0][1]
    _check_invariants(records, INVARIANTS)
    cells: dict[tuple, tuple[str, dict]] = {}
    versions: dict[str, tuple[str, str]] = {}
    standards: dict[tuple, tuple[str, str]] = {}
    for name, rec in records:
        for c in rec["cells"]:
            key = (c["suite"], c["metric"], c["method"])
            seen_v = versions.setdefault(c["suite"], (name, c["suite_version"]))
            if seen_v[1] != c["suite_version"]:
                raise MergeError(f"Suite {c['suite']} is v{c['suite_version']} in {name} but v{seen_v[1]} in "
                                 f"{seen_v[0]}: re-run the older shard.")
            # The pass level is anchored to the controls, which every shard grades itself; what must agree is
            # the standard (the pass level, or a --bench-threshold override).
            seen_t = standards.setdefault(key[:2], (name, c.get("standard", "")))
            if seen_t[1] != c.get("standard", ""):
                raise MergeError(f"{c['suite']}/{c['metric']} is judged by {c.get('standard')!r} in {name} but by "
                                 f"{seen_t[1]!r} in {seen_t[0]}: use the same --bench-threshold on every shard.")
            _check_cell(key, name, c, cells)
    checks: dict[str, str] = {}
    for name, rec in records:
        for nodeid, outcome in (rec.get("checks") or {}).items():
            if checks.setdefault(nodeid, outcome) != outcome:
                raise MergeError(f"Check {nodeid} is {outcome} in {name} but {checks[nodeid]} in another record.")
    run = _merged_run(records, lambda r: sorted({c["method"] for c in r["cells"]}))
    merged = {**first, "run": run, "cells": [c for _, (_, c) in sorted(cells.items())]}
    if checks:
        merged["checks"] = dict(sorted(checks.items()))
    return merged


def missing_shards(records: list[tuple[str, dict]]) -> list[str]:
    """Shards 'I/N' absent from a set of shard records (empty when unsharded or complete)."""
    specs = [r["run"].get("shard") for _, r in records if r["run"].get("shard")]
    if not specs:
        return []
    totals = {parse_shard(s)[1] for s in specs}
    have = {parse_shard(s) for s in specs}
    return [f"{i}/{n}" for n in sorted(totals) for i in range(1, n + 1) if (i, n) not in have]


def _graded(c: dict) -> tuple:
    return c["outcome"], c.get("score"), c.get("informative")


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."
