"""benchmarks/chunk_size.py: every named method's maps at each chunk size, with their bits compared to the first."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "chunk_size.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_script_prints_each_size_and_tells_a_map_that_moves(script, capsys):
    script.main(["--images", "6", "--repeats", "1", "--sizes", "4,2", "--archs", "cnn",
                 "--methods", "Saliency,GradientShap"])
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  cnn ")}
    assert set(rows) == {"Saliency", "GradientShap"}
    assert rows["Saliency"].count("same") == 2  # draws nothing: any chunk gives its bits
    assert "moved" in rows["GradientShap"]  # draws its baselines per chunk: its chunk size is not a speed setting


def test_the_script_refuses_an_unknown_method(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--methods", "Salency"])
    assert "unknown method(s) Salency" in capsys.readouterr().err
