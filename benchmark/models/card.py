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
