"""Marks this folder as shortcut-bench suites: the plugin builds data and models before the run."""

SHORTCUT_BENCH_SUITES = True
