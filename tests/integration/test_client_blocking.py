"""The blocking Client against a real server, and against scripted fake servers for the
failure paths (no WELCOME, no answer, a connection that drops with requests in flight)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from support.fake_servers import FakeServer, welcome
from support.network import free_port
from support.servers import ServerThread
from switchboard.client import (
    Client,
    ConnectionFailed,
    ConnectionLost,
    NoSuchClient,
    ProtocolRejected,
    RequestTimeout,
    ServerError,
    ServerFull,
    ServerTime,
    SwitchboardError,
    TextTooLong,
)
from switchboard.protocol import (
    BroadcastRequest,
    ClientInfo,
    ErrorCode,
    ErrorResponse,
    Frame,
    Message,
    Receipt,
    ReceiptStatus,
    SendOk,
    SendRequest,
    Shutdown,
    TimeOk,
    TimeRequest,
    encode,
)

HOST = "127.0.0.1"


def receiver_threads(port: int) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"switchboard-receiver-{HOST}:{port}"]


# --- against the real server ------------------------------------------------------------------


def test_typed_results(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as a, Client(HOST, server.port, timeout=5) as b:
        t = a.time()
        assert isinstance(t, ServerTime) and isinstance(t.epoch_ms, int)
        assert t.iso.startswith(time.strftime("%Y-"))
        assert a.name() == "test-server"
        clients = a.list_clients()
        assert all(isinstance(c, ClientInfo) for c in clients)
        assert [c.client_id for c in clients] == [a.client_id, b.client_id]
        ok = a.send(b.client_id, "hi")
        assert isinstance(ok, SendOk) and ok.target == b.client_id
        times = a.time_many(10)
        assert len(times) == 10 and all(isinstance(x, ServerTime) for x in times)


def test_server_errors_are_typed_and_carry_the_code(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as client:
        with pytest.raises(NoSuchClient) as info:
            client.send(10_000, "x")
        err = info.value
        assert isinstance(err, ServerError) and isinstance(err, SwitchboardError)
        assert (err.code, err.name) == (6, "NO_SUCH_CLIENT")
        assert "NO_SUCH_CLIENT" in str(err)
        # The connection is still fine after a failed request.
        assert client.name() == "test-server"


def test_text_the_server_would_refuse_is_refused_before_sending_on_every_path(
    server: ServerThread,
) -> None:
    with Client(HOST, server.port, timeout=5) as a, Client(HOST, server.port, timeout=5) as b:
        a.join("lobby")
        b.join("lobby")
        too_long = "你" * (a.welcome.max_text // 3 + 1)  # fewer characters than bytes
        invalid = "bad \udcff byte"  # what surrogateescape makes of a byte that is not UTF-8
        attempts: list[Callable[[str], object]] = [
            lambda text: a.send(b.client_id, text),
            lambda text: a.broadcast("lobby", text),
            lambda text: a.submit(SendRequest(b.client_id, text)),
            lambda text: a.submit(BroadcastRequest("lobby", text)),
        ]
        for attempt in attempts:
            with pytest.raises(TextTooLong) as too_long_info:
                attempt(too_long)
            assert too_long_info.value.code == ErrorCode.TEXT_TOO_LONG
            assert f"(max {a.welcome.max_text})" in too_long_info.value.message
            with pytest.raises(ProtocolRejected) as invalid_info:
                attempt(invalid)
            assert invalid_info.value.code == ErrorCode.BAD_PAYLOAD
            assert "not valid Unicode" in invalid_info.value.message
        # Nothing was sent: the first thing b receives is the line sent after all of them.
        a.broadcast("lobby", "after")
        first = b.next_indication(timeout=5)
        assert isinstance(first, Message) and first.text == "after", first


def test_indications_by_iteration_and_next_indication(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as a, Client(HOST, server.port, timeout=5) as b:
        assert b.next_indication(timeout=0.01) is None
        sent = [a.send(b.client_id, f"m{i}").message_id for i in range(3)]
        got = []
        for frame in b:
            assert isinstance(frame, Message)
            got.append(frame.message_id)
            if len(got) == 3:
                break
        assert got == sent


def test_indications_by_callback(server: ServerThread) -> None:
    arrived: list[tuple[Frame, str]] = []
    done = threading.Event()

    def on_indication(frame: Frame) -> None:
        arrived.append((frame, threading.current_thread().name))
        if isinstance(frame, Receipt):
            done.set()

    with (
        Client(HOST, server.port, timeout=5, on_indication=on_indication) as a,
        Client(HOST, server.port, timeout=5) as b,
    ):
        ok = a.send(b.client_id, "callback")
        assert done.wait(5)
        assert [type(f) for f, _ in arrived] == [Receipt]
        receipt = arrived[0][0]
        assert isinstance(receipt, Receipt)
        assert (receipt.message_id, receipt.status) == (ok.message_id, ReceiptStatus.DELIVERED)
        assert arrived[0][1].startswith("switchboard-receiver")
        assert a.next_indication(timeout=0.01) is None  # the callback replaces the queue


def test_close_stops_and_joins_the_receiver_thread(server: ServerThread) -> None:
    client = Client(HOST, server.port, timeout=5)
    assert len(receiver_threads(server.port)) == 1
    client_id = client.client_id
    client.close()
    assert receiver_threads(server.port) == []
    assert client.closed
    with pytest.raises(ConnectionLost):
        client.time()
    with pytest.raises(ConnectionLost):
        client.next_indication(timeout=1)
    client.close()  # twice is fine
    server.wait_for(lambda s: client_id not in s.directory.client_by_id)


def test_context_manager_closes(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as client:
        client_id = client.client_id
    assert receiver_threads(server.port) == []
    server.wait_for(lambda s: client_id not in s.directory.client_by_id)


def test_server_going_away_ends_iteration(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as client:
        server.stop()
        frames = list(client)  # returns once the connection is gone; no hang
        assert [type(f) for f in frames] == [Shutdown]
        assert client.closed


# --- failure paths, against scripted servers ----------------------------------------------------


def test_connection_refused() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        Client(HOST, port, connect_timeout=5)
    assert "refused" in str(info.value)
    assert time.monotonic() - start < 2


def test_unresolvable_host() -> None:
    with pytest.raises(ConnectionFailed):
        Client("no-such-host.invalid", 7000, connect_timeout=2)


def test_connect_timeout_when_no_welcome_comes(fake_server: Callable[..., FakeServer]) -> None:
    release = threading.Event()

    def silent(conn: socket.socket, frames: Iterator[Frame]) -> None:
        release.wait(10)

    fs = fake_server(silent)
    start = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        Client(HOST, fs.port, connect_timeout=0.3)
    elapsed = time.monotonic() - start
    release.set()
    assert 0.25 <= elapsed < 2
    assert "WELCOME" in str(info.value)
    assert receiver_threads(fs.port) == []


def test_request_timeout_leaves_the_connection_usable(
    fake_server: Callable[..., FakeServer],
) -> None:
    def answers_only_the_second(conn: socket.socket, frames: Iterator[Frame]) -> None:
        conn.sendall(welcome())
        next(frames)  # ignored
        second = next(frames)
        conn.sendall(encode(TimeOk(123_000, 0, "UTC", request_id=second.request_id)))
        # A late answer to the first request must not be taken for anything else.
        conn.sendall(encode(TimeOk(1, 0, "UTC", request_id=1)))
        for _ in frames:
            pass

    fs = fake_server(answers_only_the_second)
    with Client(HOST, fs.port, timeout=0.3) as client:
        start = time.monotonic()
        with pytest.raises(RequestTimeout):
            client.time()
        assert 0.25 <= time.monotonic() - start < 2
        assert client.time().epoch_ms == 123_000
        assert client.next_indication(timeout=0.05) is None


def test_lost_connection_fails_every_pending_request_at_once(
    fake_server: Callable[..., FakeServer],
) -> None:
    got_all = threading.Event()

    def drops_after_ten(conn: socket.socket, frames: Iterator[Frame]) -> None:
        conn.sendall(welcome())
        send = next(frames)  # forwarded: the client now waits for its receipt
        conn.sendall(encode(SendOk(78, 2, request_id=send.request_id)))
        for n, _ in enumerate(frames, 1):
            if n == 10:
                got_all.set()
                conn.shutdown(socket.SHUT_RDWR)
                return

    fs = fake_server(drops_after_ten)
    with Client(HOST, fs.port, timeout=30) as client:
        assert client.send(2, "to be receipted").message_id == 78
        futures: list[Future[Frame]] = [client.submit(TimeRequest()) for _ in range(10)]
        assert got_all.wait(5)
        start = time.monotonic()
        for future in futures:
            with pytest.raises(ConnectionLost):
                future.result(5)
        with pytest.raises(ConnectionLost):
            client.wait_receipt(78, timeout=5)
        assert time.monotonic() - start < 2  # at once, not after the 30 s request timeout
        with pytest.raises(ConnectionLost):
            client.time()
        # Nothing can arrive any more: waiting for any receipt fails at once too.
        start = time.monotonic()
        with pytest.raises(ConnectionLost):
            client.wait_receipt(79, timeout=5)
        assert time.monotonic() - start < 1


def test_server_full_at_connect(fake_server: Callable[..., FakeServer]) -> None:
    def full(conn: socket.socket, frames: Iterator[Frame]) -> None:
        conn.sendall(encode(ErrorResponse(7, "SERVER_FULL", "full (10 clients)")))

    fs = fake_server(full)
    with pytest.raises(ServerFull) as info:
        Client(HOST, fs.port, connect_timeout=5)
    assert info.value.code == 7 and "full" in info.value.message


def test_unknown_error_code_is_a_failure_of_that_request(
    fake_server: Callable[..., FakeServer],
) -> None:
    def future_code(conn: socket.socket, frames: Iterator[Frame]) -> None:
        conn.sendall(welcome())
        req = next(frames)
        conn.sendall(
            encode(ErrorResponse(99, "QUOTA_EXCEEDED", "too much", request_id=req.request_id))
        )
        req = next(frames)
        conn.sendall(encode(TimeOk(5, 0, "UTC", request_id=req.request_id)))
        for _ in frames:
            pass

    fs = fake_server(future_code)
    with Client(HOST, fs.port, timeout=5) as client:
        with pytest.raises(ServerError) as info:
            client.time()
        assert (info.value.code, info.value.name, info.value.message) == (
            99,
            "QUOTA_EXCEEDED",
            "too much",
        )
        assert client.time().epoch_ms == 5


def test_garbage_from_the_server_is_a_lost_connection(
    fake_server: Callable[..., FakeServer],
) -> None:
    def garbage(conn: socket.socket, frames: Iterator[Frame]) -> None:
        conn.sendall(welcome())
        next(frames)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        for _ in frames:
            pass

    fs = fake_server(garbage)
    with Client(HOST, fs.port, timeout=5) as client:
        with pytest.raises(ConnectionLost) as info:
            client.time()
        assert "protocol error" in info.value.reason


def test_works_with_many_threads_sharing_one_client(server: ServerThread) -> None:
    results: list[Any] = []
    with Client(HOST, server.port, timeout=10) as client:

        def worker() -> None:
            for _ in range(50):
                results.append(client.name())

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    assert results == ["test-server"] * 400


def test_close_wakes_a_thread_waiting_for_indications(server: ServerThread) -> None:
    client = Client(HOST, server.port, timeout=5)
    outcome: list[BaseException | None] = []

    def wait_forever() -> None:
        try:
            client.next_indication()  # no timeout
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_forever)
    waiter.start()
    client.close()
    waiter.join(5)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLost)


def test_close_from_inside_a_callback(server: ServerThread) -> None:
    closed = threading.Event()
    holder: list[Client] = []

    receiver: list[threading.Thread] = []

    def on_indication(frame: Frame) -> None:
        receiver.append(threading.current_thread())
        holder[0].close()  # on the receiver thread itself: must not deadlock
        closed.set()

    with Client(HOST, server.port, timeout=5) as sender:
        client = Client(HOST, server.port, timeout=5, on_indication=on_indication)
        holder.append(client)
        sender.send(client.client_id, "close yourself")
        assert closed.wait(5)
        assert client.closed
        with pytest.raises(ConnectionLost):
            client.time()
        # The receiver thread ends once the callback returns.
        receiver[0].join(5)
        assert not receiver[0].is_alive()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_failing_callback_does_not_leave_requests_hanging(server: ServerThread) -> None:
    def on_indication(frame: Frame) -> None:
        raise ValueError("bug in the application's callback")

    with Client(HOST, server.port, timeout=5) as sender:
        client = Client(HOST, server.port, timeout=30, on_indication=on_indication)
        try:
            sender.send(client.client_id, "trigger")
            start = time.monotonic()
            # Whatever the library does with the callback's exception (report it and go on,
            # or drop the connection), a request must not wait out its 30 s timeout.
            with contextlib.suppress(ConnectionLost):
                assert client.name() == "test-server"
            assert time.monotonic() - start < 5
        finally:
            client.close()


def test_connect_timeout_when_the_server_does_not_answer(unanswered_port: int) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        Client(HOST, unanswered_port, connect_timeout=0.5)
    assert 0.4 <= time.monotonic() - start < 3
    assert "timed out" in str(info.value)
