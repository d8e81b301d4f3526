"""The one event-loop runner: the server, the lab services and the benchmark run on it, so
that what `make bench` measures runs on the loop production runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    """The loop ``run`` uses: "uvloop" when it is importable, else "asyncio"."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop if it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    # A loop factory, not set_event_loop_policy: nothing global changes for code (tests)
    # that starts loops of its own in the same process.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result: T = runner.run(main)
        return result
