"""Per-cell wall-clock limit: SIGALRM in the main thread, a warning and no limit where signals are unavailable.

The limit interrupts Python code (and ``time.sleep``) but not a single long C call (one convolution),
which finishes first. :func:`shielded` marks code that must not be interrupted halfway (restoring a
model after a method ran); an alarm that arrives inside it is raised when the block ends.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator

from benchmark.errors import ConfigError

# Every timeout message starts so: a result that says it depends on the machine's speed, not only on its inputs.
TIMEOUT_TEXT = "exceeded the per-cell time limit"


class CellTimeout(BaseException):
    """A cell ran past its time limit.

    A BaseException, like KeyboardInterrupt, so that a method's own ``except Exception`` cannot swallow
    it and keep the run waiting; the grader catches it explicitly and turns it into an ERROR cell.
    """

    def __init__(self, seconds: float, what: str):
        super().__init__(f"{TIMEOUT_TEXT} of {seconds:g} s ({what})")
        self.seconds = seconds
        self.what = what


class TimeLimitUnavailable(UserWarning):
    """The per-cell time limit cannot be enforced here (no SIGALRM, or not the main thread)."""


_state = threading.local()


def _shield_depth() -> int:
    return getattr(_state, "shield", 0)


def check_timeout(value, where: str = "cell timeout") -> float | None:
    """A validated limit in seconds (0 = no limit, None = not given); ConfigError naming ``where`` otherwise."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number of seconds (0 = no limit), got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{where} must be a finite number of seconds >= 0 (0 = no limit), got {value!r}")
    return seconds


def available() -> bool:
    """Whether :func:`time_limit` can enforce a limit in the calling thread."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise :class:`CellTimeout` in the block once ``seconds`` have passed (None: no limit).

    An outer SIGALRM timer (e.g. pytest-timeout's) is suspended and re-armed with its remaining time.
    """
    if not seconds:
        yield
        return
    if not available():
        warnings.warn(f"the per-cell time limit of {seconds:g} s is not enforced here (needs SIGALRM in the main "
                      "thread); a hanging method will hang the run", TimeLimitUnavailable, stacklevel=3)
        yield
        return
    def on_alarm(signum, frame):
        if _shield_depth():
            _state.pending = CellTimeout(seconds, what)  # raised when the shielded block ends
            return
        raise CellTimeout(seconds, what)

    started = time.monotonic()
    outer_remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_remaining:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer_remaining - (time.monotonic() - started)))


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Defer a :class:`CellTimeout` that arrives inside the block until the block has finished."""
    _state.shield = _shield_depth() + 1
    try:
        yield
    finally:
        _state.shield -= 1
        pending = getattr(_state, "pending", None)
        if pending is not None and not _state.shield:
            _state.pending = None
            raise pending
