"""The shortcut targets a biased model's card must meet, kept free of torch so reports can read them."""

from __future__ import annotations

from typing import Any

# What a biased model must show to count as having learned the shortcut the way the original study's did (89%
# accuracy, flips at p(dog) near 0.99): (card field, lowest, highest, how it is written).
SHORTCUT_TARGETS = (
    ("flip_rate", 0.80, 1.0, "flip rate >= 80%"),
    ("mean_p_dog_on_flips", 0.90, 1.0, "mean p(dog) on flips >= 0.9"),
    ("clean_accuracy", 0.85, 0.92, "clean accuracy 85-92%"),
)


def missed_targets(card: dict[str, Any]) -> list[str]:
    """The shortcut targets a biased model's card misses (empty: it learned the shortcut as the study's did)."""
    return [f"{text} (got {card.get(key, float('nan')):.3g})" for key, low, high, text in SHORTCUT_TARGETS
            if not low <= card.get(key, float("nan")) <= high]


def targets_line(card: dict[str, Any]) -> str:
    """"shortcut targets met" or "shortcut targets MISSED: ..." for a biased model's card."""
    missed = missed_targets(card)
    return "shortcut targets " + ("met" if not missed else "MISSED: " + ", ".join(missed))


# The targets that decide whether a world can be graded at all: a model that does not flip stamped cats has no
# shortcut for an explanation to find. Clean accuracy is reported against its range, but a world whose classes are
# easier or harder than the study's still has a shortcut to find.
REQUIRED_TARGETS = ("flip_rate", "mean_p_dog_on_flips")


def unlearned(card: dict[str, Any]) -> list[str]:
    """The required shortcut targets a biased model's card misses (empty: the world can be graded)."""
    return [f"{text} (got {card.get(key, float('nan')):.3g})" for key, low, high, text in SHORTCUT_TARGETS
            if key in REQUIRED_TARGETS and not low <= card.get(key, float("nan")) <= high]


def not_learned_message(card: dict[str, Any], *, seed: int, n_train: int, steps: int | None = None) -> str:
    """Why a run stops before grading: what the biased model measured, why it is not enough, what to try."""
    missed = unlearned(card)
    trained = f"; it trained {steps} optimiser steps on {n_train} images" if steps else f" on {n_train} images"
    return (f"the biased model (training seed {seed}) did not learn the watermark shortcut, so there is nothing for an "
            f"explanation to find and nothing was graded: {'; '.join(missed)}; clean accuracy "
            f"{card.get('clean_accuracy', float('nan')):.1%}{trained}. Try more images per class, a larger profile "
            "(--bench-profile standard trains longer at 64 px), or a more visible watermark (--bench-mark 0.06, a "
            "mark covering 6% of the image).")
