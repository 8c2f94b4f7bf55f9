"""Maps that sibling methods would compute from the very same gradient passes (SmoothGrad, SmoothGrad² and VarGrad
aggregate one set of noisy gradients three ways): made once by whichever sibling runs first, held in this process,
and handed out once to the sibling whose own call would have computed exactly them.

A held map is keyed by everything its computation reads: the model's class, weights and memory format, the inputs'
bytes, shape and layout, the targets, the global RNG state at the call (the noise is drawn from it), the method's
parameters and its pass size. A sibling's call with that key gets the map and leaves the RNG as its own call would
have; any other call computes. An entry is given out once, so a method's second call on the same inputs (the
contract's determinism check) computes for real and compares with the shared one.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from benchmark.cache import model_fingerprint
from benchmark.methods.base import hook_count

# What the held maps may occupy (oldest dropped first): a sibling that never asks (not graded in this run, or graded
# by another process) must not grow the process. A 16-image chunk's maps at 64 px are 0.8 MB.
HELD_BYTES = 256 * 2**20


def share_key(model: nn.Module, inputs: Tensor, target, params: dict, extra: tuple = ()) -> bytes | None:
    """The key of one call's computation, or None where it may not be shared: a model in training mode or with
    hooks (either could make two calls differ), inputs off the CPU (their noise comes from a device's RNG)."""
    if inputs.device.type != "cpu" or model.training or hook_count(model):
        return None
    h = hashlib.blake2b(digest_size=20)
    h.update(model_fingerprint(model))
    h.update(repr([(tuple(p.shape), p.stride()) for p in model.parameters()]).encode())
    h.update(repr((inputs.dtype, tuple(inputs.shape), inputs.stride(), sorted(params.items()), extra)).encode())
    h.update(inputs.detach().contiguous().numpy().tobytes())
    if isinstance(target, Tensor):
        h.update(repr((target.dtype, tuple(target.shape))).encode())
        h.update(target.detach().cpu().contiguous().numpy().tobytes())
    else:
        h.update(repr(target).encode())
    h.update(torch.get_rng_state().numpy().tobytes())
    return h.digest()


class HeldMaps:
    """Sibling maps waiting for their method's call, each given out once, the oldest dropped past a byte budget."""

    def __init__(self, budget: int = HELD_BYTES):
        self.budget = budget
        self.enabled = True
        self._held: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()
        self._bytes = 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inside the block every call computes on its own, nothing held or handed out (a baseline such as plain
        Quantus, which has no siblings to share with); what is held stays for the calls after it."""
        before = self.enabled
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = before

    def put(self, key: bytes, variant: tuple, maps: Tensor, rng_after: Tensor) -> None:
        """Hold ``maps`` for the call ``key`` of ``variant``, with the RNG state that call ends in."""
        self.take(key, variant)
        self._held[(key, variant)] = (maps, rng_after)
        self._bytes += _size(maps)
        while self._bytes > self.budget and self._held:
            _, (old, _) = self._held.popitem(last=False)
            self._bytes -= _size(old)

    def take(self, key: bytes, variant: tuple) -> tuple[Tensor, Tensor] | None:
        """The held (maps, RNG state after) of the call ``key`` of ``variant``, removed; None when none is held."""
        held = self._held.pop((key, variant), None)
        if held is not None:
            self._bytes -= _size(held[0])
        return held

    def clear(self) -> None:
        """Drop every held map."""
        self._held.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._held)


def _size(t: Tensor) -> int:
    return t.numel() * t.element_size()


class GradientTap:
    """A Captum ``gradient_func`` that records each pass's (inputs, gradients) and, switched to replay, gives back the
    recorded gradients for the same inputs in the same order (computing any pass whose inputs differ)."""

    def __init__(self, compute: Callable):
        self.compute = compute
        self.passes: list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] = []
        self.replaying = False
        self.at = 0
        self.exact = True  # every replayed pass met its recorded inputs

    def replay(self) -> None:
        """From now on give back the recorded passes, from the first."""
        self.replaying, self.at, self.exact = True, 0, True

    def __call__(self, forward_fn, inputs, target_ind=None, additional_forward_args=None):
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        if not self.replaying:
            grads = self.compute(forward_fn, inputs, target_ind, additional_forward_args)
            self.passes.append((tuple(x.detach() for x in inputs), grads))
            return grads
        if self.at < len(self.passes):
            seen, grads = self.passes[self.at]
            self.at += 1
            if len(seen) == len(inputs) and all(torch.equal(a, b) for a, b in zip(seen, inputs, strict=True)):
                return grads
        self.exact = False
        return self.compute(forward_fn, inputs, target_ind, additional_forward_args)
