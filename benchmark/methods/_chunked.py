"""No-grad forward passes split into chunks of the size measured fastest per image here, with bit-identical outputs,
through the model's fused inference copy where the grader allowed one (benchmark.models.fused)."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from benchmark.models import fused

# Batch sizes tried; the perturbation methods forward 256-512 images per pass, where a 2-core CPU runs slower per
# image than at 64 (benchmarks/forward_chunks.py prints the per-image cost of each).
CANDIDATES = (32, 64, 128, 256)
PROBE = 256
_chosen: dict[tuple, int | None] = {}
_clock = time.perf_counter  # a name of this module's: tests measure on a clock of their own


def _chunked_pass(model: nn.Module, x: Tensor, chunk: int) -> tuple[Tensor, float]:
    """``model``'s outputs on ``x`` forwarded in chunks of ``chunk``, and the seconds per image it took."""
    t0 = _clock()
    out = torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    return out, (_clock() - t0) / len(x)


def _exact_and_timed(model: nn.Module, x: Tensor, full: Tensor) -> dict[int, float]:
    """{candidate: seconds per image} of the candidates whose chunked outputs equal ``full`` bit for bit."""
    seconds = {}
    for chunk in CANDIDATES:
        out, first = _chunked_pass(model, x, chunk)  # the first pass of a shape may pay for allocation: timed twice
        if torch.equal(out, full):
            seconds[chunk] = min(first, _chunked_pass(model, x, chunk)[1])
    return seconds


def arch_key(model: nn.Module, example: Tensor) -> tuple:
    """What a measurement on ``model`` with inputs like ``example`` depends on besides its weights: its class, its
    parameters' shapes, its memory format and the inputs' shape, dtype and device."""
    weights = [p for p in model.parameters() if p.dim() == 4]
    channels_last = bool(weights) and weights[0].is_contiguous(memory_format=torch.channels_last)
    return (type(model).__qualname__, tuple(tuple(p.shape) for p in model.parameters()), channels_last,
            tuple(example.shape[1:]), example.dtype, example.device.type)


def fastest_chunk(model: nn.Module, example: Tensor, forward=None) -> int | None:
    """The candidate chunk whose forward is fastest per image on ``model`` (measured once per architecture and input shape),
    among those whose outputs equal one full-batch pass bit for bit; None (no chunking) when none does. ``forward``
    (the model's fused copy) is measured instead of the model when given: its kernels have their own fastest size."""
    # Keyed by the architecture, not the weights: MPRT's randomised copies run the same kernels as the model.
    key = (*arch_key(model, example), forward is not None)
    model = model if forward is None else forward
    if key not in _chosen:
        x = example[:1].expand(PROBE, *example.shape[1:]).contiguous() + torch.linspace(
            0, 1e-3, PROBE, device=example.device, dtype=example.dtype).view(-1, *[1] * (example.dim() - 1))
        with torch.no_grad():
            seconds = _exact_and_timed(model, x, model(x))
        _chosen[key] = min(seconds, key=seconds.__getitem__) if seconds else None
    return _chosen[key]


class ChunkedForward:
    """``model`` as a forward function: a no-grad batch goes through ``fast`` (default: the model), in chunks of
    ``chunk`` when larger; a call with gradients or extra arguments goes to the model itself."""

    def __init__(self, model: nn.Module, chunk: int | None, fast=None):
        self.model = model
        self.chunk = chunk
        self.fast = model if fast is None else fast

    def __call__(self, x: Tensor, *args, **kwargs) -> Tensor:
        if torch.is_grad_enabled() or args or kwargs:
            return self.model(x, *args, **kwargs)
        if self.chunk is None or len(x) <= self.chunk:
            return self.fast(x)
        return torch.cat([self.fast(x[i : i + self.chunk]) for i in range(0, len(x), self.chunk)])


def fused_forward(model: nn.Module, example: Tensor) -> ChunkedForward | None:
    """``model``'s fused copy as a forward for no-grad passes like ``example``, in the chunks measured fastest for it;
    None when the grader allowed ``model`` none or it could not be fused."""
    fast = fused.forward_of(model, example)
    return None if fast is None else ChunkedForward(model, fastest_chunk(model, example, fast), fast)


def no_grad_forward(model: nn.Module, example: Tensor) -> ChunkedForward:
    """``model``'s forward for no-grad passes like ``example``: its fused copy where the grader allowed one, else the
    model, in the chunks measured fastest for whichever of the two runs."""
    return fused_forward(model, example) or ChunkedForward(model, fastest_chunk(model, example))
