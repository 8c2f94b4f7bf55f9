"""Base class, capabilities and the single shared call path for attribution methods.

Every map the benchmark grades goes through :func:`explain`: it validates inputs, chunks them,
seeds randomness per chunk, runs the method, sums channels, upsamples layer maps to the input
size and rejects non-finite output. :class:`ModelGuard` makes sure a method leaves the model
exactly as it found it (hooks, attributes such as Captum's ``.rule``, parameters, buffers,
``requires_grad``, ``.grad`` and train/eval flags), even when the method raises.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import logging
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from captum.attr import LayerAttribution
from torch import Tensor, nn

from benchmark.errors import ConfigError, did_you_mean
from benchmark.rng import manual_seed
from benchmark.timelimit import shielded

log = logging.getLogger(__name__)

FAMILIES = ("gradient", "path", "shap", "perturbation", "cam", "layer", "lrp", "noise-tunnel", "attention", "control")
LEVELS = ("cheap", "paper")
# Benchmark profiles map onto the two parameter levels: quick runs use the cheap settings.
LEVEL_ALIASES = {"quick": "cheap", "standard": "paper"}
# Looks a method up by name: set by benchmark.methods, which holds the registry and imports this module (so this
# module cannot import it back).
resolve_name: Callable[[str], type[AttributionMethod]] | None = None


class AttributionError(RuntimeError):
    """An attribution method failed or produced an unusable (e.g. non-finite) map."""

    def __init__(self, method: str, reason: str):
        super().__init__(f"{method}: {reason}")
        self.method = method
        self.reason = reason


@dataclass(frozen=True)
class Capabilities:
    """What a method is and needs; the benchmark selects and schedules methods by these flags.

    ``oracle``: needs ground-truth masks (localisation only). ``prior``: needs the training set's mean
    watermark mask (``explain(prior=...)``), never a test mask. ``model_independent``: the map does
    not depend on the model (random map, edge detector). ``relu_clipped``: negative evidence is
    clipped, so an all-zero map is a valid answer when the class has no positive evidence (Grad-CAM).
    ``min_batch``: smallest batch the method can explain (FeaturePermutation shuffles features
    across the batch, so it needs 2). ``attention``: reads a transformer's attention probabilities, so it
    applies to models with ``attention_probes()`` only.
    """

    gradient: bool = False
    perturbation: bool = False
    layer: bool = False
    control: bool = False
    model_independent: bool = False
    oracle: bool = False
    prior: bool = False
    needs_baselines: bool = False
    needs_layer: bool = False
    gpu_batching: bool = True
    expensive: bool = False
    lrp: bool = False
    relu_clipped: bool = False
    attention: bool = False
    min_batch: int = 1

    def flags(self) -> list[str]:
        """Short labels of what is set, for tables: true flags, ``no_gpu_batching``, ``min_batch=N``."""
        out = [
            f.name
            for f in fields(self)
            if f.name != "gpu_batching" and isinstance(getattr(self, f.name), bool) and getattr(self, f.name)
        ]
        if not self.gpu_batching:
            out.append("no_gpu_batching")
        if self.min_batch > 1:
            out.append(f"min_batch={self.min_batch}")
        return out


class AttributionMethod(abc.ABC):
    """Base class: subclass it, set the class attributes, implement :meth:`attribute`, ``@register`` it.

    ``attribute`` receives a chunk already on the model's device, with the model in eval mode and
    gradients enabled, and returns (N,C,H,W), (N,1,H,W) or a lower-resolution (N,C,h,w) layer
    map; the shared path sums channels and upsamples. Randomness must come from
    ``context["generator"]`` or the global RNGs, which the shared path seeds per chunk
    (``context["seed"]`` is the caller's seed, for randomness that must not depend on chunking).
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    params: ClassVar[dict[str, dict[str, Any]]] = {"cheap": {}, "paper": {}}
    # Images per chunk when the caller gives no batch size; smaller for memory-hungry methods.
    batch_size: ClassVar[int] = 32
    # The Captum class this method wraps (for the coverage table in docs/methods.md), if any.
    captum_class: ClassVar[str | None] = None
    # Methods naming the same group compute part of their maps from the same passes (SmoothGrad, SmoothGrad² and
    # VarGrad from one set of noisy gradients): the schedulers hand a group to one worker, which computes them once.
    shares_work: ClassVar[str | None] = None

    @abc.abstractmethod
    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, params: dict, **context) -> Tensor:
        """Raw attribution for one chunk (see the class docstring); ``context`` may hold masks, generator."""

    @classmethod
    def unsupported(cls, model: nn.Module) -> str:
        """Why this method does not apply to ``model`` ("" when it does): the cell is then N/A with this reason."""
        if cls.capabilities.attention and not hasattr(model, "attention_probes"):
            return f"{cls.name} reads a transformer's attention; the {type(model).__name__} has none"
        return ""

    # -- helpers -------------------------------------------------------------------------------
    @classmethod
    def resolve_params(cls, level: str) -> dict[str, Any]:
        """The parameter dict for ``level`` ("cheap"/"paper" or a profile name "quick"/"standard")."""
        key = LEVEL_ALIASES.get(level, level)
        if key not in cls.params:
            choices = sorted(set(cls.params) | set(LEVEL_ALIASES))
            raise ConfigError(
                f"Unknown level {level!r} for method {cls.name!r}; choose one of {choices}."
                f"{did_you_mean(level, choices)}"
            )
        return dict(cls.params[key])

    @classmethod
    def summary(cls) -> str:
        """First line of the class's own docstring."""
        doc = own_doc(cls)
        return doc.splitlines()[0].strip() if doc else ""

    @classmethod
    def reference(cls) -> str:
        """The ``Reference:`` paragraph of the class's own docstring (continuation lines joined), or ""."""
        lines = own_doc(cls).splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("Reference:"):
                para = [line.strip()[len("Reference:") :].strip()]
                for more in lines[i + 1 :]:
                    if not more.strip():
                        break
                    para.append(more.strip())
                return " ".join(para)
        return ""


def own_doc(cls) -> str:
    """The class's own cleaned docstring; unlike ``inspect.getdoc`` never inherited from a base class."""
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


# ----------------------------------------------------------------------------------------------
# Small helpers shared by method modules
# ----------------------------------------------------------------------------------------------
def patch_mask(height: int, width: int, patch: int, device=None) -> Tensor:
    """Feature mask (1,1,H,W) of square patch ids, shared by all channels, for perturbation methods."""
    rows = torch.arange(height, device=device) // patch
    cols = torch.arange(width, device=device) // patch
    n_cols = (width + patch - 1) // patch
    return (rows[:, None] * n_cols + cols[None, :]).reshape(1, 1, height, width)


def resolve_layer(model: nn.Module, attr: str) -> nn.Module:
    """Module named by ``model.<attr>`` (e.g. ``cam_layer``), looked up on *this* model.

    Quantus hands randomised deep copies to the explain function, so a layer must never be
    captured from another model instance.
    """
    name = getattr(model, attr, None)
    if not isinstance(name, str):
        raise ConfigError(
            f"{type(model).__name__} has no string attribute {attr!r}; set model.{attr} to the name of the "
            f"module to explain (a key of dict(model.named_modules()))."
        )
    modules = dict(model.named_modules())
    if name not in modules:
        raise ConfigError(
            f"model.{attr} = {name!r} is not a module of the model.{did_you_mean(name, modules)}"
        )
    return modules[name]


def random_baselines(inputs: Tensor, n_random: int, generator: torch.Generator | None) -> Tensor:
    """Baseline distribution: one black image plus ``n_random`` uniform-noise images in [0,1]."""
    shape = (n_random, *inputs.shape[1:])
    noise = torch.rand(shape, generator=generator, dtype=inputs.dtype).to(inputs.device)
    return torch.cat([torch.zeros_like(inputs[:1]), noise])


@contextlib.contextmanager
def seeded(seed: int, devices=()):
    """Seed torch, numpy and ``random`` globally (Captum draws from all three), restoring them afterwards."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=list(devices)):
        manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def chunk_seed(seed: int, start: int) -> int:
    """Seed for the chunk starting at image ``start``; mixes both so chunks draw independent noise."""
    return int(np.random.SeedSequence([int(seed), int(start)]).generate_state(1, dtype=np.uint32)[0])


# ----------------------------------------------------------------------------------------------
# Model guard: snapshot/restore everything a method could leave behind
# ----------------------------------------------------------------------------------------------
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)


def hook_count(model: nn.Module) -> int:
    """Number of module hooks registered anywhere in ``model``."""
    return sum(len(getattr(m, d, {})) for m in model.modules() for d in _HOOK_DICTS[:4])


class ModelGuard:
    """Context manager that restores a model to its state at entry and records what had to be fixed.

    ``leaks`` lists human-readable descriptions of anything the guarded code left behind (hooks,
    new attributes, changed parameters, ...). The restoration also runs when the code raises.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.leaks: list[str] = []

    def __enter__(self) -> ModelGuard:
        named = list(self.model.named_modules(remove_duplicate=False))
        self._named = named
        self._hooks = {id(m): {d: list(getattr(m, d, {})) for d in _HOOK_DICTS} for _, m in named}
        self._attrs = {id(m): set(vars(m)) for _, m in named}
        self._children = {id(m): dict(m._modules) for _, m in named}
        self._param_objs = {id(m): dict(m._parameters) for _, m in named}
        self._buffer_objs = {id(m): dict(m._buffers) for _, m in named}
        self._training = [(m, m.training) for _, m in named]
        params = list(self.model.parameters())
        self._requires_grad = [(p, p.requires_grad) for p in params]
        self._grads = [(p, p.grad) for p in params]
        self._state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return self

    def __exit__(self, *exc) -> bool:
        # A cell time limit firing halfway through the restore would leave the model half-restored.
        with shielded():
            self.leaks = self.restore()
        return False

    def restore(self) -> list[str]:
        leaks: list[str] = []
        for name, m in self._named:
            label = name or "<model>"
            for d, before in self._hooks[id(m)].items():
                hooks = getattr(m, d, None)
                if hooks is None:
                    continue
                extra = [k for k in hooks if k not in before]
                for k in extra:
                    del hooks[k]
                if extra and d in _HOOK_DICTS[:4]:
                    leaks.append(f"{len(extra)} {d[1:]} left on {label}")
            if m._modules != self._children[id(m)]:
                leaks.append(f"child modules of {label} changed")
                m._modules.clear()
                m._modules.update(self._children[id(m)])
            if m._parameters != self._param_objs[id(m)]:
                leaks.append(f"parameter objects of {label} replaced")
                m._parameters.clear()
                m._parameters.update(self._param_objs[id(m)])
            if m._buffers != self._buffer_objs[id(m)]:
                leaks.append(f"buffer objects of {label} replaced")
                m._buffers.clear()
                m._buffers.update(self._buffer_objs[id(m)])
            extra_attrs = sorted(set(vars(m)) - self._attrs[id(m)])
            for key in extra_attrs:
                del m.__dict__[key]
            if extra_attrs:
                leaks.append(f"attributes {extra_attrs} left on {label}")
        for m, flag in self._training:
            m.training = flag
        for p, flag in self._requires_grad:
            if p.requires_grad != flag:
                leaks.append("requires_grad of a parameter changed")
                p.requires_grad_(flag)
        for p, grad in self._grads:
            if p.grad is not grad:
                leaks.append("a parameter's .grad changed")
                p.grad = grad
        state = self.model.state_dict()
        changed = [k for k, v in self._state.items() if k not in state or not torch.equal(state[k], v)]
        if changed:
            leaks.append(f"parameters/buffers changed: {changed[:5]}{' ...' if len(changed) > 5 else ''}")
            with torch.no_grad():
                for k in changed:
                    if k in state:
                        state[k].copy_(self._state[k])
        return leaks


# ----------------------------------------------------------------------------------------------
# Shared call path
# ----------------------------------------------------------------------------------------------
def _as_method(method) -> AttributionMethod:
    if isinstance(method, AttributionMethod):
        return method
    if isinstance(method, type) and issubclass(method, AttributionMethod):
        return method()
    if isinstance(method, str) and resolve_name is not None:
        return resolve_name(method)()
    raise ConfigError(f"Expected a method name or AttributionMethod, got {type(method).__name__}.")


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _to_inputs(inputs) -> Tensor:
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, Tensor) else inputs)
    if x.dim() != 4:
        raise ConfigError(f"Inputs must have shape (N, C, H, W); got {tuple(x.shape)}.")
    return x.detach().to(torch.float32)


def _to_targets(targets, n: int) -> Tensor:
    t = (
        torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, Tensor) else targets))
        .long()
        .reshape(-1)
    )
    if t.numel() == 1 and n != 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ConfigError(f"Got {t.numel()} targets for {n} inputs.")
    return t.clone()


def _to_masks(masks, x: Tensor) -> Tensor | None:
    if masks is None:
        return None
    m = torch.as_tensor(np.asarray(masks.cpu() if isinstance(masks, Tensor) else masks)).bool()
    if m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if tuple(m.shape) != (x.shape[0], x.shape[2], x.shape[3]):
        raise ConfigError(
            f"Masks must have shape (N, H, W) = {(x.shape[0], *x.shape[2:])}; got {tuple(m.shape)}."
        )
    return m


def _chunks(n: int, size: int, min_batch: int) -> list[tuple[int, int]]:
    """(start, stop) pairs; a too-small last chunk is merged into the previous one."""
    bounds = [(s, min(s + size, n)) for s in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_batch:
        (s, _), (_, e) = bounds[-2], bounds[-1]
        bounds[-2:] = [(s, e)]
    return bounds


def to_map(method_name: str, raw: Tensor, n: int, size: tuple[int, int]) -> Tensor:
    """Channel-sum a raw attribution and upsample it (bilinear) to ``size``; (N,1,H,W) float32."""
    if not isinstance(raw, Tensor):
        raise AttributionError(method_name, f"attribute returned {type(raw).__name__}, expected a Tensor")
    raw = raw.detach()
    if raw.dim() == 3:
        raw = raw.unsqueeze(1)
    if raw.dim() != 4 or raw.shape[0] != n:
        raise AttributionError(method_name, f"attribute returned shape {tuple(raw.shape)} for {n} inputs")
    out = raw.float().sum(dim=1, keepdim=True)
    h, w = out.shape[-2:]
    if (h, w) != tuple(size):
        if h > size[0] or w > size[1]:
            raise AttributionError(method_name, f"map {h}x{w} is larger than the input {size[0]}x{size[1]}")
        out = LayerAttribution.interpolate(out, tuple(size), interpolate_mode="bilinear")
    return out


# Captum announces on every call what it does by design (we pass plain tensors, it sets
# requires_grad; it hooks ReLUs and removes the hooks); these would drown real warnings.
_BENIGN_WARNINGS = (
    r"Input Tensor \d+ did not already require gradients",
    r"Setting forward, backward hooks and attributes on non-linear",
    r"Setting backward hooks on ReLU activations",
)


def run_chunk(
    method: AttributionMethod,
    model: nn.Module,
    x: Tensor,
    t: Tensor,
    params: dict,
    seed: int,
    masks: Tensor | None = None,
    run_seed: int = 0,
    drew: list[bool] | None = None,
    prior: Tensor | None = None,
) -> Tensor:
    """Run ``method.attribute`` once under the seeded RNG with gradients on (no guard, no chunking).

    ``seed`` seeds this chunk; ``run_seed`` (the caller's seed, the same for every chunk) is passed as
    ``context["seed"]`` for methods whose randomness must not depend on how inputs were chunked.
    ``drew``, when given, receives whether the method consumed any seeded random numbers.
    """
    device = x.device
    generator = torch.Generator().manual_seed(seed)
    context: dict[str, Any] = {"generator": generator, "seed": run_seed}
    if masks is not None:
        context["masks"] = masks
    if prior is not None:
        context["prior"] = prior
    cuda = [device.index or 0] if device.type == "cuda" else []
    # Attributions are always float32: a caller's bf16 autocast (training uses one on CUDA) would make
    # gradients too coarse to rank pixels and differ between devices.
    no_autocast = torch.autocast(device.type, enabled=False) if device.type in ("cuda", "cpu") else contextlib.nullcontext()
    with seeded(seed, devices=cuda), torch.enable_grad(), no_autocast, warnings.catch_warnings():
        for message in _BENIGN_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        before = _rng_states(generator, cuda) if drew is not None else None
        out = method.attribute(model, x, t, params, **context)
        if drew is not None:
            drew.append(not _same_states(before, _rng_states(generator, cuda)))
        return out


def _rng_states(generator: torch.Generator, cuda: list[int]) -> list:
    _, keys, pos, *_ = np.random.get_state()
    states = [torch.get_rng_state(), generator.get_state(), torch.from_numpy(keys.copy()), pos, random.getstate()]
    return states + [torch.cuda.get_rng_state(d) for d in cuda]


def _same_states(a: list, b: list) -> bool:
    return all(torch.equal(x, y) if isinstance(x, Tensor) else x == y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class _Call:
    """One :func:`explain` call's checked arguments: the method's name and parameters, tensors and chunk size."""

    name: str
    params: dict
    x: Tensor
    targets: Tensor
    masks: Tensor | None
    prior: Tensor | None
    size: int


def _check_call(m: AttributionMethod, inputs, targets, *, level: str, batch_size: int | None, masks, params,
                prior) -> _Call:
    """Validate :func:`explain`'s arguments for ``m`` (ConfigError naming what is missing) and convert them."""
    name = m.name or type(m).__name__
    p = m.resolve_params(level)
    if params:
        p.update(params)
    x = _to_inputs(inputs)
    n, _, height, width = x.shape
    t = _to_targets(targets, n)
    mk = _to_masks(masks, x)
    if m.capabilities.oracle and mk is None:
        raise ConfigError(f"{name} needs ground-truth masks: pass masks=(N, H, W) boolean array.")
    pr = None if prior is None else torch.as_tensor(np.asarray(prior, dtype=np.float32))
    if m.capabilities.prior and (pr is None or tuple(pr.shape) != (height, width)):
        raise ConfigError(f"{name} needs the training set's mean watermark mask: pass prior=(H, W) float array "
                          f"for these {height}×{width} images.")
    min_batch = m.capabilities.min_batch
    if n < min_batch:
        raise ConfigError(f"{name} needs at least {min_batch} images per call (got {n}); {m.summary()}")
    size = int(batch_size or m.batch_size)
    if size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}.")
    return _Call(name, p, x, t, mk, pr, max(size, min_batch))


def _explain_chunks(m: AttributionMethod, model: nn.Module, call: _Call, seed: int, device: torch.device,
                    raw_shapes: list, drew: list[bool] | None) -> list[Tensor]:
    """The maps of every chunk on ``device`` (on the CPU), raising AttributionError for non-finite values."""
    n, _, height, width = call.x.shape
    results: list[Tensor] = []
    for start, stop in _chunks(n, call.size, m.capabilities.min_batch):
        xb = call.x[start:stop].to(device)
        tb = call.targets[start:stop].to(device)
        mb = call.masks[start:stop].to(device) if call.masks is not None else None
        raw = run_chunk(m, model, xb, tb, call.params, chunk_seed(seed, start), mb, run_seed=seed, drew=drew,
                        prior=None if call.prior is None else call.prior.to(device))
        raw_shapes.append(tuple(raw.shape) if isinstance(raw, Tensor) else ())
        out = to_map(call.name, raw, stop - start, (height, width))
        if not torch.isfinite(out).all():
            bad = int((~torch.isfinite(out)).sum())
            raise AttributionError(
                call.name,
                f"{bad} non-finite values (NaN/inf) in the map for images {start}..{stop - 1}",
            )
        results.append(out.cpu())
    return results


def explain(
    method,
    model: nn.Module,
    inputs,
    targets,
    *,
    level: str = "cheap",
    batch_size: int | None = None,
    seed: int = 0,
    masks=None,
    device=None,
    params: dict | None = None,
    _record: dict | None = None,
    prior=None,
) -> np.ndarray:
    """Attribution maps (N,1,H,W) float32 for ``inputs`` (N,C,H,W in [0,1]) and integer ``targets``.

    ``method`` is a registered name or an :class:`AttributionMethod`. ``level`` picks the
    method's "cheap" or "paper" parameters (``params`` overrides single entries). Inputs are
    explained in chunks of ``batch_size`` (default: the method's own); chunk ``k`` starting at
    image ``s`` is seeded from ``(seed, s)``. ``device`` (default: the model's) moves the model
    there for the call only. ``prior`` (H, W) is the training set's mean watermark mask, for methods that
    declare ``capabilities.prior``. The model is left exactly as it was; if anything had to be cleaned
    up it is logged (and returned in ``_record["leaks"]`` for the contract checks);
    ``_record["draws_randomness"]`` says whether the method consumed seeded random numbers.
    """
    m = _as_method(method)
    call = _check_call(m, inputs, targets, level=level, batch_size=batch_size, masks=masks, params=params,
                       prior=prior)
    if call.x.shape[0] == 0:
        return np.zeros((0, 1, *call.x.shape[2:]), dtype=np.float32)
    home = _model_device(model)
    target_device = torch.device(device) if device is not None else home
    raw_shapes: list[tuple[int, ...]] = []
    drew: list[bool] | None = [] if _record is not None else None
    guard = ModelGuard(model)
    try:
        with guard:
            if target_device != home:
                model.to(target_device)
            try:
                model.eval()
                results = _explain_chunks(m, model, call, seed, target_device, raw_shapes, drew)
            finally:
                if target_device != home:
                    model.to(home)
    finally:
        if guard.leaks:
            log.warning("%s left the model modified (restored): %s", call.name, "; ".join(guard.leaks))
        if _record is not None:
            _record["leaks"] = list(guard.leaks)
            _record["raw_shapes"] = raw_shapes
            # Whether any chunk consumed random numbers: only maps that did not may be batched differently.
            _record["draws_randomness"] = any(drew)
    return torch.cat(results).numpy().astype(np.float32, copy=False)


def quantus_explain_func(method, level: str = "cheap", seed: int = 0, prior=None):
    """A Quantus ``explain_func``: ``(model, inputs, targets, **kwargs) -> np.ndarray`` (N,1,H,W).

    Layers are looked up by name on the model passed in each call (Quantus passes randomised
    deep copies in the MPRT family). A ``masks`` kwarg is forwarded (for Oracle); other kwargs
    (``device``, ``batch_size``, ...) are accepted and ignored: the inputs follow the model's
    device and each method's own chunk size bounds memory.
    """
    m = _as_method(method)

    def explain_func(model, inputs, targets, **kwargs) -> np.ndarray:
        return explain(
            m,
            model,
            np.asarray(inputs, dtype=np.float32),
            targets,
            level=level,
            seed=seed,
            masks=kwargs.get("masks"),
            prior=prior,
        )

    explain_func.__name__ = f"explain_{m.name}"
    return explain_func
