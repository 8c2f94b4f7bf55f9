"""No-grad forward passes split into chunks of the size measured fastest per image here, with bit-identical outputs,
through the model's fused inference copy where the grader allowed one (benchmark.models.fused)."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from benchmark.models import fused

# Chunk sizes tried; the perturbation methods forward 128-512 images per pass, where a 2-core CPU may run slower per
# image than at 64 (benchmarks/RESULTS.md).
CANDIDATES = (32, 64, 128, 256)
# Per (architecture, input shape, forward kind): (chunk, rows of the call it was measured on). A chunk equal to those
# rows means the call's whole pass was fastest, or no smaller chunk gave its bits.
_chosen: dict[tuple, tuple[int, int]] = {}
_clock = time.perf_counter  # a name of this module's: tests measure on a clock of their own


def _chunked_pass(model: nn.Module, x: Tensor, chunk: int) -> tuple[Tensor, float]:
    """``model``'s outputs on ``x`` forwarded in chunks of ``chunk``, and the seconds per image it took."""
    t0 = _clock()
    out = torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    return out, (_clock() - t0) / len(x)


def _measure(model: nn.Module, x: Tensor) -> tuple[int, Tensor]:
    """The fastest per image of one whole pass over ``x`` and the candidate chunks smaller than it whose outputs equal
    the whole pass's bit for bit, and the whole pass's outputs."""
    full, first = _chunked_pass(model, x, len(x))  # the first pass of a shape may pay for allocation: each timed twice
    seconds = {len(x): min(first, _chunked_pass(model, x, len(x))[1])}
    for chunk in (c for c in CANDIDATES if c < len(x)):
        out, first = _chunked_pass(model, x, chunk)
        if torch.equal(out, full):
            seconds[chunk] = min(first, _chunked_pass(model, x, chunk)[1])
    return min(seconds, key=seconds.__getitem__), full


def arch_key(model: nn.Module, example: Tensor) -> tuple:
    """What a measurement on ``model`` with inputs like ``example`` depends on besides its weights: its class, its
    parameters' shapes, its memory format and the inputs' shape, dtype and device."""
    weights = [p for p in model.parameters() if p.dim() == 4]
    channels_last = bool(weights) and weights[0].is_contiguous(memory_format=torch.channels_last)
    return (type(model).__qualname__, tuple(tuple(p.shape) for p in model.parameters()), channels_last,
            tuple(example.shape[1:]), example.dtype, example.device.type)


def _stale(chosen: tuple[int, int] | None, rows: int) -> bool:
    """Whether a call of ``rows`` must be measured: nothing measured yet, or it is larger than the call measured and
    would be chunked at a size or whole pass that measurement did not time or bit-compare. A whole pass that beat
    every candidate (it was larger than all) stays the answer: else a GPU, where whole passes win, would measure
    again at each larger pass."""
    if chosen is None:
        return True
    chunk, measured = chosen
    if chunk == measured:
        return rows > measured and measured <= CANDIDATES[-1]
    return rows > measured and any(measured < c < rows for c in CANDIDATES)


def chunked(model: nn.Module, x: Tensor, key: tuple) -> Tensor:
    """``model``'s no-grad outputs on ``x`` in the chunks measured fastest per image for ``key``, bit-identical to one
    whole pass; measured on the first call larger than the smallest candidate (and again on a larger call that
    would run a size not measured): on the call's own rows, the batch sizes a run really uses."""
    if len(x) <= CANDIDATES[0]:
        return model(x)  # no candidate chunk is smaller: one pass, nothing to measure
    if _stale(_chosen.get(key), len(x)):
        chunk, full = _measure(model, x)
        _chosen[key] = (chunk, len(x))
        return full
    chunk = _chosen[key][0]
    if len(x) <= chunk or chunk not in CANDIDATES:  # not a candidate: a whole pass won, and every pass runs whole
        return model(x)
    return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


class ChunkedForward:
    """``model`` as a forward function: a no-grad batch goes through ``fast`` (default: the model) in the chunks
    measured fastest for it (:func:`chunked`); a call with gradients or extra arguments goes to the model itself."""

    def __init__(self, model: nn.Module, fast=None):
        self.model = model
        self.fast = model if fast is None else fast
        self._keys: dict[tuple, tuple] = {}

    def __call__(self, x: Tensor, *args, **kwargs) -> Tensor:
        if torch.is_grad_enabled() or args or kwargs:
            return self.model(x, *args, **kwargs)
        inputs = (tuple(x.shape[1:]), x.dtype, x.device.type)
        if inputs not in self._keys:
            # Keyed by the architecture, not the weights: MPRT's randomised copies run the same kernels as the model.
            # The fused copy's kernels have their own fastest size.
            self._keys[inputs] = (*arch_key(self.model, x), self.fast is not self.model)
        key = self._keys[inputs]
        memo = fused.row_memo_for(self.fast, x)  # rows forwarded before under these weights are answered, not run
        if memo is None:
            return chunked(self.fast, x, key)
        return memo(lambda rows: chunked(self.fast, rows, key), x)


def fused_forward(model: nn.Module, example: Tensor) -> ChunkedForward | None:
    """``model``'s fused copy as a forward for no-grad passes like ``example``, in the chunks measured fastest for it;
    None when the grader allowed ``model`` none or it could not be fused."""
    fast = fused.forward_of(model, example)
    return None if fast is None else ChunkedForward(model, fast)


def no_grad_forward(model: nn.Module, example: Tensor) -> ChunkedForward:
    """``model``'s forward for no-grad passes like ``example``: its fused copy where the grader allowed one, else the
    model, in the chunks measured fastest for whichever of the two runs."""
    return fused_forward(model, example) or ChunkedForward(model)
