"""AttnLRP: LRP through attention with the softmax and bilinear-product rules of Achtibat et al."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from benchmark.methods import register
from benchmark.methods._attention import constant_scale, target_logits
from benchmark.methods.base import AttributionMethod, Capabilities


class _HalfGradient(torch.autograd.Function):
    """Identity forward; half the gradient backward (the uniform rule for one operand of a bilinear product)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad * 0.5


def _half(x: Tensor) -> Tensor:
    return _HalfGradient.apply(x)


def _attnlrp_forward(self, x: Tensor) -> Tensor:
    # SelfAttention.forward op for op (the same values), with each operand of the two bilinear
    # products (q·kᵀ and A·v) taking half the relevance: the uniform rule. The softmax keeps its gradient, which in
    # Gradient×Input form is AttnLRP's softmax rule R_in = x ⊙ (R_out − s·ΣR_out).
    b, n, d = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
    attn = self.probe(torch.softmax((_half(q) @ _half(k).transpose(-2, -1)) * self.scale, dim=-1))
    return self.proj((_half(attn) @ _half(v)).transpose(1, 2).reshape(b, n, d))


def _is_attention(module: nn.Module) -> bool:
    return type(module).__name__ == "SelfAttention" and hasattr(module, "qkv") and hasattr(module, "probe")


@contextlib.contextmanager
def attnlrp_rules(model: nn.Module) -> Iterator[None]:
    """Within it, ``model``'s logits are unchanged up to rounding (LayerNorm is recomputed) and Gradient×Input of them
    is AttnLRP's relevance; the model is left as it was found on the way out."""
    blocks = [m for m in model.modules() if _is_attention(m)]
    hooks = [m.register_forward_hook(constant_scale) for m in model.modules() if isinstance(m, nn.LayerNorm)]
    try:
        for m in blocks:
            m.forward = _attnlrp_forward.__get__(m)
        yield
    finally:
        for m in blocks:
            m.__dict__.pop("forward", None)
        for handle in hooks:
            handle.remove()


@register
class AttnLRP(AttributionMethod):
    """LRP for transformers: uniform rule on attention's products, softmax rule, identity rule on LayerNorm, LRP-0.

    Linear layers take LRP-0 (the paper's ε-rule with ε → 0) and ReLU the identity rule, both Gradient×Input; the
    softmax's bias term absorbs some relevance, so the sum is the logit less that term and the biases' shares (a
    test accounts for the softmax's on a bias-free ViT).

    Reference: Achtibat et al., AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers,
    ICML 2024.
    """

    name = "AttnLRP"
    family = "attention"
    capabilities = Capabilities(gradient=True, attention=True, lrp=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 64

    @classmethod
    def unsupported(cls, model: nn.Module) -> str:
        """Its rules replace this project's SelfAttention forward: another attention module would get none."""
        if hasattr(model, "attention_probes") and not any(_is_attention(m) for m in model.modules()):
            return f"{cls.name}'s rules are written for benchmark.models.arch.SelfAttention, which the " \
                   f"{type(model).__name__} does not use"
        return super().unsupported(model)

    def attribute(self, model, inputs, target, params, **context):
        x = inputs.detach().requires_grad_(True)
        with attnlrp_rules(model):
            logits = model(x)
        (grad,) = torch.autograd.grad(target_logits(logits, target), x)
        return grad * x.detach()
