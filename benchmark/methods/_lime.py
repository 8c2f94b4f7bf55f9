"""Captum's Lime and KernelShap with LimeBase's per-image loop done for all samples at once, byte-identical to Captum.

Captum draws, transforms and weights each perturbed sample one at a time in Python (20 ms per 32 px image at 128
samples on a 2-core CPU, beside 24 ms of model compute). Here the random draws stay one sample at a time, in Captum's
order, so the random numbers are the same; everything elementwise after them (the threshold of KernelShap's draws,
the interpretable-to-input transform, KernelShap's weights, Lime's default cosine kernel, whose row-wise reduction
gives each sample the bits of its one-sample call) runs on all samples at once; the model sees the same
``perturbations_per_eval`` chunks and the surrogate is fitted by Captum's own code; its coefficients become the map
in one gather instead of one masked sum per feature (the same bits). Anything else (tuple inputs,
extra forward arguments, a custom transform, a model in training mode) goes through Captum's loop unchanged.
``tests/test_methods.py`` holds both to Captum byte for byte.
"""

from __future__ import annotations

import inspect
import math

import torch
from captum._utils.common import _expand_target, _format_output, _run_forward
from captum._utils.models.linear_model import SkLearnLinearModel
from captum.attr import KernelShap, Lime, LimeBase
from captum.attr._core.lime import (
    default_from_interp_rep_transform,
    default_perturb_func,
    get_exp_kernel_similarity_function,
)
from torch import Tensor, nn
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

from benchmark.lru import Lru

_CAPTUM_LOOP = LimeBase.attribute.__wrapped__
_EXP_KERNEL = get_exp_kernel_similarity_function().__code__  # the code of every kernel Captum's factory returns


def _vectorisable(algo: LimeBase, inputs, additional_forward_args, show_progress: bool, kwargs: dict) -> bool:
    model = getattr(algo.forward_func, "model", algo.forward_func)  # a ChunkedForward's model, or the model
    return (isinstance(inputs, Tensor) and len(inputs) == 1 and additional_forward_args is None and not show_progress
            and algo.perturb_interpretable_space and algo.from_interp_rep_transform is default_from_interp_rep_transform
            and isinstance(kwargs.get("feature_mask"), Tensor) and kwargs["feature_mask"].shape[0] == 1
            # Samples are forwarded after all draws: a forward that drew random numbers (dropout) would reorder them.
            and isinstance(model, nn.Module) and not model.training)


class _DrawMemo:
    """KernelShap's draws by the CPU generator's state they start from: every explain call seeds each chunk alike, so
    each arm, randomised model and noisy copy of an image repeats its draws; a repeat gets the same samples and leaves
    the generator in the state drawing them would (the state is the key itself, so a hit is exact by construction)."""

    def __init__(self, entries: int = 2048):  # 2048 x (8 KB of samples + 10 KB of states): about 36 MB at most
        self._held = Lru(entries)  # (samples, generator state after) by the key below
        self.hits = self.misses = 0

    def draws(self, n_samples: int, num_features: int, probs: Tensor) -> Tensor:
        """The samples :func:`_fresh_draws` would give from the generator's current state, leaving it as that would."""
        if probs.device.type != "cpu":  # drawn by an accelerator's generator, which the key does not cover
            return _fresh_draws(n_samples, num_features, probs)
        key = (torch.get_rng_state().numpy().tobytes(), n_samples, num_features, probs.numpy().tobytes())
        held = self._held.get(key)
        if held is None:
            self.misses += 1
            held = (_fresh_draws(n_samples, num_features, probs).bool(), torch.get_rng_state())
            self._held.put(key, held)
        else:
            self.hits += 1
            torch.set_rng_state(held[1])
        return held[0].long()


DRAWS = _DrawMemo()


def _kernel_shap_draws(n_samples: int, num_features: int, dist, device) -> Tensor:
    """KernelShap's perturb generator's first ``n_samples`` samples, drawn in its order (all ones, all zeros, then
    for each: the number selected, then normal values thresholded at their k-th smallest)."""
    probs = dist.probs.reshape(-1, dist._num_events)  # what Categorical.sample draws from
    return DRAWS.draws(n_samples, num_features, probs).to(device)


def _fresh_draws(n_samples: int, num_features: int, probs: Tensor) -> Tensor:
    """:func:`_kernel_shap_draws`' samples drawn from the generator, one sample at a time as Captum draws them."""
    head = [torch.ones(1, num_features, dtype=torch.long), torch.zeros(1, num_features, dtype=torch.long)]
    picks, values = [], []
    for _ in range(max(n_samples - 2, 0)):
        picks.append(torch.multinomial(probs, 1, True))
        values.append(torch.randn(1, num_features))
    draws = head[:n_samples]
    if values:
        rand = torch.cat(values)
        kth = num_features - torch.cat(picks).reshape(-1, 1)  # kthvalue's k, 1-based
        threshold = torch.sort(rand, dim=1).values.gather(1, kth - 1)
        draws.append((rand > threshold).long())
    return torch.cat(draws)


def _draws(algo: LimeBase, inputs: Tensor, n_samples: int, kwargs: dict) -> Tensor:
    """The (n_samples, features) interpretable samples Captum's loop would draw, in its order."""
    if getattr(algo.perturb_func, "__func__", None) is KernelShap.kernel_shap_perturb_generator:
        return _kernel_shap_draws(n_samples, kwargs["num_interp_features"], kwargs["num_select_distribution"],
                                  inputs.device)
    if algo.perturb_func is default_perturb_func:
        probs = torch.ones(1, kwargs["num_interp_features"]) * 0.5
        return torch.cat([torch.bernoulli(probs) for _ in range(n_samples)]).to(inputs.device).long()
    generator = algo.perturb_func(inputs, **kwargs) if inspect.isgeneratorfunction(algo.perturb_func) else None
    return torch.cat([next(generator) if generator else algo.perturb_func(inputs, **kwargs)
                      for _ in range(n_samples)])


def _model_inputs(samples: Tensor, inputs: Tensor, kwargs: dict) -> Tensor:
    """Captum's default interpretable-to-input transform of every sample at once (elementwise, so the same bits)."""
    on = samples[:, kwargs["feature_mask"][0]].bool()
    return on.to(inputs.dtype) * inputs + (~on).to(inputs.dtype) * kwargs["baselines"]


def _similarities(algo: LimeBase, inputs: Tensor, model_inputs: Tensor, samples: Tensor, kwargs: dict) -> Tensor:
    """Each sample's weight, as Captum's loop computes it (KernelShap's kernel and Lime's default exponential kernel
    at once, any other one sample at a time)."""
    if getattr(algo.similarity_func, "__func__", None) is KernelShap.kernel_shap_similarity_kernel:
        selected = samples.sum(dim=1)
        ends = (selected == 0) | (selected == kwargs["num_interp_features"])
        return torch.where(ends, float(algo.inf_weight), 1.0).float()
    cosine = _exp_kernel_width(algo.similarity_func)
    if cosine is not None:
        return _cosine_exp_kernel(inputs, model_inputs, cosine)
    out = []
    for i in range(len(samples)):
        sim = algo.similarity_func(inputs, model_inputs[i : i + 1], samples[i : i + 1], **kwargs)
        out.append(sim.flatten() if isinstance(sim, Tensor) else torch.tensor([sim], device=inputs.device))
    return (torch.cat(out) if len(out[0].shape) > 0 else torch.stack(out)).float()


def _exp_kernel_width(func) -> float | None:
    """The kernel width of Captum's default exponential kernel on cosine distance, None for any other similarity."""
    if getattr(func, "__code__", None) is not _EXP_KERNEL or func.__closure__ is None:
        return None
    cells = dict(zip(func.__code__.co_freevars, (c.cell_contents for c in func.__closure__), strict=True))
    return cells["kernel_width"] if cells.get("distance_mode") == "cosine" else None


def _cosine_exp_kernel(inputs: Tensor, model_inputs: Tensor, kernel_width: float) -> Tensor:
    """Captum's ``default_exp_kernel`` of every sample at once: one cosine reduction per sample row (the same bits as
    its one-sample call), its float32 exponent, then ``math.exp`` per sample as Captum takes it (a float64 exp)."""
    cos = functional.cosine_similarity(inputs.flatten().float()[None], model_inputs.flatten(1).float(), dim=1)
    exponent = -1 * ((1 - cos) ** 2) / (2 * (kernel_width**2))
    return torch.tensor([math.exp(v) for v in exponent.tolist()], device=inputs.device).float()


def _outputs(algo: LimeBase, model_inputs: Tensor, target, chunk: int) -> Tensor:
    """The model's outputs on the samples, forwarded in Captum's chunks of ``perturbations_per_eval``."""
    outputs = []
    for start in range(0, len(model_inputs), chunk):
        part = model_inputs[start : start + chunk]
        out = _run_forward(algo.forward_func, part, _expand_target(target, len(part)), None)
        if isinstance(out, Tensor):  # as Captum's LimeBase._evaluate_batch
            assert out.numel() == len(part), "Number of outputs is not appropriate, must return one output per input"
        outputs.append(out.flatten() if isinstance(out, Tensor) else torch.tensor([out], device=part.device))
    return (torch.cat(outputs) if len(outputs[0].shape) > 0 else torch.stack(outputs)).float()


def _vectorised_loop(self, inputs, target=None, additional_forward_args=None, n_samples: int = 50,
                     perturbations_per_eval: int = 1, show_progress: bool = False, **kwargs):
    if not _vectorisable(self, inputs, additional_forward_args, show_progress, kwargs):
        return _CAPTUM_LOOP(self, inputs, target, additional_forward_args, n_samples, perturbations_per_eval,
                            show_progress, **kwargs)
    with torch.no_grad():
        samples = _draws(self, inputs, n_samples, kwargs)
        model_inputs = _model_inputs(samples, inputs, kwargs)
        weights = _similarities(self, inputs, model_inputs, samples, kwargs)
        outputs = _outputs(self, model_inputs, target, perturbations_per_eval)
        data = (samples.float(), outputs, weights)
        one_batch = isinstance(self.interpretable_model, SkLearnLinearModel)  # it only iterates over the batches
        self.interpretable_model.fit(_OneBatch(data) if one_batch else
                                     DataLoader(TensorDataset(*data), batch_size=len(samples)))
        return self.interpretable_model.representation()


class _OneBatch:
    """What ``DataLoader(TensorDataset(*data), batch_size=len(data[0]))`` yields, without collating row by row: the
    whole tensors as one batch, after the one random draw a DataLoader's iterator makes (the stream stays Captum's)."""

    def __init__(self, data: tuple[Tensor, ...]):
        self.data = data

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()  # DataLoader's iterator draws its base seed so
        yield self.data


class VectorisedLimeBase(LimeBase):
    """LimeBase whose per-image loop runs its elementwise steps on all samples at once (same bits as Captum's)."""

    def attribute(self, *args, **kwargs):
        return _vectorised_loop(self, *args, **kwargs)

    # Lime._attribute_kwargs calls ``super().attribute.__wrapped__``: the loop without Captum's usage logging.
    attribute.__wrapped__ = _vectorised_loop


def _gathered(inputs: tuple[Tensor, ...], feature_mask: tuple[Tensor, ...], coefs: Tensor,
              num_interp_features: int) -> Tensor | None:
    """Captum's ``Lime._convert_output_shape`` of one input as one gather: each pixel's feature's coefficient, added to
    an exact 0.0 (Captum adds every coefficient times 0.0 or 1.0 to zeros: a finite one's bits, but -0.0 becomes 0.0);
    None where that does not hold (several inputs, a non-finite coefficient, mask values outside the features, a mask
    that does not broadcast to the input)."""
    if len(inputs) != 1 or len(feature_mask) != 1 or feature_mask[0].is_floating_point():
        return None
    flat, mask = coefs.flatten().float(), feature_mask[0]
    if len(flat) != num_interp_features or not torch.isfinite(flat).all():
        return None
    if mask.numel() == 0 or int(mask.min()) < 0 or int(mask.max()) >= num_interp_features:
        return None
    try:
        if torch.broadcast_shapes(mask.shape, inputs[0].shape) != inputs[0].shape:
            return None  # Captum's in-place sum refuses a mask that broadcasts the input larger
    except RuntimeError:
        return None  # shapes that do not broadcast: Captum's own error
    return torch.zeros_like(inputs[0], dtype=torch.float) + flat[mask]


class _GatheredOutputShape:
    """Lime's and KernelShap's maps from their coefficients in one gather, with Captum's bits (:func:`_gathered`):
    Captum adds one masked copy per feature, 64 passes over the image at 4×4 patches of 32 px."""

    def _convert_output_shape(self, formatted_inp, feature_mask, coefs, num_interp_features, is_inputs_tuple,
                              leading_dim_one=False):
        attr = _gathered(formatted_inp, feature_mask, coefs, num_interp_features)
        if attr is None:
            return super()._convert_output_shape(formatted_inp, feature_mask, coefs, num_interp_features,
                                                 is_inputs_tuple, leading_dim_one)
        return _format_output(is_inputs_tuple, (attr[0:1] if leading_dim_one else attr,))


class VectorisedLime(_GatheredOutputShape, Lime, VectorisedLimeBase):
    """Captum's Lime with :class:`VectorisedLimeBase`'s loop (``super()`` in Lime resolves to it)."""


class VectorisedKernelShap(_GatheredOutputShape, KernelShap, VectorisedLimeBase):
    """Captum's KernelShap with :class:`VectorisedLimeBase`'s loop (``super()`` in Lime resolves to it)."""
