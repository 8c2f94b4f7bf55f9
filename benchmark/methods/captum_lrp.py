"""Captum's LRP (epsilon rule on every layer).

Captum LRP rejects ``nn.Identity`` (no default rule), and an identity that returns its input
tensor unchanged would share Captum's tensor hooks with the layer before it. So for the call
each ``nn.Identity`` gets a cloning forward and an epsilon rule (exact for the identity); both are
removed afterwards, together with the ``activations`` attributes Captum forgets to delete.
The residual ``+`` must go through Captum's ``Addition_Module`` (our ResNet does) or relevance
explodes.
"""

from __future__ import annotations

from captum.attr import LRP as CaptumLRP
from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn

from benchmark.methods import register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods.base import Capabilities


def _clone(x):
    return x.clone()


@register
class LRPEpsilon(CaptumMethod):
    """Captum's LRP with its default rule, ε on every layer (LRP-ε); relevance starts at the logit.

    Named for what it computes: ε-LRP on a ReLU network with BatchNorm not merged is Gradient×Input (Ancona et
    al. 2018), and the leaderboard's redundancy section flags it ≡ InputXGradient when the scores agree. The
    LRP rule sets with BatchNorm merged (ε+flat, ε+γ+box, α2β1) are the Zennit composites. A γ rule through
    Captum (BatchNorm folded on a copy) was tried and dropped: on a ResNet-20 its relevance exploded to 1e5
    times the logit (Captum's γ denominators have no stabiliser).

    Reference: Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
    Relevance Propagation, PLoS ONE 10(7), 2015.
    """

    name = "LRPEpsilon"
    family = "lrp"
    captum_class = "LRP"
    capabilities = Capabilities(gradient=True, lrp=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 32

    @classmethod
    def unsupported(cls, model: nn.Module) -> str:
        """Captum's LRP needs a rule for every layer; it has none for LayerNorm or attention (a ViT's)."""
        known = (*SUPPORTED_LAYERS_WITH_RULES, *SUPPORTED_NON_LINEAR_LAYERS, nn.Identity)
        missing = sorted({type(m).__name__ for m in model.modules()
                          if not list(m.children()) and not isinstance(m, known) and "rule" not in vars(m)})
        if missing:
            return (f"Captum's LRP has no rule for {', '.join(missing)} in the {type(model).__name__}, and none for "
                    f"the attention's products")
        return super().unsupported(model)

    def attribute(self, model, inputs, target, params, **context):
        modules = list(model.modules())
        had_activations = {id(m) for m in modules if "activations" in vars(m)}
        patched = [m for m in modules if type(m) is nn.Identity and "rule" not in vars(m)]
        try:
            for m in patched:
                m.forward = _clone
                m.rule = EpsilonRule()
            return CaptumLRP(model).attribute(inputs, target=target)
        finally:
            for m in patched:
                m.__dict__.pop("forward", None)
                m.__dict__.pop("rule", None)
            for m in modules:
                if id(m) not in had_activations:
                    m.__dict__.pop("activations", None)
