"""Attention rollout: attention with the residual path, multiplied through the blocks."""

from __future__ import annotations

import torch

from benchmark.methods import register
from benchmark.methods._attention import eye_like, pooled_rows, recorded_attention, token_grid
from benchmark.methods.base import AttributionMethod, Capabilities


@register
class AttentionRollout(AttributionMethod):
    """Product over blocks of 0.5·(mean-head attention) + 0.5·I, rows renormalised; class-agnostic.

    The model's head averages its tokens, so a token's relevance is its column mean of the rollout (the
    paper reads the class token's row).

    Reference: Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020.
    """

    name = "AttentionRollout"
    family = "attention"
    capabilities = Capabilities(attention=True)
    params = {"cheap": {"residual": 0.5}, "paper": {"residual": 0.5}}
    batch_size = 64

    def attribute(self, model, inputs, target, params, **context):
        with torch.no_grad(), recorded_attention(model) as maps:
            model(inputs)
            rollout = None
            for attn in maps:
                a = attn.mean(dim=1)
                a = params["residual"] * eye_like(a) + (1 - params["residual"]) * a
                a = a / a.sum(dim=-1, keepdim=True)
                rollout = a if rollout is None else a @ rollout
        return token_grid(model, pooled_rows(rollout))
