"""The one place where Quantus 0.6 is made to run on numpy 2 and configured consistently."""

from __future__ import annotations

import warnings

import numpy as np

# Quantus 0.6 still calls np.trapz and np.NaN, both removed in numpy 2 (field notes).
if not hasattr(np, "trapz"):
    np.trapz = np.trapezoid  # type: ignore[attr-defined]
if not hasattr(np, "NaN"):
    np.NaN = np.nan  # type: ignore[attr-defined]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import quantus  # noqa: E402

from quantus.functions.normalise_func import normalise_by_max  # noqa: E402

__all__ = ["quantus", "per_sample_normalisation"]


def per_sample_normalisation() -> dict:
    """Quantus kwargs that normalise each explanation by its own max |a|, not the batch's.

    Quantus' default divides by one maximum over the whole batch, so a sample's score would depend
    on its batch mates (field notes).
    """
    return {"normalise_func": normalise_by_max, "normalise_func_kwargs": {"normalise_axes": (1, 2, 3)}}
