"""NoiseTunnel over Saliency: SmoothGrad, SmoothGrad² and VarGrad.

Captum's default noise ``stdevs=1.0`` is absolute and swamps [0,1] images; 0.15 is 15% of the
input range, inside the 10-20% Smilkov et al. recommend.
"""

from __future__ import annotations

from typing import ClassVar

from captum.attr import NoiseTunnel, Saliency

from benchmark.methods import register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods.base import Capabilities


class SaliencyNoiseTunnel(CaptumMethod):
    """Saliency averaged over Gaussian-noised copies of the input, aggregated by ``nt_type``."""

    captum_class = "NoiseTunnel"
    family = "noise-tunnel"
    capabilities = Capabilities(gradient=True)
    nt_type: ClassVar[str] = "smoothgrad"
    batch_size = 16
    # 16 images x 8 noise samples are 128 rows; their gradients in passes of 32 ran 1.01-1.32x faster per image on the
    # quick CNN over three runs and up to 12 % slower on a ResNet-20 at 32 px (the quick contract's), with the same
    # noise and bits (benchmarks/pass_size.py, RESULTS.md; tests/test_pass_size.py).
    pass_rows = 32

    def build(self, model, params):
        return NoiseTunnel(Saliency(model))

    def extra_kwargs(self, model, inputs, params, **context):
        return {"nt_type": self.nt_type}


def _params(abs_grad: bool) -> dict:
    base = {"stdevs": 0.15, "abs": abs_grad}
    return {
        "cheap": {**base, "nt_samples": 8, "nt_samples_batch_size": 8},
        "paper": {**base, "nt_samples": 50, "nt_samples_batch_size": 10},
    }


@register
class SmoothGrad(SaliencyNoiseTunnel):
    """Mean absolute gradient over noisy copies of the input (noise sd 0.15).

    Reference: Smilkov et al., SmoothGrad: Removing Noise by Adding Noise, arXiv:1706.03825, 2017.
    """

    name = "SmoothGrad"
    nt_type = "smoothgrad"
    params = _params(abs_grad=True)


@register
class SmoothGradSq(SaliencyNoiseTunnel):
    """Mean squared gradient over noisy copies of the input (noise sd 0.15).

    Reference: Hooker et al., A Benchmark for Interpretability Methods in Deep Neural Networks, NeurIPS 2019.
    """

    name = "SmoothGradSq"
    nt_type = "smoothgrad_sq"
    params = _params(abs_grad=False)


@register
class VarGrad(SaliencyNoiseTunnel):
    """Variance of the gradient over noisy copies of the input (noise sd 0.15).

    Reference: Adebayo et al., Local Explanation Methods for Deep Neural Networks Lack Sensitivity to
    Parameter Values, ICLR Workshop 2018.
    """

    name = "VarGrad"
    nt_type = "vargrad"
    params = _params(abs_grad=False)
