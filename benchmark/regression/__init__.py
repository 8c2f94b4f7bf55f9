"""Regression checks: baselines (record, compare, update) and the machine descriptions they compare."""
