"""The lab's reversal client: read lines from the user, print the server's answers.

Interactive: a ``Myself: `` prompt, each answer printed as ``Server: <reply>``, the session
ends on ``bye`` or a line containing ESC.  With stdin piped, no prompt is printed and lines are
sent as fast as they are read; at end of input the client half-closes the connection, prints
the remaining answers and exits 0.  If the server closes the connection first, the client
says ``Connection interrupted`` and exits 1.

A daemon thread reads stdin (a blocked read cannot be interrupted, and a daemon thread does
not keep the process alive); the main thread reads the socket.  The thread reads the file
descriptor with ``os.read``, not through ``sys.stdin.buffer``: a daemon thread blocked inside
a buffered reader's lock makes the interpreter abort at exit.
"""

from __future__ import annotations

import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Final, TextIO

from switchboard import defaults
from switchboard.services.runtime import FdLineReader

from .core import is_goodbye

PROMPT: Final = "Myself: "
SERVER_PREFIX: Final = "Server: "
INTERRUPTED: Final = "Connection interrupted"


class ReverseClientError(Exception):
    """The client could not talk to the server (message is for the user)."""


@dataclass
class ReverseClient:
    """One session against a reversal server over a connected socket."""

    sock: socket.socket
    stdin_fd: int
    stdout: TextIO
    stderr: TextIO
    interactive: bool
    max_line: int = defaults.REVERSE_MAX_LINE
    _ending: threading.Event = field(default_factory=threading.Event)
    _answered: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _out_lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> int:
        """Talk until the session ends; the exit code (0 normal end, 1 interrupted)."""
        sender = threading.Thread(target=self._send_lines, name="stdin", daemon=True)
        sender.start()
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
                self._print(f"{SERVER_PREFIX}{text}")
                self._answered.release()
        finally:
            reader.close()
        if self._ending.is_set():
            return 0
        with self._out_lock:
            if self.interactive:
                self.stdout.write("\n")
                self.stdout.flush()
            self.stderr.write(f"{INTERRUPTED}\n")
            self.stderr.flush()
        return 1

    def _print(self, line: str) -> None:
        with self._out_lock:
            self.stdout.write(line + "\n")
            self.stdout.flush()

    def _prompt(self) -> None:
        with self._out_lock:
            self.stdout.write(PROMPT)
            self.stdout.flush()

    def _send_lines(self) -> None:
        lines = FdLineReader(self.stdin_fd)
        try:
            while True:
                if self.interactive:
                    self._prompt()
                raw = lines.readline()
                if not raw:
                    self._ending.set()
                    self.sock.shutdown(socket.SHUT_WR)
                    return
                line = raw.rstrip(b"\n").rstrip(b"\r")
                if len(line) > self.max_line:
                    with self._out_lock:
                        self.stderr.write(
                            f"line not sent: {len(line)} bytes, the limit is {self.max_line}\n"
                        )
                        self.stderr.flush()
                    continue
                goodbye = is_goodbye(line)
                if goodbye:
                    self._ending.set()
                self.sock.sendall(line + b"\n")
                if goodbye:
                    return
                if self.interactive:
                    self._answered.acquire()
        except OSError:
            # The reader sees the closed connection and reports it.
            return


def connect(host: str, port: int, timeout: float = defaults.CONNECT_TIMEOUT_S) -> socket.socket:
    """A connected TCP socket, or ``ReverseClientError`` with a message for the user."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ReverseClientError(f"cannot connect to {host}:{port}: {reason}") from exc
    sock.settimeout(None)
    return sock


def run_client(host: str, port: int) -> int:
    """The ``switchboard reverse connect`` command."""
    try:
        sock = connect(host, port)
    except ReverseClientError as exc:
        print(f"switchboard reverse connect: {exc}", file=sys.stderr)
        return 1
    with sock:
        client = ReverseClient(
            sock=sock,
            stdin_fd=sys.stdin.fileno(),
            stdout=sys.stdout,
            stderr=sys.stderr,
            interactive=sys.stdin.isatty(),
        )
        return client.run()
