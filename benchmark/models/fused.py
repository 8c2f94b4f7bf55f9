"""Frozen, fused inference copies of the graded models (conv and BatchNorm folded, ReLU fused) for no-grad forwards.

The quick CNN runs BatchNorm and ReLU as separate memory passes; ``torch.jit.freeze`` plus
``torch.jit.optimize_for_inference`` folds each BatchNorm into its convolution and fuses the ReLU, which forwards
1.4-1.7x faster per image on a 2-core CPU (benchmarks/fused_forward.py) with logits within 3e-6. Only
models :func:`allow`-ed by the grader are fused (its private copies of the graded models) and the copies MPRT
randomises from them (:func:`allow_copy`), and only their no-grad forwards use the fused copy; anything else (the
contract's models, a user's model, a gradient) runs the model. Copies of one allowed model share fused graphs by the
bytes of their weights, so every method's MPRT fuses each randomised state once. A model that cannot be fused, or whose
fused logits disagree, runs plain, and the reason is kept (:func:`reason`).
"""

from __future__ import annotations

import copy
import hashlib
import warnings
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from benchmark.cache import model_fingerprint
from benchmark.lru import Lru
from benchmark.models import row_memo
from benchmark.models.arch import PerState, set_fused_attention, state_stamp


class FusedFallback(UserWarning):
    """A model allowed a fused copy runs plain (it could not be fused, or its fused graph disagreed or failed)."""


# A fused copy whose logits on the first batch differ from the model's by more than this (relative to the logits'
# scale) is refused: BatchNorm folding moves logits by float rounding only (~1e-7 relative measured here).
TOLERANCE = 1e-4
# Images of the first batch compared when a model is fused (one extra forward of each copy, once per model).
PROBE = 16


# Fused graphs a family of models (one allowed model and its copies) holds at most, by its weights' bytes; MPRT's
# cascade over the quick CNN's learnable layers has 5 randomised states per arm.
GRAPHS_HELD = 16


class _Family:
    """What an allowed model and the copies made of it share per weights (their fused graph, region plans), held by
    the bytes of those weights."""

    def __init__(self):
        self._held = Lru(GRAPHS_HELD)
        # Per input layout (row_memo.layout_of): whether the family's graphs give each row its bits in any batch.
        self.rows_independent: dict[tuple, bool] = {}

    def held(self, digest: str) -> dict:
        """The entries made for the weights of ``digest`` (:func:`weights_digest`), empty for weights not met yet."""
        table = self._held.get(digest)
        if table is None:
            table = {}
            self._held.put(digest, table)
        return table


@dataclass
class _Entry:
    """One allowed model's fused copy, the state it was made from, and why it runs plain when it does."""

    arch: str = "model"  # the model's class name, for messages
    stamp: tuple | None = None  # the model's device, memory format and tensor versions when fused
    forward: FusedForward | None = None
    reason: str = "not fused yet"
    # Shared with the copies allowed from this model (same class and configuration: a deep copy), never wider: two
    # models of one class whose settings differ outside their tensors (a ViT's head count) compute differently.
    family: _Family = field(default_factory=_Family)


# Each allowed model's weights digest for its current state: the weights' bytes are hashed once per state, not on
# every region-way call.
_digests = PerState()


# Allowed models (weakly held: an entry dies with its model) -> their entry.
_allowed: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()


class FusedForward:
    """A frozen, fused graph as a forward function; a call it cannot run goes to the plain model (and is recorded)."""

    def __init__(self, graph, model: nn.Module, entry: _Entry, shared: dict):
        self.graph = graph
        self._model = weakref.ref(model)  # a strong reference would keep the model's registry entry alive forever
        self.entry = entry
        self.shared = shared  # what copies with these weights share (shared_for): the row memos among it

    @property
    def model(self) -> nn.Module:
        """The plain model this graph was fused from."""
        return self._model()

    def __call__(self, x: Tensor) -> Tensor:
        if self.entry.forward is not self:  # refused earlier: the plain model answers from then on
            return self.model(x)
        try:
            # The graph is already optimised: the executor runs it as frozen, so every call (first, later, any
            # shape) runs the same kernels and a map never depends on how often the graph ran before.
            with torch.jit.optimized_execution(False):
                return self.graph(x)
        except Exception as exc:  # an input the graph cannot take: never a crashed cell, the model answers
            _refuse(self.entry, f"the fused graph failed on a {tuple(x.shape)} input ({_first_line(exc)})")
            return self.model(x)


def row_memo_for(forward, x: Tensor) -> row_memo.RowMemo | None:
    """The row memo for no-grad rows like ``x`` of a fused ``forward`` in use (shared by copies with its weights), where
    its family's graphs were found to give each row its bits in any batch (probed on the first call of at least
    row_memo.PROBE_MIN rows); None for anything else (a plain model, gradients, a GPU, where a forward costs less than
    hashing its rows on the host)."""
    if not isinstance(forward, FusedForward) or forward.entry.forward is not forward:
        return None
    if torch.is_grad_enabled() or x.device.type != "cpu" or not len(x):
        return None
    layout = row_memo.layout_of(x)
    family = forward.entry.family
    probed = None
    if layout not in family.rows_independent:
        if len(x) < row_memo.PROBE_MIN:
            return None
        independent, probed = row_memo.rows_independent(forward, x)  # a graph that fails is refused there
        if forward.entry.forward is not forward:
            return None  # refused while probed: the plain model answers from now on
        family.rows_independent[layout] = independent
    if not family.rows_independent[layout]:
        return None
    memo = forward.shared.get(("row memo", layout))
    if memo is None:
        memo = forward.shared[("row memo", layout)] = row_memo.RowMemo()
    if probed is not None:
        memo.hold(x, probed)  # the probe's whole batch: the call it came from is answered from it
    return memo


def allow(model: nn.Module) -> None:
    """Let ``model``'s no-grad forwards use a fused copy (made on first use, on the model's device)."""
    _allowed.setdefault(model, _Entry(arch=type(model).__name__))


def allow_copy(source: nn.Module, twin: nn.Module) -> None:
    """Let ``twin``, a deep copy of ``source`` whose weights its maker changes (MPRT's randomised copy), use fused
    copies where ``source`` may, sharing ``source``'s graphs made for the same weights; not where ``source``'s own
    fused copy was refused (its copies would each be refused again, each with its warning)."""
    entry = _allowed.get(source) if is_allowed(source) else None
    if entry is None or is_allowed(twin) or (entry.stamp is not None and entry.forward is None):
        return
    _allowed[twin] = _Entry(arch=type(twin).__name__, family=entry.family)


def shared_for(model: nn.Module) -> dict | None:
    """A table for an allowed ``model``'s current weights, shared with the copies allowed from the same model when
    theirs are the same (what is made from the weights alone may go in it); None for a model not allowed."""
    if not is_allowed(model):
        return None
    held = _digests.of(model)
    if "digest" not in held:
        held["digest"] = weights_digest(model)
    return _allowed[model].family.held(held["digest"])


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of ``model``'s fingerprint (:func:`benchmark.cache.model_fingerprint`) with its mode and every tensor's
    strides and device: two copies of one model with equal digests compute the same graph."""
    h = hashlib.sha256(model_fingerprint(model))
    # The fingerprint hashes values only; the fused graph also depends on the layout and device it was traced on.
    h.update(f"|{model.training}|".encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(f"{name}|{t.stride()}|{t.device}|".encode())
    return h.hexdigest()


def is_allowed(model) -> bool:
    """Whether ``model`` was allowed a fused copy."""
    try:
        return model in _allowed
    except TypeError:  # not weak-referenceable: never allowed
        return False


def reason(model: nn.Module) -> str | None:
    """Why an allowed ``model`` runs plain ("" when its fused copy is in use); None when it was never allowed."""
    entry = _allowed.get(model) if is_allowed(model) else None
    return None if entry is None else entry.reason


def forward_of(model, example: Tensor) -> FusedForward | None:
    """The fused forward of an allowed ``model`` in eval mode (fused now if its weights, device or format changed),
    else None."""
    if not is_allowed(model) or model.training:  # a training-mode BatchNorm is not what the frozen graph computes
        return None
    entry = _allowed[model]
    stamp = state_stamp(model)
    if entry.stamp != stamp:
        entry.stamp, entry.forward = stamp, None
        entry.reason = _fuse(model, example, entry)
    return entry.forward


def _fuse(model: nn.Module, example: Tensor, entry: _Entry) -> str:
    """Fuse ``model`` into ``entry`` and check it on ``example``; "" on success, else why the model runs plain."""
    try:
        shared = shared_for(model)  # a copy of the model with these weights fused already: its graph
        if "graph" not in shared:
            shared["graph"] = fuse_module(model)
        graph = shared["graph"]
        probe = example[:PROBE]
        with torch.no_grad(), torch.jit.optimized_execution(False):
            want, got = model(probe), graph(probe)
        gap = float((got - want).abs().max())
        scale = max(1.0, float(want.abs().max()))
        if not (gap <= TOLERANCE * scale):
            return _refuse(entry, f"fused logits differ from the model's by {gap:.3g} (more than {TOLERANCE:g} x "
                                  f"{scale:.3g})")
    except Exception as exc:  # an architecture the JIT cannot freeze: the model runs plain, the cell goes on
        return _refuse(entry, f"it could not be fused ({_first_line(exc)})")
    entry.forward = FusedForward(graph, model, entry, shared)
    return ""


def fuse_module(model: nn.Module):
    """A frozen, inference-optimised TorchScript copy of ``model`` in eval mode, its attention fused (the model itself
    is untouched)."""
    twin = copy.deepcopy(model).eval()
    # A ViT's attention as one kernel: no method reads a fused copy's attention probes, only its logits.
    set_fused_attention(twin, True)
    with warnings.catch_warnings():
        # torch.jit says it is deprecated in favour of torch.compile, which took 19 s per input shape here.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(twin)))


def _first_line(exc: Exception) -> str:
    # TorchScript's errors span dozens of lines (the source it could not compile); the first says what failed.
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


FALLBACK_TEXT = "shortcut-bench: fused inference off for a "  # how each fallback's warning begins

# Every fallback's warning text in this process, for the run record (xdist workers' reach the controller as warnings).
_fallbacks: list[str] = []


def fallbacks() -> list[str]:
    """The warnings of every model that fell back to plain inference in this process, in order."""
    return list(_fallbacks)


def _refuse(entry: _Entry, why: str) -> str:
    entry.forward = None
    entry.reason = why
    text = f"{FALLBACK_TEXT}{entry.arch}, it runs plain: {why}"
    _fallbacks.append(text)
    # A warning, not a log line: pytest lists it in its summary, from xdist workers too.
    warnings.warn(text, FusedFallback, stacklevel=3)
    return why
