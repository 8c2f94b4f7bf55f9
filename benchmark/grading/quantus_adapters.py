"""Quantus 0.6 metrics adapted to this benchmark: ROAD and IROF for multi-channel images, the MPRT family
randomising learnable weights only (SmoothMPRT also explaining through the benchmark), relative output stability in a
numerically stable form, and the perturbation metrics predicting all their steps in large batches.

FaithfulnessCorrelation, RegionPerturbation and Selectivity are Quantus' own ``evaluate_batch`` with one change:
the perturbed copies are collected and predicted together (:class:`benchmark.grading.batching.DeferredScores`) instead of
one forward pass per random subset or per removed patch. Same random draws in the same order, same perturbations,
same arithmetic on the predictions; tests/test_batched_metrics.py holds them to unmodified Quantus.

Quantus 0.6.0's ROAD ranks the channel-broadcast map over C·H·W positions but imputes an (C, H·W)
image, so every 3-channel call indexes out of range, and it returns one accuracy per percentage for
the whole batch instead of per-sample scores. Its IROF hands a (N,1,H,W) superpixel mask to a
perturbation that asserts the image's (N,C,H,W) shape, fills removed superpixels with the mean of
the whole (already perturbed) batch, and reports an area over the curve in units of segments. These
subclasses keep Quantus' call interface (preprocessing, abs, normalisation, explanation asserts,
model wrapper) and replace only ``evaluate_batch`` with the published definitions, per sample.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
from quantus.helpers import asserts, utils, warn
from quantus.helpers.utils import get_superpixel_segments  # noqa: E402
from scipy.linalg import solveh_banded
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve
from scipy.stats import rankdata

from benchmark.grading import batching
from benchmark.grading.batching import DeferredScores, max_batch
from benchmark.grading.quantus_compat import quantus
from benchmark.rng import manual_seed

ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)

# Neighbour offsets and weights of Quantus' noisy linear imputation (Rong et al. 2022), in its order.
_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
               ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
_ROW_STEP = np.array([dr for (dr, _), _ in _NEIGHBOURS])[:, None]
_COL_STEP = np.array([dc for (_, dc), _ in _NEIGHBOURS])[:, None]
_WEIGHTS = np.array([weight for _, weight in _NEIGHBOURS])


def noisy_linear_imputation(arr: np.ndarray, indices: np.ndarray, noise: float = 0.01) -> np.ndarray:
    """``arr`` (C,H,W) with the flat H·W ``indices`` imputed from their neighbours, plus Gaussian noise.

    Quantus' linear system and random draws (:func:`sparse_imputation`), solved as the banded positive definite
    system it is: negated, the matrix is symmetric (each pair of neighbours weighs the same both ways) and diagonally
    dominant, and with the unknowns in pixel order each couples only to those within a row and a pixel of it. A
    Cholesky factorisation of that band imputes 3.4x faster than the sparse LU on the quick models
    (``benchmarks/road_imputation.py``) and agrees with it to float64 rounding (a float32 image's imputed pixels
    within one float32 step, checked in tests); a system without a known pixel (singular) or with repeated indices
    goes to the sparse LU.

    Reference: Rong et al. 2022, A consistent and efficient evaluation strategy for attribution methods, ICML.
    """
    indices = np.asarray(indices)
    system = _banded_system(arr, indices)
    if system is None:
        return sparse_imputation(arr, indices, noise)
    band, b, order = system
    try:
        solved = solveh_banded(band, b, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return sparse_imputation(arr, indices, noise)
    res = np.empty_like(solved)
    res[order] = solved  # back to the order of ``indices``
    return _with_noise(arr, indices, res.T, noise)


def _banded_system(arr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Quantus' imputation system for ``indices``, negated, as (lower band, right-hand sides, pixel order of the
    unknowns); None where the banded solve does not apply: no unknowns, repeated ones, or no known pixel (a system
    without one is singular; with one, each unknown's 8-connected component borders it, which makes it definite)."""
    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    n = len(sorted_idx)
    if n == 0 or n >= arr.shape[1] * arr.shape[2] or (n > 1 and (np.diff(sorted_idx) == 0).any()):
        return None
    b, sum_neighbours, (ks, rows, cols) = _system(arr, sorted_idx)
    below = cols < rows  # the lower triangle; the upper one mirrors it
    offset = rows[below] - cols[below]
    band = np.zeros((int(offset.max(initial=0)) + 1, n))
    band[0] = sum_neighbours
    band[offset, cols[below]] = -_WEIGHTS[ks[below]]
    return band, -b, order  # negating is exact: the negated system's right-hand sides, bit for bit


def sparse_imputation(arr: np.ndarray, indices: np.ndarray, noise: float = 0.01) -> np.ndarray:
    """``arr`` (C,H,W) with the flat H·W ``indices`` imputed from their neighbours, plus Gaussian noise, by sparse LU.

    The same linear system, solve and random draws as ``quantus.functions.perturb_func.
    noisy_linear_imputation`` (bit-identical output, checked in tests), with the system built for all eight
    neighbours at once and handed to the solver in compressed columns, where Quantus fills a LIL matrix item by item.
    The reference the banded solve (:func:`noisy_linear_imputation`) is held to, and its fallback.

    Reference: Rong et al. 2022, A consistent and efficient evaluation strategy for attribution methods, ICML.
    """
    n = len(indices)
    b, sum_neighbours, (ks, rows, neighbours) = _system(arr, indices)
    cols = np.concatenate([neighbours, np.arange(n)])
    rows = np.concatenate([rows, np.arange(n)])
    data = np.concatenate([_WEIGHTS[ks], -sum_neighbours])
    # Canonical compressed columns (by column, then row; no entry repeats), as Quantus' LIL-to-CSC conversion gives.
    order = np.argsort(cols * n + rows)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=n))])
    a = csc_matrix((data[order], rows[order], indptr), shape=(n, n))
    return _with_noise(arr, indices, np.transpose(spsolve(a, b)), noise)


def _with_noise(arr: np.ndarray, indices: np.ndarray, res: np.ndarray, noise: float) -> np.ndarray:
    """A copy of ``arr`` whose ``indices`` hold the solution ``res`` (C, n) plus Quantus' Gaussian noise, drawn as it
    draws it (one ``randn`` of the solution's shape), so that both solves leave NumPy's generator alike."""
    out = np.copy(arr.reshape((arr.shape[0], -1)))
    out[:, indices] = res + noise * np.random.randn(*res.shape)
    return out.reshape(*arr.shape)


def _system(arr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Quantus' imputation system for the unknown pixels ``indices`` (variable i is ``indices[i]``): the right-hand
    sides (n, C), each unknown's sum of in-image neighbour weights (the diagonal is its negation), and the
    off-diagonal entries as (neighbour k of ``_NEIGHBOURS``, row, column), each weighing ``_WEIGHTS[k]``."""
    _, height, width = arr.shape
    arr_flat = arr.reshape((arr.shape[0], -1))
    n = len(indices)
    unknown = np.zeros(arr_flat.shape[1], dtype=bool)
    unknown[indices] = True
    var_of = np.zeros(arr_flat.shape[1], dtype=int)
    var_of[indices] = np.arange(n)
    r, c = indices // width + _ROW_STEP, indices % width + _COL_STEP  # (8, n): each unknown's neighbours
    valid = (r >= 0) & (c >= 0) & (r < height) & (c < width)
    coords = np.where(valid, r * width + c, 0)
    neighbour_unknown = valid & unknown[coords]
    known = valid & ~neighbour_unknown
    pixels = arr_flat.T[coords]  # (8, n, C)
    b = np.zeros((n, arr.shape[0]))
    sum_neighbours = np.ones(n)
    for k, (_, weight) in enumerate(_NEIGHBOURS):
        # Quantus' steps in its order; subtracting an exact 0.0 where it takes no step leaves the value's bits.
        b -= np.where(known[k][:, None], weight * pixels[k], 0.0)
        sum_neighbours -= np.where(valid[k], 0.0, weight)
    ks, rows = np.nonzero(neighbour_unknown)
    return b, sum_neighbours, (ks, rows, var_of[coords[ks, rows]])


def _pixel_map(a_batch: np.ndarray) -> np.ndarray:
    """(N,H·W) relevance per pixel: a channel-wise map is summed over its channels."""
    a = np.asarray(a_batch, dtype=np.float64)
    return a.sum(axis=1).reshape(len(a), -1)


def _class_scores(model, x: np.ndarray, y: np.ndarray, shape: tuple, batch_size: int | None = None) -> np.ndarray:
    # Predicted in forward passes of at most ``batch_size`` images (default: all at once).
    x_input = model.shape_input(x, shape, channel_first=True, batched=True)
    size = batch_size or max(1, len(x_input))
    out = np.concatenate([model.predict(x_input[s : s + size]) for s in range(0, len(x_input), size)])
    return np.asarray(out, dtype=np.float64)[np.arange(len(y)), y]


class ROAD(quantus.ROAD):
    """Remove-and-debias with noisy linear imputation: LeRF minus MoRF class score, per sample.

    For each percentage p, the p% most (MoRF) or least (LeRF) relevant pixels, all channels, are
    imputed from their 8 neighbours (weights 1/6 direct, 1/12 diagonal) plus Gaussian noise of
    std ``noise``, and the explained class's score is read. The per-sample score is the mean over
    the percentages of LeRF − MoRF (higher is better; a random ordering scores 0 in expectation):
    a faithful map destroys the class score fast when its top pixels go and keeps it when its
    bottom pixels go. Curves are kept on ``morf_curves`` / ``lerf_curves`` (N, len(percentages)).

    Reference: Rong et al. 2022, A consistent and efficient evaluation strategy for attribution methods, ICML.
    """

    def __init__(self, percentages: Sequence[float] = ROAD_PERCENTAGES, noise: float = 0.01, **kwargs):
        kwargs.setdefault("return_aggregate", False)
        super().__init__(percentages=list(percentages), noise=noise, **kwargs)
        self.noise = noise
        self.morf_curves = np.empty((0, len(self.percentages)))
        self.lerf_curves = np.empty((0, len(self.percentages)))

    def impute(self, image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """``image`` (C,H,W) with ``pixels`` (flat H·W indices) imputed in every channel."""
        if len(pixels) == 0:
            return image.copy()
        return noisy_linear_imputation(arr=image, indices=np.asarray(pixels, dtype=np.int64), noise=self.noise)

    def curves(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """(MoRF, LeRF) class-score curves, each (N, len(percentages))."""
        a = _pixel_map(a_batch)
        n_pixels = a.shape[1]
        # Stable sort so ties keep pixel order in both directions (reproducible curves).
        most_first = np.argsort(-a, axis=1, kind="stable")
        least_first = np.argsort(a, axis=1, kind="stable")
        deferred = DeferredScores(model, y_batch, x_batch.shape)
        for order in (most_first, least_first):
            for p in self.percentages:
                k = int(round(n_pixels * p / 100))
                deferred.add(np.stack([self.impute(x, idx[:k]) for x, idx in zip(x_batch, order)]).astype(x_batch.dtype))
        curves = deferred.scores().astype(np.float64).reshape(2, len(self.percentages), len(y_batch))
        return curves[0].T, curves[1].T

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs):
        morf, lerf = self.curves(model, x_batch, y_batch, a_batch)
        self.morf_curves = np.concatenate([self.morf_curves, morf])
        self.lerf_curves = np.concatenate([self.lerf_curves, lerf])
        return (lerf - morf).mean(axis=1).tolist()

    def custom_postprocess(self, **kwargs) -> None:
        # Quantus' ROAD collapses the batch into one accuracy per percentage here; keep per-sample scores.
        return None


def slic_segments(image: np.ndarray) -> np.ndarray:
    """(H,W) integer SLIC superpixels of a (C,H,W) image, labelled from 0."""
    return get_superpixel_segments(img=np.moveaxis(image, 0, -1).astype(np.float64), segmentation_method="slic")


class IROF(quantus.IROF):
    """Iterative removal of features: area over the normalised class-score curve, per sample.

    Superpixels are ranked by their mean relevance and removed one after another, most relevant
    first, each replaced (all channels) by the original image's per-channel mean. The curve is the
    explained class's score relative to the unperturbed one, from 0 to all superpixels removed on
    an x-axis scaled to [0, 1]; the score is 1 − its trapezoidal area (higher is better).
    ``segment_func`` maps a (C,H,W) image to (H,W) segment labels (default: SLIC).

    Reference: Rieger & Hansen 2020, IROF: a low resource evaluation metric for explanation methods, ICLR workshop.
    """

    def __init__(self, segment_func: Callable[[np.ndarray], np.ndarray] = slic_segments, **kwargs):
        kwargs.setdefault("return_aggregate", False)
        super().__init__(**kwargs)
        self.segment_func = segment_func
        self.curves: list[np.ndarray] = []

    def steps(self, x: np.ndarray, a: np.ndarray) -> np.ndarray:
        """One (C,H,W) image with 0, 1, ..., K of its superpixels removed, most relevant first: (K+1, C, H, W)."""
        segments = np.asarray(self.segment_func(x))
        labels = np.unique(segments)
        relevance = a.sum(axis=0)
        mean_relevance = np.array([relevance[segments == s].mean() for s in labels])
        order = labels[np.argsort(-mean_relevance, kind="stable")]
        fill = x.mean(axis=(1, 2), keepdims=True)
        steps = [x]
        current = x
        for s in order:
            current = np.where(segments[None] == s, fill, current)
            steps.append(current)
        return np.stack(steps).astype(x.dtype)

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs):
        # The images' steps are predicted together, in forward passes of a few hundred images (not one per image),
        # a group of images at a time so that the pending copies stay within batching.PENDING_BYTES.
        curves, group = [], []

        def predict_group():
            stacked = np.concatenate([steps for steps, _ in group])
            targets = np.concatenate([np.full(len(steps), y) for steps, y in group])
            scores = _class_scores(model, stacked, targets, stacked.shape, batch_size=max_batch(model.device))
            start = 0
            for steps, _ in group:
                curves.append(scores[start : start + len(steps)])
                start += len(steps)
            group.clear()

        for x, y, a in zip(x_batch, y_batch, np.asarray(a_batch, dtype=np.float64)):
            group.append((self.steps(x, a), y))
            if sum(steps.nbytes for steps, _ in group) >= batching.PENDING_BYTES:
                predict_group()
        if group:
            predict_group()
        out = []
        for c in curves:
            if not c[0] > 0:
                raise ValueError(f"IROF needs a positive class score on the unperturbed image, got {c[0]:.3g}")
            c = c / c[0]
            self.curves.append(c)
            out.append(1.0 - np.trapezoid(c, dx=1.0 / (len(c) - 1)))
        return out


# --- Localisation: the ROC AUC of every sample at once ---------------------------------------------------------


def roc_auc_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of each row of ``scores`` (N, D) against the boolean ``positive`` (N, D).

    The Mann–Whitney form: (sum of the positives' average ranks − P(P+1)/2) / (P·N), which is the trapezoidal area
    under the ROC curve with tied scores counted half (what sklearn's roc_curve + auc give). NaN for a row with no
    positive or no negative.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = positive.sum(axis=1).astype(np.float64)
    n_neg = positive.shape[1] - n_pos
    ranks = rankdata(scores, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    out[(n_pos == 0) | (n_neg == 0)] = np.nan
    return out


class AUC(quantus.AUC):
    """Quantus' AUC, every sample's ROC AUC computed at once instead of one sklearn call per sample.

    Reference: Fawcett 2006, An introduction to ROC analysis, Pattern Recognition Letters.
    """

    def evaluate_batch(self, a_batch: np.ndarray, s_batch: np.ndarray, **kwargs):
        batch_size = a_batch.shape[0]
        return roc_auc_rows(a_batch.reshape(batch_size, -1), s_batch.astype(bool).reshape(batch_size, -1))


class RelevanceRankAccuracy(quantus.RelevanceRankAccuracy):
    """Quantus' RelevanceRankAccuracy, each sample's top-|mask| ranks marked in one comparison, not a Python list.

    Reference: Arras et al. 2022, CLEVR-XAI: A benchmark dataset for the ground truth evaluation of neural network
    explanations, Information Fusion.
    """

    def evaluate_batch(self, a_batch: np.ndarray, s_batch: np.ndarray, **kwargs):
        # Quantus' steps but one: its mask of the first s_sum ranks per sample, built from lists of Python bools,
        # was most of the metric's time on 32 px maps; the same booleans come from one broadcast comparison.
        batch_size = a_batch.shape[0]
        s_batch = s_batch.astype(bool)
        a_batch, s_batch = a_batch.reshape(batch_size, -1), s_batch.reshape(batch_size, -1)
        s_sums = s_batch.sum(-1)
        sum_zero = s_sums == 0
        a_sorted = np.argsort(-a_batch, axis=-1)
        s_mask = np.arange(a_batch.shape[-1])[None, :] < s_sums[:, None]
        choice_s_batch = s_batch[np.arange(batch_size)[:, None], a_sorted]
        rank_accuracy = (choice_s_batch * s_mask).sum(-1) / s_mask.sum(-1)
        rank_accuracy[sum_zero] = np.nan
        if np.any(sum_zero):
            warn.warn_empty_segmentation()
        return rank_accuracy


# --- Perturbation metrics predicting all their steps together ---------------------------------------------------


def warn_unchanged(x_batch: np.ndarray, x_perturbed: np.ndarray) -> None:
    """Quantus' warning for each sample its perturbation left unchanged, the samples compared all at once."""
    # np.allclose is np.isclose(...).all(): one call for the batch finds the samples Quantus' per-sample call warns of.
    same = np.isclose(x_batch, x_perturbed, equal_nan=True).reshape(len(x_batch), -1).all(axis=1)
    for i in np.flatnonzero(same):
        warn.warn_perturbation_caused_no_change(x=x_batch[i], x_perturbed=x_perturbed[i])


class FaithfulnessCorrelation(quantus.FaithfulnessCorrelation):
    """Quantus' FaithfulnessCorrelation, its ``nr_runs`` perturbed copies predicted together.

    Reference: Bhatt et al. 2020, Evaluating and aggregating feature-based model explanations, IJCAI.
    """

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs):
        if x_batch.shape != a_batch.shape:
            a_batch = np.broadcast_to(a_batch, x_batch.shape)
        batch_size = a_batch.shape[0]
        a_batch = a_batch.reshape(batch_size, -1)
        n_features = a_batch.shape[-1]
        x_input = model.shape_input(x_batch, x_batch.shape, channel_first=True, batched=True)
        y_pred = model.predict(x_input)[np.arange(batch_size), y_batch]
        deferred = DeferredScores(model, y_batch, x_batch.shape)
        att_sums = []
        for _ in range(self.nr_runs):
            # The same draws as Quantus', in the same order: the random subsets never depend on a prediction.
            a_ix = np.stack([np.random.choice(n_features, self.subset_size, replace=False) for _ in range(batch_size)],
                            axis=0)
            x_perturbed = self.perturb_func(arr=x_batch.reshape(batch_size, -1), indices=a_ix).reshape(*x_batch.shape)
            warn_unchanged(x_batch, x_perturbed)
            deferred.add(x_perturbed)
            att_sums.append(a_batch[np.arange(batch_size)[:, None], a_ix].sum(axis=-1))
        pred_deltas = np.stack([y_pred - y for y in deferred.scores()], axis=1)
        return self.similarity_func(a=np.stack(att_sums, axis=1), b=pred_deltas, batched=True).tolist()


def _ordered_patches(metric, x_batch: np.ndarray, a_batch: np.ndarray) -> tuple:
    """Quantus' patch bookkeeping of RegionPerturbation and Selectivity: the padding, and each sample's patches
    (flat indices into the padded image) ordered most relevant first, as (patches, B, patch size)."""
    batch_size = a_batch.shape[0]
    padding_h = utils.get_padding_size(x_batch.shape[-2], metric.patch_size)
    padding_w = utils.get_padding_size(x_batch.shape[-1], metric.patch_size)
    padding = ((0, 0), (0, 0), padding_h, padding_w)
    axes = np.arange(len(x_batch.shape))
    x_pad = utils._pad_array(x_batch, padding, mode="constant", padded_axes=axes)
    a_pad = utils._pad_array(a_batch, padding, mode="constant", padded_axes=axes)
    att_sums, patches = [], []
    for block_indices in utils.get_block_indices(x_pad, metric.patch_size):
        att_sums.append(a_pad.reshape(batch_size, -1)[np.arange(batch_size)[:, None], block_indices].sum(axis=-1))
        patches.append(block_indices)
    att_sums, patches = np.stack(att_sums, -1), np.stack(patches, 1)
    order = metric.patch_order(att_sums)
    return padding, patches[np.arange(batch_size)[:, None], order].transpose(1, 0, 2)


def _patch_steps(metric, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, n_steps=None):
    """Quantus' cumulative patch removal of RegionPerturbation and Selectivity: the class score after each of the
    first ``n_steps`` removals (all when None), as (B, steps) float32."""
    x_batch_shape = x_batch.shape
    if len(x_batch.shape) == 3:
        x_batch, a_batch = x_batch[:, :, None], a_batch[:, :, None]
    batch_size = a_batch.shape[0]
    padding, ordered_patches = _ordered_patches(metric, x_batch, a_batch)
    (top, bottom), (left, right) = padding[2], padding[3]
    x_perturbed_pad = utils._pad_array(x_batch.copy(), padding, mode="edge", padded_axes=np.arange(len(x_batch.shape)))
    pad_shape = x_perturbed_pad.shape
    deferred = DeferredScores(model, y_batch, x_batch_shape)
    for patch_slice in ordered_patches[:n_steps]:
        x_perturbed_pad = metric.perturb_func(arr=x_perturbed_pad.reshape(batch_size, -1), indices=patch_slice)
        x_perturbed_pad = x_perturbed_pad.reshape(*pad_shape)
        x_perturbed = x_perturbed_pad[:, :, top : pad_shape[2] - bottom, left : pad_shape[3] - right]
        warn_unchanged(x_batch, x_perturbed)
        deferred.add(x_perturbed)
    return deferred.scores().T


class RegionPerturbation(quantus.RegionPerturbation):
    """Quantus' RegionPerturbation, the copies after each removed patch predicted together.

    Reference: Samek et al. 2017, Evaluating the visualization of what a deep neural network has learned, IEEE TNNLS.
    """

    def patch_order(self, att_sums: np.ndarray) -> np.ndarray:
        """Each sample's patch order (B, patches), by ``self.order``, drawn as Quantus draws it."""
        if self.order == "random":
            return np.array([np.random.permutation(att_sums.shape[1]) for _ in range(att_sums.shape[0])])
        if self.order == "morf":
            return np.argsort(-att_sums, -1)
        if self.order == "lerf":
            return np.argsort(att_sums, -1)
        raise ValueError(f"Chosen order must be in ['random', 'morf', 'lerf'] but is: {self.order}.")

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs):
        if x_batch.shape != a_batch.shape:
            a_batch = np.broadcast_to(a_batch, x_batch.shape)
        x_input = model.shape_input(x_batch, x_batch.shape, channel_first=True, batched=True)
        y_pred = model.predict(x_input)[np.arange(a_batch.shape[0]), y_batch]
        return y_pred[:, None] - _patch_steps(self, model, x_batch, y_batch, a_batch, self.regions_evaluation)


class Selectivity(quantus.Selectivity):
    """Quantus' Selectivity, the copies after each removed patch predicted together.

    Reference: Montavon et al. 2018, Methods for interpreting and understanding deep neural networks, DSP.
    """

    def patch_order(self, att_sums: np.ndarray) -> np.ndarray:
        """Each sample's patches, most relevant first (B, patches)."""
        return np.argsort(-att_sums, -1)

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs):
        if x_batch.shape != a_batch.shape:
            a_batch = np.broadcast_to(a_batch, x_batch.shape)
        return _patch_steps(self, model, x_batch, y_batch, a_batch).astype(np.float64)


# --- MPRT family: randomise learnable weights only ------------------------------------------------------------

RANDOMISED_LAYERS = (torch.nn.Conv2d, torch.nn.Linear)


def _learnable_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    # Adebayo et al. randomise the weights of the network's layers. Quantus resets every module with
    # reset_parameters, BatchNorm included, whose reset restores running statistics and unit affine
    # parameters: a normalisation undone, not a weight randomised (4 of 9 steps on the quick CNN).
    return [(name, m) for name, m in model.named_modules() if isinstance(m, RANDOMISED_LAYERS)]


def _learnable_generator(self, order: str = "top_down", seed: int = 42):
    """Quantus' cascading randomisation, over conv and linear layers only (same seeding and orders)."""
    original_parameters = self.state_dict()
    random_layer_model = copy.deepcopy(self.model)
    modules = _learnable_layers(random_layer_model)
    if order == "top_down":
        modules = modules[::-1]
    for name, module in modules:
        if order == "independent":
            random_layer_model.load_state_dict(original_parameters)
        manual_seed(seed + 1)
        module.reset_parameters()
        yield name, random_layer_model


_LEARNABLE_WRAPPERS: dict[type, type] = {}


def learnable_only(wrapped) -> None:
    """Make a Quantus model wrapper randomise only conv and linear layers (its class is swapped for a subclass)."""
    base = type(wrapped)
    if getattr(base, "_learnable_only", False):
        return
    if base not in _LEARNABLE_WRAPPERS:
        _LEARNABLE_WRAPPERS[base] = type(f"LearnableOnly{base.__name__}", (base,), {
            "_learnable_only": True,
            "get_random_layer_generator": _learnable_generator,
            "random_layer_generator_length": property(lambda self: len(_learnable_layers(self.model))),
        })
    wrapped.__class__ = _LEARNABLE_WRAPPERS[base]


class LearnableMPRT(quantus.MPRT):
    """Quantus' MPRT, cascading over the learnable (conv, linear) layers only.

    Reference: Adebayo et al. 2018, Sanity checks for saliency maps, NeurIPS.
    """

    def general_preprocess(self, *args, **kwargs):
        data = super().general_preprocess(*args, **kwargs)
        learnable_only(data["model"])
        return data


class LearnableEfficientMPRT(quantus.EfficientMPRT):
    """Quantus' EfficientMPRT, randomising the learnable (conv, linear) layers only.

    Reference: Hedström et al. 2023, Sanity checks revisited, XAI in Action workshop.
    """

    def general_preprocess(self, *args, **kwargs):
        data = super().general_preprocess(*args, **kwargs)
        learnable_only(data["model"])
        return data

    def evaluate_instance(self, model, x, y, a, s) -> float:
        """The map's complexity (a histogram entropy); NaN for a constant map (metrics.COLLAPSE_RISE)."""
        flat = np.asarray(a).ravel()
        # Why NaN, not Quantus' 0 entropy: a constant original map makes the relative rise x/0 (inf), and a map that
        # goes constant on the randomised model collapsed, as MPRT's similarity counts it (MetricSpec.collapse).
        if flat.size and flat.max() == flat.min():
            return float("nan")
        return super().evaluate_instance(model=model, x=x, y=y, a=a, s=s)


# Keeps SmoothMPRT's input-noise streams apart from the layer resets, which Quantus seeds with the same ``seed``.
_SMOOTH_MPRT_NOISE_SALT = 0x5D0C_AB1E


def _input_key(x: np.ndarray) -> int:
    """A 64-bit key of one input's bytes: the same input draws the same noise on every model."""
    return int.from_bytes(hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest()[:8], "little")


class LearnableSmoothMPRT(quantus.SmoothMPRT):
    """Quantus' SmoothMPRT over the learnable (conv, linear) layers: the Spearman similarity of maps denoised by
    averaging over ``nr_samples`` Gaussian-noised copies of the input, on the unrandomised and the randomised model.

    Three repairs of Quantus 0.6, keeping its arithmetic: it explains through the ``explain_func`` it is given
    (Quantus calls ``quantus.explain``, ignoring it: field notes); the reference is the denoised map on the
    unrandomised model, as the paper compares denoised with denoised (Quantus compares a given ``a_batch`` unsmoothed),
    computed once; and its normalisation keeps ``normalise_func_kwargs`` (Quantus drops them).

    One documented deviation from Quantus 0.6's implementation: the noise draws are shared between the two models.
    Each input's noisy copies are drawn once, seeded by ``seed`` and the input's bytes, and the same copies are
    explained on the unrandomised and on the randomised model; Quantus draws each model's copies afresh from the
    global NumPy stream, i.e. independently. Each side is still the denoised map as defined (the mean over
    ``nr_samples`` copies, the last noise-free, noise sd ``noise_magnitude`` times the input's range); the texts
    checked, Quantus' docstring and the paper's abstract, say how each map is averaged, not how the two sides' draws
    are coupled, so this departs from Quantus' code, not from a stated definition (:meth:`explain_smooth_batch_numpy`).

    Reference: Hedström et al. 2023, Sanity checks revisited: an exploration to repair the model parameter
    randomisation test, XAI in Action workshop (NeurIPS).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.normalise_func_kwargs:  # SmoothMPRT stores the bare function over the base class's partial
            self.normalise_func = functools.partial(self.normalise_func, **self.normalise_func_kwargs)
        self._original, self._denoised = None, None

    def general_preprocess(self, *args, **kwargs):
        data = super().general_preprocess(*args, **kwargs)
        learnable_only(data["model"])
        return data

    def custom_preprocess(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch, **kwargs) -> dict:
        """The reference: the denoised maps on the unrandomised model, whether or not ``a_batch`` was given."""
        asserts.assert_explain_func(explain_func=self.explain_func)
        self._original, self._denoised = model.get_model(), None
        self._denoised = np.concatenate(list(self.generate_explanations(model, x_batch, y_batch,
                                                                        **self.explain_func_kwargs)))
        return {"a_batch": self._denoised}

    def generate_explanations(self, model, x_batch: np.ndarray, y_batch: np.ndarray, **kwargs):
        # Quantus asks again for the unrandomised model's denoised maps (its "original" entry, which the score leaves
        # out): answer with the reference, so they are drawn and paid for once.
        if self._denoised is not None and model is self._original:
            for start in range(0, len(x_batch), self.batch_size):
                yield self._denoised[start : start + self.batch_size]
            return
        yield from super().generate_explanations(model, x_batch, y_batch, **kwargs)

    def explain_smooth_batch_numpy(self, model, x_batch: np.ndarray, y_batch: np.ndarray, std, **kwargs):
        """The mean of the maps of ``nr_samples`` copies of ``x_batch``, all but the last with Gaussian noise of sd
        ``std``, each input's draws seeded by ``self.seed`` and its bytes, through ``self.explain_func``."""
        # Common random numbers. The test compares two models on the same inputs; the input noise only denoises each
        # side's map. Each side is the same estimator of its own expectation over the noise whether or not the two
        # share draws; sharing them removes input-noise variation from the between-model comparison, which
        # independent draws (Quantus 0.6) leave in it: a map that ignores the model but is redrawn by any input change
        # (the Random control) then shares only the noise-free copy between the two sides and reads as ~1/N similar,
        # "changed" by a randomisation it does not see. Seeding by the input's bytes, not by call order, gives the
        # same copies on both models whatever the batching and however often the reference is drawn.
        streams = [np.random.default_rng([self.seed, _SMOOTH_MPRT_NOISE_SALT, _input_key(x)]) for x in x_batch]
        total = None
        for n in range(self.nr_samples):
            if n == self.nr_samples - 1:  # Quantus' last copy is noise-free: one sample is the plain map
                noise = np.zeros_like(x_batch)
            else:
                noise = np.stack([stream.standard_normal(x_batch.shape[1:]) for stream in streams]) * std
            a = np.asarray(self.explain_func(model=model, inputs=x_batch + noise, targets=y_batch, **kwargs),
                           dtype=np.float64) / self.nr_samples
            total = a if total is None else total + a
        return total


# --- Relative stability in a numerically stable form ------------------------------------------------------------


def relative_output_stability(e_x: np.ndarray, e_xs: np.ndarray, h_x: np.ndarray, h_xs: np.ndarray,
                              eps_min: float) -> np.ndarray:
    """Per sample: the map's relative L2 change ||e_x - e_xs|| / ||e_x|| over the logits' L2 change ||h_x - h_xs||,
    each denominator floored at ``eps_min``.

    Agarwal et al. divide the map change element by element, (e_x - e_xs) / e_x, by each pixel's own relevance: on an
    |a| map whose pixels are mostly near 0 that ratio is decided by the smallest pixels (Quantus guards only exact
    zeros), so float rounding alone moves it by orders of magnitude (as RelativeInputStability's input ratio does). The
    whole map's norm is well conditioned: after the per-sample max normalisation ||e_x|| >= 1. The logits' change is
    the paper's denominator with its floor max(., eps_min): under the property's noise it is orders of magnitude above
    the floor, which only keeps an unmoved output from dividing by zero.

    Reference: Agarwal et al. 2022, Rethinking stability for attribution-based explanations, arXiv:2203.06877.
    """
    n = len(e_x)
    e_x, e_xs = np.asarray(e_x, dtype=np.float64).reshape(n, -1), np.asarray(e_xs, dtype=np.float64).reshape(n, -1)
    change = np.linalg.norm(e_x - e_xs, axis=1) / np.maximum(np.linalg.norm(e_x, axis=1), eps_min)
    moved = np.linalg.norm(np.asarray(h_x, dtype=np.float64) - np.asarray(h_xs, dtype=np.float64), axis=-1)
    return change / np.maximum(moved, eps_min)


class RelativeOutputStability(quantus.RelativeOutputStability):
    """Quantus' RelativeOutputStability (the largest ratio over the noise draws, the same draws and logits) with the
    numerically stable objective :func:`relative_output_stability`.

    Reference: Agarwal et al. 2022, Rethinking stability for attribution-based explanations, arXiv:2203.06877.
    """

    def relative_output_stability_objective(self, h_x, h_xs, e_x, e_xs) -> np.ndarray:
        return relative_output_stability(e_x, e_xs, h_x, h_xs, self._eps_min)


# --- The reference the batched adapters are held to -------------------------------------------------------------

BATCHED = ("AUC", "FaithfulnessCorrelation", "RegionPerturbation", "RelevanceRankAccuracy", "Selectivity")


@contextlib.contextmanager
def reference_implementations():
    """Inside the block, recipes build Quantus' own classes instead of the adapters that reproduce them, ROAD
    imputes by Quantus' sparse LU and ROAD and IROF predict one step (one image) per forward pass: the computation the
    batched code must agree with."""
    module = sys.modules[__name__]
    saved = {name: getattr(module, name) for name in (*BATCHED, "noisy_linear_imputation")}
    pending = batching.PENDING_BYTES
    try:
        for name in BATCHED:
            setattr(module, name, getattr(quantus, name))
        module.noisy_linear_imputation = sparse_imputation
        batching.PENDING_BYTES = 0
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
        batching.PENDING_BYTES = pending
