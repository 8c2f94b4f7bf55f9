"""The batched metric adapters give unmodified Quantus' scores, on toy models and on the real quick models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.grading import batching
from benchmark.grading.metrics import _common
from benchmark.grading.properties import FAITHFULNESS, LOCALISATION, NOISE_STABILITY, PROPERTIES, RANDOMISATION
from benchmark.grading.quantus_adapters import (
    AUC,
    IROF,
    ROAD,
    FaithfulnessCorrelation,
    RegionPerturbation,
    RelevanceRankAccuracy,
    Selectivity,
    reference_implementations,
    roc_auc_rows,
)
from benchmark.grading.quantus_compat import _assert_attributions, quantus
from benchmark.models.arch import SmallCNN


def _close(a, b) -> None:
    # The bar: within 1e-5, absolute or relative, whichever is larger.
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    assert np.all((np.abs(a - b) <= np.maximum(1e-5, 1e-5 * np.abs(b))) | (np.isnan(a) & np.isnan(b))), (a, b)


@pytest.fixture
def toy():
    """A random-weight SmallCNN in eval mode, 6 images, their maps and targets, 1 torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SmallCNN().eval()
    rng = np.random.default_rng(0)
    x = rng.random((6, 3, 32, 32), dtype=np.float32)
    a = rng.random((6, 1, 32, 32)).astype(np.float32)
    a[:, :, :4, :4] = a[:, :, :4, :4].round(1)  # ties, so rank orders are exercised
    y = np.array([0, 1, 1, 0, 1, 0])
    s = np.zeros((6, 1, 32, 32), dtype=np.float32)
    s[:, :, 2:10, 20:28] = 1
    yield model, x, y, a, s
    torch.set_num_threads(threads)


def _forwards(model, run) -> tuple:
    """``run()``'s result and how many outermost forward passes it made through ``model``."""
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        return run(), len(calls)
    finally:
        handle.remove()


def _score(cls, model, x, y, a, s, **kwargs):
    np.random.seed(7)
    metric = cls(**{**_common(), **kwargs})
    return np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=a.copy(), s_batch=s, device="cpu",
                             batch_size=len(x)), dtype=np.float64)


@pytest.mark.parametrize(("adapter", "kwargs"), [
    (FaithfulnessCorrelation, {"nr_runs": 12, "subset_size": 96, "perturb_baseline": "black",
                               "return_aggregate": False}),
    (RegionPerturbation, {"patch_size": 4, "regions_evaluation": 10, "order": "morf", "perturb_baseline": "black"}),
    (RegionPerturbation, {"patch_size": 4, "regions_evaluation": 10, "order": "random", "perturb_baseline": "uniform"}),
    (RegionPerturbation, {"patch_size": 5, "regions_evaluation": 9, "order": "lerf", "perturb_baseline": "black"}),
    (Selectivity, {"patch_size": 8, "perturb_baseline": "black"}),
    (Selectivity, {"patch_size": 6, "perturb_baseline": "mean"}),  # 32 is no multiple of 6: the padded patches
])
def test_batched_perturbation_metrics_give_quantus_scores_in_fewer_passes(toy, adapter, kwargs):
    model, x, y, a, s = toy
    plain, plain_passes = _forwards(model, lambda: _score(getattr(quantus, adapter.__name__), model, x, y, a, s,
                                                          **kwargs))
    ours, our_passes = _forwards(model, lambda: _score(adapter, model, x, y, a, s, **kwargs))
    _close(ours, plain)
    assert our_passes <= 3 < plain_passes  # the input, then every step together


def test_pending_copies_are_predicted_in_order_across_flushes(toy, monkeypatch):
    model, x, y, a, s = toy
    kwargs = {"patch_size": 4, "perturb_baseline": "black"}
    whole = _score(Selectivity, model, x, y, a, s, **kwargs)
    monkeypatch.setattr(batching, "PENDING_BYTES", 5 * x.nbytes)  # a flush every five steps
    _close(_score(Selectivity, model, x, y, a, s, **kwargs), whole)


@pytest.mark.parametrize("cls", [ROAD, IROF])
def test_road_and_irof_batched_equal_one_pass_per_step(toy, cls):
    model, x, y, a, s = toy
    ours = _score(cls, model, x, y, a, s)
    with reference_implementations():  # one forward pass per percentage (ROAD) or per image (IROF)
        per_step = _score(cls, model, x, y, a, s)
    _close(ours, per_step)


def test_auc_rows_equal_sklearn_per_sample_with_ties_and_empty_masks(toy):
    from sklearn.metrics import auc, roc_curve

    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, (20, 64)).astype(np.float64)  # many ties
    positive = rng.random((20, 64)) < 0.2
    positive[3] = False  # no positive: undefined
    positive[4] = True  # no negative: undefined
    got = roc_auc_rows(scores, positive)
    for i in range(20):
        if i in (3, 4):
            assert np.isnan(got[i])
            continue
        fpr, tpr, _ = roc_curve(positive[i], scores[i])
        assert abs(got[i] - auc(fpr, tpr)) < 1e-12
    model, x, y, a, s = toy
    _close(_score(AUC, model, x, y, a, s), _score(quantus.AUC, model, x, y, a, s))


def test_relevance_rank_accuracy_equals_quantus_with_ties_and_empty_masks():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, (12, 1, 8, 8)).astype(np.float64)  # many ties: the same argsort decides both
    s = rng.random((12, 1, 8, 8)) < 0.15
    s[5] = False  # an empty mask: NaN in both
    s[6] = True
    kwargs = {"disable_warnings": True}
    with np.errstate(invalid="ignore"):
        ours = RelevanceRankAccuracy(**kwargs).evaluate_batch(a_batch=a, s_batch=s)
        theirs = quantus.RelevanceRankAccuracy(**kwargs).evaluate_batch(a_batch=a, s_batch=s)
    np.testing.assert_array_equal(ours, theirs)  # bit for bit, NaN where the mask is empty
    assert np.isnan(ours[5]) and ours[6] == 1.0


@pytest.mark.parametrize("a", [
    np.zeros((2, 1, 4, 4)), np.ones((2, 1, 4, 4)), np.full((2, 1, 4, 4), 0.3), -np.ones((2, 1, 4, 4)) * 0.5,
    np.arange(32, dtype=float).reshape(2, 1, 4, 4), np.full((2, 1, 4, 4), np.nan), np.zeros((2, 3, 4, 4)),
    np.zeros((2, 1, 4, 5)), [[0.0]],
], ids=["zeros", "ones", "uniform", "negative", "ramp", "nan", "channels", "shape", "list"])
def test_fast_attribution_asserts_agree_with_quantus(a):
    from quantus.helpers import asserts

    x = np.zeros((2, 3, 4, 4))
    outcomes = []
    for check in (asserts.assert_attributions, _assert_attributions):
        try:
            check(x_batch=x, a_batch=a if isinstance(a, list) else a.copy())
            outcomes.append("ok")
        except (AssertionError, IndexError) as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    assert outcomes[0] == outcomes[1]


# On the real quick models: every model-calling metric, plus AUC, for methods of several families and the controls.
REAL_METHODS = ("Saliency", "GradCAM", "LRPEpsilon", "Random", "Sobel", "Oracle", "FixedPattern")


def test_batched_grading_gives_plain_quantus_scores_and_verdicts_on_the_quick_models(quick_bench):
    from benchmark.grading.grader import Grader, grade_cell

    torch.set_num_threads(1)
    ours, plain = Grader(quick_bench), Grader(quick_bench, merge_draws=False)
    cells = [(LOCALISATION, LOCALISATION.metric(name)) for name in ("AUC", "RelevanceRankAccuracy")] + [
        (p, m) for p in (RANDOMISATION, NOISE_STABILITY, FAITHFULNESS) for m in p.metrics]
    compared = 0
    for method in REAL_METHODS:
        for prop, metric in cells:
            cell = grade_cell(ours, prop, metric, method)
            with reference_implementations():
                reference = grade_cell(plain, prop, metric, method)
            assert cell.outcome == reference.outcome, (method, metric.name, cell.message, reference.message)
            if cell.outcome in ("N/A", "ERROR"):
                continue
            for arm in ("biased", "control", "absent") if prop.false_alarm else ("biased",):
                _close(ours.runner.scores(prop, metric, method, arm), plain.runner.scores(prop, metric, method, arm))
                compared += 1
    assert compared >= 60
    assert ours.store.memo.batched > 0  # the noise draws of the deterministic methods came from one call each
    assert ours.runner.predictions.misses < plain.runner.predictions.misses


def test_adapters_keep_the_property_fingerprints(quick_bench):
    """A batched adapter is named by the Quantus metric it reproduces, so compare mode sees no changed property."""
    for prop in PROPERTIES.values():
        for metric in prop.metrics:
            cls = metric.recipe.describe(quick_bench.profile)["cls"]
            assert not str(cls).startswith("benchmark.grading.quantus_adapters:") or metric.name in (
                "ROAD", "IROF", "MPRT", "EfficientMPRT", "SmoothMPRT", "RelativeOutputStability")


def test_unchanged_perturbations_warn_as_quantus_warns_them_one_sample_at_a_time():
    import warnings

    from quantus.helpers import warn

    from benchmark.grading.quantus_adapters import warn_unchanged

    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 4, 4))
    x[0, 0, 0, 0] = np.nan  # NaN where it stays NaN counts as unchanged, as in np.allclose(equal_nan=True)
    perturbed = x.copy()
    perturbed[1, 2, 3, 3] += 0.5
    perturbed[3] = 0.0
    perturbed[4, 0, 1, 1] += 1e-12  # within np.allclose's tolerance: unchanged

    def caught(check) -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            check()
        return [str(w.message) for w in seen]

    batched = caught(lambda: warn_unchanged(x, perturbed))
    one_by_one = caught(lambda: [warn.warn_perturbation_caused_no_change(x=a, x_perturbed=b)
                                 for a, b in zip(x, perturbed)])
    assert len(batched) == 3 and batched == one_by_one


@pytest.mark.parametrize("baseline", ["black", "uniform"])  # "uniform" draws its baseline from the same generator
def test_faithfulness_correlation_draws_each_cells_subsets_once_with_the_same_scores_and_generator(toy, baseline):
    from benchmark.grading import quantus_adapters

    model, x, y, a, s = toy
    kwargs = {"nr_runs": 6, "subset_size": 64, "perturb_baseline": baseline, "return_aggregate": False}
    memo = quantus_adapters.PERTURBATIONS
    memo._held.clear()

    def scored(maps) -> tuple:
        scores = _score(FaithfulnessCorrelation, model, x, y, maps, s, **kwargs)
        return scores, np.random.random()

    hits = memo.hits
    first = scored(a)
    other_map = scored(a[::-1].copy())  # another method's maps: the same subsets and copies, held
    assert memo.hits == hits + 1
    memo._held.clear()
    fresh = scored(a[::-1].copy())
    np.testing.assert_array_equal(other_map[0], fresh[0])
    assert other_map[1] == fresh[1]  # the generator left where drawing them leaves it
    np.testing.assert_array_equal(scored(a)[0], first[0])
    _close(first[0], _score(quantus.FaithfulnessCorrelation, model, x, y, a, s, **kwargs))
    misses = memo.misses
    _score(FaithfulnessCorrelation, model, x[::-1].copy(), y[::-1].copy(), a, s, **kwargs)
    assert memo.misses == misses + 1  # other images: drawn afresh


def test_faithfulness_correlation_memo_forgets_the_least_recently_used_beyond_its_bytes(toy, monkeypatch):
    from benchmark.grading import quantus_adapters

    model, x, y, a, s = toy
    kwargs = {"nr_runs": 3, "subset_size": 64, "perturb_baseline": "black", "return_aggregate": False}
    memo = quantus_adapters._PerturbationMemo(max_bytes=2 * 3 * x.nbytes)  # about two cells' copies
    monkeypatch.setattr(quantus_adapters, "PERTURBATIONS", memo)
    batches = [x, x + 0.1, x + 0.2]
    for batch in batches:
        _score(FaithfulnessCorrelation, model, batch.astype(np.float32), y, a, s, **kwargs)
    assert len(memo._held) < 3 and memo._held.weight <= memo._held.budget
    _score(FaithfulnessCorrelation, model, batches[-1].astype(np.float32), y, a, s, **kwargs)
    assert memo.hits == 1  # the newest is held


def test_faithfulness_correlation_memo_holds_only_what_a_name_identifies():
    import functools

    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices as replace

    from benchmark.grading.quantus_adapters import _perturbation_key

    assert _perturbation_key(functools.partial(replace, perturb_baseline="black")) == \
        f"{replace.__module__}:{replace.__qualname__}:[('perturb_baseline', 'black')]"
    assert _perturbation_key(functools.partial(replace, perturb_baseline=np.zeros(3))) is None  # an array argument
    assert _perturbation_key(lambda arr, indices: arr) is None
    assert _perturbation_key(functools.partial(replace, 0.0)) is None  # a positional argument
