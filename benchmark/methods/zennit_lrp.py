"""Zennit LRP composites (EpsilonPlusFlat, EpsilonGammaBox, EpsilonAlpha2Beta1) with our own canonizers.

Zennit's ResNet canonizer only matches torchvision's block classes and silently does nothing on
custom blocks, so we canonize ourselves:

* :class:`~zennit.canonizers.SequentialMergeBatchNorm` merges each BatchNorm into the conv right
  before it in leaf order (incl. each shortcut's conv, and the ResNet stem, which are registered
  that way); on the plain CNN this is all that is needed.
* :func:`addition_canonizer` routes every residual ``Addition_Module`` through ``zennit.layer.Sum``
  so the composites' Norm rule splits relevance between the two branches instead of copying it
  to both (which multiplies it by ~2 per block).

Both are undone when the composite is removed. Relevance at the output is the target logit, so
with conserving rules it sums to the logit (as in Captum's LRP).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from benchmark.methods import register
from benchmark.methods.base import AttributionMethod, Capabilities
from benchmark.models.arch import Add


def _summed_addition(module: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return module.canonizer_sum(torch.stack([x1, x2], dim=-1))


def _addition_attributes(name: str, module: nn.Module) -> dict | None:
    if isinstance(module, Add):
        from zennit.layer import Sum  # lazy, as all zennit imports here: see addition_canonizer

        return {"forward": _summed_addition.__get__(module), "canonizer_sum": Sum()}
    return None


def addition_canonizer():
    """Zennit canonizer routing each residual ``Addition_Module`` through a ``zennit.layer.Sum``."""
    # zennit imports torchvision: ~0.8 s after torch (measured); keep it out of discover(), which loads this module.
    from zennit.canonizers import AttributeCanonizer

    return AttributeCanonizer(_addition_attributes)


def canonizers() -> list:
    """Canonizers for SmallCNN and CifarResNet (both no-ops where a pattern does not occur)."""
    from zennit.canonizers import SequentialMergeBatchNorm

    return [SequentialMergeBatchNorm(), addition_canonizer()]


def lrp_relevance(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, composite) -> torch.Tensor:
    """Input relevance (N,C,H,W) for ``composite``, starting from the target logit."""
    from zennit.attribution import Gradient

    x = inputs.detach().clone().requires_grad_(True)

    def output_relevance(out: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(target, out.shape[1]).to(out.dtype) * out.detach()

    with Gradient(model, composite) as attributor:
        _, relevance = attributor(x, output_relevance)
    return relevance


class ZennitComposite(AttributionMethod):
    """Base for Zennit composites; subclasses name the composite class and its parameters."""

    family = "lrp"
    capabilities = Capabilities(gradient=True, lrp=True)
    composite_name: ClassVar[str] = ""
    batch_size = 32

    def make_composite(self, inputs: torch.Tensor, params: dict, canonize: bool = True):
        import zennit.composites

        kwargs = dict(params)
        if "low" in kwargs:  # ZBox bounds are tensors shaped like the input
            kwargs["low"] = torch.full_like(inputs, float(kwargs["low"]))
            kwargs["high"] = torch.full_like(inputs, float(kwargs["high"]))
        cls = getattr(zennit.composites, self.composite_name)
        return cls(canonizers=canonizers() if canonize else None, **kwargs)

    def attribute(self, model, inputs, target, params, **context):
        return lrp_relevance(model, inputs, target, self.make_composite(inputs, params))


@register
class ZennitEpsilonPlusFlat(ZennitComposite):
    """Zennit LRP: flat rule on the first conv, z+ on other convs, epsilon on dense layers.

    Reference: Montavon et al., Layer-Wise Relevance Propagation: An Overview, in Explainable AI, LNCS 11700,
    2019; Anders et al., Software for Dataset-wide XAI: From Local Explanations to Global Insights with
    Zennit, CoRelAy, and ViRelAy, arXiv:2106.13200, 2021.
    """

    name = "ZennitEpsilonPlusFlat"
    composite_name = "EpsilonPlusFlat"
    params = {"cheap": {"epsilon": 1e-6}, "paper": {"epsilon": 1e-6}}


@register
class ZennitEpsilonGammaBox(ZennitComposite):
    """Zennit LRP: z-box rule (pixel bounds 0..1) on the first conv, gamma on other convs, epsilon on dense.

    Reference: Montavon et al., Layer-Wise Relevance Propagation: An Overview, in Explainable AI, LNCS 11700,
    2019.
    """

    name = "ZennitEpsilonGammaBox"
    composite_name = "EpsilonGammaBox"
    params = {
        "cheap": {"low": 0.0, "high": 1.0, "gamma": 0.25, "epsilon": 1e-6},
        "paper": {"low": 0.0, "high": 1.0, "gamma": 0.25, "epsilon": 1e-6},
    }


@register
class ZennitEpsilonAlpha2Beta1(ZennitComposite):
    """Zennit LRP: alpha=2, beta=1 rule on all convs, epsilon on dense layers.

    Reference: Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
    Relevance Propagation, PLoS ONE 10(7), 2015.
    """

    name = "ZennitEpsilonAlpha2Beta1"
    composite_name = "EpsilonAlpha2Beta1"
    params = {"cheap": {"epsilon": 1e-6}, "paper": {"epsilon": 1e-6}}
