"""benchmarks/vit_step.py (issue 29's training-step premise): it times the ways it names, splits the step in use, and
refuses bad options with a usage error."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "vit_step.py"


def test_times_each_way_and_splits_the_step_in_use(script, capsys):
    assert script.main(["--shape", "2x16", "--steps", "1", "--rounds", "2", "--ways", "sdpa,plain"]) == 0
    out = capsys.readouterr().out
    assert "quick ViT 2x16 at 32 px, batch 128" in out
    assert out.count("round ") == 4  # two ways, two rounds
    assert "1.00x sdpa's" in out and "best plain" in out
    for part in ("linear layers:", "attention kernel:", "everything else", "if the linear layers took no time"):
        assert part in out, part


def test_the_linear_flops_are_counted_from_the_model(script):
    import dataclasses

    from benchmark.profiles import resolve_profile, with_arch

    profile = dataclasses.replace(with_arch(resolve_profile("quick")[0], "vit"), depth=1, width=16)
    ms = script.split(script.Step(profile, "sdpa"), 1)
    tokens, batch = (profile.image_size // 4) ** 2, profile.batch_size
    # qkv (16 -> 48), proj (16 -> 16), MLP (16 -> 32 -> 16) and the head (16 -> 2): forward, then 2x for backward.
    forward = 2 * batch * (tokens * 16 * (48 + 16 + 32 + 32) + 16 * 2)
    assert ms["linear_flops"] == pytest.approx(3 * forward, rel=0.02)
    assert ms["linear"] > 0 and ms["attention"] > 0 and ms["other"] > 0


@pytest.mark.parametrize("argv", [["--ways", "plain,sdpa"], ["--ways", "sdpa,fast"], ["--steps", "0"],
                                  ["--shape", "four"]])
def test_bad_options_are_usage_errors(script, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        script.main(argv)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err
