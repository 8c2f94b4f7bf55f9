"""Control maps: the negative controls a real method must beat (random, edge detector) and the positive controls
that show a metric can tell (the oracle mask, a model-seeded random map, a fixed pattern)."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from benchmark.cache import model_fingerprint
from benchmark.errors import ConfigError
from benchmark.methods import register
from benchmark.methods.base import AttributionMethod, Capabilities


def _input_seeded_uniform(inputs: torch.Tensor, base: int) -> torch.Tensor:
    """(N,1,H,W) uniform maps, each drawn from ``base`` XOR a hash of its input's bytes (same input, same map)."""
    _, _, h, w = inputs.shape
    maps = []
    for x in inputs.detach().cpu().contiguous():
        digest = hashlib.sha256(x.numpy().tobytes()).digest()[:8]
        gen = torch.Generator().manual_seed(base ^ int.from_bytes(digest, "little"))
        maps.append(torch.rand((1, h, w), generator=gen))
    return torch.stack(maps).to(inputs.device)


@register
class Random(AttributionMethod):
    """Uniform random map seeded by the run's seed and the input's bytes; ignores the model.

    Seeding by the input keeps the map deterministic (same seed and image, same map) and model-independent
    (it fails randomisation tests, as it must), while any change to the input redraws it, so it is the
    unstable anchor of the noise-stability suite rather than a trivially stable constant.

    Reference: Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018 (random-map control).
    """

    name = "Random"
    family = "control"
    capabilities = Capabilities(control=True, model_independent=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 256

    def attribute(self, model, inputs, target, params, **context):
        return _input_seeded_uniform(inputs, int(context.get("seed", 0)))


@register
class Sobel(AttributionMethod):
    """Sobel edge magnitude of the input, summed over colour channels; ignores the model.

    Reference: Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018 (edge-detector control).
    """

    name = "Sobel"
    family = "control"
    capabilities = Capabilities(control=True, model_independent=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 256

    def attribute(self, model, inputs, target, params, **context):
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=inputs.device)
        kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2,1,3,3): d/dx, d/dy
        n, c, h, w = inputs.shape
        # Replicate padding: zero padding would draw a frame of fake edges around every image.
        x = F.pad(inputs.detach().reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
        grads = F.conv2d(x, kernels).reshape(n, c, 2, h, w)
        return grads.pow(2).sum(dim=2).sqrt().sum(dim=1, keepdim=True)


@register
class Oracle(AttributionMethod):
    """The ground-truth shortcut mask itself (1 inside, 0 outside); the ceiling for localisation metrics.

    Needs ``masks``; the map does not depend on the model.

    Reference: Arras, Osman & Samek, CLEVR-XAI: A Benchmark Dataset for the Ground Truth Evaluation of Neural
    Network Explanations, Information Fusion 81, 2022 (ground-truth masks as reference).
    """

    name = "Oracle"
    family = "control"
    capabilities = Capabilities(control=True, oracle=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 256

    def attribute(self, model, inputs, target, params, **context):
        masks = context.get("masks")
        if masks is None:
            raise ConfigError(
                "Oracle needs ground-truth masks: pass masks=(N, H, W) boolean array to explain()."
            )
        return masks.to(inputs.device, torch.float32).unsqueeze(1)


@register
class PositionalPrior(AttributionMethod):
    """The training set's mean watermark mask, the same map for every image; ignores the model and the input.

    It knows where watermarks usually are and nothing else: a method that localises the mark no better than
    this has not looked at the image. A control to beat in the localisation suite.

    Reference: Judd et al., Learning to Predict Where Humans Look, ICCV 2009 (the centre-bias prior as a
    saliency baseline).
    """

    name = "PositionalPrior"
    family = "control"
    capabilities = Capabilities(control=True, model_independent=True, prior=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 256

    def attribute(self, model, inputs, target, params, **context):
        prior = context.get("prior")
        if prior is None:
            raise ConfigError("PositionalPrior needs the training set's mean watermark mask: pass prior=(H, W) to "
                              "explain().")
        n, _, h, w = inputs.shape
        return prior.to(inputs.device, torch.float32).reshape(1, 1, h, w).expand(n, 1, h, w).clone()


@register
class ModelSeededRandom(AttributionMethod):
    """Uniform random map seeded by a hash of the model's weights and the input's bytes; explains nothing.

    It depends on the model only through the bits of its weights, so randomising any layer redraws it
    completely: the positive control of the randomisation tests, which a metric must score as changed
    (against Sobel and FixedPattern, which no weight change moves).

    Reference: Binder et al., Shortcomings of Top-Down Randomization-Based Sanity Checks for Evaluations of
    Deep Neural Network Explanations, CVPR 2023 (a random map can pass randomisation tests).
    """

    name = "ModelSeededRandom"
    family = "control"
    capabilities = Capabilities(control=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 256

    def attribute(self, model, inputs, target, params, **context):
        return _input_seeded_uniform(inputs, int.from_bytes(model_fingerprint(model)[:8], "little"))


@register
class FixedPattern(AttributionMethod):
    """One fixed random map, the same for every input and every model; explains nothing.

    No input change moves it, so it is the positive control of the noise-stability metrics (a metric must
    score it as stable, against the input-seeded Random map); no weight change moves it either, so it fails
    the randomisation tests like Sobel.

    Reference: Alvarez-Melis & Jaakkola, On the Robustness of Interpretability Methods, arXiv:1806.08049, 2018
    (stability of explanations under input perturbations).
    """

    name = "FixedPattern"
    family = "control"
    capabilities = Capabilities(control=True, model_independent=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 256

    def attribute(self, model, inputs, target, params, **context):
        n, _, h, w = inputs.shape
        gen = torch.Generator().manual_seed(int(context.get("seed", 0)))
        return torch.rand((1, 1, h, w), generator=gen).expand(n, 1, h, w).clone().to(inputs.device)
