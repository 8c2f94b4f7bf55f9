"""NoisyGradient: one sample of the estimator SmoothGrad averages, its noise drawn afresh for every input; the unstable
control of the noise-stability suite."""

from __future__ import annotations

import hashlib

import torch

from benchmark.methods import register
from benchmark.methods.base import AttributionMethod, Capabilities
from benchmark.methods.noise_tunnel import SmoothGrad

# The noise SmoothGrad averages over (15% of the [0, 1] input range), so the control is exactly one of its samples.
NOISE_SD = SmoothGrad.params["cheap"]["stdevs"]
# Mixed into the seed, so the noise is not a function of the Random control's map (which the run seed draws alone).
_SALT = int.from_bytes(hashlib.sha256(b"NoisyGradient").digest()[:8], "little")


def input_seeded_normal(inputs: torch.Tensor, base: int) -> torch.Tensor:
    """(N,C,H,W) standard normal noise, each drawn from ``base`` XOR a hash of its input's bytes (same input, same
    noise; any change of the input redraws it)."""
    noise = []
    for x in inputs.detach().cpu().contiguous():
        digest = hashlib.sha256(x.numpy().tobytes()).digest()[:8]
        gen = torch.Generator().manual_seed((base ^ int.from_bytes(digest, "little")) & (2**63 - 1))
        noise.append(torch.randn(x.shape, generator=gen))
    return torch.stack(noise).to(inputs.device)


@register
class NoisyGradient(AttributionMethod):
    """|Gradient| of the target logit at one Gaussian-noised copy of the input (sd 0.15), the noise redrawn per input.

    SmoothGrad averages this estimator over many draws because one draw is noisy; here the single draw is seeded by
    the input's bytes, so the map is deterministic for an input and redrawn by any change of it, as a Monte-Carlo
    explanation without a fixed seed is between calls. It is a real attribution a method can resemble, unlike a
    random map, so it anchors the noise-stability suite's skill at 0 (FixedPattern, which nothing moves, is 1).

    Reference: Smilkov et al., SmoothGrad: Removing Noise by Adding Noise, arXiv:1706.03825, 2017 (a single noisy
    gradient sample, the estimator SmoothGrad averages).
    """

    name = "NoisyGradient"
    family = "control"
    capabilities = Capabilities(control=True, gradient=True)
    params = {"cheap": {"stdevs": NOISE_SD}, "paper": {"stdevs": NOISE_SD}}
    batch_size = 64

    def attribute(self, model, inputs, target, params, **context):
        noise = input_seeded_normal(inputs, int(context.get("seed", 0)) ^ _SALT)
        x = (inputs.detach() + params["stdevs"] * noise).requires_grad_(True)
        score = model(x).gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, x)
        return grad.abs()
