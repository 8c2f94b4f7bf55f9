"""benchmarks/store_speed.py's --same-grid (issue 28's cold target on the older commit's own grid): it grades here
exactly the older commit's tests on one training seed, and refuses what it cannot compare."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "store_speed.py"


def test_same_grid_grades_the_older_commits_tests_on_one_training_seed(script, monkeypatch, tmp_path):
    here = ["suites/test_a.py::T::test_cell[M-X]", "suites/test_a.py::T::test_cell[M-Y]", "suites/test_b.py::T::c[N]"]
    monkeypatch.setattr(script, "_collected", lambda root, cache, env, methods=None: here)
    assert script._same_grid(here[:2], tmp_path, {}) == [*here[:2], "--bench-model-seeds", "1"]
    with pytest.raises(SystemExit, match=r"1 of the older commit's tests do not exist here, e\.g\. suites/gone"):
        script._same_grid([here[0], "suites/gone.py::T::test_cell[M-X]"], tmp_path, {})


def test_same_grid_needs_the_older_commit(script, capsys):
    with pytest.raises(SystemExit) as exc:
        script.main(["--same-grid", "--skip-ref"])
    assert exc.value.code == 2 and "--same-grid grades the older commit's tests" in capsys.readouterr().err


def test_add_module_grades_the_file_on_the_warm_store_then_cold_and_compares(script, monkeypatch, tmp_path):
    from benchmark.running.store import ResultStore

    cache = tmp_path / "cache"
    (cache / "results").mkdir(parents=True)
    (cache / "results" / "entry").write_text("stored")
    (cache / "models").mkdir()
    module = tmp_path / "extra.py"
    module.write_text("")
    runs = []

    def grid(root, cache_dir, out, workers, methods, env, tests=None):
        runs.append((cache_dir.name, (cache_dir / "results" / "entry").exists(), env["SHORTCUT_BENCH_METHODS"]))
        ResultStore(cache_dir).put("ab" * 20, '{"a cell": 1}')  # the added method's one cell
        out.mkdir()
        for name in script.BOARDS:
            (out / name).write_text(f"git `{out.name}`\nsame board\n")
        return 1.0, "result store: ..."

    monkeypatch.setattr(script, "_grid", grid)
    walls, notes, same = {}, {}, {}
    script._add_module(module, cache, tmp_path, 2, None, {"SHORTCUT_BENCH_METHODS": "mine.py"}, walls, notes, same)
    # First on a copy of the warm store, then cold (the models alone), both with the file after the user's own.
    assert runs == [("extra-warm", True, f"mine.py,{module.resolve()}"), ("extra-cold", False, f"mine.py,{module.resolve()}")]
    assert set(walls) == {"add extra", "cold extra"} and same == {"add extra": True}
    assert notes["add extra"] == "graded and stored: 1 cells"
    assert not (tmp_path / "extra-warm").exists() and (cache / "results" / "entry").exists()


def test_add_module_refuses_a_missing_file_and_the_older_commits_grid(script, capsys, tmp_path):
    for argv, message in ((["--add-module", str(tmp_path / "none.py")], "--add-module: no such file"),
                          (["--add-module", __file__, "--same-grid"], "--add-module adds methods to this checkout")):
        with pytest.raises(SystemExit) as exc:
            script.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("stem, name", [("gradient_method", "AddedGradientMagnitude"),
                                        ("perturbation_method", "AddedKernelShapBlack")])
def test_the_methods_to_add_load_from_their_files_and_keep_the_method_contract(stem, name, monkeypatch):
    import torch

    from benchmark import methods
    from benchmark.grading.contract import check_method
    from benchmark.models.arch import SmallCNN

    monkeypatch.setenv(methods.ENV_VAR, str(ROOT / "benchmarks" / "new_methods" / f"{stem}.py"))
    methods.discover()
    try:
        model = SmallCNN().eval()
        x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        assert check_method(name, model, x, torch.tensor([0, 1, 0])) == []
    finally:
        methods.unregister(name)


def test_pairs_alternate_which_grid_runs_first_each_on_a_cold_copy_of_the_models(script, monkeypatch, tmp_path):
    import subprocess

    cache = tmp_path / "cache"
    (cache / "results").mkdir(parents=True)
    (cache / "results" / "entry").write_text("stored")
    (cache / "models").mkdir()
    runs = []

    def grid(root, cache_dir, out, workers, methods, env, tests=None):
        way = "cold" if root == script.ROOT else "ref"
        runs.append((way, (cache_dir / "models").is_dir(), (cache_dir / "results").exists(), tests))
        (cache_dir / "results").mkdir()  # a graded run stores its results
        out.mkdir()
        for name in script.BOARDS:
            (out / name).write_text(f"git `{out.name}`\n{way} board\n")
        return {"ref": 10.0, "cold": 4.0}[way] + len(runs), ""

    monkeypatch.setattr(script, "_grid", grid)
    monkeypatch.setattr(script, "_collected", lambda root, cache, env, methods=None: ["suites/t.py::T::c[M]"])
    monkeypatch.setattr(script, "_ref_seeds", lambda tree, env: ["--bench-model-seeds", "1"])
    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    args = script._arguments(["--same-grid", "--pairs", "3"])
    walls, notes, same = {}, {}, {}
    tests = script._pairs(args, cache, tmp_path, {}, walls, notes, same)
    # ref first in odd pairs, cold first in even ones; every run on the models alone, nothing stored.
    assert [way for way, *_ in runs] == ["ref", "cold", "cold", "ref", "ref", "cold"]
    assert all(models and not stored for _, models, stored, _ in runs)
    # The older commit grades its own grid on one training seed, this checkout exactly its tests on one seed.
    assert {tuple(t) for way, *_, t in runs if way == "ref"} == {("suites/", "--bench-model-seeds", "1")}
    assert tests == ["suites/t.py::T::c[M]", "--bench-model-seeds", "1"]
    assert same == {"ref 1": False, "ref 2": False, "cold 2": True, "ref 3": False, "cold 3": True}
    assert walls == {"ref 1": 11.0, "cold 1": 6.0, "cold 2": 7.0, "ref 2": 14.0, "ref 3": 15.0, "cold 3": 10.0}
    assert script._summary(walls, 3) == ("  cold / ref per pair: 0.500, 0.545, 0.667; median 0.545, range "
                                         "0.500-0.667 over 3 pair(s)")
    assert (cache / "results" / "entry").exists()  # the models cache itself is left as it was


@pytest.mark.parametrize("helps, seeds", [("  --bench-model-seeds=K  train K seeds", ["--bench-model-seeds", "1"]),
                                          ("  --bench-seed=N  the world's seed", [])])
def test_the_older_commit_grades_one_training_seed_where_its_pytest_knows_the_option(script, monkeypatch, helps,
                                                                                      seeds, tmp_path):
    import subprocess

    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, helps, ""))
    assert script._ref_seeds(tmp_path, {}) == seeds


@pytest.mark.parametrize("argv, message", [(["--pairs", "0"], "--pairs must be 1 or more, not 0"),
                                           (["--pairs", "2", "--skip-ref"], "--pairs times the older commit beside")])
def test_pairs_refuses_what_it_cannot_time(script, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        script._arguments(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_adding_a_method_to_the_older_commits_grid_first_grades_that_grid_without_its_tests(script):
    tests = ["suites/test_a.py::T::test_cell[GradientShap-AUC]", "suites/test_a.py::T::test_cell[LayerGradientShap-AUC]",
             "suites/test_method_contract.py::T::test_contract[GradientShap-cnn-biased]", "--bench-model-seeds", "1"]
    assert script._without(tests, "GradientShap") == [tests[1], "--bench-model-seeds", "1"]
    assert script._without(None, "GradientShap") is None


def test_a_commit_git_does_not_know_is_one_line_not_a_traceback(script, tmp_path):
    with pytest.raises(SystemExit, match=r"--ref no-such-commit-5eed: git knows no such commit"):
        with script.worktree("no-such-commit-5eed", tmp_path / "ref"):
            pass
    assert not (tmp_path / "ref").exists()


def test_an_unknown_commit_is_refused_before_any_model_is_built(script, model_builds):
    with pytest.raises(SystemExit, match=r"--ref no-such-commit-5eed: git knows no such commit"):
        script.main(["--ref", "no-such-commit-5eed"])
    assert model_builds == []
