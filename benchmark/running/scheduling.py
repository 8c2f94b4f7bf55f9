"""Method-grouped xdist scheduling: one worker takes all of a method's tests (its maps are computed once), or all of a
work group's (:attr:`AttributionMethod.shares_work`), costliest first."""

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


def work_group(method: str | None) -> str | None:
    """What a scheduler hands to one worker for ``method``: its ``shares_work`` group (methods computing part of their
    maps from the same passes), else the method itself."""
    cls = all_methods().get(method) if method else None
    return (cls.shares_work or method) if cls is not None else method


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
    """Reorder ``items`` in place: the costliest work group's tests first, each group's tests together in collection
    order (a group's methods suite by suite, so what one computes for the others is soon used), stable."""
    names = list(costs)
    methods = {id(item): method_of(item.nodeid, names) for item in items}
    group_cost: dict[str | None, float] = {}
    group_of = {method: work_group(method) for method in set(methods.values())}
    for method, group in group_of.items():  # the methods this run has, not every registered one
        if method is not None:
            group_cost[group] = group_cost.get(group, 0.0) + costs.get(method, 0.0)
    position = {id(item): i for i, item in enumerate(items)}
    groups = {key: group_of[method] for key, method in methods.items()}
    first_seen: dict[str | None, int] = {}
    for i, item in enumerate(items):
        first_seen.setdefault(groups[id(item)], i)

    def key(item: pytest.Item) -> tuple:
        group = groups[id(item)]
        return (-group_cost.get(group, 0.0) if group else 0.0, first_seen[group], position[id(item)])

    items.sort(key=key)


class MethodScheduling(LoadScopeScheduling):
    """Hands each worker whole work groups (a method's or a group's cells, contract checks and sweep cells), in
    collection order."""

    def __init__(self, config: pytest.Config, log=None):
        super().__init__(config, log)
        self.names = list(all_methods())
        # Workers already put the costliest methods first; xdist's default reorder (by test count) would undo that.
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return work_group(method_of(nodeid, self.names)) or nodeid
