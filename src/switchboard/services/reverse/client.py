"""The lab's reversal client session: lines out, answers in, over one connected socket.

It reports and returns; it prints nothing.  Each answer goes to ``on_answer`` (the CLI
prints ``Server: <reply>``), a line too long to send to ``on_unsent``; ``run_piped`` and
``run_terminal`` return how the session ended (``Ending``), which ``cli.reverse`` turns
into what people see and the exit code.

On a terminal (``run_terminal``): a line editor (``LineReader``, prompt_toolkit in the CLI)
asks for each line, and the next one is asked once the answer is in (the answer is counted
once ``on_answer`` returned, so the next prompt is drawn after it).  ``bye``, or Escape
pressed alone, ends the session; Ctrl-D too; Ctrl-C ends the program.

With stdin piped (``run_piped``): lines are sent as fast as they are read; at end of input
the session half-closes the connection and waits for the remaining answers.  A daemon thread
reads stdin (a blocked read cannot be interrupted, and a daemon thread does not keep the
process alive); the calling thread reads the socket.  The thread reads the file descriptor
with ``os.read``, not through ``sys.stdin.buffer``: a daemon thread blocked inside a
buffered reader's lock makes the interpreter abort at exit.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from switchboard import defaults
from switchboard.services.runtime import FdLineReader

from .core import ERROR_PREFIX, REFUSALS, is_goodbye


class Ending(enum.Enum):
    """How a session ended."""

    #: we ended it: bye, Escape, Ctrl-D, end of piped input
    BY_US = "by us"
    #: the server turned us away at once (full, shutting down): ``refusal`` says why
    TURNED_AWAY = "turned away"
    #: the server ended the session (idle timeout, shutdown) or the connection was lost
    BY_SERVER = "by the server"
    #: Ctrl-C at the prompt
    INTERRUPTED = "interrupted"


class LineReader(Protocol):
    """A terminal line editor (``cli.terminal.LinePrompt``)."""

    def read(self, message: str) -> str:
        """The typed line; ``EOFError`` at Ctrl-D or after ``interrupt``, ``KeyboardInterrupt``
        at Ctrl-C."""

    def interrupt(self) -> None:
        """From any thread: end the prompt shown now, or the next one, with ``EOFError``."""


@dataclass
class ReverseClient:
    """One session against a reversal server over a connected socket.

    ``on_answer(text)`` gets each answer (decoded, invalid UTF-8 replaced), from the thread
    that reads the socket; ``on_unsent(size, limit)`` a line longer than ``max_line`` bytes,
    which is not sent.  ``refusal`` is the server's reason after ``Ending.TURNED_AWAY``.
    """

    sock: socket.socket
    on_answer: Callable[[str], None]
    on_unsent: Callable[[int, int], None]
    max_line: int = defaults.REVERSE_MAX_LINE
    refusal: str | None = None
    _ending: threading.Event = field(default_factory=threading.Event)
    #: Counts of lines sent and answers received, and the end of the connection, guarded
    #: by one condition: the terminal front end waits on it for each answer.
    _progress: threading.Condition = field(default_factory=threading.Condition)
    _sent: int = 0
    _answers: int = 0
    _closed: bool = False

    # --- the two front ends ----------------------------------------------------------------

    def run_piped(self, stdin_fd: int) -> Ending:
        """Lines from ``stdin_fd`` (a pipe or file) until its end; how the session ended."""
        threading.Thread(
            target=self._send_piped, args=(stdin_fd,), name="stdin", daemon=True
        ).start()
        self._receive(on_close=None)
        return self._outcome()

    def run_terminal(self, reader: LineReader, prompt: str) -> Ending:
        """Lines typed at ``prompt`` on the terminal; how the session ended."""
        receiver = threading.Thread(
            target=self._receive, args=(reader.interrupt,), name="receiver", daemon=True
        )
        receiver.start()
        while True:
            try:
                line = reader.read(prompt)
            except EOFError:
                if self._is_closed():
                    break  # the server ended the session under the prompt
                self._ending.set()  # Ctrl-D: as the end of piped input
                self._shutdown_write()
                receiver.join(defaults.REVERSE_CLOSE_GRACE_S)
                return Ending.BY_US
            except KeyboardInterrupt:
                self._ending.set()
                return Ending.INTERRUPTED
            data = line.encode("utf-8", "surrogateescape")
            if not self._send_line(data):
                continue
            if is_goodbye(data):
                receiver.join(defaults.REVERSE_CLOSE_GRACE_S)
                return Ending.BY_US
            with self._progress:
                self._progress.wait_for(lambda: self._answers >= self._sent or self._closed)
            if self._is_closed():
                break
        receiver.join(defaults.REVERSE_CLOSE_GRACE_S)
        return self._outcome()

    # --- the connection ----------------------------------------------------------------------

    def _receive(self, on_close: Callable[[], None] | None) -> None:
        reader = self.sock.makefile("rb")
        try:
            while True:
                try:
                    raw = reader.readline()
                except OSError:
                    raw = b""
                if not raw:
                    break
                text = raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace")
                with self._progress:
                    # The server turns a connection away at once, before reading a line: a
                    # refusal can only be the first line (whatever we have sent meanwhile).
                    first = self._answers == 0
                if first and text in REFUSALS:
                    self.refusal = text.removeprefix(ERROR_PREFIX)
                else:
                    self.on_answer(text)
                # Counted once reported (printed): the terminal's next prompt waits for the
                # count, and must come after the answer, not be drawn while it is printed.
                with self._progress:
                    self._answers += 1
                    self._progress.notify_all()
        finally:
            reader.close()
            with self._progress:
                self._closed = True
                self._progress.notify_all()
            if on_close is not None:
                on_close()

    def _outcome(self) -> Ending:
        """How the session ended, once the connection has."""
        if self.refusal is not None:
            return Ending.TURNED_AWAY
        return Ending.BY_US if self._ending.is_set() else Ending.BY_SERVER

    def _is_closed(self) -> bool:
        with self._progress:
            return self._closed

    def _shutdown_write(self) -> None:
        with contextlib.suppress(OSError):  # already gone: the receiver reports it
            self.sock.shutdown(socket.SHUT_WR)

    def _send_line(self, line: bytes) -> bool:
        """Send one line (without its newline); False when it was not sent."""
        if len(line) > self.max_line:
            self.on_unsent(len(line), self.max_line)
            return False
        if is_goodbye(line):
            self._ending.set()
        with self._progress:
            self._sent += 1
        try:
            self.sock.sendall(line + b"\n")
        except OSError:
            return True  # the receiver sees the closed connection and reports it
        return True

    def _send_piped(self, stdin_fd: int) -> None:
        lines = FdLineReader(stdin_fd)
        try:
            while True:
                raw = lines.readline()
                if not raw:
                    self._ending.set()
                    self._shutdown_write()
                    return
                line = raw.rstrip(b"\n").rstrip(b"\r")
                if self._send_line(line) and is_goodbye(line):
                    return
        except OSError:
            return
