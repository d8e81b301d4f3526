"""AsyncClient: the same surface as the blocking Client, against the in-process server
(which runs on its own loop in its own thread) and a scripted fake server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from support.fake_servers import FakeServer, welcome
from support.network import free_port
from support.servers import ServerThread
from switchboard.client import (
    AsyncClient,
    ConnectionFailed,
    ConnectionLost,
    NoSuchClient,
    RequestTimeout,
    ServerFull,
    ServerTime,
    TextTooLong,
)
from switchboard.protocol import (
    ClientInfo,
    Frame,
    Message,
    Ping,
    Receipt,
    ReceiptStatus,
    SendOk,
    Shutdown,
    TimeOk,
    TimeRequest,
)

HOST = "127.0.0.1"
GREETING = "你好 👋🏽 async"


async def test_requests_and_typed_results(server: ServerThread) -> None:
    async with (
        await AsyncClient.connect(HOST, server.port, timeout=5, nick="ayla") as a,
        await AsyncClient.connect(HOST, server.port, timeout=5) as b,
    ):
        assert a.server_name == "test-server" and a.client_id < b.client_id
        t = await a.time()
        assert isinstance(t, ServerTime)
        assert abs(t.epoch_ms - time.time() * 1000) < 5000
        assert await a.name() == "test-server"
        clients = await b.list_clients()
        assert all(isinstance(c, ClientInfo) for c in clients)
        assert [(c.client_id, c.nick) for c in clients] == [
            (a.client_id, "ayla"),
            (b.client_id, ""),
        ]
        assert 0 < await a.ping() < 5


async def test_send_with_receipt_between_async_clients(server: ServerThread) -> None:
    async with (
        await AsyncClient.connect(HOST, server.port, timeout=5) as a,
        await AsyncClient.connect(HOST, server.port, timeout=5) as b,
    ):
        ok = await a.send(b.client_id, GREETING)
        assert isinstance(ok, SendOk) and ok.target == b.client_id
        msg = await b.next_indication(timeout=5)
        assert isinstance(msg, Message)
        assert (msg.text, msg.sender_id, msg.message_id) == (GREETING, a.client_id, ok.message_id)
        assert await a.wait_receipt(ok.message_id, timeout=5) == ReceiptStatus.DELIVERED
        with pytest.raises(NoSuchClient) as info:
            await a.send(b.client_id + 100, "nobody")
        assert info.value.code == 6
        with pytest.raises(TextTooLong):
            await a.send(b.client_id, "x" * 4097)
        assert await b.next_indication(timeout=0.02) is None


async def test_async_iteration_and_callbacks(server: ServerThread) -> None:
    received: list[Frame] = []
    async with (
        await AsyncClient.connect(HOST, server.port, timeout=5, on_indication=received.append) as a,
        await AsyncClient.connect(HOST, server.port, timeout=5) as b,
    ):
        ids = [(await a.send(b.client_id, f"m{i}")).message_id for i in range(3)]
        got = []
        async for frame in b:
            assert isinstance(frame, Message)
            got.append(frame.message_id)
            if len(got) == 3:
                break
        assert got == ids
        for message_id in ids:
            assert await a.wait_receipt(message_id, timeout=5) == ReceiptStatus.DELIVERED
        assert sorted(r.message_id for r in received if isinstance(r, Receipt)) == ids


async def test_pipelined_requests_from_many_async_clients(server: ServerThread) -> None:
    clients = [await AsyncClient.connect(HOST, server.port, timeout=20) for _ in range(20)]
    try:
        results = await asyncio.gather(*(c.time_many(100) for c in clients))
        assert [len(r) for r in results] == [100] * 20
        futures = [clients[0].submit(TimeRequest()) for _ in range(50)]
        answers = await asyncio.gather(*futures)
        assert all(isinstance(a, TimeOk) for a in answers)
        assert len({a.request_id for a in answers}) == 50
    finally:
        for c in clients:
            await c.close()


async def test_shutdown_reaches_the_async_client(server: ServerThread) -> None:
    client = await AsyncClient.connect(HOST, server.port, timeout=5)
    try:
        pending = client.submit(TimeRequest())
        await pending  # answered before the shutdown
        await asyncio.to_thread(server.stop)
        frames = [frame async for frame in client]  # ends when the connection does
        assert [type(f) for f in frames] == [Shutdown]
        with pytest.raises(ConnectionLost) as info:
            await client.time()
        assert "shut down" in info.value.reason
    finally:
        await client.close()


async def test_the_async_client_answers_pings(server_factory: Callable[..., ServerThread]) -> None:
    st = server_factory(heartbeat=0.2)
    pings = asyncio.Queue[None]()

    def tracer(direction: str, event: object, raw: bytes | None) -> None:
        if direction == "<<-" and isinstance(event, Ping):
            pings.put_nowait(None)

    async with await AsyncClient.connect(HOST, st.port, timeout=5, trace=tracer) as client:
        for _ in range(4):
            await asyncio.wait_for(pings.get(), 5)
        assert client.client_id in st.client_ids()
        assert (await client.time()).epoch_ms > 0


async def test_connect_failures() -> None:
    with pytest.raises(ConnectionFailed) as info:
        await AsyncClient.connect(HOST, free_port(), connect_timeout=5)
    assert "refused" in str(info.value)


async def test_server_full(server_factory: Callable[..., ServerThread]) -> None:
    st = server_factory(max_clients=1)
    async with await AsyncClient.connect(HOST, st.port, timeout=5):
        with pytest.raises(ServerFull) as info:
            await AsyncClient.connect(HOST, st.port, timeout=5)
        assert info.value.code == 7


async def test_no_welcome_and_no_answer_time_out(fake_server: Callable[..., FakeServer]) -> None:
    release = threading.Event()

    def silent(conn: socket.socket, frames: Iterator[Frame]) -> None:
        release.wait(10)

    fs = fake_server(silent)
    start = time.monotonic()
    with pytest.raises(ConnectionFailed):
        await AsyncClient.connect(HOST, fs.port, connect_timeout=0.3)
    assert time.monotonic() - start < 2
    release.set()

    def mute(conn: socket.socket, frames: Iterator[Frame]) -> None:
        conn.sendall(welcome())
        for _ in frames:
            pass

    fs = fake_server(mute)
    async with await AsyncClient.connect(HOST, fs.port, timeout=0.3) as client:
        start = time.monotonic()
        with pytest.raises(RequestTimeout):
            await client.time()
        assert 0.25 <= time.monotonic() - start < 2


async def test_lost_connection_fails_pending_requests_at_once(
    fake_server: Callable[..., FakeServer],
) -> None:
    def drops_after_five(conn: socket.socket, frames: Iterator[Frame]) -> None:
        conn.sendall(welcome())
        for n, _ in enumerate(frames, 1):
            if n == 5:
                conn.shutdown(socket.SHUT_RDWR)
                return

    fs = fake_server(drops_after_five)
    async with await AsyncClient.connect(HOST, fs.port, timeout=30) as client:
        start = time.monotonic()
        results = await asyncio.gather(*(client.time() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, ConnectionLost) for r in results), results
        assert time.monotonic() - start < 2
        with pytest.raises(ConnectionLost):
            await client.wait_receipt(1, timeout=5)
        assert time.monotonic() - start < 2


async def test_a_failing_callback_does_not_leave_requests_hanging(server: ServerThread) -> None:
    def on_indication(frame: Frame) -> None:
        raise ValueError("bug in the application's callback")

    async with (
        await AsyncClient.connect(HOST, server.port, timeout=5) as sender,
        await AsyncClient.connect(
            HOST, server.port, timeout=30, on_indication=on_indication
        ) as client,
    ):
        await sender.send(client.client_id, "trigger")
        start = time.monotonic()
        with contextlib.suppress(ConnectionLost):
            assert await client.name() == "test-server"
        assert time.monotonic() - start < 5


async def test_async_connect_timeout(unanswered_port: int) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        await AsyncClient.connect(HOST, unanswered_port, connect_timeout=0.5)
    assert 0.4 <= time.monotonic() - start < 3
    assert "timed out" in str(info.value)
