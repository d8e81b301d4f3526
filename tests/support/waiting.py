"""Waiting on a condition with a deadline: poll, never sleep and hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Deadline for anything a test waits on, unless it says otherwise.
WAIT_S = 10.0


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S, step: float = 0.01) -> bool:
    """Poll ``predicate`` until true or the deadline passes; its final value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


async def wait_until_async(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """On an event loop: poll ``predicate`` (letting the loop run) until true; fails, naming
    ``what``, once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
