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

import hashlib
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

# Bound on cached maps per process; the quick grid needs a few MB, the paper profile a few hundred.
DEFAULT_MAX_BYTES = 1 << 30


def model_fingerprint(model: nn.Module) -> bytes:
    """Hash of the model's class, parameter/buffer names, dtypes, shapes and values."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    state = model.state_dict()
    h.update(";".join(f"{k}:{t.dtype}:{tuple(t.shape)}" for k, t in state.items()).encode())
    if state:
        # One buffer of raw bytes (a uint8 view works for every dtype, bf16 included): hashing
        # tensor by tensor costs more than the hash itself for models with many small buffers.
        flat = torch.cat([t.detach().reshape(-1).contiguous().view(torch.uint8) for t in state.values()])
        h.update(flat.cpu().numpy().tobytes())
    return h.digest()


def _array_digest(h, a) -> None:
    if a is None:
        h.update(b"none;")
        return
    a = np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a))
    h.update(f"{a.dtype.str}:{a.shape};".encode())
    h.update(a.tobytes())


class ExplanationMemo:
    """LRU map from a call's content key to its (N,1,H,W) float32 maps, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = int(max_bytes)
        self._maps: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(method: str, level: str, seed: int, model: nn.Module | bytes, inputs, targets, masks=None) -> bytes:
        """Everything that determines an explain call's output, hashed (``model`` or its fingerprint)."""
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{method}|{level}|{int(seed)}|".encode())
        h.update(model if isinstance(model, bytes) else model_fingerprint(model))
        for a in (inputs, targets, masks):
            _array_digest(h, a)
        return h.digest()

    def get(self, key: bytes) -> np.ndarray | None:
        """A copy of the cached maps (callers may modify it), or None."""
        maps = self._maps.get(key)
        if maps is None:
            self.misses += 1
            return None
        self.hits += 1
        self._maps.move_to_end(key)
        return maps.copy()

    def put(self, key: bytes, maps: np.ndarray) -> None:
        """Store a copy of ``maps``, evicting the least recently used entries beyond the byte budget."""
        if key in self._maps or maps.nbytes > self.max_bytes:
            return
        self._maps[key] = np.array(maps, copy=True)
        self._bytes += maps.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._maps.popitem(last=False)
            self._bytes -= old.nbytes

    def __len__(self) -> int:
        return len(self._maps)
