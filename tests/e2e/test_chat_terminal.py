"""``switchboard chat`` on a real terminal, read as a person reads it: the pseudo-terminal's
output is played into a terminal emulator (pyte) and the screen is checked, not the byte
stream (where a line erased by the prompt still appears)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from support.servers import ServerThread
from support.terminals import spawn_chat
from support.waiting import WAIT_S
from switchboard.client import Client
from switchboard.protocol import Message

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

COLUMNS, ROWS = 120, 30


class Screen:
    """What the terminal shows: everything the child wrote, played into pyte."""

    def __init__(self, child: Any) -> None:
        self.child = child
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.Stream(self.screen)
        self._fed = 0

    def lines(self) -> list[str]:
        shown = str(self.child.logfile_read.getvalue())
        self.stream.feed(shown[self._fed :])
        self._fed = len(shown)
        return [line.rstrip() for line in self.screen.display]

    def wait_for(self, predicate: Any, what: str) -> list[str]:
        """The screen once ``predicate(lines)`` holds (reading the child meanwhile)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            lines = self.lines()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"never on screen: {what}\n" + "\n".join(lines))
            with contextlib.suppress(pexpect.TIMEOUT):
                self.child.read_nonblocking(4096, timeout=0.1)


def test_your_own_line_shows_once_stamped(server: ServerThread, tmp_path: Path) -> None:
    child = spawn_chat(server.port, "bob", tmp_path)
    screen = Screen(child)
    try:
        with Client("127.0.0.1", server.port, nick="alice", timeout=WAIT_S) as alice:
            alice.join("lobby")
            child.expect_exact("you joined lobby")
            child.expect_exact("] bob>")
            child.send("hello from bob 你好\r")
            deadline = time.monotonic() + WAIT_S
            while True:  # the server has it: the stamped line follows the OK
                frame = alice.next_indication(timeout=max(0.0, deadline - time.monotonic()))
                assert frame is not None, "alice never got bob's line"
                if isinstance(frame, Message):
                    break
            lines = screen.wait_for(
                lambda ls: any("bob(#" in ln and "hello from bob" in ln for ln in ls),
                "the stamped line",
            )
            # Let anything else in flight reach the screen: the next prompt being drawn.
            child.send("/name\r")
            lines = screen.wait_for(
                lambda ls: any("Server name: test-server" in ln for ln in ls), "/name's answer"
            )
            said = [ln for ln in lines if "hello from bob" in ln]
            assert len(said) == 1, "\n".join(lines)
            assert said[0].startswith("[") and "bob(#" in said[0]  # the stamped one
            assert not any(ln.startswith("[lobby] bob> /name") for ln in lines[:-1])
            child.send("/quit\r")
            child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        if child.isalive():
            child.terminate(force=True)
