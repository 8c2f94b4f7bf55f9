"""Quantus 0.6 metrics adapted to this benchmark: ROAD and IROF for multi-channel images, and the MPRT
family randomising learnable weights only.

Quantus 0.6.0's ROAD ranks the channel-broadcast map over C·H·W positions but imputes an (C, H·W)
image, so every 3-channel call indexes out of range, and it returns one accuracy per percentage for
the whole batch instead of per-sample scores. Its IROF hands a (N,1,H,W) superpixel mask to a
perturbation that asserts the image's (N,C,H,W) shape, fills removed superpixels with the mean of
the whole (already perturbed) batch, and reports an area over the curve in units of segments. These
subclasses keep Quantus' call interface (preprocessing, abs, normalisation, explanation asserts,
model wrapper) and replace only ``evaluate_batch`` with the published definitions, per sample.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from quantus.helpers.utils import get_superpixel_segments  # noqa: E402
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve

from benchmark.quantus_compat import quantus

ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)

# Neighbour offsets and weights of Quantus' noisy linear imputation (Rong et al. 2022), in its order.
_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
               ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def noisy_linear_imputation(arr: np.ndarray, indices: np.ndarray, noise: float = 0.01) -> np.ndarray:
    """``arr`` (C,H,W) with the flat H·W ``indices`` imputed from their neighbours, plus Gaussian noise.

    The same linear system, solve and random draws as ``quantus.functions.perturb_func.
    noisy_linear_imputation`` (bit-identical output, checked in tests), with the sparse matrix built
    from coordinate arrays instead of item by item into a LIL matrix, which took most of ROAD's time.

    Reference: Rong et al. 2022, A consistent and efficient evaluation strategy for attribution methods, ICML.
    """
    _, height, width = arr.shape
    arr_flat = arr.reshape((arr.shape[0], -1))
    n = len(indices)
    mask = np.ones(arr_flat.shape[1])
    mask[indices] = 0
    var_of = np.zeros(arr_flat.shape[1], dtype=int)
    var_of[indices] = np.arange(n)
    b = np.zeros((n, arr.shape[0]))
    sum_neighbours = np.ones(n)
    rows, cols, vals = [], [], []
    row_of, col_of = indices // width, indices % width
    for (dr, dc), weight in _NEIGHBOURS:
        r, c = row_of + dr, col_of + dc
        valid = ~((r < 0) | (c < 0) | (r >= height) | (c >= width))
        coords = (indices + dr * width + dc)[valid]
        ids = np.flatnonzero(valid)
        known = mask[coords] == 1
        # Known neighbours move to the right-hand side; unknown ones are unknowns of the system.
        b[ids[known], :] -= weight * arr_flat[:, coords[known]].T
        rows.append(ids[~known])
        cols.append(var_of[coords[~known]])
        vals.append(np.full(int((~known).sum()), weight))
        sum_neighbours[~valid] = sum_neighbours[~valid] - weight
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(-sum_neighbours)
    a = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    a.sum_duplicates()  # canonical (sorted) form, as Quantus' LIL-to-CSC conversion gives
    res = np.transpose(spsolve(a, b))
    out = np.copy(arr_flat)
    out[:, indices] = res + noise * np.random.randn(*res.shape)
    return out.reshape(*arr.shape)


def _pixel_map(a_batch: np.ndarray) -> np.ndarray:
    """(N,H·W) relevance per pixel: a channel-wise map is summed over its channels."""
    a = np.asarray(a_batch, dtype=np.float64)
    return a.sum(axis=1).reshape(len(a), -1)


def _class_scores(model, x: np.ndarray, y: np.ndarray, shape: tuple) -> np.ndarray:
    x_input = model.shape_input(x, shape, channel_first=True, batched=True)
    return np.asarray(model.predict(x_input), dtype=np.float64)[np.arange(len(y)), y]


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
        out = []
        for order in (most_first, least_first):
            curve = []
            for p in self.percentages:
                k = int(round(n_pixels * p / 100))
                x_imp = np.stack([self.impute(x, idx[:k]) for x, idx in zip(x_batch, order)]).astype(x_batch.dtype)
                curve.append(_class_scores(model, x_imp, y_batch, x_batch.shape))
            out.append(np.stack(curve, axis=1))
        return tuple(out)

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

    def curve(self, model, x: np.ndarray, y: int, a: np.ndarray) -> np.ndarray:
        """Relative class score after removing 0, 1, ..., K superpixels of one (C,H,W) image."""
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
        batch = np.stack(steps).astype(x.dtype)
        scores = _class_scores(model, batch, np.full(len(batch), y), batch.shape)
        if not scores[0] > 0:
            raise ValueError(f"IROF needs a positive class score on the unperturbed image, got {scores[0]:.3g}")
        return scores / scores[0]

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs):
        out = []
        for x, y, a in zip(x_batch, y_batch, np.asarray(a_batch, dtype=np.float64)):
            c = self.curve(model, x, int(y), a)
            self.curves.append(c)
            out.append(1.0 - np.trapezoid(c, dx=1.0 / (len(c) - 1)))
        return out


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
        torch.manual_seed(seed=seed + 1)
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
