"""`python -m benchmark grade` runs the grid without pytest: the same cells through the same grade_cell, the same
reports, byte for byte, and bad input ends in one line."""

from __future__ import annotations

SUBSET = "Saliency,GradCAM,Random,Sobel,Oracle"


def test_grade_writes_the_leaderboards_pytest_suites_writes(quick_cache, tmp_path, run_child):
    cli = run_child.bench("grade", "--cache-dir", quick_cache, "--reports-dir", tmp_path / "cli", "--methods", SUBSET,
                          "--properties", "watermark_localisation,randomisation")
    assert cli.returncode in (0, 1), cli.stdout[-3000:] + cli.stderr[-3000:]  # 1: a real method failed a cell
    suites = run_child.pytest("suites/", "-q", "--bench-cache-dir", quick_cache, "--bench-reports-dir",
                              tmp_path / "pytest", "--bench-methods", SUBSET, "-k", "localisation or randomisation")
    assert suites.returncode in (0, 1), suites.stdout[-3000:] + suites.stderr[-3000:]
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "pytest" / name).read_bytes(), name
    assert (tmp_path / "cli" / "index.html").is_file() and (tmp_path / "cli" / "flipped_examples.png").is_file()
    assert "rank" in cli.stdout and "reports:" in cli.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path, run_child):
    for args, says in ((["--methods", "Salency"], "--methods: unknown method(s) ['Salency']. Did you mean"), (["--properties", "nope"], "unknown ['nope']"),
                       (["--threshold", "AUC=7"], "--threshold: Threshold 7.0 for AUC is invalid"), (["--seed", "-1"], "seed")):
        proc = run_child.bench("grade", "--cache-dir", tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        assert says in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
