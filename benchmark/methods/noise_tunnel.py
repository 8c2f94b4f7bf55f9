"""NoiseTunnel over Saliency: SmoothGrad, SmoothGrad² and VarGrad.

Captum's default noise ``stdevs=1.0`` is absolute and swamps [0,1] images; 0.15 is 15% of the
input range, inside the 10-20% Smilkov et al. recommend.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from captum.attr import NoiseTunnel, Saliency

from benchmark.methods import all_methods, register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods._variants import HELD, GradientTap, share_key
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
    # SmoothGrad, SmoothGrad² and VarGrad draw the same noise from the same seed and differ only in how they aggregate
    # the gradients at the noisy copies (|g| or g; mean, mean of squares, variance): one call computes the gradients
    # and every aggregation (Captum's own code on the same tensors, so each keeps its bits); the others are held for
    # their methods' calls (benchmark.methods._variants).
    shares_work = "saliency-noise-tunnel"
    abs_gradient: ClassVar[bool] = True

    def build(self, model, params):
        return NoiseTunnel(Saliency(model))

    def extra_kwargs(self, model, inputs, params, **context):
        return {"nt_type": context.get("nt_type_variant", self.nt_type)}

    def gradient_func(self, **context):
        return context.get("gradient_tap") or super().gradient_func()

    def attribute(self, model, inputs, target, params, **context):
        own = (self.nt_type, params["abs"])
        variants = [v for v in self.variants() if v != own]
        key = share_key(model, inputs, target, {k: v for k, v in params.items() if k != "abs"},
                        (self.shares_work, self.pass_rows)) if variants and HELD.enabled else None
        if key is None:
            return super().attribute(model, inputs, target, params, **context)
        held = HELD.take(key, own)
        if held is not None:
            maps, rng_after = held
            torch.set_rng_state(rng_after)  # where this method's own call would have left the noise
            return maps
        rng_start = torch.get_rng_state()
        tap = GradientTap(super().gradient_func())
        out = super().attribute(model, inputs, target, params, **context, gradient_tap=tap)
        rng_after = torch.get_rng_state()
        for nt_type, abs_grad in variants:
            torch.set_rng_state(rng_start)  # the same noise again
            tap.replay()
            maps = super().attribute(model, inputs, target, {**params, "abs": abs_grad}, **context, gradient_tap=tap,
                                     nt_type_variant=nt_type)
            if tap.exact:
                HELD.put(key, (nt_type, abs_grad), maps, rng_after)
        torch.set_rng_state(rng_after)
        return out

    @classmethod
    def variants(cls) -> list[tuple[str, bool]]:
        """(nt_type, abs) of every registered method of this family that Captum's NoiseTunnel over Saliency runs as
        it is (a subclass that changes how it is built or called shares nothing)."""
        own = SaliencyNoiseTunnel.__dict__
        family = [m for m in all_methods().values() if issubclass(m, SaliencyNoiseTunnel)
                  and m.shares_work == cls.shares_work
                  and all(getattr(m, f) is own[f] for f in ("build", "extra_kwargs", "gradient_func", "attribute"))]
        return list(dict.fromkeys((m.nt_type, m.abs_gradient) for m in family)) if cls in family else []


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
    abs_gradient = True
    params = _params(abs_grad=abs_gradient)


@register
class SmoothGradSq(SaliencyNoiseTunnel):
    """Mean squared gradient over noisy copies of the input (noise sd 0.15).

    Reference: Hooker et al., A Benchmark for Interpretability Methods in Deep Neural Networks, NeurIPS 2019.
    """

    name = "SmoothGradSq"
    nt_type = "smoothgrad_sq"
    abs_gradient = False
    params = _params(abs_grad=abs_gradient)


@register
class VarGrad(SaliencyNoiseTunnel):
    """Variance of the gradient over noisy copies of the input (noise sd 0.15).

    Reference: Adebayo et al., Local Explanation Methods for Deep Neural Networks Lack Sensitivity to
    Parameter Values, ICLR Workshop 2018.
    """

    name = "VarGrad"
    nt_type = "vargrad"
    abs_gradient = False
    params = _params(abs_grad=abs_gradient)
