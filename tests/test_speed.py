"""Speed machinery keeps scores exact: explanation memo, model fingerprints, GPU spread, compute timer."""

from __future__ import annotations

import collections
import copy
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.grading.explain_cache import ExplanationMemo, PredictionMemo, model_fingerprint
from benchmark.grading.properties import FAITHFULNESS, NOISE_STABILITY, RANDOMISATION
from benchmark.methods import AttributionMethod, explain, register, unregister
from benchmark.methods.base import Capabilities
from benchmark.models import fused
from benchmark.models.arch import SmallCNN
from benchmark.running.devices import worker_device
from benchmark.running.timing import ModelComputeTimer, cheapest_costs, fastest_floor_seconds, floor_seconds

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN().eval()


def test_fingerprint_follows_weights_not_identity():
    model = _cnn()
    twin = copy.deepcopy(model)
    assert model_fingerprint(twin) == model_fingerprint(model)
    with torch.no_grad():
        twin.features[0].weight[0, 0, 0, 0] += 1e-6
    assert model_fingerprint(twin) != model_fingerprint(model)
    twin = copy.deepcopy(model)
    twin.features[1].running_mean += 1  # a buffer counts too (BatchNorm statistics change the maps)
    assert model_fingerprint(twin) != model_fingerprint(model)
    assert len(model_fingerprint(copy.deepcopy(model).to(torch.bfloat16))) == 16


def test_memo_returns_copies_and_respects_its_byte_budget():
    memo = ExplanationMemo(max_bytes=3 * 400)
    maps = [np.full((1, 1, 10, 10), i, dtype=np.float32) for i in range(4)]  # 400 bytes each
    for i, m in enumerate(maps):
        memo.put(bytes([i]), m)
    assert len(memo) == 3 and memo.get(bytes([0])) is None  # least recently used went first
    got = memo.get(bytes([3]))
    got[:] = -1  # Quantus normalises in place; the memo must not see it
    assert (memo.get(bytes([3])) == 3).all()
    assert (memo.hits, memo.misses) == (2, 1)
    x = np.zeros((2, 3, 8, 8), np.float32)
    k = ExplanationMemo.key("Saliency", "cheap", 0, _cnn(), x, np.array([0, 1]))
    assert k != ExplanationMemo.key("Saliency", "cheap", 0, _cnn(), x, np.array([1, 1]))
    assert k != ExplanationMemo.key("Saliency", "cheap", 1, _cnn(), x, np.array([0, 1]))
    assert k != ExplanationMemo.key("Saliency", "cheap", 0, _cnn(seed=1), x, np.array([0, 1]))


def test_noise_draws_shared_by_three_metrics_are_explained_once(quick_bench):
    from benchmark.grading.grader import Grader

    g = Grader(quick_bench)
    g.runner.scores(NOISE_STABILITY, NOISE_STABILITY.metric("MaxSensitivity"), "Saliency")
    computed = g.store.memo.misses
    for name in ("AvgSensitivity", "RelativeInputStability"):
        g.runner.scores(NOISE_STABILITY, NOISE_STABILITY.metric(name), "Saliency")
    # Same seed, same uniform ±NOISE draws: every re-explanation of the two later metrics is a hit.
    assert g.store.memo.misses == computed


def test_mprt_reuses_the_graded_attributions_and_not_across_randomised_layers(quick_bench):
    from benchmark.grading.grader import Grader

    g = Grader(quick_bench)
    g.store.attributions("Saliency")
    hits = g.store.memo.hits
    g.runner.scores(RANDOMISATION, RANDOMISATION.metric("MPRT"), "Saliency")
    assert g.store.memo.hits == hits + 1  # the unrandomised model's maps; every randomised layer is new


def test_only_the_oracle_is_given_the_masks(quick_bench):
    from benchmark.grading.grader import Grader

    seen = []

    class Peeker(AttributionMethod):
        """Records whether it was handed ground-truth masks."""

        name = "PeekerForSpeedTest"
        family = "control"
        capabilities = Capabilities(control=True, model_independent=True)

        def attribute(self, model, inputs, target, params, **context):
            seen.append("masks" in context)
            return torch.rand(inputs.shape[0], 1, *inputs.shape[2:], generator=context["generator"])

    register(Peeker)
    try:
        g = Grader(quick_bench)
        g.store.attributions("PeekerForSpeedTest")
        g.store.attributions("Oracle")
        assert g.store.attributions("PeekerForSpeedTest", "control") is g.store.attributions("PeekerForSpeedTest")
    finally:
        unregister("PeekerForSpeedTest")
    assert seen and set(seen) == {False}  # one call per chunk of the graded set, never with the masks


def test_benchmark_script_matches_plain_quantus(quick_cache, run_child):
    proc = run_child.python(
        "benchmarks/quantus_vs_bench.py", "--cache-dir", quick_cache, "--methods", "Saliency,Random,Sobel,Oracle",
        "--metrics", "PointingGame,AUC,MaxSensitivity,AvgSensitivity,RandomLogit,Selectivity", timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "speed-up (a)/(b):" in out and "scores and verdicts match" in out and "model compute" in out
    assert "wall / floor = " in out and "0 differ from the verdicts of plain Quantus' scores" in out
    ratio = float(out.split("speed-up (a)/(b): ")[1].split("x")[0])
    assert ratio > 0


def test_benchmark_script_times_both_ways_without_the_score_check_when_asked(quick_cache, run_child):
    proc = run_child.python("benchmarks/quantus_vs_bench.py", "--cache-dir", quick_cache, "--methods", "Saliency,Random",
                            "--metrics", "PointingGame,RandomLogit", "--no-score-check", "--warm", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "speed-up (a)/(b):" in out and "scores and verdicts: not checked (--no-score-check)" in out
    assert "plain Quantus over (b)'s sampled floor: " in out  # the bound of running (b)'s passes faster
    assert "verdicts (each cell's bootstraps and tests, and its anchors' validity; (a) does none): " in out
    assert float(out.split("(a) does none): ")[1].split("s of")[0]) > 0  # 4 graded cells were judged inside (b)
    assert "largest |score difference|" not in out
    # (c): every cell of the 2 x 2 grid read back from the store (b) wrote, none graded again, and the warm ratio apart
    assert "(c) shortcut-bench warm: wall " in out and "4 cells read from the result store (written by (b)), 0 graded " \
        "again; 0 differ from (b)'s cells" in out and "warm speed-up (a)/(c): " in out
    # The floor sampled between methods: the first sample before the grid, then one after each of the 2 methods
    assert "floor sampled through the run (" in out and "3 samples: SmallCNN forward " in out


@pytest.mark.parametrize(
    ("worker", "n_gpus", "expected"),
    [("gw0", 4, "cuda:0"), ("gw5", 4, "cuda:1"), ("gw3", 2, "cuda:1"), ("gw3", 1, None), ("gw3", 0, None),
     (None, 4, None), ("master", 4, None)],
)
def test_workers_spread_over_gpus(worker, n_gpus, expected):
    assert worker_device(worker, n_gpus) == expected


def test_compute_timer_sees_forward_and_backward_and_cleans_up():
    model = _cnn()
    x, y = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    grad, backward = torch.autograd.grad, torch.autograd.backward
    with ModelComputeTimer() as timer:
        explain("Saliency", model, x, y)
    assert timer.forward > 0 and timer.backward > 0
    assert timer.model <= timer.wall and 0 < timer.share() <= 1
    assert torch.autograd.grad is grad and torch.autograd.backward is backward
    before = timer.forward
    model(x)  # outside the context: not counted
    assert timer.forward == before
    assert "model compute" in timer.summary()


def test_compute_timer_counts_a_fused_copy_and_a_softmax_wrapper_as_their_architecture():
    model, x = _cnn(), torch.rand(4, 3, 32, 32)
    graph = fused.fuse_module(model)
    with ModelComputeTimer() as timer, torch.no_grad():
        model(x)
        graph(x)
        model(x[:2])
        torch.nn.Sequential(model, torch.nn.Softmax(dim=-1))(x)  # Quantus' probabilities
    assert timer.passes == {("SmallCNN", False, 4): 3, ("SmallCNN", False, 2): 1}


def test_the_floor_takes_each_architectures_cheapest_way_and_the_nearest_size_as_run():
    passes = {("A", False, 64): 2, ("A", True, 8): 1, ("B", False, 16): 1}
    as_run = {"A": {(False, 64): 3.0, (True, 8): 5.0, (True, 16): 4.0}, "B": {(False, 16): 2.0, (True, 16): 9.0}}
    cheapest = cheapest_costs({"A": [as_run["A"], {(False, 32): 1.0}], "B": [as_run["B"]]})
    assert cheapest == {"A": {False: 1.0, True: 4.0}, "B": {False: 2.0, True: 9.0}}
    assert fastest_floor_seconds(passes, cheapest) == 2 * 64 * 1.0 + 8 * 4.0 + 16 * 2.0
    assert floor_seconds(passes, as_run) == 2 * 64 * 3.0 + 8 * 5.0 + 16 * 2.0


def test_compute_timer_counts_the_rows_a_method_made_the_model_compute():
    model, x, y = _cnn(), torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    with ModelComputeTimer() as timer:
        explain("DeepLift", model, x, y)  # calls the model with tuples; its hook adds the baselines to the batch
    assert timer.passes == {("SmallCNN", True, 8): 1}


class _PlainGradient(AttributionMethod):
    """Input gradient computed directly (Captum's wrappers may sidestep autocast on their own)."""

    name = "PlainGradientForSpeedTest"
    family = "gradient"
    capabilities = Capabilities(gradient=True)

    def attribute(self, model, inputs, target, params, **context):
        x = inputs.clone().requires_grad_(True)
        out = model(x).gather(1, target[:, None]).sum()
        return torch.autograd.grad(out, x)[0]


def test_attributions_ignore_a_callers_autocast():
    model = _cnn()
    x, y = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    plain = explain(_PlainGradient(), model, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = explain(_PlainGradient(), model, x, y)
    np.testing.assert_array_equal(under_autocast, plain)


def test_explain_reports_whether_a_method_drew_random_numbers():
    model = _cnn()
    x, y = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    for name, draws in (("Saliency", False), ("Occlusion", False), ("Random", False), ("SmoothGrad", True),
                        ("GradientShap", True)):
        record: dict = {}
        explain(name, model, x, y, _record=record)
        assert record["draws_randomness"] is draws, name


@pytest.mark.parametrize("method", ["Saliency", "SmoothGrad"])
def test_batched_noise_draws_give_the_per_call_scores(quick_bench, method):
    from benchmark.grading.grader import Grader

    metric = NOISE_STABILITY.metric("LocalLipschitzEstimate")
    merged, separate = Grader(quick_bench, merge_draws=True), Grader(quick_bench, merge_draws=False)
    np.testing.assert_allclose(merged.runner.scores(NOISE_STABILITY, metric, method),
                               separate.runner.scores(NOISE_STABILITY, metric, method), rtol=1e-5, atol=1e-6)
    if method == "Saliency":  # deterministic: the 8 draws became one call
        assert merged.store.memo.misses < separate.store.memo.misses
    else:  # draws noise per chunk: batching would change its maps, so it is explained call by call
        assert merged.store.memo.misses == separate.store.memo.misses


def test_all_noise_metrics_share_their_draws(quick_bench):
    """Max/AvgSensitivity, LocalLipschitzEstimate and RelativeInputStability ask for the same noisy inputs."""
    from benchmark.grading.grader import Grader

    grader = Grader(quick_bench, merge_draws=False)
    first, *others = NOISE_STABILITY.metrics
    grader.runner.scores(NOISE_STABILITY, first, "Saliency")
    misses = grader.store.memo.misses
    for metric in others:
        grader.runner.scores(NOISE_STABILITY, metric, "Saliency")
        assert grader.store.memo.misses == misses, f"{metric.name} explained inputs {first.name} had not"


def test_faithfulness_predictions_are_shared_across_methods_and_exact(quick_bench):
    """FaithfulnessCorrelation's seeded subsets do not depend on the map: a second method predicts nothing new."""
    from benchmark.grading.grader import Grader, _seed_everything
    from benchmark.grading.quantus_compat import quantus

    metric = FAITHFULNESS.metric("FaithfulnessCorrelation")
    grader = Grader(quick_bench, fused=False)  # the memo's answers against Quantus' own (unfused) forward, bit for bit
    grader.runner.scores(FAITHFULNESS, metric, "Saliency")
    misses = grader.runner.predictions.misses
    assert misses >= 2  # the inputs, then the perturbed copies in batched forward passes
    second = grader.runner.scores(FAITHFULNESS, metric, "Sobel")
    assert grader.runner.predictions.misses == misses and grader.runner.predictions.hits >= misses
    # The same call on the same model without the memo gives the very same scores.
    s = grader.images.samples(FAITHFULNESS)
    _seed_everything(grader.seed)
    plain = metric.postprocess(metric.build(grader.profile, grader.seed)(
        model=grader.store.models["biased"], x_batch=s.x, y_batch=s.y, a_batch=np.abs(grader.store.attributions("Sobel"))[:len(s.x)],
        s_batch=s.masks, device=grader.store.device, batch_size=len(s.x)))
    np.testing.assert_array_equal(second, plain)
    assert quantus.helpers.model.pytorch_model.PyTorchModel.predict.__name__ == "predict"


def test_prediction_memo_only_answers_models_it_was_told_about():
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, other = _cnn(), _cnn(seed=1)
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    original = PyTorchModel.predict
    memo = PredictionMemo()
    fingerprint = model_fingerprint(model)
    with memo.active(lambda m: fingerprint if m is model else None):
        wrapped = PyTorchModel(model, channel_first=True, softmax=True, device="cpu")
        first, again = wrapped.predict(x), wrapped.predict(x)
        again[:] = -1  # a caller editing its copy must not reach the memo
        np.testing.assert_array_equal(wrapped.predict(x), first)
        wrapped.predict(x, grad=True)  # gradients requested: always computed
        PyTorchModel(other, channel_first=True, softmax=True, device="cpu").predict(x)  # not ours: computed
        logits = PyTorchModel(model, channel_first=True, softmax=False, device="cpu").predict(x)
    assert (memo.hits, memo.misses) == (2, 2)  # softmax and logits are different entries
    assert not np.allclose(logits, first)
    assert PyTorchModel.predict is original
    with torch.no_grad():
        np.testing.assert_array_equal(first, torch.softmax(model(torch.from_numpy(x)), -1).numpy())


def test_grader_explains_channels_last_copies_on_cpu_and_leaves_the_loaded_models_alone(quick_bench):
    from benchmark.grading.grader import Grader

    fast, plain = Grader(quick_bench), Grader(quick_bench, channels_last=False, fused=False)
    assert fast.channels_last and not plain.channels_last
    for key, loaded in (("biased", quick_bench.biased.model), ("control", quick_bench.control.model)):
        assert fast.store.models[key] is not loaded and plain.store.models[key] is loaded
        conv = next(m for m in fast.store.models[key].modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert all(p.is_contiguous() for p in loaded.parameters())
        assert model_fingerprint(fast.store.models[key]) == model_fingerprint(loaded)
    np.testing.assert_array_equal(fast.images.sample_set.indices, plain.images.sample_set.indices)
    # Same arithmetic in another order: the maps agree to float rounding, except where rounding flips a ReLU gate
    # (on 457 images one image did, in 100 of its pixels): at least 99% of the images agree exactly to rounding.
    a, b = fast.store.attributions("Saliency"), plain.store.attributions("Saliency")
    close = np.isclose(a, b, rtol=1e-4, atol=1e-6).reshape(len(a), -1).all(axis=1)
    assert close.mean() >= 0.99, f"{int((~close).sum())} of {len(a)} images differ beyond float rounding"


@pytest.mark.parametrize("seed", [0, 7, 2**32 + 5, 2**63 - 1])
def test_manual_seed_leaves_the_cpu_generator_as_torchs_does(seed, monkeypatch):
    from benchmark import rng

    torch.manual_seed(seed)
    expected = torch.get_rng_state()
    torch.manual_seed(seed + 1)
    rng.manual_seed(seed)
    assert torch.equal(torch.get_rng_state(), expected)
    called = []
    monkeypatch.setattr(rng, "_accelerated", lambda: True)  # a machine with an accelerator: torch's own, whole
    monkeypatch.setattr(torch, "manual_seed", lambda s: called.append(s))
    rng.manual_seed(seed)
    assert called == [seed]


def test_patch_forward_script_prints_the_premises_and_the_region_forwards_maps(run_child):
    proc = run_child.python("benchmarks/patch_forward.py", "--repeats", "1", "--images", "4", "--map-repeats", "1",
                            timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("blocks equal plain") == 4 and "whole fused forward" in out and "a lower bound" in out
    assert out.count("maps identical") == 3, out
    assert "4. one step of a chained removal" in out and out.count("logits identical") == 3, out


def test_road_imputation_script_times_each_way_and_prints_the_score_difference(quick_cache, run_child):
    proc = run_child.python("benchmarks/road_imputation.py", "--cache-dir", quick_cache, "--repeats", "1",
                            "--methods", "Random", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    line = next(row for row in out.splitlines() if row.strip().startswith("Random"))
    assert all(f"{way} " in line for way in ("sparse LU", "banded", "batched")) and line.count(" calls)") == 3, line
    assert float(line.split("max |score difference| ")[1]) <= 1e-5, line
    assert "all          cell" in out


def test_a_per_image_cost_is_the_fastest_pass_not_the_mean(monkeypatch):
    from benchmark.running import timing

    calls = {False: 0, True: 0}

    def one_pass(forward, x, grad):  # a warm-up, one pass slowed by something else, then the pass's own time
        calls[grad] += 1
        time.sleep({1: 0.0, 2: 0.2}.get(calls[grad], 0.01))

    monkeypatch.setattr(timing, "_one_pass", one_pass)
    costs = timing.per_image_costs(torch.nn.Linear(3, 1), (3,), [4], min_seconds=0.05)
    for grad in (False, True):
        assert 0.01 / 4 <= costs[(grad, 4)] < 0.05 / 4  # the mean of those passes would be 0.05 / 4 or more


def _anchor_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quantus_vs_bench.py"
    spec = importlib.util.spec_from_file_location("quantus_vs_bench", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_sampled_floor_prices_each_method_at_the_lower_sample_either_side_of_it():
    script = _anchor_script()
    samples = [{"A": {False: 1.0, True: 10.0}}, {"A": {False: 3.0, True: 6.0}}, {"A": {False: 2.0, True: 8.0}}]
    first = collections.Counter({("A", False, 4): 2, ("A", True, 1): 1})  # 8 images forward, 1 with gradients
    second = collections.Counter({("A", False, 2): 1, ("B", False, 4): 5})  # B was never measured: left out
    # first: 8 x min(1, 3) + 1 x min(10, 6); second: 2 x min(3, 2)
    assert script.sampled_floor([first, second], samples) == 8 * 1.0 + 6.0 + 2 * 2.0
    assert script.sampled_floor([collections.Counter()], samples[:2]) == 0.0


def test_the_call_clock_counts_the_outermost_call_while_entered_and_puts_the_functions_back(monkeypatch):
    script = _anchor_script()
    ticks = iter(range(100))
    monkeypatch.setattr(script.time, "perf_counter", lambda: float(next(ticks)))  # each reading one second later
    calls = []
    box = types.SimpleNamespace()
    box.inner = lambda: calls.append("inner")
    box.outer = lambda: calls.append("outer") or box.inner()
    inner, outer = box.inner, box.outer
    clock = script.CallClock(box, ("outer", "inner"))
    with clock:
        box.outer()  # read at outer's start (0), inner's start (1) and outer's end (2): inner is not counted again
        assert box.outer is not outer
    assert clock.seconds == 2.0 and calls == ["outer", "inner"]
    assert box.inner is inner and box.outer is outer
    box.outer()  # after the block: not timed
    with clock:
        box.inner()  # read at 3 and 4
    assert clock.seconds == 3.0 and box.inner is inner


def test_the_cost_tables_name_the_way_and_size_of_each_cheapest_cost():
    script = _anchor_script()
    torch.manual_seed(0)
    model = SmallCNN().eval()
    as_run, cheapest, picks = script.cost_tables([model], (3, 32, 32), [1, 4])
    arch = script.arch_of(model)
    assert set(picks[arch]) == set(cheapest[arch]) == {False, True}
    for forward, size in picks[arch].values():
        assert size in (1, 4) and forward is not None
    assert not isinstance(picks[arch][True][0], torch.jit.ScriptModule)  # a fused copy has no gradients
    again = script.sample_cheapest(picks, (3, 32, 32))
    assert set(again[arch]) == {False, True} and all(seconds > 0 for seconds in again[arch].values())


def test_the_floor_takes_each_cost_at_the_faster_of_its_two_measurements():
    script = _anchor_script()
    before = ({"A": {(False, 8): 2.0, (True, 8): 5.0}}, {"A": {False: 2.0, True: 5.0}})
    after = ({"A": {(False, 8): 3.0, (True, 8): 4.0, (False, 512): 9.0}, "B": {(False, 8): 1.0}},
             {"A": {False: 3.0, True: 4.0}, "B": {False: 1.0}})
    costs, cheapest = script.fastest_of(before, after)
    assert costs == {"A": {(False, 8): 2.0, (True, 8): 4.0, (False, 512): 9.0}, "B": {(False, 8): 1.0}}
    assert cheapest == {"A": {False: 2.0, True: 4.0}, "B": {False: 1.0}}
    assert before[0]["A"] == {(False, 8): 2.0, (True, 8): 5.0}  # the measurements themselves are left as they were
