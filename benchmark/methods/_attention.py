"""Reading a transformer's attention probabilities during a forward pass, without changing what it computes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def recorded_attention(model: nn.Module) -> Iterator[list[Tensor | None]]:
    """Each block's attention probabilities (B, heads, N, N) of the next forward, first block first (still in the
    autograd graph). Forward hooks only read, so the logits are those of the model alone."""
    probes = model.attention_probes()
    maps: list[Tensor | None] = [None] * len(probes)

    def reader(i: int):
        def hook(module, inputs, output):
            maps[i] = output

        return hook

    handles = [probe.register_forward_hook(reader(i)) for i, probe in enumerate(probes)]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


def target_logits(logits: Tensor, target: Tensor) -> Tensor:
    """Sum over the batch of each image's target logit (one gradient call gives every image's gradients)."""
    return logits.gather(1, target.view(-1, 1)).sum()


def token_grid(model: nn.Module, relevance: Tensor) -> Tensor:
    """Per-token relevance (B, N) as a (B, 1, side, side) map; the shared path upsamples it to the image."""
    side = model.side
    return relevance.reshape(relevance.shape[0], 1, side, side)


def pooled_rows(matrix: Tensor) -> Tensor:
    """How much each token (column) feeds the mean-pooled head: the mean over output tokens (rows) of (B, N, N)."""
    return matrix.mean(dim=1)


def eye_like(attn: Tensor) -> Tensor:
    """(B, N, N) identities matching ``attn``'s batch, token count, dtype and device."""
    b, n = attn.shape[0], attn.shape[-1]
    return torch.eye(n, dtype=attn.dtype, device=attn.device).expand(b, n, n)


def constant_scale(module: nn.LayerNorm, inputs, output):
    """Forward hook: LayerNorm recomputed with its standard deviation held constant (no gradient through it), so it
    is linear in its input and LRP's identity rule holds; the values differ from the module's by rounding only."""
    x = inputs[0]
    centred = x - x.mean(dim=-1, keepdim=True)
    scale = torch.sqrt(centred.pow(2).mean(dim=-1, keepdim=True) + module.eps).detach()
    return centred / scale * module.weight + module.bias
