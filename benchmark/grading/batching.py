"""A metric's model calls in few large batches instead of one per step, with Quantus' own inputs and arithmetic.

Quantus 0.6 evaluates a metric sample-batch by sample-batch but step by step: FaithfulnessCorrelation predicts
once per random subset, RegionPerturbation and Selectivity once per removed patch, ROAD once per percentage, IROF
once per image, the stability metrics explain once per noise draw. None of the inputs it asks for depends on an
earlier answer. :class:`DeferredScores` collects a metric's perturbed inputs and predicts them together
(the faithfulness adapters in :mod:`benchmark.grading.quantus_adapters` use it); :func:`recorded_explanations` runs a metric
once with placeholder maps to learn which noisy inputs it will explain, so they can be explained in one call.
"""

from __future__ import annotations

import warnings

import numpy as np

# Images per forward pass: on one CPU thread the quick CNN's cost per image is flat from 16 to 256 images and rises
# beyond (cache misses; benchmarks/RESULTS.md); a GPU fills with more.
CPU_BATCH = 256
GPU_BATCH = 4096
# Perturbed inputs held before they are predicted: bounds memory when a large profile's Selectivity asks for tens of
# thousands of images.
PENDING_BYTES = 64 << 20


def max_batch(device) -> int:
    """Images per forward pass on ``device``."""
    return CPU_BATCH if str(device).startswith("cpu") else GPU_BATCH


class DeferredScores:
    """The explained class's predicted score on many perturbed copies of one sample batch, predicted together.

    ``add`` takes one perturbed copy (B,C,H,W) of the batch and returns its slot; ``scores`` returns (slots, B) in
    slot order. The copies are predicted through ``model.predict`` (Quantus' model wrapper, so the prediction memo
    sees every call) in passes of at most :func:`max_batch` images, whenever :data:`PENDING_BYTES` are pending and
    at the end. Rows of an eval-mode forward pass do not depend on each other, so each score is the one a call per
    copy gives (up to the float rounding of the batch size's kernels).
    """

    def __init__(self, model, y_batch: np.ndarray, x_shape: tuple):
        self.model = model
        self.y = np.asarray(y_batch)
        self.x_shape = x_shape
        self._pending: list[np.ndarray] = []
        self._pending_bytes = 0
        self._done: list[np.ndarray] = []

    def add(self, x_perturbed: np.ndarray) -> int:
        """Queue one perturbed copy of the batch; its slot in :meth:`scores`."""
        x = self.model.shape_input(x_perturbed, self.x_shape, channel_first=True, batched=True)
        self._pending.append(np.array(x, copy=True))
        self._pending_bytes += x.nbytes
        if self._pending_bytes >= PENDING_BYTES:
            self._flush()
        return len(self._done) + len(self._pending) - 1

    def _flush(self) -> None:
        if not self._pending:
            return
        b = len(self.y)
        xs = np.concatenate(self._pending)
        size = max(b, max_batch(getattr(self.model, "device", "cpu")) // b * b)  # whole copies per pass
        out = np.concatenate([self.model.predict(xs[s : s + size]) for s in range(0, len(xs), size)])
        rows = np.arange(b)
        self._done += [out[i * b : (i + 1) * b][rows, self.y] for i in range(len(self._pending))]
        self._pending, self._pending_bytes = [], 0

    def scores(self) -> np.ndarray:
        """(copies, B) class scores, in the order the copies were added."""
        self._flush()
        return np.stack(self._done) if self._done else np.empty((0, len(self.y)), dtype=np.float32)


def placeholder_maps(x: np.ndarray) -> np.ndarray:
    """Positive, non-constant (N,1,H,W) maps: they pass Quantus' explanation asserts and cost nothing."""
    ramp = np.linspace(1.0, 2.0, x.shape[-2] * x.shape[-1], dtype=np.float32)
    return np.broadcast_to(ramp.reshape(1, 1, *x.shape[-2:]), (x.shape[0], 1, *x.shape[-2:])).copy()


def recorded_explanations(call, graded, *, seed_everything) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (inputs, targets) a metric run will ask ``graded`` to explain (masks-free calls), by a dry run.

    ``call(explain_func)`` builds and runs the metric with the explain_func it is handed; here every explanation
    is a placeholder, so the run costs no model work. The perturbations come from the seeded global generators,
    never from the maps, so the real run (seeded alike) asks for the same inputs. Empty when the dry run fails:
    the real run then reports what went wrong.
    """
    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def explain(model, inputs, targets, **kwargs):
        x = np.asarray(inputs, dtype=np.float32)
        if model is graded and kwargs.get("masks") is None:
            calls.append((x.copy(), np.asarray(targets).astype(np.int64).reshape(-1)))
        return placeholder_maps(x)

    seed_everything()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(explain)
    except Exception:
        return []
    return calls
