"""Retrain reproducibility: how two runs' leaderboards (leaderboard.json) differ, property verdict by verdict and
cell by cell, with each changed outcome's scores and skills so a reader sees how near its pass level it was."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tabulate import tabulate

from benchmark.errors import BenchmarkError

# Outcomes are compared as strings, so this reads leaderboards written with or without the third outcome
# (INCONCLUSIVE, issue 31) and any outcome added later: everything that is not PASS, FAIL or INCONCLUSIVE
# (ERROR, N/A, INFO, UNDECIDED, COLLAPSED, ...) moves in a category of its own.
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
DECIDED = frozenset({PASS, FAIL})

# The kinds of change, in the order they are counted and listed.
FLIP, UNDECIDED_MOVE, OTHER_MOVE, ONE_RUN_ONLY = "flips", "inconclusive_moves", "other_moves", "one_run_only"
KINDS = (FLIP, UNDECIDED_MOVE, OTHER_MOVE, ONE_RUN_ONLY)
KIND_LABELS = {FLIP: "PASS ↔ FAIL flips", UNDECIDED_MOVE: "PASS or FAIL ↔ INCONCLUSIVE",
               OTHER_MOVE: "other moves (ERROR, N/A, INFO, UNDECIDED, COLLAPSED, ...)",
               ONE_RUN_ONLY: "in one run only (not compared)"}
SHORT_LABELS = {FLIP: "PASS ↔ FAIL", UNDECIDED_MOVE: "↔ INCONCLUSIVE", OTHER_MOVE: "other move",
                ONE_RUN_ONLY: "one run only"}
LEADERBOARD = "leaderboard.json"


class LeaderboardError(BenchmarkError, ValueError):
    """A leaderboard to compare is missing, unreadable or not a leaderboard.json."""


@dataclass(frozen=True)
class Change:
    """One property verdict or cell whose outcome differs between the runs (or that only one run has)."""

    level: str  # "property" or "cell"
    suite: str
    method: str
    metric: str | None  # None for a property verdict
    a: str | None  # the outcome in run A; None: run A does not have it
    b: str | None
    kind: str  # one of KINDS: FLIP, UNDECIDED_MOVE, OTHER_MOVE, ONE_RUN_ONLY
    # (metric, run A's cell, run B's cell) as text: score and skill with CIs, the pass level, the outcome. A
    # property verdict lists every cell of that method in the property.
    evidence: tuple[tuple[str, str, str], ...] = ()


@dataclass
class LevelCounts:
    """What changed at one level (property verdicts or cells): how many were compared and every change."""

    compared: int  # in both runs
    changes: list[Change] = field(default_factory=list)

    def of(self, kind: str) -> list[Change]:
        """The changes of one kind."""
        return [c for c in self.changes if c.kind == kind]

    @property
    def unchanged(self) -> int:
        """Compared and with the same outcome in both runs."""
        return self.compared - sum(c.kind != ONE_RUN_ONLY for c in self.changes)


@dataclass
class RetrainComparison:
    """Run A against run B at the property level and the cell level."""

    properties: LevelCounts
    cells: LevelCounts

    def counts(self) -> dict[str, dict[str, int]]:
        """{"properties"|"cells": {"compared", "unchanged", and one count per kind}}."""
        return {name: {"compared": lvl.compared, "unchanged": lvl.unchanged, **{k: len(lvl.of(k)) for k in KINDS}}
                for name, lvl in (("properties", self.properties), ("cells", self.cells))}

    def as_dict(self) -> dict:
        """Counts and every change, JSON-ready."""
        return {"counts": self.counts(), "changes": [asdict(c) for c in self.properties.changes + self.cells.changes]}


def kind_of(a: str | None, b: str | None) -> str | None:
    """The category of a move from outcome ``a`` to ``b`` (None: unchanged)."""
    if a is None or b is None:
        return ONE_RUN_ONLY
    if a == b:
        return None
    if {a, b} <= DECIDED:
        return FLIP
    if INCONCLUSIVE in (a, b) and {a, b} & DECIDED:
        return UNDECIDED_MOVE
    return OTHER_MOVE


def load_leaderboard(path: Path | str) -> dict:
    """A run's leaderboard.json (``path`` is the file or the reports folder holding it), checked for the fields
    compared; a missing or malformed one raises :class:`LeaderboardError` with a one-line reason."""
    path = Path(path)
    file = path / LEADERBOARD if path.is_dir() else path
    if not file.is_file():
        raise LeaderboardError(f"{file}: no such leaderboard (a finished grid writes {LEADERBOARD} to its reports "
                               "folder)")
    try:
        board = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LeaderboardError(f"{file}: not readable JSON ({exc})") from None
    if not _well_formed(board):
        raise LeaderboardError(f"{file}: not a shortcut-bench leaderboard (needs 'verdicts' by property and method, "
                               "and 'cells' with suite, metric, method and outcome)")
    return board


def _well_formed(board: object) -> bool:
    if not isinstance(board, dict) or not isinstance(board.get("verdicts"), dict) \
            or not isinstance(board.get("cells"), list):
        return False
    verdicts_ok = all(isinstance(v, dict) and all(isinstance(o, str) for o in v.values())
                      for v in board["verdicts"].values())
    return verdicts_ok and all(isinstance(c, dict) and all(isinstance(c.get(k), str)
                                                         for k in ("suite", "metric", "method", "outcome"))
                               for c in board["cells"])


def _number(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "—"


def cell_text(cell: dict | None) -> str:
    """'0.525 [0.514, 0.536] pass at 0.513; skill 0.563 [0.510, 0.601]; beats Random, Sobel; PASS': what decided the
    cell, in one line."""
    if cell is None:
        return "not graded"
    parts = []
    if isinstance(cell.get("mean"), (int, float)):
        score = f"{_number(cell['mean'])} [{_number(cell.get('ci_low'))}, {_number(cell.get('ci_high'))}]"
        if cell.get("threshold") is not None:
            score += f" pass at {_number(cell['threshold'])}"
        parts.append(score)
    if isinstance(cell.get("skill"), (int, float)):
        parts.append(f"skill {_number(cell['skill'])} [{_number(cell.get('skill_low'))}, "
                     f"{_number(cell.get('skill_high'))}]")
    if parts and isinstance(cell.get("beats"), str):
        parts.append(f"beats {cell['beats'].replace(';', ', ') or 'no control'}")
    return "; ".join([*parts, cell["outcome"]])


def _metric_label(a: dict | None, b: dict | None) -> str:
    c = a or b
    needs = (c.get("standard") or "").split(" (")[0]
    return f"{c['metric']} {c.get('direction') or ''}".strip() + (f" ({needs})" if needs else "")


def _cells(board: dict) -> dict[tuple[str, str, str], dict]:
    return {(c["suite"], c["metric"], c["method"]): c for c in board["cells"]}


def _verdicts(board: dict) -> dict[tuple[str, str], str]:
    return {(suite, method): v for suite, by in board["verdicts"].items() for method, v in by.items()}


def compare_cells(a: dict, b: dict) -> LevelCounts:
    """Cell by cell: every (property, metric, method) whose outcome differs, or that one run lacks."""
    ca, cb = _cells(a), _cells(b)
    changes = []
    for key in sorted(ca.keys() | cb.keys()):
        x, y = ca.get(key), cb.get(key)
        kind = kind_of(x and x["outcome"], y and y["outcome"])
        if kind is not None:
            changes.append(Change("cell", key[0], key[2], key[1], x and x["outcome"], y and y["outcome"], kind,
                                  ((_metric_label(x, y), cell_text(x), cell_text(y)),)))
    return LevelCounts(len(ca.keys() & cb.keys()), changes)


def compare_verdicts(a: dict, b: dict) -> LevelCounts:
    """Property verdict by verdict (per property and method), each change with the method's cells in the property."""
    va, vb = _verdicts(a), _verdicts(b)
    ca, cb = _cells(a), _cells(b)
    changes = []
    for suite, method in sorted(va.keys() | vb.keys()):
        x, y = va.get((suite, method)), vb.get((suite, method))
        kind = kind_of(x, y)
        if kind is None:
            continue
        # A verdict one run lacks has no counterpart to explain; its cells are listed at the cell level.
        keys = [] if kind == ONE_RUN_ONLY else sorted(k for k in ca.keys() | cb.keys() if k[0] == suite
                                                      and k[2] == method)
        evidence = tuple((_metric_label(ca.get(k), cb.get(k)), cell_text(ca.get(k)), cell_text(cb.get(k)))
                         for k in keys)
        changes.append(Change("property", suite, method, None, x, y, kind, evidence))
    return LevelCounts(len(va.keys() & vb.keys()), changes)


def compare(a: dict, b: dict) -> RetrainComparison:
    """Run A's leaderboard against run B's (as :func:`load_leaderboard` returns them)."""
    return RetrainComparison(compare_verdicts(a, b), compare_cells(a, b))


def _share(n: int, of: int) -> str:
    return f"{n}" if not of else f"{n} ({n / of:.1%})"


def counts_table(result: RetrainComparison) -> str:
    """The counts as a Markdown table: one row per kind of change, a column per level."""
    levels = (result.properties, result.cells)
    rows = [["compared (graded in both runs)", *(lvl.compared for lvl in levels)],
            ["unchanged", *(lvl.unchanged for lvl in levels)]]
    rows += [[KIND_LABELS[k], *(_share(len(lvl.of(k)), lvl.compared) if k != ONE_RUN_ONLY else len(lvl.of(k))
                                for lvl in levels)] for k in KINDS]
    return tabulate(rows, headers=["outcome", "property verdicts", "cells"], tablefmt="github")


def changes_table(result: RetrainComparison, names: tuple[str, str] = ("run A", "run B")) -> str:
    """Every change as a Markdown table, flips first; a property verdict's row is followed by its cells."""
    order = {k: i for i, k in enumerate(KINDS)}
    rows = []
    for lvl in (result.properties, result.cells):
        for c in sorted(lvl.changes, key=lambda c: order[c.kind]):
            if c.level == "cell":
                (label, ta, tb), = c.evidence
                rows.append([SHORT_LABELS[c.kind], "cell", c.suite, c.method, label, ta, tb])
                continue
            rows.append([SHORT_LABELS[c.kind], "property", c.suite, c.method, "verdict", c.a or "not graded",
                         c.b or "not graded"])
            rows += [["", "", "", "", f"↳ {label}", ta, tb] for label, ta, tb in c.evidence]
    return tabulate(rows, headers=["change", "level", "property", "method", "metric", *names], tablefmt="github")


def render_markdown(result: RetrainComparison, names: tuple[str, str] = ("run A", "run B")) -> str:
    """The counts, then every change with both runs' scores and skills (their CIs and pass levels)."""
    lines = [counts_table(result), ""]
    if not result.properties.changes and not result.cells.changes:
        return "\n".join([*lines, "No property verdict or cell outcome differs between the runs."]) + "\n"
    lines += ["Every change, flips first. A cell reads: score mean [95% CI] and the pass level in the metric's units "
              "this run (it is anchored to controls measured in the run), the skill [95% CI] (0 = the property's "
              "negative control, 1 = its positive one), the controls it beat, and its outcome.", "",
              changes_table(result, names)]
    return "\n".join(lines) + "\n"
