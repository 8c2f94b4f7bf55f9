"""Thin shared wrapper for Captum attribution classes (no methods are registered here)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import captum.attr
import torch
from captum._utils.gradient import compute_gradients
from torch import Tensor, nn

from benchmark.methods._chunked import no_grad_forward
from benchmark.methods._deeplift_rules import KEPT, drop_attrs, held_attrs
from benchmark.methods._deeplift_rules import attribute as deeplift_attribute
from benchmark.methods._region import region_forward
from benchmark.methods.base import AttributionMethod, resolve_layer


class CaptumMethod(AttributionMethod):
    """Call ``captum.attr.<captum_class>(model[, layer]).attribute(inputs, target=..., **params)``.

    Parameters are passed to Captum's ``attribute`` under their Captum names, so the docs table
    shows exactly what runs; keys in ``wrapper_keys`` are consumed here instead. ``layer`` names a
    model attribute ("cam_layer"/"inner_layer") resolved on the model passed in.
    """

    wrapper_keys: ClassVar[tuple[str, ...]] = ("layer",)
    # Whether each copy the method forwards differs from one input in one small region (Occlusion, FeatureAblation,
    # FeaturePermutation): such copies may run through the exact region forward (benchmark.methods._region).
    region_copies: ClassVar[bool] = False
    # Module attributes the Captum class sets and does not delete; removed after each call.
    leftover_attrs: ClassVar[tuple[str, ...]] = ()
    # Images per Captum call within a chunk, for a method that draws nothing inside the call and whose maps do not
    # depend on their batch mates: the chunk's draws (baselines) are made once, its images attributed in groups of
    # this many, so each forward-backward pass is smaller (faster per image here) and every map keeps its bits.
    pass_images: ClassVar[int | None] = None
    # Rows per forward-backward pass of Captum's input gradients, for a method whose gradient rows do not depend on
    # their batch mates (no layer or module hooks): the call's rows, drawn as Captum draws them, get their gradients in
    # groups of this many, so every map keeps its bits.
    pass_rows: ClassVar[int | None] = None

    def build(self, model: nn.Module, params: dict) -> Any:
        cls = getattr(captum.attr, self.captum_class)
        if "layer" in params:
            return cls(model, resolve_layer(model, params["layer"]))
        return cls(model)

    def extra_kwargs(self, model: nn.Module, inputs: Tensor, params: dict, **context) -> dict:
        """Keyword arguments computed per call (baselines, masks, windows)."""
        return {}

    def forward_for(self, model: nn.Module, inputs: Tensor, params: dict) -> Any:
        """What the Captum class is built on: the model, or for a perturbation method without a layer its no-grad
        forward."""
        if self.capabilities.perturbation and "layer" not in params:
            # Perturbation methods forward hundreds of perturbed copies per pass without gradients: in chunks of the
            # size measured fastest here, bit-identical to one pass, through the model's fused copy where the grader
            # allowed one (float rounding only). Anything that needs a gradient still gets the model itself.
            forward = no_grad_forward(model, inputs)
            if self.region_copies and forward.fast is not model:  # the fused copy runs: its exact region way may too
                return region_forward(model, forward, inputs)
            return forward
        return model

    def gradient_func(self, **context) -> Any:
        """What Captum computes a ``pass_rows`` method's input gradients with: passes of at most that many rows, each
        by ``context["pass_compute"]`` when given (a stand-in for Captum's ``compute_gradients``)."""
        compute = context.get("pass_compute")
        return functools.partial(gradients_in_groups, self.pass_rows, **({} if compute is None else {"compute": compute}))

    def attribute(self, model, inputs, target, params, **context):
        algo = self.build(self.forward_for(model, inputs, params), params)
        if self.pass_rows is not None:
            inner = getattr(algo, "attribution_method", algo)  # a NoiseTunnel's gradients are its method's
            inner.gradient_func = self.gradient_func(**context)
        kwargs = {k: v for k, v in params.items() if k not in self.wrapper_keys}
        kwargs.update(self.extra_kwargs(model, inputs, params, **context))
        # A DeepLIFT method runs with ReLU and max-pool rules without their duplicate halves, and hooks without copies
        # (Captum's bits); any other method as it is.
        call = functools.partial(self._in_groups, algo, inputs, target, kwargs)
        if not self.leftover_attrs:
            return deeplift_attribute(algo, model, call)
        # One record of what the modules held before, for both clean-ups (this one's and a DeepLIFT retry's).
        held = held_attrs(model, {*self.leftover_attrs, *KEPT})
        try:
            return deeplift_attribute(algo, model, call, held)
        finally:
            drop_attrs(model, self.leftover_attrs, held)

    def _in_groups(self, algo, inputs: Tensor, target, kwargs: dict) -> Tensor:
        """``algo``'s attributions of ``inputs``, in Captum calls of at most ``pass_images`` images (one when None)."""
        size = self.pass_images
        if size is None or len(inputs) <= size:
            return algo.attribute(inputs, target=target, **kwargs)
        n = len(inputs)
        return torch.cat([algo.attribute(inputs[s : s + size], target=target_rows(target, n, s, s + size), **kwargs)
                          for s in range(0, n, size)])


def target_rows(target, n: int, start: int, end: int):
    """The targets of rows ``start:end`` of ``n``: the slice of a per-row target (a tensor or list of ``n``), else
    ``target`` itself (one class for every row, or None)."""
    per_row = (isinstance(target, list) or isinstance(target, Tensor) and target.dim() > 0) and len(target) == n
    return target[start:end] if per_row else target


def gradients_in_groups(rows: int, forward_fn, inputs, target_ind=None, additional_forward_args=None, *,
                        compute=None) -> tuple:
    """Captum's ``compute_gradients`` (or ``compute``, its stand-in) of ``inputs`` in passes of at most ``rows`` rows
    (the same rows' gradients)."""
    compute = compute or compute_gradients
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    n = len(inputs[0])
    if n <= rows or additional_forward_args is not None:
        return compute(forward_fn, inputs, target_ind, additional_forward_args)
    # A pass of one row runs other kernels here (its gradients differ in the last bits): a last row joins the group
    # before it. Each group a leaf of its own: Captum calls this under no_grad (NoiseTunnel), where a slice is untracked.
    starts = [s for s in range(0, n, max(rows, 2)) if n - s != 1]
    parts = [compute(forward_fn, tuple(x[s:e].detach().requires_grad_() for x in inputs),
                     target_rows(target_ind, n, s, e))
             for s, e in zip(starts, [*starts[1:], n], strict=True)]
    return tuple(torch.cat(grads) for grads in zip(*parts, strict=True))
