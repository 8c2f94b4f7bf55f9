"""The persistent result store: keys that change exactly when a result's inputs do, checksummed entries, safe writers,
and a re-run that grades only what it has not stored (byte-identical reports)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmark.grading.contract import OK, VIOLATED, ContractOutcome
from benchmark.grading.properties import LOCALISATION, RANDOMISATION
from benchmark.grading.verdict import ERROR, PASS, Cell
from benchmark.methods import all_methods, register, unregister
from benchmark.methods.base import AttributionMethod, Capabilities
from benchmark.profiles import PROFILES
from benchmark.running.store import (
    ResultStore,
    RunStore,
    cell_key,
    contract_key,
    decode_maps,
    decode_scores,
    encode_maps,
    encode_scores,
    prune,
    storable_cell,
    storable_outcome,
    store_contents,
)
from benchmark.timelimit import TIMEOUT_TEXT

QUICK = PROFILES["quick"]
RUN = {"weights": {"biased": "ab" * 32}, "graded": {"0": [1, 2, 3]}, "seed": 0, "channels_last": True,
       "device": "cpu", "profile": "p", "code": "c", "versions": {"torch": "x"}, "schema": 1}


def _size(root: Path) -> tuple[int, int]:
    """(entries, bytes) in the store under ``root``, every kind together."""
    counts = store_contents(root).values()
    return sum(n for n, _ in counts), sum(b for _, b in counts)


def _cell(method="Saliency", outcome=PASS, message="ok", reason=None) -> Cell:
    return Cell(suite="watermark_localisation", suite_version="1", property="Localisation", metric="AUC",
                method=method, direction="higher", threshold=None, outcome=outcome, message=message,
                validity_reason=reason or "")


def _method(params: dict) -> type[AttributionMethod]:
    class StoreProbe(AttributionMethod):
        """A throwaway method whose source and parameters the tests vary."""

        name = "StoreProbeForTest"
        family = "control"
        capabilities = Capabilities(control=True, model_independent=True)

        def attribute(self, model, inputs, target, params, **context):
            return inputs.sum(1, keepdim=True)

    StoreProbe.params = {"cheap": params, "paper": params}
    return StoreProbe


@pytest.fixture
def probe():
    """Register a method under a fixed name; the test may re-register it changed."""
    def put(cls):
        if "StoreProbeForTest" in all_methods():
            unregister("StoreProbeForTest")
        register(cls)

    yield put
    if "StoreProbeForTest" in all_methods():
        unregister("StoreProbeForTest")


def _keys(method: str) -> dict:
    return {(p.key, m.name, meth): cell_key(RUN, p, m, meth, QUICK)
            for p in (LOCALISATION, RANDOMISATION) for m in p.metrics for meth in (method, "Saliency")}


def test_a_changed_method_parameter_or_source_invalidates_that_methods_cells_and_only_those(probe):
    probe(_method({"k": 1}))
    before = _keys("StoreProbeForTest")
    probe(_method({"k": 2}))  # parameters
    after_params = _keys("StoreProbeForTest")
    changed = {k for k in before if before[k] != after_params[k]}
    assert changed and all(k[2] == "StoreProbeForTest" for k in changed)
    assert len(changed) == len([k for k in before if k[2] == "StoreProbeForTest"])
    class Edited(_method({"k": 2})):
        """The probe with an edited body."""

        name = "StoreProbeForTest"

        def attribute(self, model, inputs, target, params, **context):
            return inputs.mean(1, keepdim=True)

    probe(Edited)
    edited = _keys("StoreProbeForTest")
    changed = {k for k in before if after_params[k] != edited[k]}
    assert changed and all(k[2] == "StoreProbeForTest" for k in changed)


def test_a_changed_metric_setting_invalidates_that_metrics_cells_and_only_those():
    prop = LOCALISATION
    base = {m.name: cell_key(RUN, prop, m, "Saliency", QUICK) for m in prop.metrics}
    moved = prop.with_thresholds({"AUC": 0.8})
    after = {m.name: cell_key(RUN, moved, m, "Saliency", QUICK) for m in moved.metrics}
    assert [n for n in base if base[n] != after[n]] == ["AUC"]


def test_every_helper_the_methods_shared_call_path_imports_is_hashed_with_the_grading_code():
    # A method's fingerprint does not follow the imports of grading-code modules (they are hashed whole), so a helper
    # only they import (the region forward, DeepLIFT's rules, the chunk seeds) would be in no key: a change to it
    # would leave maps stored that it no longer computes.
    from benchmark.running.source_closure import PACKAGE_DIR, imported_modules, module_file
    from benchmark.running.store import _grading_code_files, _in_grading_code

    inert = {"benchmark", "benchmark.errors", "benchmark.models"}  # package docstrings and exception classes
    unhashed = set()
    for path in _grading_code_files():
        parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
        if parts[0] != "methods":
            continue
        name = ".".join(["benchmark", *parts]).removesuffix(".__init__")
        unhashed |= {dep for dep in imported_modules(path, name) if not _in_grading_code(module_file(dep))}
    assert unhashed <= inert, sorted(unhashed - inert)


def test_a_control_method_change_invalidates_every_cell_judged_against_it(probe):
    # Each cell is judged against its property's controls: their maps are part of what decides it.
    keys = {m.name: cell_key(RUN, LOCALISATION, m, "Saliency", QUICK) for m in LOCALISATION.metrics}
    other_run = {**RUN, "weights": {"biased": "cd" * 32}}
    assert all(cell_key(other_run, LOCALISATION, m, "Saliency", QUICK) != keys[m.name] for m in LOCALISATION.metrics)
    assert cell_key(RUN, LOCALISATION, LOCALISATION.metrics[0], "Saliency", QUICK) != \
        cell_key(RUN, LOCALISATION, LOCALISATION.metrics[0], "Random", QUICK)  # the graded method is named apart


def test_contract_keys_name_the_method_architecture_and_split():
    a = contract_key(RUN, "Saliency", "cnn", "biased", QUICK)
    assert a == contract_key(RUN, "Saliency", "cnn", "biased", QUICK)
    assert len({a, contract_key(RUN, "Saliency", "cnn", "control", QUICK),
                contract_key(RUN, "Saliency", "resnet", "biased", QUICK),
                contract_key(RUN, "GradCAM", "cnn", "biased", QUICK)}) == 4


def test_a_corrupt_or_truncated_entry_is_reported_removed_and_regraded(tmp_path):
    store = ResultStore(tmp_path)
    store.put("aa" + "0" * 38, _cell().to_json())
    store.put("bb" + "0" * 38, _cell("Random").to_json())
    path_a = tmp_path / "results" / "aa" / ("aa" + "0" * 38 + ".json")
    path_b = tmp_path / "results" / "bb" / ("bb" + "0" * 38 + ".json")
    path_a.write_text(path_a.read_text()[:40])  # truncated mid-write
    entry = json.loads(path_b.read_text())
    entry["payload"] = entry["payload"].replace("Random", "Sobel")  # edited: the checksum no longer matches
    path_b.write_text(json.dumps(entry))
    with pytest.warns(UserWarning, match="corrupt or truncated"):
        assert store.get("aa" + "0" * 38) is None
    with pytest.warns(UserWarning, match="corrupt or truncated"):
        assert store.get("bb" + "0" * 38) is None
    assert len(store.corrupt) == 2 and not path_a.exists() and not path_b.exists()
    assert "2 corrupt entries found and regraded" in store.summary_line()


def test_only_results_that_depend_on_their_inputs_alone_are_stored():
    assert storable_cell(_cell())
    assert not storable_cell(_cell(outcome=ERROR))
    assert not storable_cell(_cell(reason=f"controls {TIMEOUT_TEXT} of 5 s (Random)"))
    assert storable_outcome(ContractOutcome(OK)) and storable_outcome(ContractOutcome(VIOLATED, "returns NaN"))
    assert not storable_outcome(ContractOutcome(VIOLATED, f"Saliency on the biased cnn: {TIMEOUT_TEXT} of 1 s"))


def test_fresh_ignores_stored_results_but_stores_what_it_grades(tmp_path):
    ResultStore(tmp_path).put("cc" + "0" * 38, _cell().to_json())
    fresh = ResultStore(tmp_path, read=False)
    assert fresh.get("cc" + "0" * 38) is None and "not read (--bench-fresh); 1 results graded" in fresh.summary_line()
    assert ResultStore(tmp_path).get("cc" + "0" * 38) is not None


def test_the_figures_maps_come_back_bit_for_bit_and_are_not_counted_as_results(tmp_path):
    store = RunStore(ResultStore(tmp_path), RUN, QUICK)
    maps = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32) * 1e-30
    store.put_maps("Saliency", maps)
    found = store.stored_maps("Saliency")
    assert found.dtype == np.float32 and found.tobytes() == maps.tobytes() and found.shape == maps.shape
    assert store.stored_maps("Random") is None
    assert store.results.hits == store.results.misses == 0  # "N results reused, M graded" counts cells and checks
    path = next((tmp_path / "results").rglob("*.json"))
    entry = json.loads(path.read_text())
    entry["payload"]["shape"] = [3, 1, 8, 9]  # edited: the checksum no longer matches
    path.write_text(json.dumps(entry))
    with pytest.warns(UserWarning, match="corrupt or truncated"):
        assert store.stored_maps("Saliency") is None


def test_the_controller_draws_the_maps_a_worker_graded_and_explains_only_the_rest(quick_bench, tmp_path):
    from benchmark.grading.grader import Grader
    from benchmark.running import worlds
    from benchmark.running.run_context import RunContext

    def ctx():
        return RunContext(QUICK, "test", quick_bench.options, bench=quick_bench, results=ResultStore(tmp_path))

    worker = ctx()
    worker.grader = Grader(quick_bench)
    graded = worker.grader.store.attributions("Saliency")
    worlds.keep_figure_maps(worker)
    controller = ctx()
    grader = Grader(quick_bench)
    explained = []
    explain = grader.store.figure_maps
    grader.store.figure_maps = lambda method, n: explained.append(method) or explain(method, n)
    maps_of = worlds.figure_maps(controller, grader)
    assert maps_of("Saliency", 3).tobytes() == graded[:3].tobytes() and explained == []
    assert maps_of("Random", 2).shape[0] == 2 and explained == ["Random"]  # graded nowhere: explained here


def test_a_ray_worker_hands_over_the_figures_maps_of_the_methods_it_graded_and_only_those(tmp_path):
    from types import SimpleNamespace

    from benchmark.running.jobs import CellJob, FigureJob, with_work

    graded = np.random.default_rng(1).random((5, 1, 4, 4)).astype(np.float32)
    worker = SimpleNamespace(store=SimpleNamespace(graded_maps=lambda: {"Saliency": graded}))
    job = FigureJob("Saliency")
    maps = job.decode(job.run(worker))
    assert maps.tobytes() == graded[:3].tobytes()  # FIGURE_EXAMPLES of them, bit for bit
    assert FigureJob("Random").run(worker) is None  # not graded there: the figure explains it instead
    store = RunStore(ResultStore(tmp_path), RUN, QUICK)
    cell = CellJob("watermark_localisation", "AUC", "Saliency")
    assert with_work([cell, job, FigureJob("Random")]) == [cell, job]  # Random's cells all stored: no worker grades it
    FigureJob("Random").store(store, None)
    job.store(store, maps)
    assert job.stored(store).tobytes() == maps.tobytes() and FigureJob("Random").stored(store) is None


def test_stored_arrays_decode_only_as_what_they_hold():
    maps, scores = np.ones((2, 1, 4, 4), np.float32), np.array([0.5, np.nan])
    assert decode_maps(encode_scores(scores)) is None and decode_scores(encode_maps(maps)) is None
    assert decode_maps(encode_maps(maps.astype(np.float64))).dtype == np.dtype("<f4")
    assert decode_scores(encode_scores(np.arange(3))) is None  # integers are no scores
    untagged = {k: v for k, v in encode_scores(scores).items() if k != "what"}  # written before the tag: regraded
    assert decode_scores(untagged) is None


def test_a_controls_scores_are_computed_once_and_come_back_bit_for_bit(tmp_path):
    metric = LOCALISATION.metrics[0]
    scores = np.array([0.25, np.nan, -1e-300, 1 / 3])
    computed = []

    def compute():
        computed.append(1)
        return scores

    def ask(store, method="Random", model="w0"):
        return store.control_scores(LOCALISATION, metric, method, "biased", model, compute)

    assert ask(RunStore(ResultStore(tmp_path), RUN, QUICK)) is scores and len(computed) == 1
    later = RunStore(ResultStore(tmp_path), RUN, QUICK)  # another process, or a later run
    found = ask(later)
    assert found.dtype == scores.dtype and found.tobytes() == scores.tobytes() and len(computed) == 1
    assert later.results.hits == later.results.misses == 0  # parts of cells, not results of their own
    ask(later, model="w1")  # another training seed's weights
    ask(later, method="Sobel")
    assert len(computed) == 3
    ask(RunStore(ResultStore(tmp_path, read=False), RUN, QUICK))  # --bench-fresh computes, and stores afresh
    assert len(computed) == 4
    path = next(p for p in (tmp_path / "results").rglob("*.json"))
    path.write_text(path.read_text()[:30])  # truncated: reported and computed again
    with pytest.warns(UserWarning, match="corrupt or truncated"):
        for method in ("Random", "Sobel"):
            ask(RunStore(ResultStore(tmp_path), RUN, QUICK), method=method)
    assert len(computed) == 5


def _scorer(root: str, log: str, barrier, results) -> None:
    import time

    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(1.0)  # the other process asks while this one computes (both start together at the barrier)
        return np.arange(4.0)

    barrier.wait()
    found = RunStore(ResultStore(Path(root)), RUN, QUICK).control_scores(
        LOCALISATION, LOCALISATION.metrics[0], "Random", "biased", "w0", compute)
    results.put(int(found.sum()))


def test_two_processes_asking_for_a_control_at_once_compute_it_once(tmp_path, spawn_context):
    log = tmp_path / "log"
    barrier, results = spawn_context.Barrier(2), spawn_context.Queue()
    procs = [spawn_context.Process(target=_scorer, args=(str(tmp_path), str(log), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0] and sorted(results.get(timeout=5) for _ in procs) == [6, 6]
    assert log.read_text() == "computed\n"  # one computed it, the other waited for the lock and read it
    assert [p.suffix for p in (tmp_path / "results").rglob("*") if p.is_file()] == [".json"]  # no lock file left


def test_a_grader_sharing_controls_scores_them_once_across_graders(quick_bench, tmp_path):
    from benchmark.grading.grader import Grader, MetricRunner
    from benchmark.running.store import open_run_store

    metric = LOCALISATION.metrics[0]
    calls = []
    real = MetricRunner._compute

    def counted(self, prop, metric, method, model_key):
        calls.append(method)
        return real(self, prop, metric, method, model_key)

    store = open_run_store(ResultStore(tmp_path), quick_bench)
    first, second = Grader(quick_bench), Grader(quick_bench)  # as two xdist workers
    for grader in (first, second):
        grader.share_controls(store)
    try:
        MetricRunner._compute = counted
        anchors = [g.runner.anchors(LOCALISATION, metric) for g in (first, second)]
        own = [g.runner.scores(LOCALISATION, metric, "Saliency") for g in (first, second)]
    finally:
        MetricRunner._compute = real
    assert sorted(calls) == sorted([LOCALISATION.negative, LOCALISATION.positive, "Saliency", "Saliency"])
    assert anchors[0].neg.tobytes() == anchors[1].neg.tobytes() and anchors[0].pos.tobytes() == anchors[1].pos.tobytes()
    assert own[0].tobytes() == own[1].tobytes()
    alone = Grader(quick_bench).runner.anchors(LOCALISATION, metric)  # no store: the same scores
    assert alone.neg.tobytes() == anchors[1].neg.tobytes() and alone.pos.tobytes() == anchors[1].pos.tobytes()


def test_a_runs_grader_shares_controls_through_the_store_opened_when_first_needed(quick_bench, tmp_path):
    from benchmark.running import worlds
    from benchmark.running.jobs import GRID
    from benchmark.running.run_context import RunContext

    ctx = RunContext(QUICK, "test", quick_bench.options, bench=quick_bench, results=ResultStore(tmp_path))
    grader = worlds.grader_of(ctx)
    assert all(p.runner.shared is not None for p in grader.parts) and GRID not in ctx.run_stores
    grader.runner.anchors(LOCALISATION, LOCALISATION.metrics[0])  # the first training seed's two anchors
    assert GRID in ctx.run_stores and store_contents(tmp_path)["controls' scores"][0] == 2


def _writer(args) -> int:
    root, worker = args
    store = ResultStore(Path(root))
    for i in range(200):
        store.put(f"{i % 20:02d}" + "0" * 38, _cell(method=f"M{i % 20}").to_json())
    return worker


def test_two_writers_at_once_leave_every_entry_whole(tmp_path, spawn_context):
    with spawn_context.Pool(2) as pool:
        assert sorted(pool.map(_writer, [(str(tmp_path), 0), (str(tmp_path), 1)])) == [0, 1]
    store = ResultStore(tmp_path)
    assert all(Cell.from_json(store.get(f"{i:02d}" + "0" * 38)).method == f"M{i}" for i in range(20))
    assert not store.corrupt and _size(tmp_path)[0] == 20


def test_cache_size_counts_each_kind_of_entry(tmp_path, capsys):
    from benchmark.__main__ import main

    store = RunStore(ResultStore(tmp_path), RUN, QUICK)
    store.put_cell(LOCALISATION, LOCALISATION.metrics[0], "Saliency", _cell())
    store.put_contract("Saliency", "cnn", "biased", ContractOutcome(OK))
    store.put_maps("Saliency", np.zeros((3, 1, 4, 4), np.float32))
    store.control_scores(LOCALISATION, LOCALISATION.metrics[0], "Random", "biased", "w0", lambda: np.zeros(3))
    (tmp_path / "results" / "zz").mkdir()
    (tmp_path / "results" / "zz" / "broken.json").write_text("{")
    assert main(["cache", "size", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "5 entries" in out and "1 cells" in out and "1 contract checks" in out and "1 controls' scores" in out
    assert "1 figures' maps" in out and "1 corrupt" in out


def test_prune_removes_all_or_only_unused_entries(tmp_path):
    store = ResultStore(tmp_path)
    for i in range(3):
        store.put(f"{i:02d}" + "0" * 38, _cell().to_json())
    old = tmp_path / "results" / "00" / ("00" + "0" * 38 + ".json")
    os.utime(old, (0, 0))
    assert prune(tmp_path, older_than_days=1)[0] == 1 and _size(tmp_path)[0] == 2
    assert prune(tmp_path)[0] == 2 and _size(tmp_path) == (0, 0)


def _grade(run_child, cache: Path, out: Path, methods: str) -> str:
    # The project's tests grade afresh (tests/conftest.py sets SHORTCUT_BENCH_FRESH); this one is about the store.
    proc = run_child.bench("grade", "--cache-dir", cache, "--reports-dir", out, "--methods", methods,
                           "--properties", "watermark_localisation,randomisation", unset=("SHORTCUT_BENCH_FRESH",))
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _copy_models(bench, dst: Path) -> None:
    # A private cache with the quick world and its models alone (under xdist another worker may be building other
    # worlds in the shared folder meanwhile): the store under it starts empty.
    import shutil

    shutil.copytree(bench.world.path, dst / "datasets" / bench.world.path.name)
    for m in bench.all_models().values():
        shutil.copytree(m.path, dst / "models" / m.path.name)


def test_cold_warm_and_an_added_method_give_the_reports_of_a_cold_run(quick_bench, tmp_path, run_child):
    cache = tmp_path / "cache"
    _copy_models(quick_bench, cache)
    cold = _grade(run_child, cache, tmp_path / "cold", "Saliency,Random")
    assert "0 results reused" in cold
    warm = _grade(run_child, cache, tmp_path / "warm", "Saliency,Random")
    assert "0 graded" in warm
    added = _grade(run_child, cache, tmp_path / "added", "Saliency,Random,GradCAM")
    graded = int(added.split(" results reused, ")[1].split(" graded")[0])
    assert graded == len(LOCALISATION.metrics) + len(RANDOMISATION.metrics)  # GradCAM's cells alone
    fresh_cache = tmp_path / "fresh"
    _copy_models(quick_bench, fresh_cache)
    _grade(run_child, fresh_cache, tmp_path / "cold3", "Saliency,Random,GradCAM")
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert (tmp_path / "cold" / name).read_bytes() == (tmp_path / "warm" / name).read_bytes(), name
        assert (tmp_path / "added" / name).read_bytes() == (tmp_path / "cold3" / name).read_bytes(), name
