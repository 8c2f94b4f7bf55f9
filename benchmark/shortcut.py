"""The one rule for whether a biased model can be graded: it learned the shortcut, and flips enough cats confidently."""

from __future__ import annotations

import numpy as np

from benchmark.data import World
from benchmark.models.card import not_learned_message, unlearned
from benchmark.models.train import CONFIDENT_FLIP, TrainedModel, flipped_indices, stored_flips

# Fewest confidently flipped test cats a run grades: below it no per-image statistic is worth a verdict.
MIN_SAMPLES = 5
# The strength sweep's weaker bar: a level is graded once its biased model flips half the stamped cats (the grid
# asks for the model card's full targets, see benchmark.models.card.SHORTCUT_TARGETS).
LEARNED_FLIP_RATE = 0.5

__all__ = ["CONFIDENT_FLIP", "LEARNED_FLIP_RATE", "MIN_SAMPLES", "confident_flips", "grid_stop", "level_exclusion",
           "stored_confident_flips", "too_few"]


def confident_flips(model, world: World) -> np.ndarray:
    """Test positions of the cats ``model`` calls "cat" clean and "dog" with p(dog) >= CONFIDENT_FLIP once stamped."""
    return flipped_indices(model, world, CONFIDENT_FLIP)


def stored_confident_flips(trained: TrainedModel, world: World) -> np.ndarray:
    """:func:`confident_flips` of a trained model, kept in the world's cache folder between runs and processes."""
    return stored_flips(trained, world, CONFIDENT_FLIP)


def too_few(n: int, seed: int | None = None) -> str:
    """Why ``n`` confident flips cannot be graded ("" when they can)."""
    if n >= MIN_SAMPLES:
        return ""
    which = "" if seed is None else f" (training seed {seed})"
    return (f"The biased model{which} flipped only {n} test cats to 'dog' with p(dog) >= {CONFIDENT_FLIP:g} (need "
            f"{MIN_SAMPLES}): too few to grade. Use more test images (more photos per class), a larger profile or a "
            "more visible watermark.")


def grid_stop(card: dict, n_flipped: int, *, seed: int) -> str:
    """Why the grid stops before grading a biased model ("" when it can be graded): card targets, then flip count."""
    if unlearned(card):
        return not_learned_message(card, seed=seed, n_train=card.get("n_train", 0), steps=card.get("optimiser_steps"))
    return too_few(n_flipped, seed)


def level_exclusion(card: dict, which: str = "") -> str:
    """Why a sweep level's biased model is excluded by the flip-rate bar ("" when it learned); ``which`` names it."""
    rate = float(card.get("flip_rate", 0.0))
    if rate >= LEARNED_FLIP_RATE:
        return ""
    return (f"the biased model{which} flipped {card.get('flip_rate', 0):.0%} of cats (< {LEARNED_FLIP_RATE:.0%}): "
            "it did not learn the shortcut")
