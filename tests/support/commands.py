"""Long-running CLI commands read line by line with deadlines: ``Follower`` (any command's
stdout), ``Chat`` (a piped ``switchboard chat`` written to and read from),
``assert_one_clear_error_line`` for a command that failed, and ``run_cli_from_connect`` for
how long a command waited once it connected."""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.servers import cli_env, switchboard_command
from support.waiting import WAIT_S
from switchboard.lab.sockets import PROC_TABLES, read_sockets


def assert_one_clear_error_line(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """The command exited with ``exit_code`` and said why in one ``switchboard...`` line on
    stderr, with no traceback; that line."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err and "\n" not in err, result.stderr
    assert "Traceback" not in result.stderr
    assert err.startswith("switchboard")
    return err


@dataclass(frozen=True)
class FromConnect:
    """A command run to completion, and the seconds from its first connection attempt to its
    exit."""

    result: subprocess.CompletedProcess[str]
    seconds: float


#: The kernel's tables of connected sockets by kind (a connected UDP socket names its peer).
_TABLES = {
    socket.SOCK_STREAM: PROC_TABLES,
    socket.SOCK_DGRAM: (
        (Path("/proc/net/udp"), socket.AF_INET),
        (Path("/proc/net/udp6"), socket.AF_INET6),
    ),
}


def run_cli_from_connect(
    *args: str,
    port: int,
    input: str = "",
    timeout: float = 30.0,
    kind: socket.SocketKind = socket.SOCK_STREAM,
) -> FromConnect:
    """Run ``switchboard ARGS --port PORT`` to completion, timing it from the moment its
    socket to PORT appears in the kernel's table (TCP: SYN_SENT or ESTABLISHED; UDP with
    ``kind=socket.SOCK_DGRAM``: connected; polled every 5 ms) to its exit: what its --timeout
    bounds, without the interpreter's start, which takes seconds on a loaded machine.
    Sockets to PORT that were there before are not its."""

    def attempts() -> set[tuple[str, int]]:
        found = read_sockets([port], tables=_TABLES[kind])
        return {(s.local_ip, s.local_port) for s in found if s.remote_port == port}

    before = attempts()
    argv = switchboard_command(*args, "--port", str(port))
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=cli_env(),
    )  # fmt: skip
    outputs: list[tuple[str, str]] = []
    waiter = threading.Thread(target=lambda: outputs.append(proc.communicate(input)), daemon=True)
    waiter.start()
    deadline = time.monotonic() + timeout
    connecting_at: float | None = None
    while waiter.is_alive():
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{argv} did not end within {timeout}s")
        if connecting_at is None and attempts() - before:
            connecting_at = time.monotonic()
        waiter.join(0.005)
    ended_at = time.monotonic()
    assert connecting_at is not None, f"{argv} was never seen connecting to port {port}"
    stdout, stderr = outputs[0]
    result = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    return FromConnect(result, ended_at - connecting_at)


class Follower:
    """A long-running CLI command whose stdout lines are read with deadlines: one at a time
    (``line``) or up to one matching a pattern (``expect``)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            switchboard_command(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        #: The lines ``expect`` has read so far (without their newline).
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def line(self, timeout: float = 10) -> str:
        """The next line, with its newline."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output line within {timeout}s") from None
        assert line is not None, "the command ended: " + self.stderr()
        return line

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Read lines until one matches ``pattern``. The default deadline leaves room for a
        reconnection (its first try after at most 1 s, the next after at most 2 s more)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                raw = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                seen = "\n".join(self.seen)
                raise AssertionError(f"no line matching {pattern!r}:\n{seen}") from None
            if raw is None:
                self.lines.put(None)
                raise AssertionError(f"ended without {pattern!r}:\n" + "\n".join(self.seen))
            line = raw.rstrip("\n")
            self.seen.append(line)
            match = regex.search(line)
            if match:
                return match

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def follow() -> Iterator[Callable[..., Follower]]:
    """``follow(*args)`` starts ``switchboard ARGS`` as a ``Follower``; all are killed after
    the test."""
    started: list[Follower] = []

    def start(*args: str) -> Follower:
        f = Follower(*args)
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


STAMP = r"\[\d\d:\d\d:\d\d\]"
CONNECTED = re.compile(r"^\* connected to 'test-server' as (\S+)\(#(\d+)\)$")


class Chat:
    """One piped ``switchboard chat``: write lines to it, wait for the lines it prints."""

    def __init__(self, port: int, nick: str, *args: str) -> None:
        self.nick = nick
        self.proc = subprocess.Popen(
            switchboard_command("chat", "--port", str(port), "--nick", nick, *args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=cli_env(),
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._seen = 0
        self.stderr = ""
        threading.Thread(target=self._pump, daemon=True).start()
        self.client_id = 0

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def expect(self, pattern: str, timeout: float = WAIT_S) -> re.Match[str]:
        """The next line (after the last one matched) that matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.lines):
                line = self.lines[self._seen]
                self._seen += 1
                match = regex.search(line)
                if match:
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.nick}: no line matching {pattern!r}:\n{self.text()}")
            try:
                line_or_end = self._new.get(timeout=remaining)
            except queue.Empty:
                continue
            if line_or_end is None:
                self._new.put(None)
                if self._seen == len(self.lines):
                    raise AssertionError(
                        f"{self.nick} ended without {pattern!r}:\n{self.text()}\n{self.stderr}"
                    )
                continue
            self.lines.append(line_or_end)

    def joined(self) -> Chat:
        """Wait until connected and in its room; remembers its client id."""
        match = self.expect(CONNECTED.pattern)
        self.client_id = int(match.group(2))
        self.expect(r"^\* you joined ")
        return self

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def say_bytes(self, raw: bytes) -> None:
        """A line as raw bytes (not necessarily UTF-8)."""
        assert self.proc.stdin is not None
        self.proc.stdin.flush()
        self.proc.stdin.buffer.write(raw + b"\n")
        self.proc.stdin.buffer.flush()

    def finish(self, timeout: float = WAIT_S) -> int:
        """Close stdin (end of input), wait for the exit; the exit code."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        return self.wait(timeout)

    def wait(self, timeout: float = WAIT_S) -> int:
        code = self.proc.wait(timeout)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        # Collect everything printed before the exit.
        while True:
            try:
                item = self._new.get(timeout=WAIT_S)
            except queue.Empty:
                break
            if item is None:
                break
            self.lines.append(item)
        return code

    def text(self) -> str:
        return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))


@pytest.fixture
def chats() -> Iterator[Callable[..., Chat]]:
    """``chats(port, nick, *args)`` starts a piped ``Chat``; all are killed after the test."""
    started: list[Chat] = []

    def start(port: int, nick: str, *args: str) -> Chat:
        chat = Chat(port, nick, *args)
        started.append(chat)
        return chat

    yield start
    for chat in started:
        if chat.proc.poll() is None:
            chat.proc.kill()
            chat.proc.wait(WAIT_S)
        for stream in (chat.proc.stdin, chat.proc.stdout, chat.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def alice_and_bob(chats: Callable[..., Chat], port: int) -> tuple[Chat, Chat]:
    """alice, then bob, in the lobby; returns once alice has seen bob join."""
    alice = chats(port, "alice").joined()
    bob = chats(port, "bob").joined()
    alice.expect(rf"^\* bob\(#{bob.client_id}\) joined lobby$")
    return alice, bob
