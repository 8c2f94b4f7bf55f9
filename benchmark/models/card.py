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
    """"shortcut targets met" or "shortcut targets MISSED: ..." for a biased model's card, then any reported-only
    target it lies outside."""
    missed, outside = unlearned(card), missed_targets(card)
    line = "shortcut targets " + ("met" if not missed else "MISSED: " + ", ".join(missed))
    # Clean accuracy outside the study's band is worth saying, but it is no miss: the shortcut was learned or not.
    reported = [m for m in outside if m not in missed]
    return line + ("; outside the study's range, reported, not required: " + ", ".join(reported) if reported else "")


# The targets that decide whether a world can be graded at all: a model that does not flip stamped cats has no
# shortcut for an explanation to find. Clean accuracy is reported against its range, but a world whose classes are
# easier or harder than the study's still has a shortcut to find.
REQUIRED_TARGETS = ("flip_rate", "mean_p_dog_on_flips")


def unlearned(card: dict[str, Any]) -> list[str]:
    """The required shortcut targets a biased model's card misses (empty: the world can be graded)."""
    return [f"{text} (got {card.get(key, float('nan')):.3g})" for key, low, high, text in SHORTCUT_TARGETS
            if key in REQUIRED_TARGETS and not low <= card.get(key, float("nan")) <= high]


# A biased model this accurate on clean images that still misses the shortcut targets solved the task from the content
# alone: the two classes are separable without the mark, so the model had no reason to use it. More images or a bigger
# mark do not help there; a task the content cannot solve alone does.
CONTENT_SEPARABLE = 0.98


def content_separable(card: dict[str, Any]) -> bool:
    """Whether a biased model that missed the shortcut targets told the classes apart by their content alone."""
    return bool(unlearned(card)) and card.get("clean_accuracy", float("nan")) >= CONTENT_SEPARABLE


def not_learned_message(card: dict[str, Any], *, seed: int, n_train: int, steps: int | None = None) -> str:
    """Why a run stops before grading: what the biased model measured, why it is not enough, what to try."""
    missed = unlearned(card)
    accuracy = card.get("clean_accuracy", float("nan"))
    head = (f"the biased model (training seed {seed}) did not learn the watermark shortcut, so there is nothing for an "
            f"explanation to find and nothing was graded: {'; '.join(missed)}")
    if content_separable(card):
        budget = f"{steps} optimiser steps on {n_train} images" if steps else f"{n_train} images"
        return (f"{head}. Its clean accuracy is {accuracy:.1%} (>= {CONTENT_SEPARABLE:.0%}; trained {budget}): the "
                "content alone separates the two classes, so the model had no reason to use the mark, and more images "
                "or a bigger mark will not change that. A model learns the shortcut when the content cannot solve the "
                "task on its own: use two classes that look alike (the procedural data, --bench-data procedural, or "
                "Kaggle cats vs dogs, --bench-data kaggle), or make the content harder to learn (fewer training steps "
                "with a smaller --bench-profile, or a harder split: two classes the model cannot tell apart at a "
                "glance).")
    trained = f"; it trained {steps} optimiser steps on {n_train} images" if steps else f" on {n_train} images"
    return (f"{head}; clean accuracy {accuracy:.1%}{trained}. Try more images per class, a larger profile "
            "(--bench-profile standard trains longer at 64 px), or a more visible watermark (--bench-mark 0.06, a "
            "mark covering 6% of the image).")
