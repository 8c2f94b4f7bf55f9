"""Measure how much wall time goes into model compute (forward passes and autograd backward passes)."""

from __future__ import annotations

import collections
import math
import time

import torch
from torch import nn
from torch.nn.modules import module as module_mod


class ModelComputeTimer:
    """Context manager summing wall time spent in outermost ``nn.Module`` forwards and in autograd.

    Forward time comes from global module hooks (only the outermost call of a nested forward counts,
    so a model's layers are not added on top of the model); backward time from wrapping
    ``torch.autograd.grad`` and ``torch.autograd.backward``, which Captum, Zennit and
    ``Tensor.backward`` all look up at call time. On CUDA each boundary synchronises, so kernels are
    charged to the call that launched them. Everything else (Quantus' numpy work, hashing, Python
    glue, data movement) is ``other``.
    """

    def __init__(self):
        self.passes: collections.Counter = collections.Counter()  # (gradients on, batch size) -> outermost forwards
        self.forward = 0.0
        self.backward = 0.0
        self.wall = 0.0
        self._depth = 0
        self._grad_depth = 0
        self._t_forward = 0.0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def _pre(self, module: nn.Module, args) -> None:
        if self._depth == 0 and self._grad_depth == 0:
            if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
                self.passes[(torch.is_grad_enabled(), int(args[0].shape[0]))] += 1
            self._sync()
            self._t_forward = time.perf_counter()
        self._depth += 1

    def _post(self, module: nn.Module, args, output) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0 and self._grad_depth == 0:
            self._sync()
            self.forward += time.perf_counter() - self._t_forward

    def _wrap(self, fn):
        def timed(*args, **kwargs):
            outer = self._grad_depth == 0
            if outer:
                self._sync()
                t0 = time.perf_counter()
            self._grad_depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._grad_depth -= 1
                if outer:
                    self._sync()
                    self.backward += time.perf_counter() - t0

        return timed

    def __enter__(self) -> ModelComputeTimer:
        self._handles = [
            module_mod.register_module_forward_pre_hook(self._pre),
            module_mod.register_module_forward_hook(self._post, always_call=True),
        ]
        self._originals = (torch.autograd.grad, torch.autograd.backward)
        torch.autograd.grad = self._wrap(torch.autograd.grad)
        torch.autograd.backward = self._wrap(torch.autograd.backward)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        self.wall += time.perf_counter() - self._t0
        torch.autograd.grad, torch.autograd.backward = self._originals
        for h in self._handles:
            h.remove()
        self._depth = 0
        return False

    @property
    def model(self) -> float:
        """Seconds in forward plus backward."""
        return self.forward + self.backward

    def share(self) -> float:
        """Fraction of wall time in model compute (0 when nothing was timed)."""
        return self.model / self.wall if self.wall > 0 else 0.0

    def summary(self) -> str:
        """One line: wall, forward, backward, other seconds and the model-compute share."""
        other = max(0.0, self.wall - self.model)
        return (f"wall {self.wall:.1f}s = forward {self.forward:.1f}s + backward {self.backward:.1f}s + "
                f"other {other:.1f}s  (model compute {100 * self.share():.0f}%)")


def _one_pass(model: nn.Module, x: torch.Tensor, grad: bool) -> None:
    if grad:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg).sum(), xg)
    else:
        with torch.no_grad():
            model(x)


def per_image_costs(model: nn.Module, image_shape: tuple, sizes, *, min_seconds: float = 0.2) -> dict:
    """Measured seconds per image of ``model`` at each batch size: {(gradients on, size): seconds}.

    Without gradients a plain forward pass; with gradients a forward pass and the input gradient of the summed
    outputs (one backward pass), the work of a gradient explanation.
    """
    device = next(model.parameters()).device
    memory = torch.channels_last if next(model.parameters()).dim() == 4 and \
        next(model.parameters()).is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    costs = {}
    for size in sorted(set(sizes)):
        x = torch.rand(size, *image_shape, device=device).contiguous(memory_format=memory)
        for grad in (False, True):
            _one_pass(model, x, grad)  # warm-up: first kernels, allocator
            n, t0 = 0, time.perf_counter()
            while n == 0 or time.perf_counter() - t0 < min_seconds:
                _one_pass(model, x, grad)
                n += 1
            ModelComputeTimer._sync()
            costs[(grad, size)] = (time.perf_counter() - t0) / n / size
    return costs


def floor_seconds(passes: dict, costs: dict) -> float:
    """Model-compute floor of ``passes`` {(gradients on, batch size): count}: images × the measured per-image cost
    at the nearest measured batch size (``costs`` from :func:`per_image_costs`)."""
    total = 0.0
    for (grad, size), count in passes.items():
        measured = [s for g, s in costs if g == grad]
        nearest = min(measured, key=lambda s: abs(math.log(s) - math.log(size)))
        total += count * size * costs[(grad, nearest)]
    return total


def fastest_floor_seconds(passes: dict, costs: dict) -> float:
    """Model-compute floor of ``passes`` with every image at the cheapest per-image cost measured in ``costs`` for
    its kind of pass (with or without gradients), whatever batch size the pass used."""
    best = {g: min(c for (gg, _), c in costs.items() if gg == g) for g in {g for g, _ in costs}}
    return sum(count * size * best[grad] for (grad, size), count in passes.items())
