"""ROAD and IROF adapters against hand-computed answers on toy models whose output we know exactly."""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.grading import quantus_adapters
from benchmark.grading.quantus_adapters import IROF, ROAD, noisy_linear_imputation, sparse_imputation

REGION = (slice(3, 5), slice(3, 5))  # a 2x2 block in the middle of an 8x8 image


class RegionSum(nn.Module):
    """Two logits: 0 for class 0, and the channel-mean pixel sum over a fixed region for class 1."""

    def __init__(self, rows: slice, cols: slice):
        super().__init__()
        self.rows, self.cols = rows, cols
        self.bias = nn.Parameter(torch.zeros(1))  # Quantus wants a model with parameters

    def forward(self, x):
        score = x[:, :, self.rows, self.cols].mean(1).sum((1, 2)) + self.bias
        return torch.stack([torch.zeros_like(score), score], 1)


def _call(metric, model, x, a):
    y = np.ones(len(x), dtype=np.int64)
    return np.asarray(metric(model=model.eval(), x_batch=x, y_batch=y, a_batch=a, s_batch=None, device="cpu",
                             softmax=False, batch_size=len(x)), dtype=np.float64)


def _region_image() -> np.ndarray:
    x = np.zeros((1, 3, 8, 8), dtype=np.float32)
    x[0, :, 3:5, 3:5] = 1.0
    return x


def test_road_morf_and_lerf_curves_match_the_hand_computed_imputation():
    x = _region_image()
    a = np.full((1, 1, 8, 8), 0.1, dtype=np.float32)
    a[0, 0, 3:5, 3:5] = 0.9
    a[0, 0, 3, 3] = 1.0  # the single most relevant pixel
    # Remove 1 pixel, 4 pixels (the region), half the image.
    metric = ROAD(percentages=[100 / 64, 400 / 64, 50], noise=0.0, abs=True, normalise=True, disable_warnings=True)
    scores = _call(metric, RegionSum(*REGION), x, a)
    # One region pixel removed: its 8 neighbours weigh 1/6 (direct) and 1/12 (diagonal); three of them are
    # region pixels (value 1): two direct, one diagonal -> 1/6 + 1/6 + 1/12 = 5/12, so the sum is 3 + 5/12.
    # The whole region removed: every known neighbour is 0, so the imputed region is 0.
    np.testing.assert_allclose(metric.morf_curves, [[3 + 5 / 12, 0.0, 0.0]], atol=1e-9)
    # Least relevant first never reaches the region within half of the image: the score stays 4.
    np.testing.assert_allclose(metric.lerf_curves, [[4.0, 4.0, 4.0]], atol=1e-9)
    assert scores[0] == pytest.approx(np.mean([4 - (3 + 5 / 12), 4, 4]))
    # The reversed ranking (region least relevant) scores the exact opposite.
    reversed_scores = _call(ROAD(percentages=[400 / 64, 50], noise=0.0, abs=True, normalise=True,
                                 disable_warnings=True), RegionSum(*REGION), x, 1.0 - a)
    assert reversed_scores[0] == pytest.approx(-4.0)


def test_road_imputation_solves_the_published_neighbour_equations():
    # Rong et al.: each removed pixel equals the weighted mean of its in-image 8-neighbours (1/6 direct,
    # 1/12 diagonal), known or imputed; known pixels are untouched.
    rng = np.random.default_rng(0)
    image = rng.random((3, 7, 9))
    removed = rng.choice(7 * 9, size=25, replace=False)
    out = ROAD(noise=0.0, disable_warnings=True).impute(image, removed)
    keep = np.setdiff1d(np.arange(63), removed)
    np.testing.assert_array_equal(out.reshape(3, -1)[:, keep], image.reshape(3, -1)[:, keep])
    offsets = {(dr, dc): (1 / 12 if dr and dc else 1 / 6) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc}
    for idx in removed:
        r, c = divmod(int(idx), 9)
        num, den = np.zeros(3), 0.0
        for (dr, dc), w in offsets.items():
            if 0 <= r + dr < 7 and 0 <= c + dc < 9:
                num += w * out[:, r + dr, c + dc]
                den += w
        np.testing.assert_allclose(out[:, r, c], num / den, atol=1e-9)


def test_road_scores_each_sample_independently_of_its_batch_mates():
    rng = np.random.default_rng(1)
    x = rng.random((3, 3, 8, 8)).astype(np.float32)
    a = rng.random((3, 1, 8, 8)).astype(np.float32)
    model = RegionSum(*REGION)
    make = lambda: ROAD(percentages=[20, 60], noise=0.0, abs=True, normalise=True, disable_warnings=True)  # noqa: E731
    together = _call(make(), model, x, a)
    alone = np.concatenate([_call(make(), model, x[i:i + 1], a[i:i + 1]) for i in range(3)])
    assert together.shape == (3,)
    np.testing.assert_allclose(together, alone, atol=1e-9)


def _quadrants(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[1:]
    rows, cols = np.indices((h, w))
    return (rows >= h // 2) * 2 + (cols >= w // 2)


def test_irof_area_over_the_curve_matches_the_hand_computed_value():
    x = np.zeros((1, 3, 8, 8), dtype=np.float32)
    x[0, :, :4, :4] = 1.0  # the model reads only this quadrant; the image's channel means are 16/64 = 0.25
    model = RegionSum(slice(0, 4), slice(0, 4))
    good = np.zeros((1, 1, 8, 8), dtype=np.float32)
    good[0, 0] = np.array([[4, 3], [2, 1]]).repeat(4, 0).repeat(4, 1)  # quadrant 0 most relevant
    metric = IROF(segment_func=_quadrants, abs=True, normalise=True, disable_warnings=True)
    scores = _call(metric, model, x, good)
    # Removing quadrant 0 fills it with 0.25: the score drops to a quarter and stays there.
    np.testing.assert_allclose(metric.curves[0], [1, 0.25, 0.25, 0.25, 0.25])
    assert scores[0] == pytest.approx(1 - 0.25 * (0.5 + 0.25 + 0.25 + 0.25 + 0.125))  # 0.65625
    worst = _call(IROF(segment_func=_quadrants, abs=True, normalise=True, disable_warnings=True), model, x, 5 - good)
    assert worst[0] == pytest.approx(1 - 0.25 * (0.5 + 1 + 1 + 1 + 0.125))  # 0.09375


def test_irof_runs_slic_on_colour_images_per_sample():
    rng = np.random.default_rng(2)
    x = rng.random((2, 3, 32, 32)).astype(np.float32)
    x[:, :, 8:16, 8:16] += 1.0
    a = rng.random((2, 1, 32, 32)).astype(np.float32)
    model = RegionSum(slice(8, 16), slice(8, 16))
    make = lambda: IROF(abs=True, normalise=True, disable_warnings=True)  # noqa: E731
    together = _call(make(), model, x, a)
    alone = np.concatenate([_call(make(), model, x[i:i + 1], a[i:i + 1]) for i in range(2)])
    np.testing.assert_allclose(together, alone)
    assert np.all((0 <= together) & (together <= 1))


def test_irof_refuses_a_non_positive_class_score():
    x = np.zeros((1, 3, 8, 8), dtype=np.float32)  # the region sums to 0
    a = np.random.default_rng(3).random((1, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="positive class score"):
        _call(IROF(segment_func=_quadrants, abs=True, normalise=True, disable_warnings=True),
              RegionSum(*REGION), x, a)


def _irof_steps_one_segment_at_a_time(x: np.ndarray, a: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """IROF's steps as first written: each segment filled in turn, most relevant mean first (the reference)."""
    labels = np.unique(segments)
    relevance = a.sum(axis=0)
    order = labels[np.argsort(-np.array([relevance[segments == s].mean() for s in labels]), kind="stable")]
    fill, steps, current = x.mean(axis=(1, 2), keepdims=True), [x], x
    for s in order:
        current = np.where(segments[None] == s, fill, current)
        steps.append(current)
    return np.stack(steps).astype(x.dtype)


def test_irof_segment_means_are_numpys_masked_means_bit_for_bit():
    """Runs from one value to 2,209 (pairwise summation's blocks of 8 and 128 included), scales and label sets."""
    rng = np.random.default_rng(12)
    for trial in range(400):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        k = int(rng.integers(1, 200))
        blocks = rng.integers(0, k, (h // 4 + 1, w // 4 + 1))
        segments = rng.integers(0, k, (h, w)) if trial % 2 else np.kron(blocks, np.ones((4, 4), int))[:h, :w]
        values = rng.standard_normal((h, w)) * rng.choice([1e-8, 1.0, 1e8])
        if trial % 3 == 0:
            values = values.astype(np.float32)
        labels = np.unique(segments)
        expected = np.array([values[segments == s].mean() for s in labels])
        got = quantus_adapters.segment_means(values, segments, labels)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), trial


@pytest.mark.parametrize("segment", ["slic", "sparse labels"])
def test_irof_steps_equal_filling_one_segment_at_a_time(segment):
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        x = rng.random((3, 16, 16)).astype(dtype)
        a = rng.integers(0, 3, (1, 16, 16)).astype(dtype)  # ties between segments' means: the stable order decides
        if segment == "slic":
            metric, segments = IROF(disable_warnings=True), quantus_adapters.slic_segments(x)
        else:  # labels neither from 0 nor contiguous
            segments = 7 * _quadrants(x) + 3
            metric = IROF(segment_func=lambda image: 7 * _quadrants(image) + 3, disable_warnings=True)
        got = metric.steps(x, a)
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, _irof_steps_one_segment_at_a_time(x, a, segments))
        np.testing.assert_array_equal(metric.steps(x, a), got)  # again, from SLIC's labels held for this image


def test_irof_segments_each_image_content_once_and_tells_images_apart():
    rng = np.random.default_rng(5)
    x = rng.random((3, 16, 16)).astype(np.float32)
    quantus_adapters._slic_of.cache_clear()
    first = quantus_adapters._segments(quantus_adapters.slic_segments, x)
    np.testing.assert_array_equal(first, quantus_adapters.slic_segments(x))
    again = quantus_adapters._segments(quantus_adapters.slic_segments, x.copy())
    assert again is first and quantus_adapters._slic_of.cache_info().hits == 1
    other = x.copy()
    other[0, 0, 0] += 0.5
    np.testing.assert_array_equal(quantus_adapters._segments(quantus_adapters.slic_segments, other),
                                  quantus_adapters.slic_segments(other))
    assert quantus_adapters._slic_of.cache_info().misses == 2
    with pytest.raises(ValueError):
        first[0, 0] = 1  # the held labels cannot be edited by a caller


def _imputation_cases(dtype, trials: int = 60):
    """(seed, image, removed pixels): sizes down to one-pixel rows and columns, up to every pixel removed."""
    rng = np.random.default_rng(0)
    for trial in range(trials):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        x = rng.random((3, h, w)).astype(dtype)
        x[:, 0, 0] = 0.0  # a zero neighbour's step is still taken
        yield trial, x, rng.permutation(h * w)[: int(rng.integers(1, h * w + 1))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_road_sparse_imputation_is_bit_identical_to_quantus(dtype):
    """The vectorised system builder solves Quantus' very system and draws the same noise."""
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    for trial, x, pixels in _imputation_cases(dtype):
        np.random.seed(trial)
        expected = quantus_imputation(arr=x, indices=pixels.copy(), noise=0.01)
        np.random.seed(trial)
        got = sparse_imputation(x, pixels, noise=0.01)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def _quantus_right_hand_sides(x: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Quantus' right-hand side of one (C,H,W) image's imputation system (n, C), built as its loop builds it."""
    from quantus.helpers.utils import offset_coordinates

    flat = x.reshape(x.shape[0], -1)
    mask = np.ones(flat.shape[1])
    mask[pixels] = 0
    b = np.zeros((len(pixels), x.shape[0]))
    for (offset, weight) in quantus_adapters._NEIGHBOURS:
        coords, valid = offset_coordinates(pixels, offset, x.shape)
        ids = np.argwhere(valid == 1).flatten()
        b[ids[mask[coords] == 1], :] -= weight * flat[:, coords[mask[coords] == 1]].T
    return b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_road_right_hand_sides_are_quantus_bits_with_signed_zeros_and_non_finite_pixels(dtype):
    """The sums without masks skip unknown and outside neighbours as Quantus' loop does: the same bytes, with -0, NaN and
    inf at known and unknown pixels and negative values among them."""
    rng = np.random.default_rng(11)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        x = (rng.standard_normal((2, 3, h, w)) * 4).astype(dtype)
        flat = x.reshape(2, 3, -1)
        flat[:, :, rng.integers(0, h * w, 3)] = rng.choice([-0.0, np.nan, np.inf, -np.inf], (2, 3, 3))
        k = int(rng.integers(1, h * w + 1))
        pixels = np.stack([rng.permutation(h * w)[:k] for _ in range(2)])
        with np.errstate(invalid="ignore"):  # inf - inf, in both ways alike
            got = quantus_adapters._right_hand_sides(x, pixels)
            expected = [_quantus_right_hand_sides(image, p) for image, p in zip(x, pixels)]
        for b, want in zip(got, expected):
            assert b.dtype == want.dtype and b.tobytes() == np.ascontiguousarray(want).tobytes(), trial


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_road_banded_imputation_agrees_with_quantus_to_rounding_and_draws_the_same_noise(dtype):
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    banded = 0
    for trial, x, pixels in _imputation_cases(dtype):
        banded += quantus_adapters.band_applies(x, pixels)
        np.random.seed(trial)
        expected = quantus_imputation(arr=x, indices=pixels.copy(), noise=0.01)
        after_expected = np.random.random()
        np.random.seed(trial)
        got = noisy_linear_imputation(x, pixels, noise=0.01)
        assert np.random.random() == after_expected  # the same draws, no more
        assert got.dtype == expected.dtype
        if dtype == np.float32:  # the float64 solutions differ by rounding: at most one float32 step apart
            np.testing.assert_array_max_ulp(got, expected, maxulp=1)
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert 40 < banded < 60  # most cases take the band; every-pixel-removed ones the sparse LU


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_road_imputation_of_a_batch_equals_image_by_image_with_the_same_draws(dtype):
    """All images' systems built at once: the same arrays and the generator left as by one call per image, with a
    repeated unknown and an every-pixel-removed image (both by the sparse LU) among them."""
    rng = np.random.default_rng(6)
    for trial in range(30):
        batch, channels = int(rng.integers(1, 6)), int(rng.choice([1, 3]))
        h, w = (int(v) for v in rng.integers(1, 16, 2))
        x = rng.random((batch, channels, h, w)).astype(dtype)
        k = int(rng.integers(1, h * w + 1))
        pixels = np.stack([rng.permutation(h * w)[:k] for _ in range(batch)])
        if k > 2:
            pixels[0, 1] = pixels[0, 0]
        np.random.seed(trial)
        expected = np.stack([noisy_linear_imputation(image, p, noise=0.01) for image, p in zip(x, pixels)])
        after = np.random.random()
        np.random.seed(trial)
        got = quantus_adapters.noisy_linear_imputation_batch(x, pixels, noise=0.01)
        assert np.random.random() == after
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_road_banded_imputation_falls_back_to_quantus_sparse_solve_when_the_band_does_not_factorise(monkeypatch):
    def refuse(*args, **kwargs):
        raise np.linalg.LinAlgError("not positive definite")

    monkeypatch.setattr(quantus_adapters, "solveh_banded", refuse)  # the tridiagonal route
    monkeypatch.setattr(quantus_adapters, "_PBSV", lambda band, b, lower: (None, None, 1))  # LAPACK's "not definite"
    x = np.random.default_rng(2).random((3, 6, 7)).astype(np.float32)
    pixels = np.array([8, 9, 15, 30])
    np.random.seed(0)
    expected = sparse_imputation(x, pixels, noise=0.01)
    np.random.seed(0)
    np.testing.assert_array_equal(noisy_linear_imputation(x, pixels, noise=0.01), expected)


def test_road_band_solve_is_scipys_solveh_banded_bit_for_bit_and_refuses_an_indefinite_band():
    """The direct LAPACK call gives solveh_banded's bits on ROAD masks at 32 px, every bandwidth among them."""
    from scipy.linalg import solveh_banded

    rng = np.random.default_rng(3)
    x = rng.random((4, 3, 32, 32)).astype(np.float32)
    smooth = np.cumsum(np.cumsum(rng.standard_normal((4, 32, 32)), 1), 2).reshape(4, -1)
    widths = set()
    for order in (np.argsort(-smooth, axis=1, kind="stable"), np.argsort(smooth, axis=1, kind="stable")):
        for k in (1, 3, 40, 102, 512, 921, 1020):
            pixels = np.sort(order[:, :k], axis=1)
            b = quantus_adapters._right_hand_sides(x, pixels)
            for band, rhs in zip(quantus_adapters._bands(32, 32, pixels), b):
                widths.add(band.shape[0])
                expected = solveh_banded(band, -rhs, lower=True, check_finite=False)
                np.testing.assert_array_equal(quantus_adapters._band_solve(band, rhs), expected)
    assert {1, 2} < widths and max(widths) > 30  # diagonal, tridiagonal (scipy's ptsv) and wide bands all met
    indefinite = np.array([[1.0, 1.0, 1.0], [-2.0, -2.0, 0.0]])
    assert quantus_adapters._band_solve(indefinite, np.ones((3, 1))) is None
    assert quantus_adapters._band_solve(np.vstack([indefinite, np.zeros(3)]), np.ones((3, 1))) is None


def test_road_banded_imputation_is_faithful_on_road_masks_of_a_graded_size():
    """Clustered masks as ROAD removes them (top and bottom ranks of a smooth map) at 32 px, every percentage."""
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    rng = np.random.default_rng(1)
    x = rng.random((3, 32, 32))
    smooth = np.cumsum(np.cumsum(rng.standard_normal((32, 32)), 0), 1).ravel()
    for order in (np.argsort(-smooth, kind="stable"), np.argsort(smooth, kind="stable")):
        for p in (10, 50, 90):
            pixels = order[: 1024 * p // 100]
            assert quantus_adapters.band_applies(x, pixels)
            np.random.seed(p)
            expected = quantus_imputation(arr=x, indices=pixels.copy(), noise=0.01)
            np.random.seed(p)
            np.testing.assert_allclose(noisy_linear_imputation(x, pixels, noise=0.01), expected, rtol=0, atol=1e-12)


# --- MPRT family: learnable weights only ---------------------------------------------------------------------


from benchmark.grading.quantus_compat import quantus  # noqa: E402


def _grad_explain(model, inputs, targets, **kwargs):
    import torch

    x = torch.as_tensor(inputs, dtype=torch.float32).requires_grad_(True)
    out = model(x).gather(1, torch.as_tensor(targets).long().view(-1, 1)).sum()
    (g,) = torch.autograd.grad(out, x)
    return g.abs().sum(1, keepdim=True).numpy()


def _mprt_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_batch=rng.random((6, 3, 8, 8)).astype(np.float32), y_batch=np.array([0, 1, 0, 1, 0, 1]),
                a_batch=None, explain_func=_grad_explain, device="cpu", batch_size=6)


def _toy(batchnorm: bool):
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if batchnorm else []) + \
        [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)]
    return nn.Sequential(*layers).eval()


def test_learnable_mprt_equals_quantus_mprt_where_every_randomised_layer_is_learnable():
    from benchmark.grading.quantus_adapters import LearnableMPRT

    kw = dict(layer_order="top_down", seed=3, abs=True, normalise=False, disable_warnings=True)
    plain = quantus.MPRT(**kw)(model=_toy(False), **_mprt_inputs())
    ours = LearnableMPRT(**kw)(model=_toy(False), **_mprt_inputs())
    assert list(plain) == list(ours) and list(ours) == ["original", "3", "0"]
    for k in plain:
        np.testing.assert_array_equal(np.asarray(plain[k]), np.asarray(ours[k]))


def test_learnable_mprt_skips_batchnorm_resets_that_quantus_counts_as_randomisation():
    from benchmark.grading.quantus_adapters import LearnableEfficientMPRT, LearnableMPRT

    kw = dict(layer_order="top_down", seed=3, abs=True, normalise=False, disable_warnings=True)
    plain = quantus.MPRT(**kw)(model=_toy(True), **_mprt_inputs())
    ours = LearnableMPRT(**kw)(model=_toy(True), **_mprt_inputs())
    assert "1" in plain and list(ours) == ["original", "4", "0"]  # "1" is the BatchNorm: not a weight randomised
    out = LearnableEfficientMPRT(layer_order="bottom_up", seed=3, abs=True, normalise=False, skip_layers=True,
                                 disable_warnings=True)(model=_toy(True), **_mprt_inputs())
    assert len(out) == 6 and np.all(np.isfinite(out))


def test_efficient_mprt_marks_constant_maps_collapsed_and_leaves_other_scores_as_quantus_has_them():
    from benchmark.grading.metrics import EFFICIENT_MPRT
    from benchmark.grading.quantus_compat import fast_attribution_asserts, per_sample_normalisation
    from benchmark.profiles import PROFILES

    original = [p.detach().clone() for p in _toy(False).parameters()]

    def explain(zero_on_original, zero_on_randomised):
        def f(model, inputs, targets, **kwargs):
            a = np.abs(_grad_explain(model, inputs, targets))
            same = all(torch.equal(p, q) for p, q in zip(model.parameters(), original))
            a[list(zero_on_original if same else zero_on_randomised)] = 0.0
            return a
        return f

    def run(zero_on_original=(), zero_on_randomised=(), plain=False):
        inputs = {**_mprt_inputs(), "explain_func": explain(zero_on_original, zero_on_randomised)}
        if plain:  # unpatched Quantus, normalised as before v10 (no BatchNorm here: every layer is learnable)
            kwargs = {**EFFICIENT_MPRT.kwargs(PROFILES["quick"]), **per_sample_normalisation()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # its x/0
                return np.asarray(quantus.EfficientMPRT(**kwargs, seed=3)(model=_toy(False), **inputs))
        with fast_attribution_asserts(constant_ok=True):
            return np.asarray(EFFICIENT_MPRT.build(PROFILES["quick"], 3)(model=_toy(False), **inputs))

    clean = run()
    assert np.isfinite(clean).all()
    np.testing.assert_array_equal(clean, run(plain=True))
    # Quantus gives inf (x/0) for a constant original map and -1 for one constant after randomisation: both NaN here.
    one_each, plain = run(zero_on_original=[1], zero_on_randomised=[4]), run([1], [4], plain=True)
    assert np.isinf(plain[1]) and plain[4] == -1.0 and np.isnan(one_each[[1, 4]]).all()
    np.testing.assert_array_equal(np.delete(one_each, [1, 4]), np.delete(plain, [1, 4]))
    # A whole batch of all-zero maps (a ReLU-clipped method on one training seed's images) is collapsed, not a crash.
    assert np.isnan(run(zero_on_original=range(6))).all()


def test_smooth_mprt_with_one_sample_is_mprt_on_the_fully_randomised_model():
    from benchmark.grading.quantus_adapters import LearnableMPRT, LearnableSmoothMPRT

    kw = dict(layer_order="bottom_up", seed=3, abs=True, normalise=False, disable_warnings=True)
    mprt = LearnableMPRT(**kw)(model=_toy(True), **_mprt_inputs())
    # One sample is the noise-free one: nothing is averaged, so the score is MPRT's last cascade step (every
    # learnable layer randomised, the BatchNorm reset skipped).
    smooth = LearnableSmoothMPRT(**kw, skip_layers=True, return_last_correlation=True, nr_samples=1)(
        model=_toy(True), **_mprt_inputs())
    assert list(mprt) == ["original", "0", "4"]
    np.testing.assert_allclose(smooth, mprt["4"], rtol=1e-12)


def test_smooth_mprt_explains_through_its_explain_func_and_compares_denoised_maps(monkeypatch):
    from benchmark.grading.quantus_adapters import LearnableSmoothMPRT

    def refuse(*args, **kwargs):
        raise AssertionError("quantus.explain called: the benchmark's explain_func was ignored")

    monkeypatch.setattr(quantus, "explain", refuse)
    calls = []

    def counting(model, inputs, targets, **kwargs):
        calls.append(np.array(inputs))
        return _grad_explain(model, inputs, targets)

    inputs = {**_mprt_inputs(), "explain_func": counting}
    np.random.seed(0)
    out = LearnableSmoothMPRT(layer_order="bottom_up", seed=3, nr_samples=3, skip_layers=True,
                              return_last_correlation=True, disable_warnings=True)(model=_toy(True), **inputs)
    assert len(out) == 6 and np.all(np.abs(out) <= 1)
    # Three copies on the unrandomised model (the reference, drawn once) and three on the randomised one; the
    # last copy of each is the noise-free input, the others are noisy.
    assert len(calls) == 6
    x = inputs["x_batch"]
    assert [np.array_equal(c, x) for c in calls] == [False, False, True] * 2


def test_smooth_mprt_scores_a_model_independent_map_as_unchanged_and_a_weight_seeded_one_as_changed():
    from benchmark.grading.quantus_adapters import LearnableSmoothMPRT

    def edges(model, inputs, targets, **kwargs):  # ignores the model, like the Sobel control
        return np.abs(np.diff(np.asarray(inputs), axis=-1, append=0)).sum(1, keepdims=True)

    def weight_seeded(model, inputs, targets, **kwargs):  # redrawn by any weight change, like ModelSeededRandom
        seed = int(abs(float(sum(p.detach().sum() for p in model.parameters()))) * 1e6) % 2**32
        return np.random.default_rng(seed).random((len(inputs), 1, *np.shape(inputs)[2:]))

    def score(explain):
        np.random.seed(0)
        return np.mean(LearnableSmoothMPRT(layer_order="bottom_up", seed=3, nr_samples=4, skip_layers=True,
                                           return_last_correlation=True, disable_warnings=True)(
            model=_toy(True), **{**_mprt_inputs(), "explain_func": explain}))

    assert score(edges) > 0.5 > 0.2 > abs(score(weight_seeded))


def test_smooth_mprt_shares_its_noise_draws_between_the_two_models():
    from benchmark.grading.quantus_adapters import LearnableSmoothMPRT

    calls = []

    def input_seeded(model, inputs, targets, **kwargs):  # ignores the model, redrawn by any input change, like Random
        calls.append(np.array(inputs))
        return np.stack([np.random.default_rng(zlib.crc32(np.asarray(x).tobytes())).random((1, *x.shape[1:]))
                         for x in np.asarray(inputs)])

    def weight_seeded(model, inputs, targets, **kwargs):  # redrawn by any weight change, like ModelSeededRandom
        seed = int(abs(float(sum(p.detach().sum() for p in model.parameters()))) * 1e6) % 2**32
        return np.random.default_rng(seed).random((len(inputs), 1, *np.shape(inputs)[2:]))

    def score(explain, seed=3):
        return np.asarray(LearnableSmoothMPRT(layer_order="bottom_up", seed=seed, nr_samples=5, skip_layers=True,
                                              return_last_correlation=True, disable_warnings=True)(
            model=_toy(True), **{**_mprt_inputs(), "explain_func": explain}))

    # The same noisy copies are explained on both models (common random numbers), so a model-independent map is
    # unchanged (similarity 1), not about 1/N as with each model's own draws; a weight-seeded map is still changed.
    np.testing.assert_allclose(score(input_seeded), 1.0, atol=1e-9)
    assert len(calls) == 10 and all(np.array_equal(a, b) for a, b in zip(calls[:5], calls[5:]))
    assert abs(np.mean(score(weight_seeded))) < 0.2
    # Seeded and deterministic: the same seed draws the same copies, another seed other copies.
    first = calls[0]
    calls.clear()
    score(input_seeded)
    score(input_seeded, seed=4)
    assert np.array_equal(calls[0], first) and not np.array_equal(calls[10], first)


# --- Relative output stability: the map's change over the model's output change ------------------------------


def _maps_moved(rng, e: np.ndarray, relative: np.ndarray) -> np.ndarray:
    """``e`` moved in a random direction by ``relative`` times its own L2 norm, per sample."""
    d = rng.normal(size=e.shape)
    d /= np.linalg.norm(d.reshape(len(d), -1), axis=1).reshape(-1, 1, 1, 1)
    return e + d * (relative * np.linalg.norm(e.reshape(len(e), -1), axis=1)).reshape(-1, 1, 1, 1)


def test_relative_output_stability_fails_a_map_that_moves_much_more_than_the_output():
    from benchmark.grading.quantus_adapters import relative_output_stability

    rng = np.random.default_rng(0)
    e = rng.random((5, 1, 8, 8)) + 0.1
    h = rng.normal(size=(5, 2))
    h_moved = h + 0.05 * rng.normal(size=(5, 2))
    output_change = np.linalg.norm(h - h_moved, axis=1)
    # A map whose relative change equals the output's change scores 1; one that moves ten times as much scores 10.
    proportional = relative_output_stability(e, _maps_moved(rng, e, output_change), h, h_moved, 1e-6)
    overreacting = relative_output_stability(e, _maps_moved(rng, e, 10 * output_change), h, h_moved, 1e-6)
    np.testing.assert_allclose(proportional, 1.0, rtol=1e-9)
    np.testing.assert_allclose(overreacting, 10.0, rtol=1e-9)
    # A map that does not move at all is perfectly stable, whatever the output does.
    assert np.all(relative_output_stability(e, e, h, h_moved, 1e-6) == 0)


def test_relative_output_stability_is_well_conditioned_where_the_paper_ratio_is_not():
    from benchmark.grading.quantus_adapters import relative_output_stability

    e = np.full((1, 1, 4, 4), 0.5)
    e[0, 0, 0, 0] = 1e-9  # one near-zero pixel, as most pixels of a sparse |a| map are
    moved = e.copy()
    moved[0, 0, 0, 0] = 1e-3  # it moves by a thousandth of the map's scale
    h, h_moved = np.array([[1.0, -1.0]]), np.array([[1.1, -1.0]])
    ours = relative_output_stability(e, moved, h, h_moved, 1e-6)
    paper = quantus.RelativeOutputStability(disable_warnings=True).relative_output_stability_objective(
        h, h_moved, e, moved)
    assert paper[0] > 1e6 and ours[0] < 0.01  # element-wise: one pixel's 10^6-fold change decides the score
    # An output that does not move at all divides by the floor, never by zero.
    assert np.isfinite(relative_output_stability(e, moved, h, h, 1e-6)).all()


def test_relative_output_stability_ranks_an_overreacting_explanation_below_a_proportional_one():
    from benchmark.grading.metrics import NOISE
    from benchmark.grading.quantus_adapters import RelativeOutputStability

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    w = model[1].weight.detach().numpy()

    def input_x_weight(model, inputs, targets, **kwargs):  # a linear model's exact map: moves with its output
        x = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
        return (x * w[np.asarray(targets)]).reshape(len(inputs), 3, 8, 8).sum(1, keepdims=True)

    def with_fresh_noise(model, inputs, targets, **kwargs):  # the same map plus noise redrawn on every call
        a = input_x_weight(model, inputs, targets)
        return a + 0.2 * np.abs(a).max() * np.random.default_rng(int(np.asarray(inputs).sum() * 1e6)).random(a.shape)

    x = np.random.default_rng(1).random((6, 3, 8, 8)).astype(np.float32)
    y = model(torch.as_tensor(x)).argmax(1).numpy()

    def score(explain):
        np.random.seed(0)
        metric = RelativeOutputStability(nr_samples=4, perturb_func_kwargs={"lower_bound": -NOISE, "upper_bound": NOISE},
                                         return_nan_when_prediction_changes=False, abs=True, normalise=True,
                                         disable_warnings=True)
        return np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=explain, device="cpu"))

    steady, jumpy = score(input_x_weight), score(with_fresh_noise)
    assert np.all(np.isfinite(steady)) and np.all(jumpy > 3 * steady)
