"""Thin shared wrapper for Captum attribution classes (no methods are registered here)."""

from __future__ import annotations

from typing import Any, ClassVar

import captum.attr
from torch import Tensor, nn

from benchmark.methods._chunked import no_grad_forward
from benchmark.methods._deeplift_rules import rules
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

    def attribute(self, model, inputs, target, params, **context):
        algo = self.build(self.forward_for(model, inputs, params), params)
        kwargs = {k: v for k, v in params.items() if k not in self.wrapper_keys}
        kwargs.update(self.extra_kwargs(model, inputs, params, **context))
        if not self.leftover_attrs:
            with rules(algo):  # DeepLIFT's ReLU and max-pool rules without their duplicate halves (Captum's bits)
                return algo.attribute(inputs, target=target, **kwargs)
        had = {(id(m), a) for m in model.modules() for a in self.leftover_attrs if a in vars(m)}
        try:
            with rules(algo):
                return algo.attribute(inputs, target=target, **kwargs)
        finally:
            for m in model.modules():
                for a in self.leftover_attrs:
                    if (id(m), a) not in had:
                        m.__dict__.pop(a, None)
