"""How a cell is computed and judged: properties and metrics, Quantus adapters, memos, statistics, verdicts."""
