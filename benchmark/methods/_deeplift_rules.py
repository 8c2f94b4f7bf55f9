"""Captum's DeepLIFT rules for ReLU and max-pooling, each half-batch quantity computed once, bit-identical to Captum.

Captum's rules (``captum.attr._core.deep_lift.nonlinear`` and ``maxpool``) see a batch of inputs stacked on their
references and concatenate each input-minus-reference difference twice before dividing by it: the absolute value, the
comparison and (for max-pooling) the division and the ``where`` run on both identical halves. Here each runs once per
half, with the same elementwise operations in the same order on the same values (each an exactly rounded IEEE
operation), so every multiplier has Captum's bits (``tests/test_methods.py``); max-pooling's indices and unpooling are
Captum's own calls. :func:`rules` puts them in Captum's rule table for the duration of a DeepLIFT call.

Captum's forward hooks also copy every ReLU's and max-pool's input and output for the backward pass, although the
network keeps them unchanged in all but unusual models; here those two rules' modules keep them without a copy, each
with its version counter, and a rule that finds one modified in place raises :class:`Modified`, on which
:func:`attribute` runs the call again with Captum's copies (the same bits either way; tests/test_methods.py).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from captum._utils.common import _format_tensor_into_tuples
from captum.attr._core import deep_lift
from torch import Tensor, nn


class Modified(RuntimeError):
    """A module's input or output, kept by a DeepLIFT hook without a copy, was modified in place before the rule read
    it: the call runs again with Captum's copies."""


def _kept(tensor: Tensor) -> Tensor:
    """``tensor`` detached without a copy, with the version it had (a later in-place change raises :class:`Modified`
    in the rule that reads it)."""
    alias = tensor.detach()  # shares the version counter with ``tensor``
    alias.kept_version = tensor._version
    return alias


def _unchanged(*tensors: Tensor) -> None:
    for t in tensors:
        if getattr(t, "kept_version", t._version) != t._version:
            raise Modified("a DeepLIFT module's input or output was modified in place after its forward pass")


def _forward_pre_hook(module: nn.Module, inputs) -> None:
    """Captum's ``DeepLift._forward_pre_hook`` without its copy, for the modules whose rule checks the versions."""
    inputs = _format_tensor_into_tuples(inputs)
    module.input = _kept(inputs[0]) if _ours(module) else inputs[0].clone().detach()


def _forward_hook(module: nn.Module, inputs, outputs) -> None:
    """Captum's ``DeepLift._forward_hook`` without its copy, for the modules whose rule checks the versions."""
    outputs = _format_tensor_into_tuples(outputs)
    module.output = _kept(outputs[0]) if _ours(module) else outputs[0].clone().detach()


def _ours(module: nn.Module) -> bool:
    return deep_lift.SUPPORTED_NON_LINEAR.get(type(module)) in (_nonlinear, _maxpool2d)


def _nonlinear(module: nn.Module, inputs: Tensor, outputs: Tensor, grad_input: Tensor, grad_output: Tensor,
               eps: float = 1e-10) -> Tensor:
    """Captum's ``nonlinear`` rule: ``grad_output * delta_out / delta_in`` where the input moved, else ``grad_input``."""
    _unchanged(inputs, outputs)
    if len(inputs) % 2 or grad_input.shape != inputs.shape or grad_output.shape != outputs.shape:
        return deep_lift.nonlinear(module, inputs, outputs, grad_input, grad_output, eps=eps)  # broadcasts: Captum's
    input, input_ref = inputs.chunk(2)
    output, output_ref = outputs.chunk(2)
    delta_in, delta_out = input - input_ref, output - output_ref
    still = abs(delta_in) < eps
    halves = zip(grad_input.chunk(2), grad_output.chunk(2), strict=True)
    return torch.cat([torch.where(still, g_in, g_out * delta_out / delta_in) for g_in, g_out in halves])


def _maxpool(module: nn.Module, pool_func, unpool_func, inputs: Tensor, outputs: Tensor, grad_input: Tensor,
             grad_output: Tensor, eps: float = 1e-10) -> Tensor:
    """Captum's ``maxpool`` rule, whose two halves are the same values: computed once and stacked twice."""
    _unchanged(inputs, outputs)
    if len(inputs) % 2:
        return deep_lift.maxpool(module, pool_func, unpool_func, inputs, outputs, grad_input, grad_output, eps=eps)
    with torch.no_grad():
        input, input_ref = inputs.chunk(2)
        output, output_ref = outputs.chunk(2)
        delta_in = input - input_ref
        delta_out_xmax = torch.max(output, output_ref)
        delta_out = torch.cat([delta_out_xmax - output_ref, output - delta_out_xmax])
        _, indices = pool_func(module.input, module.kernel_size, module.stride, module.padding, module.dilation,
                               module.ceil_mode, True)
        unpooled, unpooled_ref = torch.chunk(unpool_func(grad_output * delta_out, indices, module.kernel_size,
                                                         module.stride, module.padding, list(module.input.shape)), 2)
    unpooled = unpooled + unpooled_ref
    if grad_input.shape != inputs.shape:
        raise AssertionError("A problem occurred during maxpool modul's backward pass: the gradients with respect to "
                             "inputs include only a subset of inputs (attribute to the inputs of the next layer).")
    # Captum takes grad_input[0], the first row, wherever the input did not move (its rule, kept as it is).
    half = torch.where(abs(delta_in) < eps, grad_input[0], unpooled / delta_in)
    return torch.cat([half, half])


def _maxpool2d(module: nn.Module, inputs: Tensor, outputs: Tensor, grad_input: Tensor, grad_output: Tensor,
               eps: float = 1e-10) -> Tensor:
    return _maxpool(module, F.max_pool2d, F.max_unpool2d, inputs, outputs, grad_input, grad_output, eps=eps)


# Captum's rules replaced here, and what replaces them; every other module type keeps Captum's.
_REPLACED = {deep_lift.nonlinear: _nonlinear, deep_lift.maxpool2d: _maxpool2d}


# What Captum's DeepLIFT hooks set on a module for its rule; removed after a call that was interrupted.
KEPT = ("input", "output")


def _hooked(algo):
    """The object whose hooks run: ``algo``, or the method a NoiseTunnel wraps."""
    return getattr(algo, "attribution_method", algo)


def _uses_deeplift(algo) -> bool:
    """Whether ``algo`` (or the method a NoiseTunnel wraps) is one of Captum's DeepLIFT classes, whose hooks read the
    rule table; NeuronDeepLift builds its DeepLift inside, so the class names are what is checked."""
    return any("DeepLift" in cls.__name__ for cls in type(_hooked(algo)).__mro__)


def held_attrs(model: nn.Module, names) -> set[tuple[int, str]]:
    """(id(module), name) for each of ``names`` that a module of ``model`` holds now."""
    return {(id(m), a) for m in model.modules() for a in names if a in vars(m)}


def drop_attrs(model: nn.Module, names, held: set[tuple[int, str]]) -> None:
    """Remove from ``model``'s modules each of ``names`` that ``held`` does not list (what a call left behind)."""
    for m in model.modules():
        for a in names:
            if (id(m), a) not in held:
                vars(m).pop(a, None)


@contextlib.contextmanager
def rules(algo=None, copies: bool = False):
    """Captum's DeepLIFT rule table with :func:`_nonlinear` and :func:`_maxpool2d` in place of Captum's, inside, for
    ``algo`` a DeepLIFT method (or None); any other method runs with Captum's table untouched. Unless ``copies``, the
    hooks of ``algo`` (or of the method a NoiseTunnel wraps) keep those rules' modules' inputs and outputs without
    Captum's copies (the same values; :func:`attribute` runs a call again with them when one was modified)."""
    if algo is not None and not _uses_deeplift(algo):
        yield
        return
    table = deep_lift.SUPPORTED_NON_LINEAR
    saved = dict(table)
    table.update({kind: _REPLACED[rule] for kind, rule in saved.items() if rule in _REPLACED})
    hooked = None if algo is None else _hooked(algo)
    if not copies and hooked is not None:
        hooked._forward_pre_hook, hooked._forward_hook = _forward_pre_hook, _forward_hook
    try:
        yield
    finally:
        table.clear()
        table.update(saved)
        if hooked is not None:
            for name in ("_forward_pre_hook", "_forward_hook"):
                vars(hooked).pop(name, None)


def attribute(algo, model: nn.Module, call, held: set[tuple[int, str]] | None = None):
    """``call()`` (``algo``'s attribution; under :func:`rules` for a DeepLIFT method, and again with Captum's copies when
    a kept tensor was modified in place, after removing what the interrupted call left on ``model``'s modules: those
    of :data:`KEPT` not in ``held``, by default what they hold now)."""
    if not _uses_deeplift(algo):
        return call()
    held = held_attrs(model, KEPT) if held is None else held
    try:
        with rules(algo):
            return call()
    except Modified:
        drop_attrs(model, KEPT, held)
        with rules(algo, copies=True):
            return call()
