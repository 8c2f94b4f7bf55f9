"""Sweep reproducibility (issue 31): benchmarks/sweep_repro.py's comparison of two sweeps' detection limits and level
verdicts, on hand-made sweep records, and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "sweep_repro.py"


def _sweep(limits: dict, verdicts: dict, ranges: dict | None = None) -> dict:
    return {"detection_limits": limits, "levels": [{"label": "1.5%", "area": 0.015}, {"label": "4%", "area": 0.04}],
            "detection_limit_ranges": {m: (ranges or {}).get(m, [lim, lim]) for m, lim in limits.items()},
            "methods": {m: {label: {"verdict": v} for label, v in levels.items()} for m, levels in verdicts.items()}}


A = _sweep({"Saliency": "1.5%", "GradCAM": "4%", "Random": None, "AttnLRP": None},
           {"Saliency": {"1.5%": "PASS", "4%": "PASS"}, "GradCAM": {"1.5%": "FAIL", "4%": "PASS"},
            "Random": {"1.5%": "FAIL", "4%": "FAIL"}, "AttnLRP": {"1.5%": "N/A", "4%": "N/A"}})
B = _sweep({"Saliency": "4%", "GradCAM": "4%", "Random": "1.5%", "AttnLRP": None},
           {"Saliency": {"1.5%": "FAIL", "4%": "PASS"}, "GradCAM": {"1.5%": "INCONCLUSIVE", "4%": "PASS"},
            "Random": {"1.5%": "PASS", "4%": "FAIL"}, "AttnLRP": {"1.5%": "N/A", "4%": "N/A"}},
           {"GradCAM": ["1.5%", "4%"]})


def test_limits_and_level_verdicts_are_compared_for_real_methods_only(script):
    result = script.compare(A, B)
    # Random is a control, and AttnLRP applies at no level (N/A on this model): neither limit is counted.
    assert result["methods"] == 2
    assert result["limits_agree"] == 1 and result["limits_differ"] == {"Saliency": ("1.5%", "4%")}
    assert result["pass_fail_flips"] == [("Saliency", "1.5%", "PASS", "FAIL")]
    assert result["inconclusive_moves"] == [("GradCAM", "1.5%", "FAIL", "INCONCLUSIVE")]
    assert result["level_verdicts_kept"] == 2
    # Saliency's decided limits contradict each other; GradCAM's range on B (its 1.5% undecided) holds A's 4%.
    assert result["ranges_equal"] == 0 and result["ranges_contradict"] == {"Saliency": (("1.5%", "1.5%"), ("4%", "4%"))}
    text = script.render(result)
    assert "agree for **1 of 2**" in text and "| Saliency | 1.5% | 4% | 1.5% to 1.5% | 4% to 4% |" in text
    assert "**disjoint for 1**: Saliency" in text


def test_ranges_are_recomputed_from_the_levels_cells_of_a_sweep_recorded_without_them(script):
    from test_sweep import _level

    from benchmark.running.sweep import sweep_record

    outcomes = [_level(0.015, 0.9, {"Saliency": "INCONCLUSIVE"}), _level(0.04, 0.97, {"Saliency": "PASS"})]
    record = sweep_record(outcomes, {})
    expected = script.ranges(record)
    del record["detection_limit_ranges"]
    assert script.ranges(record) == expected == {"Saliency": ("1.5%", "4%")}


def test_compare_mode_exits_by_the_share_of_limits_that_differ(script, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(A))
    b.write_text(json.dumps(B))
    assert script.main(["--compare", str(a), str(b)]) == 1  # 1 of 2 differ: more than 1/16
    assert script.main(["--compare", str(a), str(a)]) == 0
    assert "agree for **2 of 2**" in capsys.readouterr().out


def test_bad_inputs_stop_with_one_line(script, tmp_path, capsys):
    assert script.main(["--compare", str(tmp_path / "missing.json"), str(tmp_path / "missing.json")]) == 2
    assert script.main(["--threads-a", "2", "--threads-b", "2"]) == 2
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert script.main(["--keep", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "Traceback" not in err
