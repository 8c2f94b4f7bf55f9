"""Content-addressed memo of explanations: one (method, weights, inputs, targets) is explained once per process.

Quantus re-explains inputs inside its metrics, and several metrics ask for the very same maps:
MaxSensitivity, AvgSensitivity and RelativeInputStability draw identical noise from the same seed,
and MPRT/EfficientMPRT re-explain the unrandomised model on the graded inputs (the map the grader
already has). The memo keys a call by everything that determines its output (method, parameter
level, seed, a hash of the model's class and state, and the exact bytes of inputs, targets and
masks), so a hit returns bit for bit what the call would have computed: scores do not depend on
which metric ran first, and a randomised copy of the model never hits the original's entries.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import xxhash
from torch import nn

from benchmark.cache import model_fingerprint
from benchmark.lru import Lru

# Bound on cached maps per process; the quick grid needs a few MB, the paper profile a few hundred.
DEFAULT_MAX_BYTES = 1 << 30


def memo_digest():
    """The hash of an in-process memo key: 128-bit XXH3 (45 GB/s on a 3 MB batch here, SHA-256 1.75 GB/s)."""
    # Every lookup hashes its inputs (about 2 GB of perturbed copies in the quick grid's faithfulness metrics alone,
    # most of them misses). These keys never leave the process and no input is adversarial, so a 128-bit hash that
    # passes SMHasher stands in for a cryptographic one: accidental collisions among 10^6 keys have odds ~1e-27. The
    # on-disk caches and the result store keep their SHA-256 and BLAKE2b keys.
    return xxhash.xxh3_128()


def array_digest(h, a) -> None:
    if a is None:
        h.update(b"none;")
        return
    a = np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a))
    h.update(f"{a.dtype.str}:{a.shape};".encode())
    h.update(a)  # its buffer, not a bytes copy of it: the same bytes hashed


class ExplanationMemo:
    """LRU map from a call's content key to its (N,1,H,W) float32 maps, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self._maps = Lru(max_bytes, weigh=lambda maps: maps.nbytes)
        self.hits = 0
        self.misses = 0
        self.batched = 0  # re-explanations answered from a metric's one batched call (MetricRunner._merged_draws)

    @staticmethod
    def key(method: str, level: str, seed: int, model: nn.Module | bytes, inputs, targets, masks=None) -> bytes:
        """Everything that determines an explain call's output, hashed (``model`` or its fingerprint)."""
        h = memo_digest()
        h.update(f"{method}|{level}|{int(seed)}|".encode())
        h.update(model if isinstance(model, bytes) else model_fingerprint(model))
        for a in (inputs, targets, masks):
            array_digest(h, a)
        return h.digest()

    def get(self, key: bytes) -> np.ndarray | None:
        """A copy of the cached maps (callers may modify it), or None."""
        maps = self._maps.get(key)
        if maps is None:
            self.misses += 1
            return None
        self.hits += 1
        return maps.copy()

    def put(self, key: bytes, maps: np.ndarray) -> None:
        """Store a copy of ``maps``, evicting the least recently used entries beyond the byte budget."""
        if key in self._maps or maps.nbytes > self._maps.budget:
            return
        self._maps.put(key, np.array(maps, copy=True))

    def __len__(self) -> int:
        return len(self._maps)


class PredictionMemo:
    """Content-addressed memo of Quantus' ``model.predict`` outputs on the run's own (unchanged) models.

    The faithfulness metrics perturb and predict in loops whose inputs often do not depend on the map
    being graded: FaithfulnessCorrelation's random feature subsets come from the seeded global RNG, so
    every method perturbs identically, and RegionPerturbation's steps are the first steps of
    Selectivity's (same patches, same baseline). A call is keyed by the model's fingerprint, the
    wrapper's softmax flag and predict arguments, and the exact bytes of the input; a hit returns a
    copy of what the forward pass returned, so no score changes.
    """

    def __init__(self, max_entries: int = 1 << 20):
        self._out = Lru(max_entries)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(fingerprint: bytes, softmax, predict_kwargs: dict, device, x: np.ndarray) -> bytes:
        """Everything that determines a no-grad predict call's output, hashed."""
        h = memo_digest()
        h.update(fingerprint)
        h.update(f"|{softmax!r}|{sorted(predict_kwargs.items())!r}|{device}|".encode())
        array_digest(h, x)
        return h.digest()

    @contextlib.contextmanager
    def active(self, fingerprint_of, forward_of=None):
        """Answer Quantus' ``PyTorchModel.predict`` from the memo while inside the block.

        ``fingerprint_of(nn.Module)`` returns the fingerprint of a model whose predictions may be
        memoised, or None for any other model (Quantus' randomised copies, user models): those, and
        calls with gradients or extra arguments, run unchanged. ``forward_of(nn.Module, Tensor)``, when
        given, returns the no-grad forward that computes such a model's predictions (its fused copy), or
        None for the model itself.
        """
        # Lazy: Quantus costs ~2 s to import (measured), and discover() loads this module (via methods.controls).
        from quantus.helpers.model.pytorch_model import PyTorchModel

        original = PyTorchModel.predict
        memo = self

        def predict(wrapper, x, grad: bool = False, **kwargs):
            fp = None if grad or kwargs or not isinstance(x, np.ndarray) else fingerprint_of(wrapper.model)
            if fp is None or wrapper.model.training:
                return original(wrapper, x, grad, **kwargs)
            key = memo.key(fp, wrapper.softmax, wrapper.model_predict_kwargs, wrapper.device, x)
            out = memo._out.get(key)
            if out is not None:
                memo.hits += 1
                return out.copy()
            memo.misses += 1
            out = None if forward_of is None else _fast_predict(wrapper, x, forward_of)
            out = original(wrapper, x, grad) if out is None else out
            memo._out.put(key, np.array(out, copy=True))
            return out

        PyTorchModel.predict = predict
        try:
            yield self
        finally:
            PyTorchModel.predict = original

    def __len__(self) -> int:
        return len(self._out)


def _fast_predict(wrapper, x: np.ndarray, forward_of) -> np.ndarray | None:
    """What Quantus' no-grad ``predict`` returns, computed by ``forward_of``'s forward; None when it gives none."""
    model = wrapper.model
    if wrapper.model_predict_kwargs or any(isinstance(m, nn.Softmax) for m in model.modules()):
        return None  # Quantus edits the top of a model with a Softmax module (get_softmax_arg_model): its own path
    inputs = torch.Tensor(x).to(wrapper.device)  # Quantus' own conversion, so both paths see the same tensor
    forward = forward_of(model, inputs)
    if forward is None:
        return None
    with torch.no_grad():
        pred = forward(inputs)
        if wrapper.softmax:  # as Quantus' nn.Sequential(model, nn.Softmax(dim=-1))
            pred = torch.softmax(pred, dim=-1)
    return pred.cpu().numpy()
