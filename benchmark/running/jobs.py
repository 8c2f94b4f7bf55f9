"""What a run asserts, as jobs any executor can compute: grid cells, sweep-level cells and contract checks (and the
report figure's maps, which the worker that graded a method hands over)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmark.grading.contract import ERROR, ContractOutcome, contract_outcome
from benchmark.grading.grader import Grader, grade_cell
from benchmark.grading.properties import PROPERTIES, MetricSpec, Property
from benchmark.grading.verdict import Cell, error
from benchmark.running.store import FIGURE_EXAMPLES, RunStore, decode_maps, encode_maps
from benchmark.running.sweep import grade_level, level_cells

GRID = ""  # the world of a CellJob of the run's own grid; a sweep level's cells name the level's label


@dataclass(frozen=True)
class CellJob:
    """One (property, metric, method) cell to grade on one world's models, with the property's threshold overrides."""

    prop: str  # property key
    metric: str
    method: str
    thresholds: tuple = ()  # ((metric, value), ...) from --bench-threshold
    world: str = GRID  # GRID, or the label of the strength-sweep level whose models grade it

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(world, property key, metric, method): what a test looks its cell up by."""
        return self.world, self.prop, self.metric, self.method

    def run(self, grader: Grader) -> str:
        """The cell graded by ``grader``, as JSON (as it travels on user_properties); failures are ERROR cells."""
        prop = self._prop()
        return grade_cell(grader, prop, prop.metric(self.metric), self.method).to_json()

    @staticmethod
    def decode(payload: str) -> Cell:
        """The :class:`benchmark.grading.verdict.Cell` that :meth:`run` returned."""
        return Cell.from_json(payload)

    def lost(self, attempts: int, exc: BaseException) -> Cell:
        """The ERROR cell of a job whose worker died on every attempt."""
        prop = self._prop()
        return error(prop, prop.metric(self.metric), self.method, death(attempts, exc))

    def stored(self, store: RunStore) -> Cell | None:
        """This cell from ``store``, or None."""
        prop = self._prop()
        return store.stored_cell(prop, prop.metric(self.metric), self.method)

    def store(self, store: RunStore, cell: Cell) -> None:
        """Keep a computed cell in ``store``."""
        prop = self._prop()
        store.put_cell(prop, prop.metric(self.metric), self.method, cell)

    def _prop(self) -> Property:
        return PROPERTIES[self.prop].with_thresholds(dict(self.thresholds))


@dataclass(frozen=True)
class ContractJob:
    """One method's contract check on one architecture's model of one split (the run's own world)."""

    method: str
    arch: str
    split: str
    world: str = GRID

    @property
    def key(self) -> tuple[str, str, str, str]:
        """("contract", method, arch, split): what the contract test looks its outcome up by."""
        return "contract", self.method, self.arch, self.split

    def run(self, grader: Grader) -> ContractOutcome:
        """The :class:`benchmark.grading.contract.ContractOutcome` on ``grader``'s models and images."""
        return contract_outcome(grader, self.method, self.arch, self.split)

    @staticmethod
    def decode(payload):
        """What :meth:`run` returned (an outcome pickles as it is)."""
        return payload

    def stored(self, store: RunStore) -> ContractOutcome | None:
        """This check's outcome from ``store``, or None."""
        return store.stored_contract(self.method, self.arch, self.split)

    def store(self, store: RunStore, outcome: ContractOutcome) -> None:
        """Keep a computed outcome in ``store``."""
        store.put_contract(self.method, self.arch, self.split, outcome)

    def lost(self, attempts: int, exc: BaseException) -> ContractOutcome:
        """The ERROR outcome of a check whose worker died on every attempt (its test fails with the reason)."""
        return ContractOutcome(ERROR, f"{self.method} on the {self.split} {self.arch}: {death(attempts, exc)}")


@dataclass(frozen=True)
class FigureJob:
    """One method's maps for the report's figure, from the worker that graded its cells (never explained for it)."""

    method: str
    world: str = GRID

    @property
    def key(self) -> tuple[str, str]:
        """("figure", method): what the figure looks its maps up by."""
        return "figure", self.method

    def run(self, grader: Grader) -> dict | None:
        """The method's first graded maps on the biased model, encoded; None where this worker graded none."""
        maps = grader.store.graded_maps().get(self.method)
        return None if maps is None else encode_maps(maps[:FIGURE_EXAMPLES])

    @staticmethod
    def decode(payload) -> np.ndarray | None:
        """The maps :meth:`run` encoded, or None."""
        return None if payload is None else decode_maps(payload)

    def stored(self, store: RunStore) -> np.ndarray | None:
        """The method's stored figure maps, or None."""
        return store.stored_maps(self.method)

    def store(self, store: RunStore, maps: np.ndarray | None) -> None:
        """Keep the maps a worker graded (the figure explains a method no worker graded)."""
        if maps is not None:
            store.put_maps(self.method, maps)

    def lost(self, attempts: int, exc: BaseException) -> None:
        """No maps from a worker that died: the figure explains the method itself."""
        return None


Job = CellJob | ContractJob | FigureJob


def death(attempts: int, exc: BaseException) -> str:
    """What a job's result says when its worker died on every attempt."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"its Ray worker died on each of {attempts} attempts (last: {type(exc).__name__}: {reason[:200]})"


class Results:
    """A run's cells and contract outcomes: an executor's precomputed ones, else the store's, else computed here."""

    def __init__(self, grader: Callable[[], Grader], precomputed: dict[tuple, object],
                 store: Callable[[str], RunStore | None] = lambda world: None):
        self._grader = grader  # made on first use: a run whose cells were all precomputed builds no grader
        self.precomputed = precomputed
        self._store = store  # world (GRID or a sweep level's label) -> its view of the result store, or None

    def cell(self, prop: Property, metric: MetricSpec, method: str) -> Cell:
        """The grid's (property, metric, method) cell."""
        found = self.precomputed.get((GRID, prop.key, metric.name, method))
        if found is not None:
            return found
        store = self._store(GRID)
        compute = lambda: grade_cell(self._grader(), prop, metric, method)  # noqa: E731
        return compute() if store is None else store.cell(prop, metric, method, compute)

    def contract(self, method: str, arch: str, split: str) -> ContractOutcome:
        """``method``'s contract check on the ``split`` model of ``arch``."""
        found = self.precomputed.get(ContractJob(method, arch, split).key)
        if found is not None:
            return found
        store = self._store(GRID)
        compute = lambda: contract_outcome(self._grader(), method, arch, split)  # noqa: E731
        return compute() if store is None else store.contract(method, arch, split, compute)

    def level_cells(self, label: str, grader: Grader, method: str) -> list[Cell]:
        """``method``'s localisation cells at one sweep level (graded by the level's ``grader``)."""
        found = [self.precomputed.get((label, prop.key, m.name, method)) for prop, m in level_cells()]
        if all(c is not None for c in found):
            return found
        store = self._store(label)
        if store is None:
            return grade_level(grader, [method])
        return [store.cell(prop, m, method, lambda prop=prop, m=m: grade_cell(grader, prop, m, method))
                for prop, m in level_cells()]


def split_stored(jobs: list[Job], store: Callable[[str], RunStore | None]) -> tuple[dict[tuple, object], list[Job]]:
    """({job key: stored result}, the jobs the store does not answer): what an executor still has to compute."""
    found: dict[tuple, object] = {}
    rest: list[Job] = []
    for job in jobs:
        view = store(job.world)
        result = None if view is None else job.stored(view)
        if result is None:
            rest.append(job)
        else:
            found[job.key] = result
    return found, rest


def with_work(jobs: list[Job]) -> list[Job]:
    """``jobs`` less each FigureJob whose method has no other job left: no worker would grade its maps to hand over."""
    busy = {(j.world, j.method) for j in jobs if not isinstance(j, FigureJob)}
    return [j for j in jobs if not isinstance(j, FigureJob) or (j.world, j.method) in busy]


def store_done(jobs: list[Job], done: dict[tuple, object], store: Callable[[str], RunStore | None]) -> None:
    """Store what an executor computed (results that depend on their inputs alone)."""
    for job in jobs:
        view = store(job.world)
        if view is not None and job.key in done:
            job.store(view, done[job.key])
