"""Plain-text table of registered methods (``python -m benchmark.methods.listing``)."""

from __future__ import annotations

from benchmark.methods import all_methods


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def format_method_table(level: str = "cheap", same: dict[str, list[str]] | None = None, source: str = "") -> str:
    """One row per registered method: name, family, capability flags, default batch, the methods a run found to
    compute the same maps (``same``, found in ``source``), and ``level`` params."""
    same = same or {}
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
