"""The reversal server through real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

from support.services import LineSocket, LoopThread, ReverseFactory, open_fds
from support.waiting import WAIT_S, wait_until
from switchboard.services.reverse.server import ReverseServer

TRICKY = [
    ("你好👍🏽e\u0301", "e\u0301👍🏽好你"),
    ("👨\u200d👩\u200d👧\u200d👦 and 🇫🇷", "🇫🇷 dna 👨\u200d👩\u200d👧\u200d👦"),
    ("a\u0308o\u0301", "o\u0301a\u0308"),
    ("", ""),
]


def test_tricky_strings_are_reversed_by_grapheme(reverse_server: ReverseFactory) -> None:
    server = reverse_server()
    with LineSocket(server.port) as client:
        for text, expected in TRICKY:
            assert client.ask(text.encode() + b"\n") == expected.encode()
        # CRLF accepted; several lines in one segment answered in order.
        client.send("one\r\ntwo\n三\n".encode())
        assert [client.line(), client.line(), client.line()] == [b"eno", b"owt", "三".encode()]


@pytest.mark.parametrize("last", [b"bye\n", b"  bye\r\n", b"\x1b\n", b"stop \x1b now\n"])
def test_bye_and_esc_end_the_session(reverse_server: ReverseFactory, last: bytes) -> None:
    server = reverse_server()
    with LineSocket(server.port) as client:
        assert client.ask(b"abc\n") == b"cba"
        client.send(last + b"never answered\n")
        assert client.line() == b"Goodbye!"
        assert client.at_eof()


def test_invalid_utf8_is_an_error_and_the_session_goes_on(reverse_server: ReverseFactory) -> None:
    server = reverse_server()
    with LineSocket(server.port) as client:
        assert client.ask(b"ab\xff\xfecd\n") == b"ERROR: invalid UTF-8 at byte 2"
        assert client.ask(b"\xc3\n") == b"ERROR: invalid UTF-8 at byte 0"  # truncated sequence
        assert client.ask(b"still here\n") == b"ereh llits"


def test_long_line_is_refused_and_closes(reverse_server: ReverseFactory) -> None:
    server = reverse_server()
    with LineSocket(server.port) as client:
        assert client.ask(b"x" * 65536 + b"\n") == b"x" * 65536  # exactly the limit is fine
        for _ in range(8):  # 128 KiB without a newline: refused after 64 KiB + 2 bytes
            client.send(b"y" * 16384)
        reply = client.line()
        assert reply == b"ERROR: line longer than 65536 bytes; closing the connection"
        assert client.at_eof()
    assert wait_until(lambda: not server.sessions)


def test_long_line_error_arrives_when_client_stops_sending(reverse_server: ReverseFactory) -> None:
    server = reverse_server(max_line=1000)
    with LineSocket(server.port) as client:
        client.send(b"z" * 1002)
        assert client.line() == b"ERROR: line longer than 1000 bytes; closing the connection"
        assert client.at_eof()


def test_idle_client_is_closed(reverse_server: ReverseFactory) -> None:
    server = reverse_server(idle_timeout_s=0.3)
    with LineSocket(server.port) as client:
        started = time.monotonic()
        assert client.ask(b"hi\n") == b"ih"
        assert client.line() == b"ERROR: idle for 0.3 s; closing the connection"
        assert client.at_eof()
        assert 0.25 <= time.monotonic() - started < 5
    assert wait_until(lambda: not server.sessions)


def test_activity_postpones_the_idle_timeout(reverse_server: ReverseFactory) -> None:
    server = reverse_server(idle_timeout_s=0.6)
    with LineSocket(server.port) as client:
        deadline = time.monotonic() + 1.3
        while time.monotonic() < deadline:  # two idle periods of talking, a line every 0.05 s
            assert client.ask(b"ab\n") == b"ba"
            time.sleep(0.05)
        assert client.line() == b"ERROR: idle for 0.6 s; closing the connection"


def test_half_close_answers_the_unterminated_last_line(reverse_server: ReverseFactory) -> None:
    server = reverse_server()
    with LineSocket(server.port) as client:
        client.send(b"one\ntwo")
        client.sock.shutdown(socket.SHUT_WR)
        assert [client.line(), client.line(), client.line()] == [b"eno", b"owt", None]


def test_many_concurrent_clients(reverse_server: ReverseFactory) -> None:
    server = reverse_server()
    clients = [LineSocket(server.port) for _ in range(200)]
    try:
        assert wait_until(lambda: len(server.sessions) == 200)
        for i, client in enumerate(clients):
            client.send(f"client {i} 👍🏽\n".encode())
        for i, client in enumerate(clients):
            assert client.line() == f"👍🏽 {str(i)[::-1]} tneilc".encode()
    finally:
        for client in clients:
            client.close()
    assert wait_until(lambda: not server.sessions)


def test_server_full(reverse_server: ReverseFactory) -> None:
    server = reverse_server(max_clients=2)
    with LineSocket(server.port) as a, LineSocket(server.port) as b:
        assert a.ask(b"a\n") == b"a" and b.ask(b"b\n") == b"b"
        with LineSocket(server.port) as c:
            assert c.line() == b"ERROR: server full; try again later"
            assert c.at_eof()
    assert wait_until(lambda: not server.sessions)


def test_refused_connection_releases_its_slot_at_once(reverse_server: ReverseFactory) -> None:
    """A refused connection held a session slot (and its descriptor) through the 5 s
    lingering close, so a peer that kept its refused socket open kept the server full."""
    server = reverse_server(max_clients=1, close_grace_s=30.0)
    with LineSocket(server.port) as first:
        assert first.ask(b"a\n") == b"a"
        refused = LineSocket(server.port)  # kept open by its peer
        try:
            assert refused.line() == b"ERROR: server full; try again later"
            assert first.ask(b"bye\n") == b"Goodbye!"
            first.close()
            assert wait_until(lambda: not server.sessions, timeout=5.0)
            with LineSocket(server.port) as next_one:
                assert next_one.ask(b"xy\n") == b"yx"
        finally:
            refused.close()


def test_flags_do_not_stall_a_bystander(reverse_server: ReverseFactory) -> None:
    """Ten clients each sending a 64 KB line of regional indicators blocked the event loop
    0.8 s per line (quadratic segmentation); a bystander's round trip must stay short."""
    server = reverse_server()
    line = "\U0001f1fa".encode() * 16000 + b"\n"
    with LineSocket(server.port) as bystander:
        assert bystander.ask(b"warm\n") == b"mraw"
        hostile = [LineSocket(server.port) for _ in range(10)]
        try:
            for client in hostile:
                client.send(line)
            worst = 0.0
            answered = 0
            deadline = time.monotonic() + WAIT_S
            while answered < len(hostile) and time.monotonic() < deadline:
                started = time.monotonic()
                assert bystander.ask(b"ab\n") == b"ba"
                worst = max(worst, time.monotonic() - started)
                answered = sum(_has_answer(client) for client in hostile)
            assert answered == len(hostile)
            assert worst < 0.5, f"bystander waited {worst:.3f} s"
        finally:
            for client in hostile:
                client.close()


def _has_answer(client: LineSocket) -> bool:
    """Whether ``client``'s answer line has fully arrived (reads what is there, no wait)."""
    if client._buffer.endswith(b"\n"):
        return True
    client.sock.setblocking(False)
    try:
        while chunk := client.sock.recv(1 << 20):
            client._buffer += chunk
    except BlockingIOError:
        pass
    finally:
        client.sock.setblocking(True)
        client.sock.settimeout(WAIT_S)
    return client._buffer.endswith(b"\n")


def test_shutdown_tells_clients(loop_thread: LoopThread, reverse_server: ReverseFactory) -> None:
    server = reverse_server()
    with LineSocket(server.port) as client:
        assert client.ask(b"x\n") == b"x"
        closing = asyncio.run_coroutine_threadsafe(server.close(), loop_thread.loop)
        assert client.line() == b"ERROR: server shutting down"
        assert client.at_eof()
    closing.result(WAIT_S)
    assert not server.sessions


def _rst_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_no_descriptor_leak_after_1000_cycles(reverse_server: ReverseFactory) -> None:
    """Every way a session can end releases its socket: the fd count returns to baseline."""
    server: ReverseServer = reverse_server()
    # Warm up once so lazily created descriptors (e.g. the loop's self-pipe) are counted.
    with LineSocket(server.port) as warm:
        assert warm.ask(b"bye\n") == b"Goodbye!"
    assert wait_until(lambda: not server.sessions)
    baseline = open_fds()
    started = time.monotonic()
    for i in range(1000):
        client = LineSocket(server.port)
        kind = i % 5
        if kind == 0:  # polite: a line, then bye
            assert client.ask(b"abc\n") == b"cba"
            assert client.ask(b"bye\n") == b"Goodbye!"
            client.close()
        elif kind == 1:  # vanishes mid-line
            client.send(b"half a li")
            client.close()
        elif kind == 2:  # reset mid-line (SO_LINGER 0 sends RST)
            client.send(b"reset me")
            _rst_close(client.sock)
        elif kind == 3:  # sends lines and leaves without reading the answers
            client.send(b"unread\n" * 50)
            client.close()
        else:  # connects and goes without a word
            client.close()
    elapsed = time.monotonic() - started
    assert wait_until(lambda: not server.sessions and open_fds() <= baseline), (
        f"{len(server.sessions)} sessions open, {open_fds()} fds vs baseline {baseline}"
    )
    print(f"1000 cycles in {elapsed:.2f} s; fds {baseline} -> {open_fds()}")
    assert open_fds() == baseline


def test_client_that_never_reads_is_paused_then_dropped(reverse_server: ReverseFactory) -> None:
    """Back-pressure: the server stops reading from a client that does not read its answers
    (its memory stays bounded), and the idle timer then aborts it."""
    server = reverse_server(idle_timeout_s=0.5)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(0.3)
    chunk = (b"x" * 1023 + b"\n") * 64
    sent = 0
    try:
        for _ in range(4096):  # at most 256 MiB; the server stops reading long before
            sent += sock.send(chunk)
    except TimeoutError:
        pass  # blocked: the server has stopped reading
    except OSError:
        pass  # already aborted
    try:
        print(f"sent {sent} bytes before the server stopped reading")
        assert sent < 256 * 1024 * 1024
        assert wait_until(lambda: not server.sessions, timeout=5.0)
    finally:
        sock.close()


def test_peer_that_never_closes_after_goodbye_is_aborted(reverse_server: ReverseFactory) -> None:
    server = reverse_server(close_grace_s=1.0)
    with LineSocket(server.port) as client:
        assert client.ask(b"bye\n") == b"Goodbye!"
        assert client.sock.recv(10) == b""  # our FIN arrived; the client keeps its socket open
        assert len(server.sessions) == 1  # lingering: waiting for the client's close
        assert wait_until(lambda: not server.sessions, timeout=3.0)
