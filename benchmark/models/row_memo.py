"""No-grad outputs of a forward held by the bytes of each input row, so a row forwarded again is answered, not computed.

The same image reaches the same weights many times in a grid: a perturbation method explaining an image again with the
same seeded draws (KernelShap), KernelShap's samples with one patch off (FeatureAblation's copies), perturbed copies
the faithfulness metrics make alike for several methods (``benchmarks/repeated_rows.py`` counted 58,431 repeats in
1,039,231 rows). A row's output is its own only if the forward computes each row apart from its batch mates (an
eval-mode network does, but a kernel may pick another algorithm for another batch size and round differently), so a
memo is used for a forward and an input shape only after :func:`rows_independent` found each row's output bit for bit
the same in other batches.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import xxhash
from torch import Tensor

# Rows one memo holds at most (16 bytes of digest and one output row each, about 130 bytes with the table's overhead);
# a memo that would hold more starts over.
ROWS_HELD = 1 << 20
# The first call of an input shape is probed only when it has at least this many rows (fewer would prove little).
PROBE_MIN = 8


def row_digests(x: Tensor) -> list[bytes]:
    """128-bit XXH3 of each row's bytes in NCHW order, whatever its memory layout (:func:`rows_independent` checks that
    the layout does not change a row's output)."""
    rows = np.ascontiguousarray(x.detach().contiguous().numpy()).reshape(len(x), -1).view(np.uint8)
    digest = xxhash.xxh3_128_digest
    return [digest(r) for r in rows]


def layout_of(x: Tensor) -> tuple:
    """What the rows of one memo share besides their bytes: the shape of a row and its dtype."""
    return tuple(x.shape[1:]), x.dtype


def rows_independent(forward: Callable[[Tensor], Tensor], x: Tensor) -> tuple[bool, Tensor]:
    """Whether ``forward`` gives every row of ``x`` (at least 6 rows) the same bits alone, in a few rows, in another
    order, in part of the batch and in the other memory layout (NCHW or channels-last) as in the whole batch; and the
    whole batch's outputs."""
    whole = forward(x)
    n = len(x)
    if not (isinstance(whole, Tensor) and whole.dim() == 2 and len(whole) == n):
        return False, whole
    if x.dim() == 4:  # a few rows in the other layout: it changes how a batch is read, not what a row computes
        few = x[: min(n, 17)]
        other = few.contiguous(memory_format=torch.channels_last) if few.is_contiguous() else few.contiguous()
        if not torch.equal(forward(other), whole[: len(few)]):
            return False, whole
    # One row, two in reverse, odd and even small batches, batches around a kernel's usual blocking, half the batch.
    picks = [[0], [n - 1, 0], [1, 2, 3], list(range(n - 1, n - 6, -1))]
    picks += [list(range(size)) for size in sorted({8, 17, 33, 65, n // 2 + 1}) if size < n]
    return all(torch.equal(forward(x[pick]), whole[pick]) for pick in picks), whole


class RowMemo:
    """One forward's outputs for rows of one layout (:func:`layout_of`), by each row's digest."""

    def __init__(self, capacity: int = ROWS_HELD):
        self.capacity = capacity
        self._index: dict[bytes, int] = {}
        self._values: Tensor | None = None  # (held rows or more, outputs)
        self.answered = 0  # rows answered from the memo, not forwarded
        self.forwarded = 0

    def __call__(self, forward: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``forward(x)``: each row held before is answered from the memo, the others are forwarded once each."""
        keys = row_digests(x)
        found = [self._index.get(k, -1) for k in keys]
        missing: dict[bytes, int] = {}  # each missing row's first position: a row repeated within ``x`` goes once
        for i, (k, f) in enumerate(zip(keys, found)):
            if f < 0 and k not in missing:
                missing[k] = i
        self.forwarded += len(missing)
        self.answered += len(x) - len(missing)
        if not missing:
            return self._values[found]
        held = [i for i, f in enumerate(found) if f >= 0]
        answers = self._values[[found[i] for i in held]] if held else None  # read before holding may start over
        computed = forward(x if len(missing) == len(x) else x[list(missing.values())])
        self._hold(list(missing), computed)
        if len(missing) == len(x):
            return computed
        out = torch.empty((len(x), *computed.shape[1:]), dtype=computed.dtype)
        if held:
            out[held] = answers
        at = {k: j for j, k in enumerate(missing)}
        new = [i for i, f in enumerate(found) if f < 0]
        out[new] = computed[[at[keys[i]] for i in new]]
        return out

    def hold(self, x: Tensor, outputs: Tensor) -> None:
        """Hold ``outputs``, computed for the rows of ``x`` (all distinct or not) by the memo's forward."""
        firsts = dict(zip(row_digests(x), range(len(x))))
        new = {k: i for k, i in firsts.items() if k not in self._index}
        if new:
            self._hold(list(new), outputs[list(new.values())])

    def _hold(self, keys: list[bytes], computed: Tensor) -> None:
        """Hold the rows of ``computed`` under ``keys``; a memo that would pass its capacity starts over (repeats come
        soon after their first row: a method explaining an image again, a metric's next cell)."""
        if len(self._index) + len(keys) > self.capacity:
            self._index.clear()
        room = min(len(keys), self.capacity)
        start = len(self._index)
        if self._values is None:
            self._values = torch.empty((max(1024, room), *computed.shape[1:]), dtype=computed.dtype)
        elif start + room > len(self._values):
            size = min(max(2 * len(self._values), start + room), self.capacity)  # start + room <= capacity
            grown = torch.empty((size, *computed.shape[1:]), dtype=computed.dtype)
            grown[:start] = self._values[:start]
            self._values = grown
        self._values[start : start + room] = computed[:room]
        self._index.update(zip(keys[:room], range(start, start + room)))
