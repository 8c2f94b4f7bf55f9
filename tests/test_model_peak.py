"""benchmarks/model_peak.py: every way the grid runs a model, at each batch size, priced against a matrix product."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "model_peak.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_script_prices_each_way_and_size_against_the_peak(script, capsys):
    script.main(["--repeats", "1", "--sizes", "2,4", "--rows", "4", "--archs", "cnn", "--matmul", "64"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("  cnn ")]
    assert [(r[1], r[2]) for r in rows] == [(w, s) for w in ("plain", "fused", "gradient") for s in ("2", "4")]
    mflop = {r[1]: float(r[4]) for r in rows}
    # The fused copy runs the plain model's convolutions; an input gradient runs each layer's product once more.
    assert mflop["fused"] == mflop["plain"] > 0 and mflop["gradient"] == pytest.approx(2 * mflop["plain"], rel=0.05)
    assert all(float(r[3]) > 0 and r[6].endswith("%") for r in rows) and "GFLOP/s (fastest of 3)" in out
