"""Exceptions that tell the user what went wrong and how to fix it."""

from __future__ import annotations

import difflib


class BenchmarkError(Exception):
    """Base class for every error shortcut-bench raises on purpose."""


class DataError(BenchmarkError, ValueError):
    """A dataset folder, image or data option is unusable; the message names the file and the fix."""


class ConfigError(BenchmarkError, ValueError):
    """An option, profile, method or metric name, or threshold is invalid."""


class CacheError(BenchmarkError):
    """A cached artefact is corrupt or belongs to another configuration."""


class ShortcutNotLearned(BenchmarkError):
    """The biased model missed the shortcut targets: no explanation can be graded against it."""


def did_you_mean(name: str, choices) -> str:
    """Return a ' Did you mean X?' suffix for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
