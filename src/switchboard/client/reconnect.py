"""Reconnecting after a lost connection: capped exponential back-off with jitter, and a loop
that retries an attempt until it succeeds, gives up, or is told to stop.

No socket here: the attempt is the caller's function (connect, take the nickname, rejoin the
rooms), so the same loop serves the blocking client's commands and can be tested with a
fake clock-free attempt.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from switchboard import defaults

from .errors import AuthError, SwitchboardError

T = TypeVar("T")


class Backoff:
    """Delays before each reconnection attempt: ``initial`` doubling up to ``cap``, each
    jittered to between half and all of itself ("equal jitter"), none past ``give_up_s``
    after the first; then ``next_delay`` returns None."""

    def __init__(
        self,
        *,
        initial: float = defaults.RECONNECT_INITIAL_S,
        cap: float = defaults.RECONNECT_MAX_S,
        give_up_s: float = defaults.RECONNECT_GIVE_UP_S,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.give_up_s = give_up_s
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self, elapsed: float) -> float | None:
        """The wait before the next attempt, ``elapsed`` seconds after the connection was
        lost; None once ``give_up_s`` has passed."""
        left = self.give_up_s - elapsed
        if left <= 0:
            return None
        base = min(self.cap, self.initial * 2.0**self.attempts)
        self.attempts += 1
        jittered: float = base / 2 + self._rng.uniform(0, base / 2)
        return min(left, jittered)


def retry(
    attempt: Callable[[], T],
    backoff: Backoff,
    *,
    on_wait: Callable[[float, str | None], None],
    stop: threading.Event | None = None,
) -> T | None:
    """``attempt()`` after each of ``backoff``'s delays until it returns; None when the
    back-off gives up, ``stop`` is set, or the server refuses our token (retrying cannot
    help).  ``on_wait(delay, error)`` is told of each wait and why the last attempt failed
    (None before the first)."""
    stop = stop or threading.Event()
    start = time.monotonic()
    error: str | None = None
    while True:
        delay = backoff.next_delay(time.monotonic() - start)
        if delay is None:
            return None
        on_wait(delay, error)
        if stop.wait(delay):
            return None
        try:
            return attempt()
        except AuthError:
            raise
        except SwitchboardError as exc:
            error = str(exc)


__all__ = ["Backoff", "retry"]
