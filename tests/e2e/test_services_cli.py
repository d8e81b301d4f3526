"""The lab services through their CLI in subprocesses: ``switchboard reverse serve|connect``
(and netcat as a client), ``switchboard udpchat serve|join|relay``."""

from __future__ import annotations

import io
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.commands import run_cli_from_connect
from support.network import free_port
from support.waiting import wait_until

HOST = "127.0.0.1"
WAIT_S = 15.0


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "switchboard", *args]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONUNBUFFERED"] = "1"
    return out


class Lines:
    """Lines of a subprocess stream, read by a thread; ``expect`` waits with a deadline."""

    def __init__(self, stream: object) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def expect(self, pattern: str, timeout: float = WAIT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.queue.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"stream ended before {pattern!r}; saw {self.seen}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def until_end(self, timeout: float = WAIT_S) -> list[str]:
        """Every line left, once the stream has ended (the process exited)."""
        deadline = time.monotonic() + timeout
        rest: list[str] = []
        while (line := self.queue.get(timeout=max(deadline - time.monotonic(), 0.001))) is not None:
            rest.append(line)
        self.seen += rest
        return rest


class Service:
    """A server subprocess on a free port (``--port 0``; the port is read from its log)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            command(*args, "--port", "0"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        self.log = Lines(self.proc.stderr)
        self.port = int(self.log.expect(r"listening on 127\.0\.0\.1:(\d+)").group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT_S)
        return self.proc.returncode


@pytest.fixture
def reverse_service() -> Iterator[Service]:
    service = Service("reverse", "serve")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def udpchat_service() -> Iterator[Service]:
    service = Service("udpchat", "serve", "--member-expiry", "2")
    try:
        yield service
    finally:
        service.stop()


def run(
    *args: str, stdin: bytes = b"", timeout: float = WAIT_S
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command(*args), input=stdin, capture_output=True, timeout=timeout, env=env()
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


# --- reverse ------------------------------------------------------------------------------------


def test_reverse_connect_with_piped_stdin(reverse_service: Service) -> None:
    port = str(reverse_service.port)
    text = "hello\n你好👍🏽e\u0301\nab\xff\nbye\nnot sent\n".encode("utf-8", "surrogateescape")
    text = text.replace(b"\xc3\xbf", b"\xff")  # an invalid byte, really
    result = run("reverse", "connect", "--port", port, stdin=text)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Server: olleh",
        "Server: e\u0301👍🏽好你",
        "Server: ERROR: invalid UTF-8 at byte 2",
        "Server: Goodbye!",
    ]
    # End of input without bye: the answers still arrive, exit 0.
    result = run("reverse", "connect", "--port", port, stdin=b"one\r\ntwo\n")
    assert (result.returncode, result.stdout) == (0, "Server: eno\nServer: owt\n")
    # ESC ends the session too.
    result = run("reverse", "connect", "--port", port, stdin=b"abc\n\x1b\nxyz\n")
    assert result.stdout.splitlines() == ["Server: cba", "Server: Goodbye!"]
    reverse_service.log.expect(r"connect #\d+ 127\.0\.0\.1:\d+")
    reverse_service.log.expect(r"disconnect #\d+ .*\(goodbye")


def test_reverse_connect_reports_interruption() -> None:
    service = Service("reverse", "serve", "--idle-timeout", "0.5")
    try:
        proc = subprocess.Popen(
            command("reverse", "connect", "--port", str(service.port)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("hi\n")
            proc.stdin.flush()
            lines = Lines(proc.stdout)
            lines.expect(r"^Server: ih$")
            lines.expect(r"^Server: ERROR: idle for 0\.5 s; closing the connection$")
            assert proc.wait(WAIT_S) == 3  # the session ended from the other side
            assert proc.stderr is not None
            assert proc.stderr.read().strip() == "Connection interrupted"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(WAIT_S)
    finally:
        assert service.stop() == 0
        service.log.expect(r"reverse service stopped")


def test_reverse_connect_refused() -> None:
    port = free_port()
    result = run("reverse", "connect", "--port", str(port))
    assert result.returncode == 2  # no session could be had
    assert result.stderr.startswith(f"switchboard reverse connect: cannot connect to {HOST}:{port}")
    assert "Traceback" not in result.stderr


def test_reverse_connect_server_full_exits_2_without_a_collision() -> None:
    """A refused connection printed ``Server: ERROR: server full`` after the prompt
    (``Myself: Server: ERROR...``) and exited 1: it is one line on stderr, exit 2."""
    service = Service("reverse", "serve", "--max-clients", "1")
    try:
        with socket.create_connection((HOST, service.port), timeout=WAIT_S) as holder:
            holder.sendall(b"ab\n")
            assert holder.recv(10) == b"ba\n"
            result = run("reverse", "connect", "--port", str(service.port), stdin=b"hi\n")
            assert result.returncode == 2, result
            assert result.stdout == ""
            assert result.stderr == (
                "switchboard reverse connect: the server turned us away: "
                "server full; try again later\n"
            )
    finally:
        service.stop()


def spawn_in_terminal(*args: str) -> Any:
    """``switchboard ARGS`` in a 30x120 pseudo-terminal (pexpect), prompt_toolkit's way."""
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "switchboard", *args],
        encoding="utf-8",
        timeout=WAIT_S,
        # pexpect's terminal never answers "where is the cursor?"
        env=env() | {"TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"},
        dimensions=(30, 120),
    )
    child.logfile_read = io.StringIO()
    return child


def test_reverse_interactive_prompt(reverse_service: Service) -> None:
    """Arrow keys put ESC in the line, which ended the session ("Goodbye!"): now they edit
    the line and recall history; Escape pressed alone still says goodbye."""
    pexpect = pytest.importorskip("pexpect")
    child = spawn_in_terminal("reverse", "connect", "--port", str(reverse_service.port))
    try:
        child.expect_exact("Myself:")  # the trailing space is drawn as a cursor move
        child.send("Grüße 👍🏽\r")
        child.expect_exact("Server: 👍🏽 eßürG")
        child.expect_exact("Myself:")
        child.send("abc")
        child.send("\x1b[D\x1b[D")  # Left, Left
        child.send("X\r")
        child.expect_exact("Server: cbXa")
        child.expect_exact("Myself:")
        child.send("\x1b[A\r")  # Up: the last line again
        child.expect_exact("Server: cbXa")
        child.expect_exact("Myself:")
        child.send("\x1b")  # Escape alone, as the lab's users ended a session
        child.expect_exact("Server: Goodbye!")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.logfile_read.getvalue()
    assert "Goodbye" not in child.logfile_read.getvalue().split("Server: cbXa")[0]


def test_reverse_ctrl_c_exits_130_on_a_new_line(reverse_service: Service) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = spawn_in_terminal("reverse", "connect", "--port", str(reverse_service.port))
    try:
        child.expect_exact("Myself:")
        child.send("half typed")
        child.expect_exact("typed")
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    shown = child.logfile_read.getvalue()
    assert child.exitstatus == 130, shown
    # After the typed line, the terminal is left on a fresh line (escape codes aside).
    tail = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown).rsplit("half typed", 1)[1]
    assert "\n" in tail and not tail.strip(), repr(shown)


def test_netcat_as_the_client(reverse_service: Service) -> None:
    nc = shutil.which("nc")
    if nc is None:
        pytest.skip("nc (netcat-openbsd) is not installed; CI installs it")
    port = str(reverse_service.port)
    data = "hello\n你好👍🏽e\u0301\n".encode()
    # -N: shut the socket down at end of input (Debian's nc otherwise waits for the server).
    result = subprocess.run([nc, "-N", HOST, port], input=data, capture_output=True, timeout=WAIT_S)
    assert result.stdout.decode() == "olleh\ne\u0301👍🏽好你\n"
    # Without -N the session ends with bye.
    result = subprocess.run(
        [nc, HOST, port], input=b"hello\r\nbye\n", capture_output=True, timeout=WAIT_S
    )
    assert result.stdout == b"olleh\nGoodbye!\n"


def test_server_releases_descriptors(reverse_service: Service) -> None:
    """The real server (uvloop when installed), observed through /proc/PID/fd."""
    fd_dir = f"/proc/{reverse_service.proc.pid}/fd"
    if not os.path.isdir(fd_dir):
        pytest.skip("no /proc on this system")

    def count() -> int:
        return len(os.listdir(fd_dir))

    def cycle(kind: int) -> None:
        with socket.create_connection((HOST, reverse_service.port), timeout=WAIT_S) as sock:
            if kind == 0:
                sock.sendall(b"bye\n")
                assert sock.recv(100) == b"Goodbye!\n"
            elif kind == 1:
                sock.sendall(b"mid-li")
            else:
                sock.sendall(b"reset")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    baseline = count()  # listener, loop internals, stdio: before any client
    for i in range(300):
        cycle(i % 3)
    wait_until(lambda: count() <= baseline, WAIT_S, step=0.02)
    assert count() == baseline


# --- udpchat ------------------------------------------------------------------------------------


class Joiner:
    """``switchboard udpchat join`` with piped stdin and stdout."""

    def __init__(self, port: int, nick: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            command("udpchat", "join", "--port", str(port), "--nick", nick, *extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env(),
        )
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> int:
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        return self.proc.wait(WAIT_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT_S)


def test_udpchat_piped_session(udpchat_service: Service) -> None:
    port = udpchat_service.port
    bob = Joiner(port, "bob")
    alice: Joiner | None = None
    try:
        bob.out.expect(r"^\* Welcome, bob! you are alone in the room$")
        alice = Joiner(port, "alice")
        alice.out.expect(r"^\* Welcome, alice! 1 other in the room$")
        bob.out.expect(r"^\[\d\d:\d\d:\d\d\] \* alice joined$")
        alice.say("hello bob, 你好 👍🏽")
        bob.out.expect(r"^\[\d\d:\d\d:\d\d\] alice: hello bob, 你好 👍🏽$")
        bob.say("hi alice")
        alice.out.expect(r"^\[\d\d:\d\d:\d\d\] bob: hi alice$")
        alice.say("x" * 1300)
        alice.err.expect(r"message not sent: message too long: 1300 bytes.*1200")
        alice.say("exit")
        assert alice.finish() == 0
        bob.out.expect(r"^\[\d\d:\d\d:\d\d\] \* alice left$")
        assert bob.finish() == 0
    finally:
        bob.kill()
        if alice is not None:
            alice.kill()
    udpchat_service.log.expect(r"join 'bob' from 127\.0\.0\.1:\d+")
    udpchat_service.log.expect(r"leave 'alice'")


@pytest.mark.parametrize("seconds", ["0", "-1", "inf", "nan", "soon"])
def test_durations_must_be_positive_finite_seconds(seconds: str) -> None:
    for args in (("udpchat", "serve", "--member-expiry"), ("udpchat", "join", "--nick", "a",
                 "--keepalive"), ("reverse", "serve", "--idle-timeout")):  # fmt: skip
        result = run(*args, seconds)
        assert result.returncode == 2, (args, result)
        assert "usage:" in result.stderr and "Traceback" not in result.stderr
        assert f"must be more than 0 seconds, not {seconds}" in result.stderr or (
            f"not a number of seconds: {seconds!r}" in result.stderr
        )


def test_udpchat_nickname_refused_without_terminal(udpchat_service: Service) -> None:
    port = str(udpchat_service.port)
    holder = Joiner(udpchat_service.port, "alice")
    try:
        holder.out.expect("Welcome")
        result = run("udpchat", "join", "--port", port, "--nick", "Alice", stdin=b"hi\n")
        assert result.returncode == 2
        assert "nickname refused: the nickname 'alice' is in use" in result.stderr
        result = run("udpchat", "join", "--port", port, "--nick", "a|b", stdin=b"")
        assert result.returncode == 2
        assert "invalid nickname 'a|b'" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()


def test_udpchat_terminal_asks_for_another_nickname(udpchat_service: Service) -> None:
    pexpect = pytest.importorskip("pexpect")
    holder = Joiner(udpchat_service.port, "alice")
    child = None
    try:
        holder.out.expect("Welcome")
        child = pexpect.spawn(
            sys.executable,
            ["-m", "switchboard", "udpchat", "join", "--port", str(udpchat_service.port),
             "--nick", "alice"],
            encoding="utf-8",
            timeout=WAIT_S,
            env=env(),
        )  # fmt: skip
        child.expect_exact("is in use")
        child.expect_exact("Another nickname:")  # the prompt asks now
        child.send("alice2\r")
        child.expect_exact("* Welcome, alice2! 1 other in the room")
        holder.out.expect(r"\* alice2 joined")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        holder.out.expect(r"\* alice2 left")
    finally:
        if child is not None and child.isalive():
            child.terminate(force=True)
        holder.kill()


def test_udpchat_member_killed_is_expired(udpchat_service: Service) -> None:
    port = udpchat_service.port
    # Alice keeps her default 5 s keepalive: the server's WELCOME announces its 2 s expiry,
    # and she must keep alive often enough for it to stay a member.
    alice = Joiner(port, "alice")
    ghost = None
    try:
        alice.out.expect("Welcome")
        ghost = Joiner(port, "ghost")  # only now: alice must be the first to join
        ghost.out.expect("Welcome")
        alice.out.expect(r"\* ghost joined")
        ghost.proc.kill()  # no LEAVE: the server must notice the silence (expiry 2 s)
        alice.out.expect(r"\* ghost left \(timed out\)$", timeout=10)
        # Alice joined before the ghost: had she been silent too, she would have expired
        # first (the server logs each expiry in order).
        assert udpchat_service.log.expect(r"expired '(ghost|alice)'").group(1) == "ghost"
        alice.say("/quit")
        assert alice.finish() == 0
        alice.out.until_end()
        assert not [line for line in alice.out.seen if "no longer knows us" in line]
    finally:
        alice.kill()
        if ghost is not None:
            ghost.kill()


def test_udpchat_through_the_lossy_relay() -> None:
    # The default member expiry (20 s): with 30 % loss, a 2 s expiry would also expire a
    # member now and then (four keepalives lost in a row), which is not what this test checks.
    service = Service("udpchat", "serve")
    relay = subprocess.Popen(
        command("udpchat", "relay", "--port", "0", "--to-port", str(service.port),
                "--drop", "0.3", "--duplicate", "0.3", "--seed", "5"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env(),
    )  # fmt: skip
    relay_log = Lines(relay.stderr)
    alice = bob = None
    try:
        relay_port = relay_log.expect(r"lossy relay on port (\d+)").group(1)
        # Each JOIN and LEAVE round trip survives the relay with p = 0.49: many short retries
        # (0.51^40 that all fail), all well within the waits below.
        fast = ("--retry-initial", "0.1", "--retry-max", "0.3", "--retry-attempts", "40")
        alice = Joiner(int(relay_port), "alice", *fast)
        bob = Joiner(int(relay_port), "bob", *fast)
        alice.out.expect("Welcome", timeout=WAIT_S)
        bob.out.expect("Welcome", timeout=WAIT_S)
        for i in range(30):
            bob.say(f"line {i}")
        # Then end markers: once alice shows one, every line before it was either shown or
        # announced lost (the receiver delivers in order).  All 20 lost: p = 0.51^20.
        for i in range(20):
            bob.say(f"end {i}")
        alice.out.expect(r"bob: end \d+$", timeout=WAIT_S)
        alice.say("/quit")
        assert alice.finish() == 0
        bob.say("/quit")
        assert bob.finish() == 0
        alice.out.until_end()
        seen = alice.out.seen
        shown = [int(line.rsplit(" ", 1)[1]) for line in seen if "bob: line" in line]
        lost = sum(int(m.group(1)) for line in seen
                   if (m := re.search(r"! (\d+) messages? from bob w", line)))  # fmt: skip
        assert shown, seen
        assert shown == sorted(set(shown)), seen  # each line once, in order
        assert shown[-1] - shown[0] + 1 - len(shown) <= lost  # and the rest announced lost
    finally:
        for joiner in (alice, bob):
            if joiner is not None:
                joiner.kill()
        relay.send_signal(signal.SIGINT)
        relay.wait(WAIT_S)
        service.stop()


def test_udpchat_terminal_line_editing(udpchat_service: Service) -> None:
    """On a terminal, lines arriving were printed into the middle of the line being typed,
    arrow keys got the line refused (ESC is a control character) and Ctrl-C exited 0 with
    no newline: now the line editor keeps the typed text below what arrives, arrows edit,
    and Ctrl-C leaves the room and exits 130 on a fresh line."""
    pexpect = pytest.importorskip("pexpect")
    alice = Joiner(udpchat_service.port, "alice")
    child = None
    try:
        alice.out.expect("Welcome")
        child = spawn_in_terminal("udpchat", "join", "--port", str(udpchat_service.port),
                                  "--nick", "bob")  # fmt: skip
        child.expect_exact("* Welcome, bob! 1 other in the room")
        alice.out.expect(r"\* bob joined$")
        child.expect_exact(">")
        child.send("half")  # typed, no Enter
        child.expect_exact("half")
        alice.say("你好 while you type")
        child.expect(r"\[\d\d:\d\d:\d\d\] alice: 你好 while you type")
        child.expect_exact("> half")  # the prompt is redrawn below, the typed text intact
        child.send(" dne\x1b[D\x1b[Do\r")  # Left, Left: "dne" becomes "done"
        alice.out.expect(r"\] bob: half done$")
        child.expect_exact(">")
        child.send("gone")
        child.expect_exact("gone")
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
        child.close()
        shown = child.logfile_read.getvalue()
        assert child.exitstatus == 130, shown
        tail = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown).rsplit("gone", 1)[1]
        assert "\n" in tail and not tail.strip(), repr(shown)
        alice.out.expect(r"\* bob left$")  # Ctrl-C still left the room politely
        assert "not sent" not in shown
    finally:
        if child is not None and child.isalive():
            child.terminate(force=True)
        alice.kill()


def test_udpchat_exit_codes_unreachable_and_shutdown() -> None:
    """Unreachable was 1 (the others say 2) and a server shutdown 1 (the table says 3)."""
    port = free_port(kind=socket.SOCK_DGRAM)  # nothing listens there now
    timed = run_cli_from_connect(
        "udpchat", "join", "--nick", "a", "--timeout", "0.5", port=port, kind=socket.SOCK_DGRAM
    )
    result = timed.result
    assert result.returncode == 2, result
    assert "to JOIN within 0.5 s (--timeout)" in result.stderr
    # Timed from its socket's connect, not from its start (3-6.5 s alone on a loaded machine).
    assert timed.seconds < 5, timed.seconds  # the retries alone would take 9.75 s
    service = Service("udpchat", "serve")
    alice = Joiner(service.port, "alice")
    try:
        alice.out.expect("Welcome")
        assert service.stop() == 0
        alice.out.expect(r"^\* The server is shutting down$")
        assert alice.proc.wait(WAIT_S) == 3
    finally:
        alice.kill()
        service.stop()


def test_udpchat_join_trace_decodes_datagrams(udpchat_service: Service) -> None:
    result = run("udpchat", "join", "--port", str(udpchat_service.port), "--nick", "tracy",
                 "--trace", stdin=b"hi\n")  # fmt: skip
    assert result.returncode == 0, result
    trace = result.stderr.splitlines()
    stamp = r"^\d\d:\d\d:\d\d\.\d{3} "
    assert any(re.match(stamp + r'->> JOIN +seq=1 len=160 +nick="tracy" padding=146$', line)
               for line in trace), trace  # fmt: skip
    assert any(re.match(stamp + r'<<- WELCOME +seq=1 len=\d+ +nick="tracy" token=[0-9a-f]{4}… '
                        r"members=0 expiry_ms=2000$", line) for line in trace), trace  # fmt: skip
    assert any(re.match(stamp + r'->> CHAT +seq=1 len=19 +token=[0-9a-f]{4}… text="hi"$', line)
               for line in trace), trace  # fmt: skip
    assert any(re.match(stamp + r"<<- ACK +seq=\d+ len=9", line) for line in trace), trace


def test_help_texts_of_the_lab_services() -> None:
    join_help = run("udpchat", "join", "--help").stdout
    assert "(default: None)" not in join_help
    assert "Exit codes: 0 left the room; 2 no answer" in " ".join(join_help.split())
    serve_help = run("udpchat", "serve", "--help").stdout
    assert "Run the UDP chat room" in serve_help
    assert "--max-per-address N" in serve_help and "(default: 16)" in serve_help
    connect_help = " ".join(run("reverse", "connect", "--help").stdout.split())
    assert "--timeout SECONDS" in connect_help and "130 Ctrl-C" in connect_help


def test_lab_logs_are_stamped_with_their_zone_and_readable() -> None:
    """The reversal service's timestamps had no zone (the main server's have one), and the
    relay logged ``FaultPlan(drop=0.3, ...)``."""
    service = Service("reverse", "serve")
    try:
        zone = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} INFO  "
        assert re.match(zone + "reverse service listening on", service.log.seen[-1])
    finally:
        service.stop()
    relay = subprocess.Popen(
        command("udpchat", "relay", "--port", "0", "--to-port", "9", "--drop", "0.3",
                "--seed", "5"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env(),
    )  # fmt: skip
    try:
        line = Lines(relay.stderr).expect(r"lossy relay on port \d+").string
        assert line.endswith(
            "-> 127.0.0.1:9: drop 30%, reorder 0% (delay 0.05 s), duplicate 0%, seed 5"
        ), line
    finally:
        relay.send_signal(signal.SIGINT)
        relay.wait(WAIT_S)
