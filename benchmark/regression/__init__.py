"""Regression checks: baselines, compare mode, pinned weights, shard merging, machine descriptions."""
