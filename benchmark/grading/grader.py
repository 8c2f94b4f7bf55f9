"""Compute per-sample metric scores for (property, metric, method) cells, reusing attributions."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import torch

from benchmark import shortcut
from benchmark.data import SHORTCUT_CLASS
from benchmark.errors import BenchmarkError
from benchmark.grading import batching, verdict
from benchmark.grading import metrics as mx
from benchmark.grading.explain_cache import ExplanationMemo, PredictionMemo, model_fingerprint
from benchmark.grading.properties import FALSE_ALARMS, MetricSpec, Property
from benchmark.grading.seed_stability import seed_outcomes
from benchmark.grading.stats import groups_of
from benchmark.methods import explain, get_method
from benchmark.methods._chunked import fused_forward
from benchmark.methods.base import AttributionError
from benchmark.models import fused as fusion
from benchmark.options import channels_last_on, fused_inference_on
from benchmark.rng import manual_seed
from benchmark.session import Bench
from benchmark.timelimit import CellTimeout, time_limit


@dataclass
class SampleSet:
    """Graded inputs: stamped test cats that flip to 'dog', explained for 'dog', with watermark masks."""

    name: str
    indices: np.ndarray  # positions in the test set
    x: np.ndarray  # float32 (N,3,H,W) in [0, 1], stamped
    x_clean: np.ndarray  # float32 (N,3,H,W), the same images before stamping
    y: np.ndarray  # int64 (N,) explained class ('dog')
    masks: np.ndarray  # float32 (N,1,H,W) watermark masks (Quantus s_batch)


def _seed_everything(seed: int) -> None:
    # Quantus draws noise from numpy's and torch's global generators: seed both before every metric
    # call so a cell's score does not depend on which cells ran before it (e.g. under xdist).
    np.random.seed(seed)
    random.seed(seed)
    manual_seed(seed)


def constant_samples(maps: np.ndarray, allow_zero: bool) -> list[int]:
    """Samples whose map is constant; all-zero maps are allowed for ReLU-clipped methods."""
    flat = maps.reshape(maps.shape[0], -1)
    spread = flat.max(axis=1) - flat.min(axis=1)
    scale = np.abs(flat).max(axis=1)
    constant = [i for i in range(len(flat)) if not spread[i] > 1e-6 * scale[i]]
    if allow_zero and len(constant) < len(flat):  # a whole batch of empty maps still breaks metrics
        constant = [i for i in constant if scale[i] != 0]
    return constant


def check_not_constant(method: str, maps: np.ndarray, *, relu_clipped: bool = False) -> None:
    """Raise AttributionError when a sample's map is constant (all-zero is allowed for ReLU-clipped methods).

    A constant map ranks no pixel above another, so no metric can grade it; Quantus asserts on such a
    batch and one degenerate batch would abort the whole metric with an obscure message. A ReLU-clipped
    method (Grad-CAM) may answer "no positive evidence" with zeros for some samples, never for all.
    """
    bad = constant_samples(maps, allow_zero=relu_clipped)
    if bad:
        flat = maps.reshape(len(maps), -1)
        what = "all-zero" if not np.abs(flat[bad]).any() else "constant"
        listed = bad if len(bad) <= 8 else [*bad[:8], "..."]
        which = f"every graded sample ({len(bad)})" if len(bad) == len(maps) else \
            f"{len(bad)} of {len(maps)} graded samples {listed}"
        raise AttributionError(method, f"{what} map for {which}: a constant map ranks no pixel above another, so no "
                               "metric can grade it")


def graded_indices(bench: Bench) -> np.ndarray:
    """Test-set positions of every graded image, in test order: the confidently flipped test cats (p(dog) >= 0.9
    once stamped), as many as the largest property grades. Each property grades a prefix (see Profile.graded), so
    every per-sample score pairs with these ids by position."""
    # The loaded model picks the samples, so the graded set never depends on the memory format.
    flipped = shortcut.confident_flips(bench.biased.model, bench.world)
    p = bench.profile
    return flipped[: max(p.graded(True, len(flipped)), p.graded(False, len(flipped)))]


class GradedImages:
    """The images a run grades: the flipped test cats, the prefix each property takes, and the marks' prior."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.profile = bench.profile

    @cached_property
    def sample_set(self) -> SampleSet:
        """Every graded flipped test cat (deterministic order); maps are computed once for all of them."""
        world = self.bench.world
        idx = graded_indices(self.bench)
        if shortcut.too_few(len(idx)):
            raise BenchmarkError(shortcut.too_few(len(idx)))
        masks = world.test_stamped.masks[idx][:, None].astype(np.float32)
        return SampleSet(
            name="flipped",
            indices=idx,
            x=world.test_stamped.x[idx].astype(np.float32) / 255.0,
            x_clean=world.test.x[idx].astype(np.float32) / 255.0,
            y=np.full(len(idx), SHORTCUT_CLASS, dtype=np.int64),
            masks=masks,
        )

    def samples(self, prop: Property) -> SampleSet:
        """The images ``prop`` grades: a prefix of :attr:`sample_set` (all of it for map-only properties)."""
        full = self.sample_set
        n = self.profile.graded(prop.map_only, len(full.indices))
        if n == len(full.indices):
            return full
        return SampleSet(name=f"{full.name}[:{n}]", indices=full.indices[:n], x=full.x[:n], x_clean=full.x_clean[:n],
                         y=full.y[:n], masks=full.masks[:n])

    @cached_property
    def watermark_prior(self) -> np.ndarray:
        """(H, W): the mean watermark mask of the biased training set (what PositionalPrior is given)."""
        return self.bench.world.watermark_prior()


class TimeBook:
    """The wall-clock limit of one cell, and the maps that already ran past it (charged once, never retried)."""

    def __init__(self, profile, options):
        override = getattr(options, "cell_timeout_s", None)
        self.seconds = profile.cell_timeout_s if override is None else override
        self.source = f"profile {profile.name}" if override is None else "--bench-cell-timeout"
        self._timed_out: dict[tuple, str] = {}

    @property
    def limit(self) -> tuple[float, str]:
        """(seconds, where the limit comes from), as :func:`benchmark.timelimit.time_limit` takes them."""
        return self.seconds, self.source

    def ran_out(self, key: tuple) -> str | None:
        """What timed out earlier for ``key`` (method, model), or None."""
        return self._timed_out.get(key)

    def charge(self, key: tuple, exc: CellTimeout) -> None:
        """Remember that ``key``'s maps ran past the limit."""
        self._timed_out[key] = str(exc)


class AttributionStore:
    """Every method's maps of the graded images on the run's models, through one memoised explain path."""

    def __init__(self, bench: Bench, images: GradedImages, book: TimeBook, *, seed: int, channels_last: bool,
                 fused: bool = False):
        self.profile = bench.profile
        self.level = bench.profile.method_level
        self.seed = seed
        self.images = images
        self.book = book
        self.fused = fused
        # oneDNN's CPU convolutions run our models ~1.9x faster forward and ~1.3x faster forward+backward
        # in channels-last memory format (benchmarks/RESULTS.md): same arithmetic, so scores agree to float
        # tolerance. The store explains copies, leaving the run's models as loaded. Off on CUDA, unmeasured.
        self.channels_last = channels_last
        loaded = {"biased": bench.biased.model, "control": bench.control.model, "absent": bench.absent.model}
        self.models = {key: _graded_copy(m, channels_last=channels_last, fused=fused) for key, m in loaded.items()}
        # The loaded model each copy was made from (kept, so its id cannot be reused), by id: see graded().
        self._copies = {id(m): (m, self.models[key]) for key, m in loaded.items()}
        self.memo = ExplanationMemo()
        self._attr: dict[tuple, np.ndarray] = {}
        self._model_fps: dict[str, bytes] = {}
        self.draws_randomness: dict[str, bool] = {}  # methods seen drawing random numbers (never batched)

    def graded(self, model: torch.nn.Module) -> torch.nn.Module:
        """The copy of the loaded ``model`` this store explains on (channels-last and fused as the run is): the arms'
        own copies for the run's arm models, a new copy, made once, for any other (the contract's models)."""
        if id(model) not in self._copies:
            self._copies[id(model)] = (model, _graded_copy(model, channels_last=self.channels_last, fused=self.fused))
        return self._copies[id(model)][1]

    def prior_for(self, method: str) -> np.ndarray | None:
        """The watermark prior when ``method`` declares it needs one, else None (no method sees it by accident)."""
        return self.images.watermark_prior if get_method(method).capabilities.prior else None

    def attributions(self, method: str, model_key: str = "biased") -> np.ndarray:
        """The method's (N,1,H,W) maps of the sample set on one model, computed once per process."""
        caps = get_method(method).capabilities
        if caps.model_independent and model_key != "biased":
            # Declared not to look at the model: its maps on any model are the biased model's maps.
            return self.attributions(method, "biased")
        key = (method, model_key)
        if key not in self._attr:
            s = self.images.sample_set
            if self.book.ran_out(key):
                # A hang repeats: charge the time limit once per method, not once per cell.
                raise AttributionError(method, f"{self.book.ran_out(key)} while computing its maps earlier in this "
                                       "run (not retried)")
            # Only the oracle gets the ground truth; a graded method must not see the answer.
            masks = s.masks[:, 0] > 0 if caps.oracle else None
            record: dict = {}
            try:
                a = self.explain(method, self.models[model_key], s.x, s.y, masks=masks, _record=record)
            except CellTimeout as exc:
                self.book.charge(key, exc)
                raise
            if record.get("draws_randomness"):
                self.draws_randomness[method] = True
            a = verdict.check_scores(a, f"{method} attributions").reshape(a.shape).astype(np.float32)
            check_not_constant(method, a, relu_clipped=caps.relu_clipped)
            self._attr[key] = a
            # A property graded on a prefix re-explains that prefix through Quantus (e.g. MPRT's unrandomised
            # model): answer it with the same maps, so its a_batch and its re-explanation never differ.
            n = self.profile.graded(False, len(s.x))
            if n < len(s.x):
                fp = self.fingerprint(self.models[model_key])
                self.memo.put(self.memo.key(method, self.level, self.seed, fp, s.x[:n], _as_targets(s.y[:n]),
                                            None if masks is None else masks[:n]), a[:n])
        return self._attr[key]

    def explain(self, method: str, model, inputs, targets, masks=None, _record: dict | None = None) -> np.ndarray:
        """Signed maps (N,1,H,W) of ``method`` through the shared path, memoised by content (see explain_cache)."""
        x = np.asarray(inputs, dtype=np.float32)
        t = _as_targets(targets)
        key = self.memo.key(method, self.level, self.seed, self.fingerprint(model), x, t, masks)
        maps = self.memo.get(key)
        if maps is None:
            record = {} if _record is None else _record
            # The prior is one array per world and the memo one per store, so the key need not hash it.
            maps = explain(method, model, x, t, level=self.level, seed=self.seed, masks=masks, _record=record,
                           prior=self.prior_for(method))
            if record.get("leaks"):
                # The guard repaired the model, but a method that hooks or edits the model it explains is
                # faulty, and its map may depend on what it changed: an error, never a (memoised) result.
                raise AttributionError(method, "left the model modified (restored by the benchmark): "
                                       + "; ".join(record["leaks"]))
            self.memo.put(key, maps)
        return maps

    def graded_maps(self, model_key: str = "biased") -> dict[str, np.ndarray]:
        """{method: its maps of the sample set on one model} for every method this process has computed them for."""
        return {method: maps for (method, key), maps in self._attr.items() if key == model_key}

    def figure_maps(self, method: str, n: int) -> np.ndarray:
        """The first ``n`` biased-model maps: from the store when this process graded the method, else explained."""
        if (method, "biased") in self._attr:
            return self._attr[(method, "biased")][:n]
        if self.book.ran_out((method, "biased")):
            raise AttributionError(method, self.book.ran_out((method, "biased")))
        s = self.images.sample_set
        masks = s.masks[:n, 0] > 0 if _is_oracle(method) else None
        return self.explain(method, self.models["biased"], s.x[:n], s.y[:n], masks=masks)

    @property
    def device(self) -> str:
        """Device of the graded models."""
        return str(next(self.models["biased"].parameters()).device)

    def fusion(self) -> dict[str, str]:
        """Each graded model's no-grad forward: "fused", "plain" (switched off), or why it runs plain."""
        reasons = {key: fusion.reason(m) for key, m in self.models.items()}
        return {key: "plain" if why is None else (why or "fused") for key, why in reasons.items()}

    def forward_of(self, model, example):
        """The fused no-grad forward of one of the run's models (Quantus' predictions), or None for the model itself."""
        return fused_forward(model, example) if self.fused else None

    def own_fingerprint(self, model) -> bytes | None:
        """The fingerprint of one of the run's models, or None for any other model."""
        return self.fingerprint(model) if any(m is model for m in self.models.values()) else None

    def fingerprint(self, model) -> bytes:
        """Content hash of a model's weights; the run's own models are hashed once."""
        # The run's models never change (explain's ModelGuard restores them after every call), so hash them
        # once; anything else (Quantus' randomised copies) is hashed per call.
        graded = next((k for k, m in self.models.items() if m is model), None)
        if graded is None:
            return model_fingerprint(model)
        if graded not in self._model_fps:
            self._model_fps[graded] = model_fingerprint(model)
        return self._model_fps[graded]


class ControlScores(Protocol):
    """Where a control's scores outlive the process (the result store): one process computes them, the rest read."""

    def control_scores(self, prop: Property, metric: MetricSpec, method: str, model_key: str, model: str,
                       compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The stored scores of ``method`` (a control of ``prop``) on ``model``'s weights, else ``compute()``'s."""


class MetricRunner:
    """Per-sample scores of a Quantus metric on a method's maps, computed once per process (failures too)."""

    # Set by the run (benchmark.running): controls are scored once across its processes and runs.
    shared: ControlScores | None = None

    def __init__(self, store: AttributionStore, images: GradedImages, *, merge_draws: bool):
        self.store = store
        self.images = images
        self.profile = store.profile
        self.seed = store.seed
        # Explain all of a metric's re-explanations of the graded model (its noise draws) in one batched call.
        self.merge_draws = merge_draws
        self.predictions = PredictionMemo()
        self._scores: dict[tuple, np.ndarray] = {}
        self._errors: dict[tuple, BaseException] = {}

    def scores(self, prop: Property, metric: MetricSpec, method: str, model_key: str = "biased") -> np.ndarray:
        """Per-sample scores (N,) of ``method`` on ``metric``; raises on crash or non-finite output (NaN marks a
        collapsed map on a metric that declares collapse)."""
        key = (prop.key, prop.version, metric.name, metric.threshold, method, model_key)
        if key in self._errors:
            raise self._errors[key]
        if key not in self._scores:
            def compute() -> np.ndarray:
                return verdict.check_scores(self._compute(prop, metric, method, model_key),
                                            f"{metric.name} on {method}", collapse=bool(metric.collapse))

            try:
                # Every worker of a run needs every metric's controls; the first to score one stores it for the rest.
                if self.shared is not None and method in prop.controls:
                    model = self.store.fingerprint(self.store.models[model_key])
                    self._scores[key] = self.shared.control_scores(prop, metric, method, model_key, model, compute)
                else:
                    self._scores[key] = compute()
            except Exception as exc:
                self._errors[key] = exc
                raise
        return self._scores[key]

    def anchors(self, prop: Property, metric: MetricSpec) -> verdict.Anchors:
        """The property's negative and positive control scores on ``metric`` (cached with every score)."""
        return verdict.Anchors(prop.negative, prop.positive, self.scores(prop, metric, prop.negative),
                               self.scores(prop, metric, prop.positive))

    def _compute(self, prop: Property, metric: MetricSpec, method: str, model_key: str) -> np.ndarray:
        s = self.images.samples(prop)
        model = self.store.models[model_key]
        # Every metric is built with abs=True, so Quantus only ever scores |a|. Handing it |a| directly
        # changes no score but keeps Quantus' sign-only batch assertion ("attributions should not all be
        # less than zero") from rejecting a signed map whose magnitudes are perfectly usable. The maps of the
        # whole graded set are computed once, so a prefix's maps never depend on which property asked first.
        a = np.abs(self.store.attributions(method, model_key))[: len(s.x)]

        def explain_abs(model, inputs, targets, **kwargs):
            # Quantus' re-explanations (noise draws, randomised copies) go through the memo: draws shared by
            # several metrics, and the unrandomised model's maps, are computed once.
            return np.abs(self.store.explain(method, model, inputs, targets, masks=kwargs.get("masks")))

        common = dict(
            x_batch=s.x, y_batch=s.y, a_batch=a, s_batch=s.masks, device=self.store.device, batch_size=len(s.x),
            explain_func=explain_abs,
        )
        # Quantus is imported here, not at the top: it costs 2.9 s (measured on 2 cores), and the plugin imports this
        # module in every pytest session, the project's own tests included.
        from benchmark.grading.quantus_compat import fast_attribution_asserts

        with self.predictions.active(self.store.own_fingerprint, self.store.forward_of), fast_attribution_asserts(
                constant_ok=bool(metric.collapse)):
            out = self._run_metric(method, metric, model, common, explain_abs)
        # A map-only metric scores the graded map itself: a constant one points nowhere (MetricSpec.collapse).
        return mx.nan_where_constant(out, a) if metric.collapse and prop.map_only else out

    def _run_metric(self, method: str, metric: MetricSpec, model, common: dict, explain_abs) -> np.ndarray:
        was_training = model.training

        def run(explain_func):
            m = metric.build(self.profile, self.seed)
            return m(model=model, **{**common, "explain_func": explain_func})

        try:
            if metric.explains_draws and self.merge_draws and self._batchable(method):
                calls = batching.recorded_explanations(run, model, seed_everything=lambda: _seed_everything(self.seed))
                explain_abs = self._merged_draws(method, model, calls, explain_abs)
            _seed_everything(self.seed)
            return metric.postprocess(run(explain_abs))
        finally:
            model.train(was_training)

    def _batchable(self, method: str) -> bool:
        # Maps that draw random numbers depend on their chunking; a method that needs a minimum batch has its own
        # batching; a model-independent map is one memo entry per input anyway.
        caps = get_method(method).capabilities
        return not (caps.min_batch > 1 or caps.model_independent or self.store.draws_randomness.get(method))

    def _merged_draws(self, method: str, graded, calls: list[tuple[np.ndarray, np.ndarray]], fallback):
        """An explain_func that answers the metric's re-explanations of ``graded`` (``calls``, recorded by the dry
        run) from one batched call; anything else goes to ``fallback``.

        Only for maps that draw no random numbers: a method's noise depends on its chunking, so batching would
        change its maps (checked on the batched call itself).
        """
        store = self.store
        if len(calls) < 2:
            return fallback
        x = np.concatenate([c[0] for c in calls])
        t = np.concatenate([c[1] for c in calls])
        key = store.memo.key(f"{method}|merged", store.level, self.seed, store.fingerprint(graded), x, t)
        merged = store.memo.get(key)
        if merged is None:
            record_: dict = {}
            try:
                merged = explain(method, graded, x, t, level=store.level, seed=self.seed, _record=record_,
                                 prior=store.prior_for(method))
            except Exception:
                return fallback  # the calls one by one give the cell its real error message
            if record_["draws_randomness"]:
                store.draws_randomness[method] = True
                return fallback
            store.memo.put(key, merged)
        table, start = {}, 0
        for cx, ct in calls:
            table[store.memo.key("replay", "", 0, b"", cx, ct)] = merged[start : start + len(cx)]
            start += len(cx)

        def replay(model, inputs, targets, **kwargs):
            if model is graded and kwargs.get("masks") is None:
                hit = table.get(store.memo.key("replay", "", 0, b"", np.asarray(inputs, dtype=np.float32),
                                              _as_targets(targets)))
                if hit is not None:
                    store.memo.batched += 1
                    return np.abs(hit)
            return fallback(model, inputs, targets, **kwargs)

        return replay


class SeedParts:
    """The graded images, maps and scores on one training seed's models (each seed flips its own cats)."""

    def __init__(self, bench: Bench, *, seed: int, channels_last: bool, merge_draws: bool, fused: bool = False):
        self.images = GradedImages(bench)
        self.book = TimeBook(bench.profile, bench.options)
        self.store = AttributionStore(bench, self.images, self.book, seed=seed, channels_last=channels_last,
                                      fused=fused)
        self.runner = MetricRunner(self.store, self.images, merge_draws=merge_draws)

    def gather(self, prop: Property, metric: MetricSpec, method: str, *, false_alarm: bool) -> tuple[np.ndarray, dict]:
        """The method's scores and its controls' scores on this seed's images, within one cell time limit."""
        # A timed-out metric is never cached (neither as scores nor as an error): the next cell that needs it
        # starts afresh with its own budget. Only a method whose own maps timed out is not retried (see attributions).
        with time_limit(*self.book.limit):
            scores = self.runner.scores(prop, metric, method)
            controls = {c: self.runner.scores(prop, metric, c) for c in prop.beat if c != method}
            if false_alarm:
                for arm, name in FALSE_ALARMS.items():
                    controls[name] = self.runner.scores(prop, metric, method, arm)
        return scores, controls

    def anchors(self, prop: Property, metric: MetricSpec) -> verdict.Anchors:
        """The property's controls on this seed's images (their own time budget; cached per metric)."""
        with time_limit(*self.book.limit):
            return self.runner.anchors(prop, metric)


class Grader:
    """One run's graded images, maps and scores per training seed (:class:`SeedParts`), kept for the whole run.

    The attributes ``images``, ``book``, ``store`` and ``runner`` are the first seed's parts; :func:`grade_cell` pools
    every seed's scores into one cell.
    """

    def __init__(self, bench: Bench, *, seed: int | None = None, merge_draws: bool | None = None,
                 channels_last: bool | None = None, fused: bool | None = None):
        self.bench = bench
        self.profile = bench.profile
        self.seed = bench.options.seed if seed is None else seed
        if channels_last is None:
            channels_last = getattr(bench.options, "channels_last", None)
        self.channels_last = channels_last_on(channels_last, bench.device.type)
        # The perturbation methods' and metrics' no-grad forwards through fused copies (benchmark.models.fused).
        if fused is None:
            fused = fused_inference_on(getattr(bench.options, "fused_inference", None), bench.device.type)
        self.fused = fused
        merge = True if merge_draws is None else merge_draws
        self.parts = [SeedParts(bench.for_seed(r), seed=self.seed, channels_last=self.channels_last, merge_draws=merge,
                                fused=self.fused)
                      for r in bench.seeds()]
        first = self.parts[0]
        self.images, self.book, self.store, self.runner = first.images, first.book, first.store, first.runner

    def share_controls(self, shared: ControlScores | None) -> None:
        """Score every seed's controls through ``shared`` (the run's result store): once across processes and runs."""
        for part in self.parts:
            part.runner.shared = shared

    @property
    def num_classes(self) -> int:
        """Output classes of the graded model."""
        return int(self.store.models["biased"].fc.out_features)

    def pooled_anchors(self, prop: Property, metric: MetricSpec) -> tuple[verdict.Anchors, np.ndarray | None]:
        """Every seed's control scores, pooled in seed order, with each sample's training seed."""
        per = [p.anchors(prop, metric) for p in self.parts]
        groups = groups_of([len(a.neg) for a in per])
        if len(per) == 1:
            return per[0], groups
        return verdict.Anchors(prop.negative, prop.positive, np.concatenate([a.neg for a in per]),
                               np.concatenate([a.pos for a in per])), groups


def _anchors_or_reason(grader: Grader, prop: Property, metric: MetricSpec):
    # A crashing or hanging control is harness breakage: say so on every cell of the metric, never raise.
    try:
        return (*grader.pooled_anchors(prop, metric), "")
    except CellTimeout as exc:
        return None, None, f"controls {exc}"
    except Exception as exc:
        return None, None, f"controls crashed: {type(exc).__name__}: {exc}"


def grade_cell(grader: Grader, prop: Property, metric: MetricSpec, method: str) -> verdict.Cell:
    """Grade one (property, metric, method) cell on ``grader``'s models; failures become ERROR cells, never raise."""
    t0 = time.perf_counter()
    caps = get_method(method).capabilities
    reason = prop.not_applicable(caps) or get_method(method).unsupported(grader.store.models["biased"])
    if not reason and grader.num_classes < metric.min_classes:
        reason = f"{metric.name} on this {grader.num_classes}-class model: {metric.min_classes_reason}"
    if reason:
        return verdict.not_applicable(prop, metric, method, reason)
    anchors, anchor_groups, anchor_error = _anchors_or_reason(grader, prop, metric)
    try:
        # The oracle is the metric's ceiling, not a shortcut detector: it alone skips the false-alarm tests.
        # Model-independent maps (Random, Sobel) take them and fail them, as they should. Two arms: the mark
        # present but class-independent (control), and never seen (absent).
        parts = [p.gather(prop, metric, method, false_alarm=prop.false_alarm and not caps.oracle)
                 for p in grader.parts]
        scores = np.concatenate([s for s, _ in parts])
        controls = {name: np.concatenate([c[name] for _, c in parts]) for name in parts[0][1]}
        groups = groups_of([len(s) for s, _ in parts])
        cell = verdict.judge(prop, metric, method, scores, controls, anchors, seed=grader.seed, groups=groups)
        if groups is not None:  # two or more training seeds: the outcome on each alone and leaving each out
            cell.seed_outcomes, cell.loso_outcomes = seed_outcomes(prop, metric, method, scores, controls, anchors,
                                                                   seed=grader.seed, groups=groups)
    except CellTimeout as exc:
        cell = verdict.error(prop, metric, method, str(exc))
    except Exception as exc:
        cell = verdict.error(prop, metric, method, exc)
    if anchors is None:
        cell.informative, cell.validity_reason = False, anchor_error
    elif cell.informative is None:  # an ERROR cell: the metric's validity is still known
        cell.informative, cell.validity_reason = verdict.anchor_validity(metric, anchors, seed=grader.seed,
                                                                         groups=anchor_groups)
    cell.seconds = round(time.perf_counter() - t0, 3)
    return cell


def _graded_copy(model: torch.nn.Module, *, channels_last: bool, fused: bool) -> torch.nn.Module:
    # The store explains copies, leaving the run's models as loaded; a fused forward is allowed on the store's own copy
    # only, so another grader of the same loaded models (switched off) never meets it.
    if not (channels_last or fused):
        return model
    twin = copy.deepcopy(model)
    if channels_last:
        twin = twin.to(memory_format=torch.channels_last)
    if fused:
        fusion.allow(twin)
    return twin


def _is_oracle(method: str) -> bool:
    return get_method(method).capabilities.oracle


def _as_targets(targets) -> np.ndarray:
    return np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets).astype(np.int64).reshape(-1)
