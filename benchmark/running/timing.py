"""Measure how much wall time goes into model compute (forward passes and autograd backward passes)."""

from __future__ import annotations

import collections
import itertools
import math
import time

import torch
from torch import nn
from torch.nn.modules import module as module_mod


def arch_of(module: nn.Module) -> str:
    """The architecture a module is: its class name, the scripted class's for a TorchScript (fused) copy, the
    wrapped model's for a ``Sequential(model, Softmax)`` (how Quantus asks a model for probabilities)."""
    if isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[1], nn.Softmax):
        return arch_of(module[0])
    return getattr(module, "original_name", None) or type(module).__name__


def _rows(output) -> int:
    """The leading size of a forward's output (its first tensor, for a tuple or list); 0 when it has none."""
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    return int(output.shape[0]) if isinstance(output, torch.Tensor) and output.dim() >= 1 else 0


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
        # (architecture, gradients on, rows of the output) -> outermost forwards
        self.passes: collections.Counter = collections.Counter()
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
            self._sync()
            self._t_forward = time.perf_counter()
        self._depth += 1

    def _post(self, module: nn.Module, args, output) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0 and self._grad_depth == 0:
            self._sync()
            self.forward += time.perf_counter() - self._t_forward
            # The batch the model computed, read from its output: a method's own hooks may have changed the input
            # (DeepLift calls the model with tuples and runs inputs and baselines as one batch).
            rows = _rows(output)
            if rows:
                self.passes[(arch_of(module), torch.is_grad_enabled(), rows)] += 1

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


def _one_pass(forward, x: torch.Tensor, grad: bool) -> None:
    if grad:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(forward(xg).sum(), xg)
    else:
        with torch.no_grad(), torch.jit.optimized_execution(False):
            forward(x)


def per_image_costs(model, image_shape: tuple, sizes, *, min_seconds: float = 0.2, grad: bool = True) -> dict:
    """Measured seconds per image of ``model`` (a module or a TorchScript copy) at each batch size:
    {(gradients on, size): seconds}.

    Without gradients a plain forward pass; with gradients (unless ``grad`` is False: a fused copy has none) a forward
    pass and the input gradient of the summed outputs (one backward pass), the work of a gradient explanation. Each
    cost is the fastest of at least three passes run over ``min_seconds``: a floor, which a pass slowed by something
    else on the machine must not raise (a mean let it).
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    memory = torch.channels_last if first is not None and first.dim() == 4 and \
        first.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    costs = {}
    for size in sorted(set(sizes)):
        x = torch.rand(size, *image_shape, device=device).contiguous(memory_format=memory)
        for with_grad in (False, True) if grad else (False,):
            _one_pass(model, x, with_grad)  # warm-up: first kernels, allocator
            fastest, start = float("inf"), time.perf_counter()
            for n in itertools.count():
                t0 = time.perf_counter()
                _one_pass(model, x, with_grad)
                ModelComputeTimer._sync()
                t1 = time.perf_counter()
                fastest = min(fastest, t1 - t0)
                if n >= 2 and t1 - start >= min_seconds:
                    break
            costs[(with_grad, size)] = fastest / size
    return costs


def cheapest_costs(measured: dict) -> dict:
    """{architecture: {gradients on: seconds}}: the cheapest per-image cost of each kind of pass over every way of
    running it measured in ``measured`` {architecture: [costs from :func:`per_image_costs`, ...]} (plain,
    channels-last, fused; every batch size)."""
    out = {}
    for arch, tables in measured.items():
        mine = out.setdefault(arch, {})
        for costs in tables:
            for (grad, _), seconds in costs.items():
                mine[grad] = min(seconds, mine.get(grad, float("inf")))
    return out


def floor_seconds(passes: dict, costs: dict) -> float:
    """Model-compute floor of ``passes`` {(architecture, gradients on, batch size): count}: images × the measured
    per-image cost at the nearest measured batch size (``costs``: {architecture: costs from :func:`per_image_costs`},
    the way the passes ran); passes of an architecture ``costs`` lacks are left out."""
    total = 0.0
    for (arch, grad, size), count in passes.items():
        mine = costs.get(arch, {})
        measured = [s for g, s in mine if g == grad]
        if measured:
            nearest = min(measured, key=lambda s: abs(math.log(s) - math.log(size)))
            total += count * size * mine[(grad, nearest)]
    return total


def fastest_floor_seconds(passes: dict, cheapest: dict) -> float:
    """Model-compute floor of ``passes`` {(architecture, gradients on, batch size): count} with every image at the
    cheapest per-image cost of its architecture and kind of pass (``cheapest`` from :func:`cheapest_costs`), whatever
    way and batch size the pass used; passes of an architecture ``cheapest`` lacks are left out."""
    return sum(count * size * cheapest[arch][grad] for (arch, grad, size), count in passes.items()
               if grad in cheapest.get(arch, {}))
