"""A heartbeat on the terminal while grading: a line whenever no cell has finished for a while."""

from __future__ import annotations

import threading
import time
from typing import TextIO

QUIET_S = 25.0  # pytest's own progress ticks once per finished test; past this, say that the run is alive


class Heartbeat:
    """Writes "still grading: k of n cells done" when no test has finished for ``quiet_s`` seconds."""

    def __init__(self, stream: TextIO, total: int, *, quiet_s: float = QUIET_S, poll_s: float = 1.0,
                 owns_stream: bool = False):
        self.stream = stream
        self.total = total
        self.quiet_s = quiet_s
        self.poll_s = poll_s
        self.owns_stream = owns_stream
        self.done = 0
        self._tick = self._said = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shortcut-bench-heartbeat", daemon=True)

    @classmethod
    def on_terminal(cls, total: int, **kwargs) -> Heartbeat | None:
        """A heartbeat writing to the controlling terminal (bypassing pytest's output capture), or None without one."""
        try:
            tty = open("/dev/tty", "w", encoding="utf-8")  # noqa: SIM115 - closed by stop()
        except OSError:
            return None  # CI logs and pipes: pytest's own progress is all they get
        return cls(tty, total, owns_stream=True, **kwargs)

    def start(self) -> Heartbeat:
        """Begin watching."""
        self._thread.start()
        return self

    def tick(self) -> None:
        """One test finished."""
        self.done += 1
        self._tick = time.monotonic()

    def stop(self) -> None:
        """Stop watching and release the terminal."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.owns_stream:
            self.stream.close()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            now = time.monotonic()
            if now - max(self._tick, self._said) >= self.quiet_s:
                self.stream.write(f"\nshortcut-bench: still grading, {self.done} of {self.total} tests done "
                                  f"({now - self._tick:.0f} s since the last one finished)\n")
                self.stream.flush()
                self._said = now
