"""Contract every attribution method must satisfy, as a plain library function.

:func:`check_method` never raises for a misbehaving method: every problem, including an
exception from the method, becomes one human-readable violation string.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmark.grading.grader import Grader, constant_samples
from benchmark.methods import get_method
from benchmark.methods.base import chunk_seed, explain, hook_count, own_doc
from benchmark.rng import manual_seed
from benchmark.timelimit import CellTimeout, time_limit

_RANDOMISE_SALT = 0x5EED


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deep copy of ``model`` with ``reset_parameters()`` called on every module that has it (seeded).

    The seed is mixed with a constant: re-running the initialisers with the very seed the model
    was built with would reproduce an untrained model's weights exactly.
    """
    clone = copy.deepcopy(model)
    cuda = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        manual_seed(chunk_seed(seed, _RANDOMISE_SALT))
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone


def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits without changing train/eval flags or BatchNorm statistics."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            return model(x).detach().clone()
    finally:
        for m, flag in flags:
            m.training = flag


def _docstring_problems(cls) -> list[str]:
    lines = own_doc(cls).splitlines()
    problems = []
    if not lines or not lines[0].strip():
        problems.append("docstring has no one-line summary")
    elif len(lines) > 1 and lines[1].strip():
        problems.append("docstring summary is longer than one line (second line must be blank)")
    if not any(line.strip().startswith("Reference:") and line.strip() != "Reference:" for line in lines):
        problems.append("docstring has no 'Reference:' line naming the paper")
    return problems


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def check_method(
    method_name: str,
    model: nn.Module,
    inputs: torch.Tensor,
    targets,
    *,
    level: str = "cheap",
    masks=None,
    seed: int = 0,
    prior=None,
) -> list[str]:
    """Violations of the method contract for ``method_name`` on ``model`` (empty list = OK).

    Checks: docstring (summary + ``Reference:``); ``explain`` returns finite (N,1,H,W) float32;
    the raw ``attribute`` output has the input's shape, one channel or a smaller layer map; no
    sample's map is constant (ReLU-clipped methods may return all-zero maps, but not for the whole
    batch); two calls with the same seed are identical; the method leaves no
    hooks, attributes, parameter/buffer or ``requires_grad`` changes (which the shared path
    would have had to repair) and logits and ``.training`` flags are unchanged; it runs on a
    randomised deep copy and, unless model-independent or an oracle, gives a different map there.
    """
    try:
        cls = get_method(method_name)
    except Exception as exc:  # unknown name: nothing else can be checked
        return [_describe(exc)]
    violations = [f"{cls.name}: {p}" for p in _docstring_problems(cls)]
    try:
        _check_behaviour(cls, model, inputs, targets, level, masks, seed, violations, prior)
    except Exception as exc:  # a broken model or input: report, never raise
        violations.append(f"{cls.name}: contract check could not run: {_describe(exc)}")
    return violations


@dataclass(frozen=True)
class _ModelState:
    """What a method must leave unchanged on the model: hooks, .training flags, parameters/buffers, logits."""

    hooks: int
    training: list[bool]
    state: dict[str, torch.Tensor]
    logits: torch.Tensor

    @classmethod
    def of(cls, model: nn.Module, x: torch.Tensor) -> _ModelState:
        """The model's state now, its logits on ``x``."""
        training = [m.training for m in model.modules()]
        hooks = hook_count(model)
        logits = eval_logits(model, x)
        return cls(hooks, training, {k: v.detach().clone() for k, v in model.state_dict().items()}, logits)


def _run_explain(name: str, model: nn.Module, x, targets, kwargs: dict, label: str,
                 violations: list[str]) -> tuple[np.ndarray | None, dict]:
    """The maps of ``name`` on ``model`` (None when explain raised) and its record; problems go to ``violations``."""
    record: dict = {}
    try:
        out = explain(name, model, x, targets, _record=record, **kwargs)
    except Exception as exc:
        violations.append(f"{name}: explain on {label} raised {_describe(exc)}")
        out = None
    for leak in record.get("leaks", []):
        violations.append(f"{name}: on {label} the method left the model modified: {leak}")
    return out, record


def _check_maps(cls, first: np.ndarray, record: dict, x: torch.Tensor, masks, violations: list[str]) -> None:
    """The first call's maps: shape and dtype, raw attribute shapes, finite values, no constant sample."""
    name, caps = cls.name, cls.capabilities
    n, _, height, width = x.shape
    if first.shape != (n, 1, height, width) or first.dtype != np.float32:
        violations.append(
            f"{name}: explain returned {first.dtype} {first.shape}, "
            f"expected float32 {(n, 1, height, width)}"
        )
    for shape in record.get("raw_shapes", []):
        ok = len(shape) == 4 and (
            shape[1:] == tuple(x.shape[1:])
            or (shape[1] == 1 and shape[2:] == (height, width))
            or (shape[2] <= height and shape[3] <= width)  # layer map, upsampled by the shared path
        )
        if not ok:
            violations.append(
                f"{name}: raw attribute output shape {shape} is not input-, 1-channel- or layer-shaped"
            )
    if not np.isfinite(first).all():
        violations.append(f"{name}: map has non-finite values")
    constant = constant_samples(first, allow_zero=caps.relu_clipped)
    if caps.oracle and masks is not None:  # an empty ground-truth mask legitimately gives an empty map
        empty = ~np.asarray(masks).reshape(n, -1).any(axis=1)
        constant = [i for i in constant if not empty[i]]
    if constant:
        violations.append(f"{name}: map is constant for samples {constant}")


def _check_unchanged(name: str, model: nn.Module, x: torch.Tensor, before: _ModelState,
                     violations: list[str]) -> None:
    """Hooks, .training flags, parameters/buffers and logits are as they were before explaining."""
    if hook_count(model) != before.hooks:
        violations.append(f"{name}: hooks on the model changed from {before.hooks} to {hook_count(model)}")
    if [m.training for m in model.modules()] != before.training:
        violations.append(f"{name}: .training flags of the model changed")
    state_after = model.state_dict()
    changed = [
        k for k, v in before.state.items() if k not in state_after or not torch.equal(state_after[k], v)
    ]
    if changed:
        violations.append(f"{name}: parameters/buffers changed: {changed[:5]}")
    if not torch.equal(eval_logits(model, x), before.logits):
        violations.append(f"{name}: model output changed after explaining")


def _check_randomised(cls, model: nn.Module, x, targets, kwargs: dict, seed: int, first: np.ndarray | None,
                      violations: list[str]) -> None:
    """The method runs on a randomised copy of the model and, unless model-independent or an oracle, its map
    changes there."""
    name, caps = cls.name, cls.capabilities
    try:
        random_model = randomised_copy(model, seed)
    except Exception as exc:
        violations.append(f"{name}: could not build a randomised copy of the model: {_describe(exc)}")
        return
    same = all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), random_model.state_dict().values(), strict=True)
    )
    if same:
        violations.append(f"{name}: randomised copy has the same weights as the model")
    randomised, _ = _run_explain(name, random_model, x, targets, kwargs, "a randomised copy", violations)
    if randomised is not None and first is not None:
        if not np.isfinite(randomised).all():
            violations.append(f"{name}: map on a randomised copy has non-finite values")
        independent = caps.model_independent or caps.oracle
        scale = max(float(np.abs(first).max()), float(np.abs(randomised).max()))
        if not independent and float(np.abs(randomised - first).max()) <= 1e-5 * scale:
            violations.append(f"{name}: map does not change when the model's weights are randomised")


def _check_behaviour(cls, model, inputs, targets, level, masks, seed, violations: list[str], prior=None) -> None:
    """Explain with ``cls`` on ``model`` and its randomised copy; every breach of the contract goes to
    ``violations``."""
    name = cls.name
    x = torch.as_tensor(inputs).detach().float()
    _n, _c, _h, _w = x.shape  # (N, C, H, W), else the check cannot run (check_method reports why)
    device = next(iter(model.parameters()), torch.empty(0)).device
    before = _ModelState.of(model, x.to(device))
    kwargs = {"level": level, "seed": seed, "masks": masks, "prior": prior}

    first, record = _run_explain(name, model, x, targets, kwargs, "the model", violations)
    if first is not None:
        _check_maps(cls, first, record, x, masks, violations)
        second, _ = _run_explain(name, model, x, targets, kwargs, "the model (second call)", violations)
        if second is not None and not np.array_equal(first, second):
            diff = float(np.nanmax(np.abs(first - second)))
            violations.append(f"{name}: not deterministic under seed {seed} (max difference {diff:.3g})")
    _check_unchanged(name, model, x.to(device), before, violations)
    _check_randomised(cls, model, x, targets, kwargs, seed, first, violations)


CONTRACT_BATCH = 8  # graded stamped images each contract check explains
OK, VIOLATED, NOT_COVERED, ERROR = "ok", "violated", "not covered", "error"


@dataclass(frozen=True)
class ContractOutcome:
    """What one (method, architecture, split) contract check found: the suite's test asserts it."""

    status: str  # OK, VIOLATED (violations or the time limit), NOT_COVERED (skip), ERROR (never ran: worker lost)
    detail: str = ""


def contract_batch(grader: Grader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, masks): the first :data:`CONTRACT_BATCH` graded stamped images as tensors, with their watermark masks."""
    s = grader.images.sample_set
    n = min(CONTRACT_BATCH, len(s.x))
    return torch.from_numpy(s.x[:n]), torch.from_numpy(s.y[:n]), torch.from_numpy(s.masks[:n, 0] > 0)


def contract_outcome(grader: Grader, method: str, arch: str, split: str) -> ContractOutcome:
    """Check ``method``'s contract on the store's graded copy of the run's ``split`` model of ``arch`` (a
    :class:`benchmark.grading.grader.Grader`'s models and images), within the profile's per-cell time limit; targets
    are the model's own decisions."""
    models = grader.bench.contract_models()
    if arch not in models:
        return ContractOutcome(NOT_COVERED, f"this profile's contract does not cover {arch!r} (covers {sorted(models)})")
    # On the copy the store grades with (channels-last, fused no-grad passes where the run uses them): the contract
    # holds for the path the scores come from, and runs at the grid's speed.
    model = grader.store.graded(models[arch][split])
    why_not = get_method(method).unsupported(model)
    if why_not:
        return ContractOutcome(NOT_COVERED, why_not)
    x, _, masks = contract_batch(grader)
    # A ReLU-clipped method (Grad-CAM) has no positive evidence to show for a class the model rejects.
    targets = eval_logits(model, x.to(next(model.parameters()).device)).argmax(1).cpu()
    try:
        # A hanging method fails its own contract check at the profile's per-cell limit; the run goes on.
        with time_limit(grader.book.seconds, grader.book.source):
            violations = check_method(method, model, x, targets, masks=masks, prior=grader.store.prior_for(method))
    except CellTimeout as exc:
        return ContractOutcome(VIOLATED, f"{method} on the {split} {arch}: {exc}")
    if violations:
        listing = "\n  ".join(violations)
        return ContractOutcome(VIOLATED, f"{method} on the {split} {arch} violates the method contract:\n  {listing}")
    return ContractOutcome(OK)
