"""Running a grid: options, the run context, worlds, jobs and executors, the store, the collector."""
