"""Path-integral methods: Integrated Gradients."""

from __future__ import annotations

from benchmark.errors import ConfigError
from benchmark.methods import register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods._variants import HELD, LayerTap
from benchmark.methods.base import Capabilities, resolve_layer
from benchmark.methods.layer import PATH_GRADIENTS, InternalInfluence


@register
class IntegratedGradients(CaptumMethod):
    """Gradients integrated along the straight path from a black image to the input (Gauss-Legendre).

    Reference: Sundararajan, Taly & Yan, Axiomatic Attribution for Deep Networks, ICML 2017.
    """

    name = "IntegratedGradients"
    family = "path"
    captum_class = "IntegratedGradients"
    capabilities = Capabilities(gradient=True, needs_baselines=True)
    params = {
        "cheap": {"baselines": 0.0, "n_steps": 16, "method": "gausslegendre", "internal_batch_size": 128},
        "paper": {"baselines": 0.0, "n_steps": 50, "method": "gausslegendre", "internal_batch_size": 128},
    }
    batch_size = 16
    # Gradients in passes of 32 rows (images x steps) within Captum's 128: 1.25-1.65x faster per image on the quick CNN
    # over three runs, 5-7 % slower on a ResNet-20 at 32 px, with the same bits (benchmarks/pass_size.py, RESULTS.md).
    pass_rows = 32
    # InternalInfluence integrates the inner layer's gradients at these path inputs, in the same passes: a call keeps
    # them from its own backward passes (the layer's output one more tensor to differentiate by; its input gradients
    # keep their bits) and holds InternalInfluence's maps for that method's call (benchmark.methods._variants).
    shares_work = PATH_GRADIENTS

    def attribute(self, model, inputs, target, params, **context):
        partners = self._partners(model, inputs, target, params)
        if not partners:
            return super().attribute(model, inputs, target, params, **context)
        influence = InternalInfluence()
        tap = LayerTap(resolve_layer(model, partners[0][1]["layer"]))
        out = super().attribute(model, inputs, target, params, **context, pass_compute=tap)
        for key, influence_params in partners if tap.complete else ():
            maps = influence.replayed(model, inputs, target, influence_params, tap, **context)
            if maps is not None:
                HELD.put(key, influence.name, maps, None)
        return out

    def _partners(self, model, inputs, target, params) -> list[tuple[bytes, dict]]:
        """(held key, parameters) of InternalInfluence's calls on these path inputs, when this call may hold them."""
        if type(self) is not IntegratedGradients or not HELD.enabled:
            return []
        influence, found = InternalInfluence(), []
        for influence_params in influence.on_path(params):
            try:
                resolve_layer(model, influence_params["layer"])
            except ConfigError:  # a model without that layer: InternalInfluence does not apply to it
                continue
            key = influence.held_key(model, inputs, target, influence_params)
            if key is not None:
                found.append((key, influence_params))
        return found
