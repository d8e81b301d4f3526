"""The lab's reversal client: read lines from the user, print the server's answers.

On a terminal (``run_terminal``): a line editor (``LineReader``, prompt_toolkit in the CLI)
prompts ``Myself: ``, each answer is printed as ``Server: <reply>`` above the prompt, and the
next prompt comes once the answer is in.  ``bye``, or Escape pressed alone, ends the session;
Ctrl-D too; Ctrl-C ends the program (exit 130).

With stdin piped (``run_piped``): no prompt, lines are sent as fast as they are read; at end
of input the client half-closes the connection, prints the remaining answers and exits 0.  A
daemon thread reads stdin (a blocked read cannot be interrupted, and a daemon thread does not
keep the process alive); the main thread reads the socket.  The thread reads the file
descriptor with ``os.read``, not through ``sys.stdin.buffer``: a daemon thread blocked inside
a buffered reader's lock makes the interpreter abort at exit.

Exit codes (the project's table): 0 the session ended (bye, ESC, end of input); 2 no session
(cannot connect, or the server turned us away: full, shutting down); 3 the server ended the
session (idle timeout, shutdown, connection lost); 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol, TextIO

from switchboard import defaults
from switchboard.display import safe
from switchboard.services.runtime import FdLineReader

from .core import ERROR_PREFIX, REFUSALS, is_goodbye

PROMPT: Final = "Myself: "
SERVER_PREFIX: Final = "Server: "
INTERRUPTED: Final = "Connection interrupted"

EXIT_OK: Final = 0
EXIT_NO_SESSION: Final = 2
EXIT_ENDED_BY_SERVER: Final = 3
EXIT_INTERRUPTED: Final = 130


class ReverseClientError(Exception):
    """The client could not talk to the server (message is for the user)."""


class LineReader(Protocol):
    """A terminal line editor (``cli.terminal.LinePrompt``)."""

    def read(self, message: str) -> str:
        """The typed line; ``EOFError`` at Ctrl-D or after ``interrupt``, ``KeyboardInterrupt``
        at Ctrl-C."""

    def interrupt(self) -> None:
        """From any thread: end the prompt shown now, or the next one, with ``EOFError``."""


@dataclass
class ReverseClient:
    """One session against a reversal server over a connected socket."""

    sock: socket.socket
    stdout: TextIO
    stderr: TextIO
    max_line: int = defaults.REVERSE_MAX_LINE
    _ending: threading.Event = field(default_factory=threading.Event)
    _out_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Counts of lines sent and answers received, and the end of the connection, guarded
    #: by one condition: the terminal front end waits on it for each answer.
    _progress: threading.Condition = field(default_factory=threading.Condition)
    _sent: int = 0
    _answers: int = 0
    _closed: bool = False
    _refusal: str | None = None

    # --- the two front ends ----------------------------------------------------------------

    def run_piped(self, stdin_fd: int) -> int:
        """Lines from ``stdin_fd`` (a pipe or file), answers to stdout; the exit code."""
        threading.Thread(
            target=self._send_piped, args=(stdin_fd,), name="stdin", daemon=True
        ).start()
        self._receive(on_close=None)
        return self._outcome()

    def run_terminal(self, reader: LineReader) -> int:
        """A prompt on the terminal; the exit code."""
        receiver = threading.Thread(
            target=self._receive, args=(reader.interrupt,), name="receiver", daemon=True
        )
        receiver.start()
        while True:
            try:
                line = reader.read(PROMPT)
            except EOFError:
                if self._is_closed():
                    break  # the server ended the session under the prompt
                self._ending.set()  # Ctrl-D: as the end of piped input
                self._shutdown_write()
                receiver.join(defaults.REVERSE_CLOSE_GRACE_S)
                return EXIT_OK
            except KeyboardInterrupt:
                self._ending.set()
                return EXIT_INTERRUPTED
            data = line.encode("utf-8", "surrogateescape")
            if not self._send_line(data):
                continue
            if is_goodbye(data):
                receiver.join(defaults.REVERSE_CLOSE_GRACE_S)
                return EXIT_OK
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
                    self._refusal = text.removeprefix(ERROR_PREFIX)
                else:
                    self._print(f"{SERVER_PREFIX}{safe(text)}")
                # Counted once printed: the terminal's next prompt waits for the count, and
                # must come after the answer, not be drawn while the answer is printed.
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

    def _outcome(self) -> int:
        """The exit code once the connection has ended, said on stderr when not ours."""
        if self._ending.is_set() and self._refusal is None:
            return EXIT_OK
        with self._out_lock:
            if self._refusal is not None:
                self.stderr.write(
                    f"switchboard reverse connect: the server turned us away: {self._refusal}\n"
                )
                code = EXIT_NO_SESSION
            else:
                self.stderr.write(f"{INTERRUPTED}\n")
                code = EXIT_ENDED_BY_SERVER
            self.stderr.flush()
        return code

    def _is_closed(self) -> bool:
        with self._progress:
            return self._closed

    def _print(self, line: str) -> None:
        with self._out_lock:
            self.stdout.write(line + "\n")
            self.stdout.flush()

    def _shutdown_write(self) -> None:
        with contextlib.suppress(OSError):  # already gone: the receiver reports it
            self.sock.shutdown(socket.SHUT_WR)

    def _send_line(self, line: bytes) -> bool:
        """Send one line (without its newline); False when it was not sent."""
        if len(line) > self.max_line:
            with self._out_lock:
                self.stderr.write(
                    f"line not sent: {len(line)} bytes, the limit is {self.max_line}\n"
                )
                self.stderr.flush()
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


def connect(host: str, port: int, timeout: float = defaults.CONNECT_TIMEOUT_S) -> socket.socket:
    """A connected TCP socket, or ``ReverseClientError`` with a message for the user."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise ReverseClientError(
            f"cannot connect to {_endpoint(host, port)}: no answer within {timeout:g} s"
        ) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ReverseClientError(f"cannot connect to {_endpoint(host, port)}: {reason}") from exc
    sock.settimeout(None)
    return sock


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
