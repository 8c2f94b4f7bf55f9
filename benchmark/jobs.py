"""What a run asserts, as jobs any executor can compute: grid cells, sweep-level cells and contract checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmark.contract import ERROR, ContractOutcome, contract_outcome
from benchmark.grading import Grader, grade_cell
from benchmark.properties import PROPERTIES, MetricSpec, Property
from benchmark.sweep import grade_level, level_cells
from benchmark.verdict import Cell, error

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
        """The :class:`benchmark.verdict.Cell` that :meth:`run` returned."""
        return Cell.from_json(payload)

    def lost(self, attempts: int, exc: BaseException) -> Cell:
        """The ERROR cell of a job whose worker died on every attempt."""
        prop = self._prop()
        return error(prop, prop.metric(self.metric), self.method, death(attempts, exc))

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
        """The :class:`benchmark.contract.ContractOutcome` on ``grader``'s models and images."""
        return contract_outcome(grader, self.method, self.arch, self.split)

    @staticmethod
    def decode(payload):
        """What :meth:`run` returned (an outcome pickles as it is)."""
        return payload

    def lost(self, attempts: int, exc: BaseException) -> ContractOutcome:
        """The ERROR outcome of a check whose worker died on every attempt (its test fails with the reason)."""
        return ContractOutcome(ERROR, f"{self.method} on the {self.split} {self.arch}: {death(attempts, exc)}")


Job = CellJob | ContractJob


def death(attempts: int, exc: BaseException) -> str:
    """What a job's result says when its worker died on every attempt."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"its Ray worker died on each of {attempts} attempts (last: {type(exc).__name__}: {reason[:200]})"


class Results:
    """A run's cells and contract outcomes: an executor's precomputed ones first, else computed here on demand."""

    def __init__(self, grader: Callable[[], Grader], precomputed: dict[tuple, object]):
        self._grader = grader  # made on first use: a run whose cells were all precomputed builds no grader
        self.precomputed = precomputed

    def cell(self, prop: Property, metric: MetricSpec, method: str) -> Cell:
        """The grid's (property, metric, method) cell."""
        found = self.precomputed.get((GRID, prop.key, metric.name, method))
        return found if found is not None else grade_cell(self._grader(), prop, metric, method)

    def contract(self, method: str, arch: str, split: str) -> ContractOutcome:
        """``method``'s contract check on the ``split`` model of ``arch``."""
        found = self.precomputed.get(ContractJob(method, arch, split).key)
        return found if found is not None else contract_outcome(self._grader(), method, arch, split)

    def level_cells(self, label: str, grader: Grader, method: str) -> list[Cell]:
        """``method``'s localisation cells at one sweep level (graded by the level's ``grader``)."""
        found = [self.precomputed.get((label, prop.key, m.name, method)) for prop, m in level_cells()]
        return found if all(c is not None for c in found) else grade_level(grader, [method])
