"""Method-grouped xdist scheduling: one worker takes all of a method's tests (its maps are computed once), costliest first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

from benchmark.methods import all_methods


def method_of(nodeid: str, names: list[str]) -> str | None:
    """The registered method a test's id names among its parameters (the longest match), or None."""
    if "[" not in nodeid:
        return None
    params = f"-{nodeid[nodeid.index('[') + 1:nodeid.rindex(']')]}-"
    found = [n for n in names if f"-{n}-" in params]
    return max(found, key=len) if found else None


def method_costs(reports: Path) -> dict[str, float]:
    """Each method's cost: the seconds its cells took in the last run record in ``reports``, else a declared rank."""
    measured: dict[str, float] = {}
    try:
        for cell in json.loads((reports / "run.json").read_text(encoding="utf-8")).get("cells", []):
            measured[cell["method"]] = measured.get(cell["method"], 0.0) + float(cell.get("seconds") or 0.0)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        measured = {}
    # A method the record lacks (new, or no record yet) is ranked by what it declares, on the measured scale:
    # perturbation maps dominate map time, and `expensive` marks the slowest of them.
    scale = max(measured.values(), default=1.0)
    costs = {}
    for name, cls in all_methods().items():
        caps = cls.capabilities
        costs[name] = measured[name] if name in measured else scale * (caps.expensive + 0.5 * caps.perturbation)
    return costs


def order_by_cost(items: list[pytest.Item], costs: dict[str, float]) -> None:
    """Reorder ``items`` in place: the costliest method's tests first, each method's tests together, stable."""
    names = list(costs)
    position = {id(item): i for i, item in enumerate(items)}
    first_seen: dict[str | None, int] = {}
    for i, item in enumerate(items):
        first_seen.setdefault(method_of(item.nodeid, names), i)

    def key(item: pytest.Item) -> tuple:
        method = method_of(item.nodeid, names)
        return (-costs.get(method, 0.0) if method else 0.0, first_seen[method], position[id(item)])

    items.sort(key=key)


class MethodScheduling(LoadScopeScheduling):
    """Hands each worker whole methods (a method's cells, contract checks and sweep cells), in collection order."""

    def __init__(self, config: pytest.Config, log=None):
        super().__init__(config, log)
        self.names = list(all_methods())
        # Workers already put the costliest methods first; xdist's default reorder (by test count) would undo that.
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return method_of(nodeid, self.names) or nodeid
