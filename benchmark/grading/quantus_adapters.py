"""Quantus 0.6 metrics adapted to this benchmark: ROAD and IROF for multi-channel images, the MPRT family
randomising learnable weights only (SmoothMPRT also explaining through the benchmark), relative output stability in a
numerically stable form, and the perturbation metrics predicting all their steps in large batches.

FaithfulnessCorrelation, RegionPerturbation and Selectivity are Quantus' own ``evaluate_batch`` with one change:
the perturbed copies are collected and predicted together (:class:`benchmark.grading.batching.DeferredScores`) instead of
one forward pass per random subset or per removed patch (and FaithfulnessCorrelation's subsets and copies, the same
for every method, are drawn once: :class:`_PerturbationMemo`). Same random draws in the same order, same
perturbations, same arithmetic on the predictions; tests/test_batched_metrics.py holds them to unmodified Quantus.

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
from scipy.linalg import get_lapack_funcs, solveh_banded
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve
from scipy.stats import rankdata

from benchmark.grading import batching
from benchmark.grading.batching import DeferredScores, max_batch
from benchmark.grading.explain_cache import array_digest, memo_digest
from benchmark.grading.quantus_compat import quantus
from benchmark.lru import Lru
from benchmark.models import fused
from benchmark.rng import manual_seed

ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)

# Neighbour offsets and weights of Quantus' noisy linear imputation (Rong et al. 2022), in its order.
_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
               ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
_ROW_STEP = np.array([dr for (dr, _), _ in _NEIGHBOURS])[:, None]
_COL_STEP = np.array([dc for (_, dc), _ in _NEIGHBOURS])[:, None]
_WEIGHTS = np.array([weight for _, weight in _NEIGHBOURS])
_PBSV = get_lapack_funcs("pbsv", dtype=np.float64)


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
    return noisy_linear_imputation_batch(np.asarray(arr)[None], np.asarray(indices)[None], noise)[0]


def noisy_linear_imputation_batch(arr: np.ndarray, indices: np.ndarray, noise: float = 0.01) -> np.ndarray:
    """:func:`noisy_linear_imputation` of each image ``arr[i]`` (B,C,H,W) at its ``indices[i]`` (B,n), the systems
    built for all images at once: the same arrays and random draws as calling it image by image (checked in tests).

    Reference: Rong et al. 2022, A consistent and efficient evaluation strategy for attribution methods, ICML.
    """
    arr, indices = np.asarray(arr), np.asarray(indices)
    n = indices.shape[1]
    order = np.argsort(indices, axis=1, kind="stable")
    sorted_idx = np.take_along_axis(indices, order, axis=1)
    banded = _band_rows(arr.shape[2] * arr.shape[3], sorted_idx)
    b = _right_hand_sides(arr, sorted_idx)
    bands = _bands(arr.shape[2], arr.shape[3], sorted_idx)
    res = np.empty((len(arr), arr.shape[1], n))
    for i in range(len(arr)):
        solved = _band_solve(bands[i], b[i]) if banded[i] else None
        if solved is None:
            res[i] = _sparse_solution(arr[i], indices[i])
        else:
            res[i][:, order[i]] = solved.T  # back to the order of ``indices``
    return _with_noise(arr, indices, res, noise)


def band_applies(arr: np.ndarray, indices: np.ndarray) -> bool:
    """Whether :func:`noisy_linear_imputation` solves the system of ``indices`` in the (C,H,W) ``arr`` by its band."""
    return bool(_band_rows(arr.shape[1] * arr.shape[2], np.sort(np.asarray(indices))[None])[0])


def _band_rows(pixels: int, sorted_idx: np.ndarray) -> np.ndarray:
    """(B,) whether each row of sorted unknowns (B,n) in an image of ``pixels`` has a banded system: it has unknowns,
    at least one known pixel (without one it is singular; with one, each unknown's 8-connected component borders it,
    which makes the band definite) and no repeated unknown. The rest go to Quantus' sparse LU."""
    repeats = (np.diff(sorted_idx, axis=1) == 0).any(axis=1)
    return ~repeats & (0 < sorted_idx.shape[1] < pixels)


def _bands(height: int, width: int, sorted_idx: np.ndarray) -> list[np.ndarray]:
    """Each image's negated imputation matrix for its sorted unknowns (B,n) as a lower band (1 + its bandwidth, n):
    row 0 holds the diagonal, row d the entries d unknowns below it."""
    batch, n = sorted_idx.shape
    inside = np.full((batch, height * width), -1)
    inside[np.arange(batch)[:, None], sorted_idx] = np.arange(n)
    # Each pixel's unknown, -1 for a known pixel and outside the image.
    var_of = np.pad(inside.reshape(batch, height, width), ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    here = var_of[:, 1:-1, 1:-1]
    pairs = []
    for (dr, dc), weight in _NEIGHBOURS:
        if dr * width + dc > 0:  # an earlier pixel's neighbour: its entry lies in the upper triangle, the mirror
            continue
        there = var_of[:, 1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width]
        both = (here >= 0) & (there >= 0)
        pairs.append((both, np.where(both, here - there, 0), there, -weight))
    widths = np.max([offset.max(axis=(1, 2), initial=0) for _, offset, _, _ in pairs], axis=0)
    # All bands in one buffer, each only as deep as its own bandwidth (as one image's band would be).
    starts = np.concatenate([[0], np.cumsum((widths + 1) * n)])
    flat = np.zeros(int(starts[-1]))
    flat[starts[:-1, None] + np.arange(n)] = _weight_sums(height, width)[sorted_idx]
    for both, offset, there, value in pairs:
        flat[(starts[:-1, None, None] + offset * n + there)[both]] = value
    return [flat[starts[i] : starts[i + 1]].reshape(-1, n) for i in range(batch)]


def _band_solve(band: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """One image's system (its lower ``band`` of the negated matrix, right-hand sides ``b`` (n, C)) solved by the
    band's Cholesky factorisation as ``scipy.linalg.solveh_banded`` solves it (n, C); None where it does not factorise."""
    if band.shape[0] == 2:  # tridiagonal: scipy's own route (LAPACK's ptsv)
        try:
            return solveh_banded(band, -b, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
    # LAPACK's pbsv, called as solveh_banded calls it, without its checks (about 20 us a call here).
    _, x, info = _PBSV(band, -b, lower=1)  # negating the right-hand sides is exact: the negated system's, bit for bit
    return x if info == 0 else None


def sparse_imputation(arr: np.ndarray, indices: np.ndarray, noise: float = 0.01) -> np.ndarray:
    """``arr`` (C,H,W) with the flat H·W ``indices`` imputed from their neighbours, plus Gaussian noise, by sparse LU.

    The same linear system, solve and random draws as ``quantus.functions.perturb_func.
    noisy_linear_imputation`` (bit-identical output, checked in tests), with the system built for all eight
    neighbours at once and handed to the solver in compressed columns, where Quantus fills a LIL matrix item by item.
    The reference the banded solve (:func:`noisy_linear_imputation`) is held to, and its fallback.

    Reference: Rong et al. 2022, A consistent and efficient evaluation strategy for attribution methods, ICML.
    """
    indices = np.asarray(indices)
    return _with_noise(arr[None], indices[None], _sparse_solution(arr, indices)[None], noise)[0]


def _sparse_solution(arr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Quantus' imputation system for one (C,H,W) image solved by its sparse LU: the unknowns' values (C, n)."""
    n = len(indices)
    b, sum_neighbours, neighbour_unknown, neighbour_var = (v[0] for v in _systems(arr[None], indices[None]))
    ks, rows = np.nonzero(neighbour_unknown)
    cols = np.concatenate([neighbour_var[ks, rows], np.arange(n)])
    rows = np.concatenate([rows, np.arange(n)])
    data = np.concatenate([_WEIGHTS[ks], -sum_neighbours])
    # Canonical compressed columns (by column, then row; no entry repeats), as Quantus' LIL-to-CSC conversion gives.
    order = np.argsort(cols * n + rows)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=n))])
    a = csc_matrix((data[order], rows[order], indptr), shape=(n, n))
    return np.transpose(spsolve(a, b)).reshape(arr.shape[0], n)


def _with_noise(arr: np.ndarray, indices: np.ndarray, res: np.ndarray, noise: float) -> np.ndarray:
    """Copies of the images ``arr`` (B,C,H,W) whose ``indices`` (B,n) hold the solutions ``res`` (B,C,n) plus
    Quantus' Gaussian noise, drawn as it draws it image by image (one ``randn`` of each solution's shape: the legacy
    generator fills one draw of all images' shapes with the same numbers in the same order)."""
    out = np.copy(arr.reshape((*arr.shape[:2], -1)))
    values = res + noise * np.random.randn(*res.shape)
    for i in range(len(out)):  # per image, in index order: a repeated index keeps its last value, as Quantus' does
        out[i][:, indices[i]] = values[i]
    return out.reshape(arr.shape)


def _systems(arr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, ...]:
    """Quantus' imputation system of each image ``arr[i]`` (B,C,H,W) for its unknown pixels ``indices[i]`` (B,n;
    variable j is ``indices[i, j]``): the right-hand sides (B,n,C), each unknown's sum of in-image neighbour weights
    (B,n; the diagonal is its negation), whether each of its 8 neighbours (``_NEIGHBOURS``) is unknown (B,8,n) and
    that neighbour's variable (B,8,n); an unknown neighbour k's entry weighs ``_WEIGHTS[k]``."""
    batch, channels, height, width = arr.shape
    n = indices.shape[1]
    image = np.arange(batch)[:, None]
    unknown = np.zeros((batch, height * width), dtype=bool)
    unknown[image, indices] = True
    var_of = np.zeros((batch, height * width), dtype=int)
    var_of[image, indices] = np.arange(n)
    r, c = (indices // width)[:, None] + _ROW_STEP, (indices % width)[:, None] + _COL_STEP  # (B,8,n): neighbours
    valid = (r >= 0) & (c >= 0) & (r < height) & (c < width)
    coords = np.where(valid, r * width + c, 0)
    image = image[:, :, None]
    neighbour_unknown = valid & unknown[image, coords]
    return (_right_hand_sides(arr, indices), _weight_sums(height, width)[indices], neighbour_unknown,
            var_of[image, coords])


def _right_hand_sides(arr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The right-hand sides (B,n,C) of :func:`_systems`: minus each unknown's known neighbours' weighted pixels."""
    batch, channels, height, width = arr.shape
    unknown = np.zeros((batch, height * width), dtype=bool)
    unknown[np.arange(batch)[:, None], indices] = True
    # The pixels a neighbour sum reads, +0 at unknown pixels and outside the image: subtracting weight x +0 leaves a sum
    # as it is, bit for bit (-0 too), as Quantus' skipping such a neighbour does, so no step needs a mask.
    known = np.zeros((batch, channels, height + 2, width + 2), dtype=arr.dtype)
    known[:, :, 1:-1, 1:-1] = np.where(unknown.reshape(batch, 1, height, width), arr.dtype.type(0), arr)
    # Every pixel's sum, over the whole image (contiguous shifted views, no gathers), read at the unknowns after.
    b = np.zeros((batch, channels, height, width))
    term = np.empty(b.shape, dtype=np.result_type(arr.dtype, _NEIGHBOURS[0][1]))  # Quantus' product's precision
    for (dr, dc), weight in _NEIGHBOURS:  # Quantus' steps in its order
        np.multiply(weight, known[:, :, 1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width], out=term)
        np.subtract(b, term, out=b)
    return b.reshape(batch, channels, -1).transpose(0, 2, 1)[np.arange(batch)[:, None], indices]


@functools.lru_cache(maxsize=8)
def _weight_sums(height: int, width: int) -> np.ndarray:
    """(H·W,) each pixel's sum of its in-image neighbours' weights, subtracted from 1 in Quantus' order (read-only)."""
    r = np.arange(height)[:, None, None] + _ROW_STEP.ravel()
    c = np.arange(width)[None, :, None] + _COL_STEP.ravel()
    valid = (r >= 0) & (c >= 0) & (r < height) & (c < width)  # (H,W,8)
    sums = np.ones((height, width))
    for k, (_, weight) in enumerate(_NEIGHBOURS):
        sums -= np.where(valid[:, :, k], 0.0, weight)
    sums = sums.ravel()
    sums.setflags(write=False)
    return sums


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
        return self.impute_batch(image[None], np.asarray(pixels)[None])[0]

    def impute_batch(self, images: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """Each of ``images`` (B,C,H,W) with its ``pixels`` (B,k flat H·W indices) imputed in every channel."""
        if pixels.shape[1] == 0:
            return images.copy()
        return noisy_linear_imputation_batch(images, np.asarray(pixels, dtype=np.int64), noise=self.noise)

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
                deferred.add(self.impute_batch(x_batch, order[:, :k]).astype(x_batch.dtype))
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


@functools.lru_cache(maxsize=1024)  # 1024 images of 64 px hold about 80 MB (their bytes and labels)
def _slic_of(shape: tuple, dtype: str, image: bytes) -> np.ndarray:
    labels = slic_segments(np.frombuffer(image, dtype=dtype).reshape(shape))
    labels.setflags(write=False)
    return labels


def _segments(segment_func: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """``segment_func(image)``; SLIC's (deterministic) labels computed once per image content: every method's IROF
    cell segments the same images."""
    if segment_func is not slic_segments:
        return np.asarray(segment_func(image))
    image = np.ascontiguousarray(image)
    return _slic_of(image.shape, image.dtype.str, image.tobytes())


def segment_means(values: np.ndarray, segments: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``values[segments == s].mean()`` for each of the sorted ``labels`` of float ``values``, bit for bit, from one
    stable sort: each segment's values are one contiguous run in pixel order, summed and divided as ``mean`` does."""
    flat = segments.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], labels)
    ends = np.append(starts[1:], flat.size)
    runs = values.ravel()[order]
    sums = np.array([np.add.reduce(runs[s:e]) for s, e in zip(starts.tolist(), ends.tolist())], dtype=values.dtype)
    return (sums / (ends - starts)).astype(values.dtype)  # a scalar's mean: divided by an intp, cast back


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
        segments = _segments(self.segment_func, x)
        labels = np.unique(segments)
        relevance = a.sum(axis=0)
        mean_relevance = segment_means(relevance, segments, labels)
        order = labels[np.argsort(-mean_relevance, kind="stable")]
        fill = x.mean(axis=(1, 2), keepdims=True)
        # Step j has the j first segments of ``order`` removed: a pixel is filled from the step after its segment's rank.
        rank = np.empty(len(labels), dtype=np.int64)
        rank[np.searchsorted(labels, order)] = np.arange(len(order))
        removed = rank[np.searchsorted(labels, segments)] < np.arange(len(order) + 1)[:, None, None]  # (K+1,H,W)
        return np.where(removed[:, None], fill, x).astype(x.dtype)

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


def warn_unchanged(x_batch: np.ndarray, x_perturbed: np.ndarray) -> np.ndarray:
    """Quantus' warning for each sample its perturbation left unchanged, the samples compared all at once; their rows."""
    # np.allclose is np.isclose(...).all(): one call for the batch finds the samples Quantus' per-sample call warns of.
    same = np.flatnonzero(np.isclose(x_batch, x_perturbed, equal_nan=True).reshape(len(x_batch), -1).all(axis=1))
    _warn_rows(x_batch, x_perturbed, same)
    return same


def _warn_rows(x_batch: np.ndarray, x_perturbed: np.ndarray, rows: np.ndarray) -> None:
    for i in rows:
        warn.warn_perturbation_caused_no_change(x=x_batch[i], x_perturbed=x_perturbed[i])


def _perturbation_key(func) -> str | None:
    """A perturbation's identity: a module-level function's name and its plain keyword arguments; None for anything
    else (a lambda, a closure, an array argument), whose outputs are then never memoised."""
    kwargs = {}
    if isinstance(func, functools.partial):
        if func.args:
            return None
        func, kwargs = func.func, func.keywords
    if not all(isinstance(v, (str, int, float, bool, type(None))) for v in kwargs.values()):
        return None
    module, name = getattr(func, "__module__", None), getattr(func, "__qualname__", "<")
    return None if module is None or "<" in name else f"{module}:{name}:{sorted(kwargs.items())!r}"


class _PerturbationMemo:
    """FaithfulnessCorrelation's random subsets and perturbed copies by everything that determines them: the NumPy
    generator's state they start from, the images, the subset count and size, and the perturbation. Every method's
    cell draws them from the same seeded state on the same images, so all cells but the first repeat them; a repeat
    gets the same arrays and leaves the generator in the state drawing them did (the state is part of the key, so a
    hit is exact by construction)."""

    def __init__(self, max_bytes: int = 256 << 20):  # the quick grid's cells hold about 11 MB each
        # (subsets, copies, unchanged rows, generator state after) by key; the newest is kept even past the budget.
        self._held = Lru(max_bytes, weigh=lambda held: sum(a.nbytes for a in (*held[0], *held[1])))
        self.hits = self.misses = 0

    @staticmethod
    def key(perturbation: str, x_batch: np.ndarray, nr_runs: int, subset_size: int) -> bytes:
        """The generator's state and everything else the draws and copies depend on, hashed."""
        name, keys, pos, has_gauss, cached = np.random.get_state()
        h = memo_digest()
        h.update(f"{perturbation}|{nr_runs}|{subset_size}|{name}|{pos}|{has_gauss}|{cached!r}|".encode())
        h.update(keys)
        array_digest(h, x_batch)  # its dtype, shape and bytes
        return h.digest()

    def get(self, key: bytes) -> tuple | None:
        """The held (subsets, copies, unchanged rows) for ``key``, the generator set as drawing them left it; or None."""
        held = self._held.get(key)
        if held is None:
            self.misses += 1
            return None
        self.hits += 1
        np.random.set_state(held[3])
        return held[:3]

    def put(self, key: bytes, subsets: list, copies: list, unchanged: list) -> None:
        """Hold one cell's draws and copies, with the generator's state after them; the least recently used go first."""
        for a in (*subsets, *copies):
            a.setflags(write=False)  # a hit hands out these very arrays
        self._held.put(key, (subsets, copies, unchanged, np.random.get_state()))


PERTURBATIONS = _PerturbationMemo()


class FaithfulnessCorrelation(quantus.FaithfulnessCorrelation):
    """Quantus' FaithfulnessCorrelation, its ``nr_runs`` perturbed copies predicted together, and drawn once for every
    method that repeats them (:class:`_PerturbationMemo`).

    Reference: Bhatt et al. 2020, Evaluating and aggregating feature-based model explanations, IJCAI.
    """

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs):
        if x_batch.shape != a_batch.shape:
            a_batch = np.broadcast_to(a_batch, x_batch.shape)
        batch_size = a_batch.shape[0]
        a_batch = a_batch.reshape(batch_size, -1)
        x_input = model.shape_input(x_batch, x_batch.shape, channel_first=True, batched=True)
        y_pred = model.predict(x_input)[np.arange(batch_size), y_batch]
        subsets, copies = self.perturbed(x_batch, a_batch.shape[-1])
        deferred = DeferredScores(model, y_batch, x_batch.shape)
        for x_perturbed in copies:
            deferred.add(x_perturbed)
        att_sums = [a_batch[np.arange(batch_size)[:, None], a_ix].sum(axis=-1) for a_ix in subsets]
        pred_deltas = np.stack([y_pred - y for y in deferred.scores()], axis=1)
        return self.similarity_func(a=np.stack(att_sums, axis=1), b=pred_deltas, batched=True).tolist()

    def perturbed(self, x_batch: np.ndarray, n_features: int) -> tuple[list, list]:
        """The ``nr_runs`` random feature subsets (B, subset size) and the copies of ``x_batch`` perturbed at them."""
        perturbation = _perturbation_key(self.perturb_func)
        key = None if perturbation is None else PERTURBATIONS.key(perturbation, x_batch, self.nr_runs, self.subset_size)
        held = None if key is None else PERTURBATIONS.get(key)
        if held is not None:
            subsets, copies, unchanged = held
            for x_perturbed, rows in zip(copies, unchanged):
                _warn_rows(x_batch, x_perturbed, rows)
            return subsets, copies
        batch_size = len(x_batch)
        subsets, copies, unchanged = [], [], []
        for _ in range(self.nr_runs):
            # The same draws as Quantus', in the same order: the random subsets never depend on a prediction.
            a_ix = np.stack([np.random.choice(n_features, self.subset_size, replace=False) for _ in range(batch_size)],
                            axis=0)
            x_perturbed = self.perturb_func(arr=x_batch.reshape(batch_size, -1), indices=a_ix).reshape(*x_batch.shape)
            unchanged.append(warn_unchanged(x_batch, x_perturbed))
            subsets.append(a_ix)
            copies.append(x_perturbed)
        if key is not None:
            PERTURBATIONS.put(key, subsets, copies, unchanged)
        return subsets, copies


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
    # Where the grader fuses the model's no-grad forwards, its randomised copy's are fused too (float rounding only,
    # as on the model); the copies every method explains share one graph per randomised state.
    fused.allow_copy(self.model, random_layer_model)
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


def sparse_imputation_per_image(arr: np.ndarray, indices: np.ndarray, noise: float = 0.01) -> np.ndarray:
    """Quantus' imputation (:func:`sparse_imputation`) of each image ``arr[i]`` (B,C,H,W) at ``indices[i]``, in turn."""
    return np.stack([sparse_imputation(a, i, noise) for a, i in zip(arr, indices)])


# --- The reference the batched adapters are held to -------------------------------------------------------------

BATCHED = ("AUC", "FaithfulnessCorrelation", "RegionPerturbation", "RelevanceRankAccuracy", "Selectivity")


@contextlib.contextmanager
def reference_implementations():
    """Inside the block, recipes build Quantus' own classes instead of the adapters that reproduce them, ROAD
    imputes by Quantus' sparse LU and ROAD and IROF predict one step (one image) per forward pass: the computation the
    batched code must agree with."""
    module = sys.modules[__name__]
    saved = {name: getattr(module, name) for name in (*BATCHED, "noisy_linear_imputation_batch")}
    pending = batching.PENDING_BYTES
    try:
        for name in BATCHED:
            setattr(module, name, getattr(quantus, name))
        module.noisy_linear_imputation_batch = sparse_imputation_per_image
        batching.PENDING_BYTES = 0
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
        batching.PENDING_BYTES = pending
