"""Maps that sibling methods would compute from the very same gradient passes (SmoothGrad, SmoothGrad² and VarGrad
aggregate one set of noisy gradients three ways; InternalInfluence integrates the inner layer's gradients at Integrated
Gradients' path inputs): made once by the method that runs first, held in this process, and handed out once to the
sibling whose own call would have computed exactly them.

A held map is keyed by everything its computation reads: the model's class, weights and memory format, the inputs'
bytes, shape and layout, the targets, the global RNG state at the call where the method draws noise from it, the
method's parameters and its pass size. A sibling's call with that key gets the map and leaves the RNG as its own call would
have; any other call computes. An entry is given out once, so a method's second call on the same inputs (the
contract's determinism check) computes for real and compares with the shared one.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator

import torch
from captum._utils.common import _run_forward
from torch import Tensor, nn

from benchmark.cache import model_fingerprint
from benchmark.lru import Lru
from benchmark.methods.base import hook_count

# What the held maps may occupy (oldest dropped first): a sibling that never asks (not graded in this run, or graded
# by another process) must not grow the process. A 16-image chunk's maps at 64 px are 0.8 MB.
HELD_BYTES = 256 * 2**20


def share_key(model: nn.Module, inputs: Tensor, target, params: dict, extra: tuple = (), *,
              rng: bool = True) -> bytes | None:
    """The key of one call's computation (the global RNG state in it unless ``rng`` is False, for methods that draw
    nothing), or None where it may not be shared: a model in training mode or with hooks (either could make two calls
    differ), inputs off the CPU (their noise comes from a device's RNG)."""
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
    if rng:
        h.update(torch.get_rng_state().numpy().tobytes())
    return h.digest()


class HeldMaps:
    """Sibling maps waiting for their method's call, each given out once, the oldest dropped past a byte budget."""

    def __init__(self, budget: int = HELD_BYTES):
        self.enabled = True
        self._held = Lru(budget, weigh=lambda held: _size(held[0]))  # (maps, RNG state after) by (key, variant)

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
        if _size(maps) <= self._held.budget:  # heavier than the whole budget: not held
            self._held.put((key, variant), (maps, rng_after))

    def take(self, key: bytes, variant: tuple) -> tuple[Tensor, Tensor] | None:
        """The held (maps, RNG state after) of the call ``key`` of ``variant``, removed; None when none is held."""
        return self._held.pop((key, variant))

    def clear(self) -> None:
        """Drop every held map."""
        self._held.clear()

    def __len__(self) -> int:
        return len(self._held)


# The process's held maps, shared by every family that holds some (one budget, one switch for plain Quantus' half).
HELD = HeldMaps()


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


class NotShared(Exception):
    """A replayed pass met inputs, a target or a layer other than the recorded pass's: the sibling computes alone."""


class LayerTap:
    """Captum's input-gradient pass that also keeps, per pass, the gradients of ``layer``'s output (the same backward:
    the layer's output is one more tensor to differentiate by), for a sibling integrating those at the same inputs."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.passes: list[tuple[tuple[Tensor, ...], object, tuple[Tensor, ...], tuple[Tensor, ...]]] = []
        self.complete = True  # every pass saw the layer run once (else its gradients are not the sibling's)

    def __call__(self, forward_fn, inputs, target_ind=None, additional_forward_args=None) -> tuple[Tensor, ...]:
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        kept: list[Tensor] = []
        handle = self.layer.register_forward_hook(lambda module, args, out: kept.append(out))
        try:  # captum._utils.gradient.compute_gradients, with the layer's output added to what is differentiated
            with torch.autograd.set_grad_enabled(True):
                outputs = _run_forward(forward_fn, inputs, target_ind, additional_forward_args)
                assert outputs[0].numel() == 1, "Target not provided when necessary"
                layer_out = kept[0] if len(kept) == 1 and isinstance(kept[0], Tensor) and kept[0].requires_grad \
                    else None
                # allow_unused: a layer off the path to the output gets no gradient (and shares nothing), not an error.
                grads = torch.autograd.grad(torch.unbind(outputs), inputs + ((layer_out,) if layer_out is not None
                                                                              else ()), allow_unused=True)
        finally:
            handle.remove()
        if any(g is None for g in grads[: len(inputs)]):  # what compute_gradients (allow_unused=False) raises
            raise RuntimeError("One of the differentiated Tensors appears to not have been used in the graph.")
        if layer_out is None or grads[-1] is None or additional_forward_args is not None:
            self.complete = False
            return grads if layer_out is None else grads[:-1]
        self.passes.append((tuple(x.detach() for x in inputs), target_ind, (grads[-1],), (layer_out.detach(),)))
        return grads[:-1]

    def replay(self) -> Callable:
        """A ``compute_layer_gradients_and_eval`` giving back the recorded passes in order, raising NotShared at the
        first call that asks anything else."""
        passes = iter(self.passes)

        def layer_gradients(forward_fn, layer, inputs, target_ind=None, additional_forward_args=None, *,
                            device_ids=None, attribute_to_layer_input=False, grad_kwargs=None, **rest):
            inputs = inputs if isinstance(inputs, tuple) else (inputs,)
            seen = next(passes, None)
            if (seen is None or layer is not self.layer or attribute_to_layer_input or additional_forward_args
                    is not None or grad_kwargs or device_ids or any(v is not None for v in rest.values())
                    or not same_tensors(seen[0], inputs) or not _same_target(seen[1], target_ind)):
                raise NotShared
            return seen[2], seen[3]

        return layer_gradients


def same_tensors(seen: tuple[Tensor, ...], inputs: tuple[Tensor, ...]) -> bool:
    """Whether two tuples of tensors hold the same tensors: shape, layout, dtype and bits."""
    # The layout too: the same values in another memory format may run other kernels (other bits).
    return len(seen) == len(inputs) and all(
        a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype and torch.equal(a, b)
        for a, b in zip(seen, inputs, strict=True))


def _same_target(a, b) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    return a == b


@contextlib.contextmanager
def replaced(module, name: str, value) -> Iterator[None]:
    """``module.name`` is ``value`` inside the block (the name a Captum class calls a helper by)."""
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)
