"""The one place where Quantus 0.6 is made to run on numpy 2 and configured consistently."""

from __future__ import annotations

import contextlib
import functools
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
from quantus.helpers import asserts  # noqa: E402

__all__ = ["quantus", "per_sample_normalisation", "fast_attribution_asserts"]


def per_sample_normalisation() -> dict:
    """Quantus kwargs that normalise each explanation by its own max |a|, not the batch's.

    Quantus' default divides by one maximum over the whole batch, so a sample's score would depend
    on its batch mates (field notes).
    """
    return {"normalise_func": normalise_by_max, "normalise_func_kwargs": {"normalise_axes": (1, 2, 3)}}


def _assert_attributions(x_batch, a_batch, *, constant_ok: bool = False) -> None:
    # quantus.helpers.asserts.assert_attributions, check for check and message for message, except that "not
    # uniform" is tested with one vectorised comparison instead of a Python set of every value (27 ms per call on
    # 362 maps of 32 px, a fifth of a cheap method's grading time).
    assert type(a_batch) is np.ndarray, "Attributions 'a_batch' should be of type np.ndarray."
    assert np.shape(x_batch)[0] == np.shape(a_batch)[0], (
        "The inputs 'x_batch' and attributions 'a_batch' should include the same number of samples."
        f"{np.shape(x_batch)[0]} != {np.shape(a_batch)[0]}")
    assert np.ndim(x_batch) == np.ndim(a_batch), (
        "The inputs 'x_batch' and attributions 'a_batch' should have the same number of dimensions."
        f"{np.ndim(x_batch)} != {np.ndim(a_batch)}")
    a_shape = [s for s in np.shape(a_batch)[1:] if s != 1]
    x_shape = list(np.shape(x_batch)[1:])
    assert a_shape[0] == x_shape[0] or a_shape[-1] == x_shape[-1], (
        "The dimensions of attribution and input per sample should correspond in either the first or last "
        f"dimensions, but got shapes {a_shape} and {x_shape}")
    assert all(a in x_shape for a in a_shape), (
        f"All attribution dimensions should be included in the input dimensions, but got shapes {a_shape} and {x_shape}")
    assert all(x_shape.index(a) > x_shape.index(a_shape[i]) for a in a_shape for i in range(a_shape.index(a))), (
        "The dimensions of the attribution must correspond to dimensions of the input in the same order, but got "
        f"shapes {a_shape} and {x_shape}")
    if constant_ok:
        # A metric that scores a constant map as collapsed (MetricSpec.collapse) takes a batch of them too: every map
        # of a small batch can go all-zero on a randomised model, which is that outcome, not a broken method.
        return
    assert not np.all(a_batch == 0), (
        "The elements in the attribution vector are all equal to zero, which may cause inconsistent results since "
        "many metrics rely on ordering. Recompute the explanations.")
    assert not np.all(a_batch == 1.0), (
        "The elements in the attribution vector are all equal to one, which may cause inconsistent results since "
        "many metrics rely on ordering. Recompute the explanations.")
    flat = a_batch.reshape(-1)
    # A set of Python floats holds each NaN apart (NaN != NaN), so NaNs count as distinct values there and here.
    assert flat.size > 1 and bool(np.any(flat != flat[0])), (
        "The attributions are uniformly distributed, which may cause inconsistent results since many metrics rely "
        "on ordering.Recompute the explanations.")
    assert not np.all(a_batch < 0.0), "Attributions should not all be less than zero."


@contextlib.contextmanager
def fast_attribution_asserts(*, constant_ok: bool = False):
    """Quantus' attribution asserts, with the uniformity check vectorised (and, with ``constant_ok``, constant maps
    let through to a metric that scores them as collapsed), while inside the block."""
    original = asserts.assert_attributions
    asserts.assert_attributions = functools.partial(_assert_attributions, constant_ok=constant_ok)
    try:
        yield
    finally:
        asserts.assert_attributions = original
