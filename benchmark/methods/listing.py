"""Plain-text table of registered methods (``python -m benchmark.methods.listing``)."""

from __future__ import annotations


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _equivalents(baseline_path) -> tuple[dict[str, list[str]], str]:
    # Methods the committed baseline found to compute the same maps on its pinned model, and where that came from.
    import json
    from pathlib import Path

    from benchmark.redundancy import identical_in_baseline

    path = Path(baseline_path)
    try:
        baseline = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, ""
    same: dict[str, list[str]] = {}
    for p in identical_in_baseline(baseline):
        same.setdefault(p["a"], []).append(f"{p['b']} ({p['agree']}/{p['cells']})")
        same.setdefault(p["b"], []).append(f"{p['a']} ({p['agree']}/{p['cells']})")
    return same, (f"same maps as: per-image scores equal on most metrics in {path} (profile "
                  f"{baseline.get('profile')}, seed {baseline.get('seed')}; equal metrics/shared metrics)")


def format_method_table(level: str = "cheap", baseline_path: str = "reports/baseline.json") -> str:
    """One row per registered method: name, family, capability flags, default batch, the methods the baseline
    found to compute the same maps, and ``level`` params."""
    from benchmark.methods import all_methods

    same, source = _equivalents(baseline_path)
    rows = [("method", "family", "capabilities", "batch", "same maps as", f"{level} params")]
    for name, cls in all_methods().items():
        rows.append(
            (
                name,
                cls.family,
                ",".join(cls.capabilities.flags()),
                str(cls.batch_size),
                ", ".join(same.get(name, [])) or "-",
                _params(cls.resolve_params(level)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(row[-1]))
    lines.append(f"{len(rows) - 1} methods" + (f"; {source}" if source else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_method_table())
