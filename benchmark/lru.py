"""A least-recently-used table bounded by the total weight of its entries, for the in-process memos."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

_ABSENT = object()


def _one(value: Any) -> int:
    return 1


class Lru:
    """Entries by key, the least recently used dropped while their total weight exceeds a budget (the newest stays)."""

    def __init__(self, budget: int, weigh: Callable[[Any], int] = _one):
        self.budget = int(budget)
        self.weight = 0  # the entries' total weight
        self._weigh = weigh
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value held under ``key``, now the most recently used; ``default`` when none is."""
        value = self._entries.get(key, _ABSENT)
        if value is _ABSENT:
            return default
        self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        """Hold ``value`` under ``key`` as the most recently used, replacing what was held there."""
        self.pop(key)
        self._entries[key] = value
        self.weight += self._weigh(value)
        # The newest entry is never dropped: a caller that must not hold an entry heavier than the budget refuses it.
        while self.weight > self.budget and len(self._entries) > 1:
            _, old = self._entries.popitem(last=False)
            self.weight -= self._weigh(old)

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """The value held under ``key``, no longer held; ``default`` when none is."""
        value = self._entries.pop(key, _ABSENT)
        if value is _ABSENT:
            return default
        self.weight -= self._weigh(value)
        return value

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self.weight = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
