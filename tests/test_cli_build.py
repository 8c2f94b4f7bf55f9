"""``python -m benchmark build`` without training: its cache folder follows pytest's rule (--cache-dir, else
$SHORTCUT_BENCH_CACHE, else the current folder), and its help names the three model arms."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmark import __main__ as cli


@pytest.fixture
def prepared(monkeypatch):
    """Replace ``benchmark.session.prepare`` (which builds the world and trains) by a recorder; returns its calls."""
    import benchmark.session

    calls = []

    def fake_prepare(profile, options):
        calls.append(options)
        model = SimpleNamespace(header_line=lambda: "cnn, test", card={"flip_rate": 1.0})
        return SimpleNamespace(world=SimpleNamespace(summary=lambda: "a world"),
                               arm_models=lambda: {"biased": model, "control": model, "absent": model})

    monkeypatch.setattr(benchmark.session, "prepare", fake_prepare)
    return calls


def _build(*argv: str) -> int:
    return cli._build(cli._parser().parse_args(["build", "--profile", "quick", *argv]))


def test_build_cache_dir_defaults_to_the_environment_then_the_current_folder(prepared, monkeypatch, tmp_path):
    assert cli._parser().parse_args(["build"]).cache_dir is None
    monkeypatch.setenv("SHORTCUT_BENCH_CACHE", str(tmp_path / "env-cache"))
    assert _build() == 0
    assert prepared[-1].cache_root == tmp_path / "env-cache"
    # An explicit --cache-dir wins over the environment, as --bench-cache-dir does under pytest.
    assert _build("--cache-dir", str(tmp_path / "flag")) == 0
    assert prepared[-1].cache_root == tmp_path / "flag"
    monkeypatch.delenv("SHORTCUT_BENCH_CACHE")
    assert _build() == 0
    assert prepared[-1].cache_root == Path(".")


def test_build_prints_every_arm(prepared, capsys):
    assert _build("--cache-dir", ".") == 0
    out = capsys.readouterr().out
    assert all(f"{arm}: cnn, test" in out for arm in ("biased", "control", "absent"))


def test_an_unusable_environment_cache_is_named(prepared, monkeypatch, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SHORTCUT_BENCH_CACHE", str(tmp_path / "a-file"))
    assert cli.main(["build", "--profile", "quick"]) == 2
    assert not prepared  # refused before building anything
    assert "error: $SHORTCUT_BENCH_CACHE" in capsys.readouterr().err


def _help(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit):
        cli._parser().parse_args([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_build_help_names_the_three_arms_and_the_cache_default(capsys):
    for text in (_help(capsys=capsys), _help("build", capsys=capsys)):
        assert "train both models" not in text
        assert "three model arms (biased, control, absent; K of each with --model-seeds K)" in text
    assert "(default: $SHORTCUT_BENCH_CACHE, else the current folder)" in _help("build", capsys=capsys)
