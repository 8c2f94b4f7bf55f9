"""Running a grid: options, the run context, worlds, jobs and executors, the result store, compare mode, shard
merging, the collector and the sweep."""
