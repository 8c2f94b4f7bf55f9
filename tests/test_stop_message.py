"""The stop message when the biased model misses the shortcut targets: a model that told the classes apart by their
content alone (clean accuracy >= 98%) is told so, with its accuracy and what helps; any other miss keeps the advice of
more images, a larger profile or a more visible mark. Cards are built by hand: nothing trains here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmark import shortcut
from benchmark.models.card import CONTENT_SEPARABLE, SHORTCUT_TARGETS, content_separable, not_learned_message, unlearned

# What a folder of two real-photo classes that differ in content alone gives: every clean image right, no flips.
SEPARABLE = {"clean_accuracy": 1.0, "flip_rate": 0.0, "mean_p_dog_on_flips": 0.12, "n_train": 400,
             "optimiser_steps": 250}
# A faint mark on the procedural data (tests/test_newcomer.py): the model misses the shortcut at a study-like accuracy.
FAINT = {"clean_accuracy": 0.884, "flip_rate": 0.0, "mean_p_dog_on_flips": 0.0, "n_train": 6000,
         "optimiser_steps": 282}


def _message(card: dict) -> str:
    return not_learned_message(card, seed=0, n_train=card["n_train"], steps=card["optimiser_steps"])


def test_content_separable_classes_are_named_with_their_clean_accuracy():
    msg = _message(SEPARABLE)
    assert msg.startswith("the biased model (training seed 0) did not learn the watermark shortcut")
    assert "flip rate >= 80% (got 0)" in msg  # what was measured is still said
    assert "Its clean accuracy is 100.0% (>= 98%; trained 250 optimiser steps on 400 images)" in msg
    assert "the content alone separates the two classes" in msg
    assert "no reason to use the mark" in msg
    # What helps: a task the content cannot solve alone, or fewer steps / a harder split; not more images or a bigger mark.
    assert "classes that look alike" in msg and "--bench-data procedural" in msg and "--bench-data kaggle" in msg
    assert "fewer training steps" in msg and "harder split" in msg
    assert "Try more images per class" not in msg and "--bench-mark 0.06" not in msg
    assert "\n" not in msg  # one line


def test_other_misses_keep_the_more_data_or_bigger_mark_advice():
    msg = _message(FAINT)
    assert "did not learn the watermark shortcut" in msg and "flip rate >= 80% (got 0)" in msg
    assert "clean accuracy 88.4%" in msg
    assert "Try more images per class" in msg and "--bench-mark" in msg  # what tests/test_newcomer.py expects
    assert "content alone" not in msg


@pytest.mark.parametrize(("accuracy", "separable"), [(1.0, True), (CONTENT_SEPARABLE, True), (0.979, False),
                                                     (0.9, False), (float("nan"), False)])
def test_the_bar_is_clean_accuracy_of_98_percent(accuracy, separable):
    card = {**SEPARABLE, "clean_accuracy": accuracy}
    assert content_separable(card) is separable
    assert ("the content alone separates" in _message(card)) is separable


def test_a_model_that_learned_the_shortcut_is_never_called_content_separable():
    # Clean accuracy above the study's range is reported on the card, but it does not stop a model that flips cats.
    learned = {**SEPARABLE, "flip_rate": 0.95, "mean_p_dog_on_flips": 0.97}
    assert "clean_accuracy" in {key for key, *_ in SHORTCUT_TARGETS} and not unlearned(learned)
    assert not content_separable(learned)
    assert shortcut.grid_stop(learned, 50, seed=0) == ""


def test_the_grid_stop_reads_the_card():
    assert "the content alone separates" in shortcut.grid_stop(SEPARABLE, 0, seed=3)
    assert "training seed 3" in shortcut.grid_stop(SEPARABLE, 0, seed=3)


def test_build_stops_with_one_line_and_no_traceback(monkeypatch, capsys, tmp_path):
    """``python -m benchmark build`` on a content-separable world: the session's gate raises, main prints one line."""
    import benchmark.session
    from benchmark import __main__ as cli

    def prepare(profile, options):
        biased = SimpleNamespace(card=SEPARABLE, model=None)
        monkeypatch.setattr(shortcut, "stored_confident_flips", lambda trained, world: [])
        benchmark.session.check_shortcut(biased, None, options.seed)
        raise AssertionError("check_shortcut let a model that did not learn the shortcut through")

    monkeypatch.setattr(benchmark.session, "prepare", prepare)
    assert cli.main(["build", "--profile", "quick", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("error: the biased model (training seed 0) did not learn the watermark shortcut")
    assert "Its clean accuracy is 100.0%" in err and "the content alone separates the two classes" in err
