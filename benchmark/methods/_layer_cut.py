"""A model as Captum's LayerFeatureAblation forward: its ablation passes compute the layers before the ablated one on
one image, not on the whole batch, with outputs equal bit for bit.

In each ablation pass Captum runs the whole model on the original images and a hook replaces the ablated layer's
output with the ablated activations, so everything before that layer is computed again and thrown away, once per
ablated feature (64 times per image batch here). Where nothing after the layer reads anything before it but through
it (a cut: the CNN's ``features.9``, the ResNet's ``layer2``), the discarded part can run on one image instead: the
layers after it see the same activations and give the same outputs. Whether a (model, layer, input shape) is such a
cut is measured once per model state, on distinct probe images, and the model runs whole wherever it is not (or the
pass is not one of Captum's ablation passes).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmark.models.arch import PerState

# Captum's replacement hook inside LayerFeatureAblation.attribute; any other hook (Captum's capture of the layer's
# activations, a user's) leaves the model whole.
_CAPTUM_ABLATION_HOOK = "LayerFeatureAblation.attribute.<locals>.layer_forward_func.<locals>.forward_hook"
_PROBE = 4
# Per model state: (input shape, dtype, device, layer name) -> whether that layer is a cut. Kept per weights, not per
# architecture: a bypass whose weights are zero in one model (so the probe sees a cut) carries the inputs in another of
# the same architecture (MPRT's randomised copies).
_is_cut = PerState()


def _ablating(layer: nn.Module) -> bool:
    return any(getattr(h, "__qualname__", "") == _CAPTUM_ABLATION_HOOK for h in layer._forward_hooks.values())


def _replaced(model: nn.Module, layer: nn.Module, x: Tensor, activations: Tensor) -> Tensor:
    handle = layer.register_forward_hook(lambda module, args, out: activations)
    try:
        return model(x)
    finally:
        handle.remove()


def is_cut(model: nn.Module, layer: nn.Module, example: Tensor) -> bool:
    """Whether ``model``'s output on inputs like ``example`` depends on what comes before ``layer`` only through its
    output (measured once per model state, layer and input shape: one image before the layer gives the same outputs
    bit for bit as the whole batch, on distinct probe images)."""
    name = next((n for n, m in model.named_modules() if m is layer), None)
    probed = _is_cut.of(model)
    key = (tuple(example.shape[1:]), example.dtype, example.device.type, name)
    if key not in probed:
        x = example[:1].expand(_PROBE, *example.shape[1:]).contiguous() + torch.linspace(
            0, 0.5, _PROBE, device=example.device, dtype=example.dtype).view(-1, *[1] * (example.dim() - 1))
        captured = []
        handle = layer.register_forward_hook(lambda module, args, out: captured.append(out))
        try:
            with torch.no_grad():
                model(x.flip(0))  # activations of other images than the ones the head sees: a leak shows
        finally:
            handle.remove()
        try:
            with torch.no_grad():
                whole, cut = _replaced(model, layer, x, captured[0]), _replaced(model, layer, x[:1], captured[0])
            probed[key] = whole.shape == cut.shape and torch.equal(whole, cut)
        except Exception:  # a layer's output the rest cannot take from one image's head (shapes): not a cut
            probed[key] = False
    return probed[key]


class HeadOnOneImage:
    """``model`` as a forward function whose passes under Captum's LayerFeatureAblation hook on ``layer`` compute the
    layers before it on the batch's first image only; only for a ``layer`` that :func:`is_cut` found a cut."""

    def __init__(self, model: nn.Module, layer: nn.Module):
        self.model = model
        self.layer = layer

    def __call__(self, x: Tensor, *args, **kwargs) -> Tensor:
        if not args and not kwargs and len(x) > 1 and _ablating(self.layer):
            return self.model(x[:1])
        return self.model(x, *args, **kwargs)
