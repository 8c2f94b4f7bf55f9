"""The last block's raw attention, averaged over heads and over the pooled tokens: the classic baseline."""

from __future__ import annotations

import torch

from benchmark.methods import register
from benchmark.methods._attention import pooled_rows, recorded_attention, token_grid
from benchmark.methods.base import AttributionMethod, Capabilities


@register
class RawAttention(AttributionMethod):
    """Last block's attention probabilities, mean over heads and query tokens; class-agnostic (ignores the target).

    Reference: Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020 (raw attention baseline).
    """

    name = "RawAttention"
    family = "attention"
    capabilities = Capabilities(attention=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 64

    def attribute(self, model, inputs, target, params, **context):
        with torch.no_grad(), recorded_attention(model) as maps:
            model(inputs)
        return token_grid(model, pooled_rows(maps[-1].mean(dim=1)))
