"""How the lab services run: on the one event-loop runner (``switchboard.eventloop.run``,
re-exported here), SIGINT/SIGTERM to stop, stdin lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable

from switchboard.eventloop import run

__all__ = ["FdLineReader", "read_lines_in_thread", "run", "stop_on_signals"]


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT or SIGTERM (where the loop supports signal handlers)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


class FdLineReader:
    """``readline()`` over a raw file descriptor, holding no Python-level lock while blocked."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self._eof = False

    def readline(self) -> bytes:
        """The next line with its newline, the unterminated rest at EOF, or b"" at EOF."""
        scanned = 0
        while True:
            newline = self._buffer.find(b"\n", scanned)
            if newline >= 0:
                line = bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                return line
            if self._eof:
                rest = bytes(self._buffer)
                self._buffer.clear()
                return rest
            scanned = len(self._buffer)
            chunk = os.read(self.fd, 65536)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True


def read_lines_in_thread(fd: int, on_line: Callable[[bytes], None]) -> threading.Thread:
    """Call ``on_line`` (from a daemon thread) with each line read from ``fd``, then ``b""``.

    A read error counts as end of input.  ``on_line`` must be thread-safe, e.g. a wrapper of
    ``loop.call_soon_threadsafe``.
    """

    def pump() -> None:
        reader = FdLineReader(fd)
        while True:
            try:
                line = reader.readline()
            except OSError:
                line = b""
            try:
                on_line(line)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                return
            if not line:
                return

    thread = threading.Thread(target=pump, name="stdin", daemon=True)
    thread.start()
    return thread
