"""The WebSocket transport (/ws) without a browser: aiohttp's client and raw sockets against
an in-process server with its HTTP listener on a free port.

A WebSocket client is a client like any other (ids, LIST, messages and receipts with TCP
clients, --max-clients); bad input over it (a wrong subprotocol or Origin, text messages,
messages that are not one frame, oversized ones, a slowloris upgrade, a client that never
reads) is refused with a typed error and costs bounded memory, while others are served.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.peers import next_of
from support.servers import ServerThread, connected_count
from support.tls_certs import make_self_signed
from support.waiting import wait_until
from switchboard.client import Client
from switchboard.protocol import (
    WEBSOCKET_SUBPROTOCOL,
    Ack,
    ErrorCode,
    ErrorResponse,
    Frame,
    FrameDecoder,
    ListOk,
    ListRequest,
    Message,
    Ping,
    Receipt,
    ReceiptStatus,
    SendOk,
    SendRequest,
    Shutdown,
    TimeOk,
    TimeRequest,
    Welcome,
    encode,
)
from switchboard.server.states import ConnectionState

HOST = "127.0.0.1"
TIMEOUT = 10.0


def web_server(factory: Callable[..., ServerThread], **settings: Any) -> ServerThread:
    return factory(http=f"{HOST}:0", **settings)


def http_port(st: ServerThread) -> int:
    assert st.server.http is not None
    return st.server.http.addresses[0][1]


def decode_one(data: bytes) -> Frame:
    """The one frame a WebSocket message carries."""
    decoder = FrameDecoder()
    decoder.feed(data)
    events = list(decoder)
    assert len(events) == 1 and isinstance(events[0], Frame), events
    assert decoder.buffered == 0
    return events[0]


class WsPeer:
    """One WebSocket client speaking the protocol, a frame per binary message."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, frame: Frame) -> None:
        await self.ws.send_bytes(encode(frame))

    async def next(self, timeout: float = TIMEOUT) -> Frame:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.BINARY, msg
        return decode_one(msg.data)

    async def expect(self, cls: Any, timeout: float = TIMEOUT) -> Any:
        """The next frame of type ``cls`` (PINGs and others before it skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - time.monotonic()))
            if isinstance(frame, cls):
                return frame

    async def closed(self, timeout: float = TIMEOUT) -> aiohttp.WSMessage:
        """The close that ends the WebSocket (frames before it skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return msg


@asynccontextmanager
async def ws_client(
    st: ServerThread,
    *,
    protocols: tuple[str, ...] = (WEBSOCKET_SUBPROTOCOL,),
    headers: dict[str, str] | None = None,
) -> AsyncIterator[WsPeer]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"http://{HOST}:{http_port(st)}/ws",
            protocols=protocols,
            headers=headers,
            autoclose=False,
            max_msg_size=0,
        ) as ws,
    ):
        yield WsPeer(ws)


async def handshake_status(st: ServerThread, **kwargs: Any) -> int:
    """The HTTP status of a refused upgrade."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with ws_client(st, **kwargs):
            pass
    return refused.value.status


async def test_a_websocket_client_and_a_tcp_client_message_each_other_with_receipts(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory)
    async with ws_client(st) as web:
        welcome = await web.expect(Welcome)
        local_port = web.ws.get_extra_info("sockname")[1]
        assert (welcome.ip, welcome.port) == (HOST, local_port)
        tcp = await asyncio.to_thread(Client, HOST, st.port, timeout=TIMEOUT)
        try:
            # LIST shows the browser's TCP peer, as for any client.
            listed = await asyncio.to_thread(tcp.list_clients)
            assert (welcome.client_id, HOST, local_port) in [
                (c.client_id, c.ip, c.port) for c in listed
            ]
            # TCP -> WebSocket, and the WebSocket's ACK is the TCP sender's receipt.
            sent = await asyncio.to_thread(tcp.send, welcome.client_id, "héllo 你好 🙂")
            message = await web.expect(Message)
            assert (message.text, message.sender_id) == ("héllo 你好 🙂", tcp.client_id)
            await web.send(Ack(message.message_id))
            status = await asyncio.to_thread(tcp.wait_receipt, sent.message_id, TIMEOUT)
            assert status == ReceiptStatus.DELIVERED
            # WebSocket -> TCP: OK, the message, and the receipt once the library ACKs it.
            await web.send(SendRequest(tcp.client_id, "back at you", request_id=7))
            ok = await web.expect(SendOk)
            assert (ok.request_id, ok.target) == (7, tcp.client_id)
            got = await asyncio.to_thread(next_of, tcp, Message, TIMEOUT)
            assert got.text == "back at you"
            assert (got.sender_ip, got.sender_port) == (HOST, local_port)
            receipt = await web.expect(Receipt)
            assert (receipt.message_id, receipt.status) == (ok.message_id, ReceiptStatus.DELIVERED)
        finally:
            await asyncio.to_thread(tcp.close)


async def test_a_wrong_or_missing_subprotocol_is_refused(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory)
    assert await handshake_status(st, protocols=("chat.v2",)) == 400
    assert await handshake_status(st, protocols=()) == 400
    assert connected_count(st) == 0


async def test_a_page_of_another_origin_is_refused_its_own_and_allowed_ones_are_not(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory, http_allow_origin="https://chat.example.org")
    port = http_port(st)
    assert await handshake_status(st, headers={"Origin": "https://evil.example"}) == 403
    assert await handshake_status(st, headers={"Origin": f"http://localhost:{port}"}) == 403
    for origin in (f"http://{HOST}:{port}", "https://chat.example.org"):
        async with ws_client(st, headers={"Origin": origin}) as web:
            await web.expect(Welcome)


async def test_text_messages_and_messages_that_are_not_one_frame_are_typed_errors(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory)
    async with ws_client(st) as web:
        await web.expect(Welcome)
        await web.ws.send_str("TIME")
        error = await web.expect(ErrorResponse)
        assert error.code == ErrorCode.BAD_FRAME and "binary" in error.message
        assert (await web.closed()).data == aiohttp.WSCloseCode.UNSUPPORTED_DATA
    two = encode(TimeRequest(request_id=1)) + encode(TimeRequest(request_id=2))
    for data in (two, two[:20], b"SB"):
        async with ws_client(st) as web:
            await web.expect(Welcome)
            await web.ws.send_bytes(data)
            error = await web.expect(ErrorResponse)
            assert error.code == ErrorCode.BAD_FRAME and "exactly one frame" in error.message
            assert (await web.closed()).data == aiohttp.WSCloseCode.PROTOCOL_ERROR
    st.wait_for(lambda server: server.directory.client_count() == 0)


async def test_an_oversized_message_is_refused_from_its_header_and_others_are_served(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory, max_frame=4096)
    with Client(HOST, st.port, timeout=TIMEOUT) as bystander:
        async with ws_client(st) as web:
            await web.expect(Welcome)
            # 1 MiB announced: refused before it is read (aiohttp checks the header).
            await web.ws.send_bytes(b"x" * (1024 * 1024))
            assert (await web.closed()).data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        st.wait_for(lambda server: server.directory.client_count() == 1)
        assert await asyncio.to_thread(bystander.time) is not None
        # A frame of exactly the limit is served.
        async with ws_client(st) as web:
            await web.expect(Welcome)
            text = "y" * (4096 - 14 - 8)
            await web.send(SendRequest(bystander.client_id, text, request_id=3))
            assert (await web.expect(SendOk)).request_id == 3


async def test_websocket_clients_count_against_max_clients(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory, max_clients=1)
    with Client(HOST, st.port, timeout=TIMEOUT):
        async with ws_client(st) as web:
            error = await web.expect(ErrorResponse)
            assert error.code == ErrorCode.SERVER_FULL
            await web.closed()
    async with ws_client(st) as web:  # the TCP client's slot is free again
        await web.expect(Welcome)


async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    server_factory: Callable[..., ServerThread],
) -> None:
    forwarded = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
    st = web_server(server_factory)
    async with ws_client(st, headers=forwarded) as web:
        assert (await web.expect(Welcome)).ip == HOST
    st = web_server(server_factory, http_trusted_proxy="127.0.0.0/8")
    async with ws_client(st, headers=forwarded) as web:
        welcome = await web.expect(Welcome)
        assert (welcome.ip, welcome.port) == ("203.0.113.7", 0)
        await web.send(ListRequest(request_id=2))
        listed = await web.expect(ListOk)
        assert [(c.ip, c.port) for c in listed.clients] == [("203.0.113.7", 0)]
    async with ws_client(st, headers={"X-Forwarded-For": "not an address"}) as web:
        assert (await web.expect(Welcome)).ip == HOST


def raw_upgrade_request(port: int, *, complete: bool = True) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {WEBSOCKET_SUBPROTOCOL}\r\n"
    )
    return (head + "\r\n").encode() if complete else head.encode()


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (what it sends is read)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


async def test_a_slowloris_upgrade_is_closed_after_the_handshake_timeout(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory, handshake_timeout=0.5)
    port = http_port(st)
    slow = socket.create_connection((HOST, port))
    try:
        request = raw_upgrade_request(port, complete=False)
        slow.sendall(request[:30])  # and the rest never comes
        async with ws_client(st) as web:  # others are served meanwhile
            await web.expect(Welcome)
        started = time.monotonic()
        assert closed_by_server(slow, 5.0)
        assert time.monotonic() - started < 3.0
    finally:
        slow.close()
    st.wait_for(lambda server: server.http is not None and not server.http.pending)


def masked_frame(payload: bytes) -> bytes:
    """A client's binary WebSocket message (masked with a zero key: the payload as is)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x82, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


async def test_a_websocket_client_that_never_reads_is_held_to_the_write_limits(
    server_factory: Callable[..., ServerThread],
) -> None:
    high, hard = 64 * 1024, 512 * 1024
    st = web_server(server_factory, write_high_water=high, write_hard_limit=hard, rate=0)
    port = http_port(st)
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.sendall(raw_upgrade_request(port))
        sock.settimeout(TIMEOUT)
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        st.wait_for(lambda server: server.directory.client_count() == 1)
        (client_id,) = st.client_ids()

        def shrink() -> None:
            transport = st.server.directory.client_by_id[client_id].transport
            assert transport is not None
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        st.call(shrink)
        # 200,000 TIMEs (about 6 MB of answers), and never a byte read.
        batch = b"".join(masked_frame(encode(TimeRequest(request_id=i + 1))) for i in range(1000))
        sent = 0
        sock.setblocking(False)
        deadline = time.monotonic() + TIMEOUT
        while sent < 200 and time.monotonic() < deadline:
            try:
                sock.sendall(batch)
                sent += 1
            except BlockingIOError:
                break  # the server stopped reading us: what back-pressure is for
        paused = wait_until(
            lambda: st.call(
                lambda: (
                    (conn := st.server.directory.client_by_id.get(client_id)) is None
                    or conn.write_paused
                )
            ),
            TIMEOUT,
        )
        assert paused

        def queued() -> int:
            conn = st.server.directory.client_by_id.get(client_id)
            if conn is None or conn.transport is None:
                return 0
            return int(conn.transport.get_write_buffer_size()) + sum(map(len, conn.out))

        assert st.call(queued) <= hard + high
        # A SEND to it is refused as busy, and everyone else is served.
        with Client(HOST, st.port, timeout=TIMEOUT) as other:
            assert other.time() is not None
            with pytest.raises(Exception) as busy:
                other.send(client_id, "are you there?")
            assert "RECIPIENT_BUSY" in str(busy.value) or "busy" in str(busy.value).lower()
            async with ws_client(st) as web:
                await web.expect(Welcome)
                await web.send(TimeRequest(request_id=5))
                assert (await web.expect(TimeOk)).request_id == 5
    finally:
        sock.close()
    st.wait_for(lambda server: server.directory.client_count() == 0)


async def test_metrics_are_prometheus_text_and_move_with_requests(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory)
    url = f"http://{HOST}:{http_port(st)}/metrics"

    async def scrape() -> dict[str, float]:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

    before = await scrape()
    assert (
        before["switchboard_build_info{event_loop=asyncio,python=" + _python() + ",version=0.1.0}"]
        == 1
    )
    assert not [name for name in before if "client" in name.split("{")[1] or "room=" in name]
    async with ws_client(st) as web:
        welcome = await web.expect(Welcome)
        for i in range(5):
            await web.send(TimeRequest(request_id=i + 1))
        for _ in range(5):
            await web.expect(TimeOk)
        with Client(HOST, st.port, timeout=TIMEOUT) as tcp:
            sent = tcp.send(welcome.client_id, "counted")
            message = await web.expect(Message)
            await web.send(Ack(message.message_id))
            assert tcp.wait_receipt(sent.message_id, TIMEOUT) == ReceiptStatus.DELIVERED
            await web.send(SendRequest(999_999, "nobody", request_id=9))
            assert (await web.expect(ErrorResponse)).code == ErrorCode.NO_SUCH_CLIENT
            during = await scrape()
    after = await scrape()

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert moved("switchboard_frames_received_total{type=TIME}") == 5
    assert moved("switchboard_frames_received_total{type=SEND}") == 2
    assert moved("switchboard_frames_received_total{type=ACK}") == 1
    assert moved("switchboard_messages_forwarded_total{}") == 1
    assert moved("switchboard_errors_total{code=NO_SUCH_CLIENT}") == 1
    assert moved("switchboard_connections_accepted_total{transport=websocket}") == 1
    assert moved("switchboard_connections_accepted_total{transport=tcp}") == 1
    assert during["switchboard_connections{transport=websocket}"] == 1
    assert during["switchboard_connections{transport=tcp}"] == 1
    assert moved("switchboard_send_receipt_seconds_count{}") == 1
    assert moved("switchboard_received_bytes_total{}") > 5 * 14
    assert moved("switchboard_sent_bytes_total{}") > 5 * 14
    st.wait_for(lambda server: server.directory.client_count() == 0)
    final = await scrape()
    assert sum(v for k, v in final.items() if k.startswith("switchboard_disconnects_total")) == 2


def _python() -> str:
    import platform

    return platform.python_version()


async def test_health_and_readiness(server_factory: Callable[..., ServerThread]) -> None:
    st = web_server(server_factory)
    base = f"http://{HOST}:{http_port(st)}"
    async with aiohttp.ClientSession() as session:
        for path, body in (("/healthz", "ok\n"), ("/readyz", "ready\n")):
            async with session.get(base + path) as response:
                assert (response.status, await response.text()) == (200, body)
        async with session.get(base + "/") as response:
            assert response.status == 200 and "text/html" in response.headers["Content-Type"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        async with session.get(base + "/../pyproject.toml") as response:
            assert response.status in (403, 404)
        async with session.get(base + "/ws") as response:  # not an upgrade
            assert response.status == 426
    st.call(lambda: setattr(st.server, "shutting_down", True))
    try:
        async with aiohttp.ClientSession() as session, session.get(base + "/readyz") as response:
            assert response.status == 503
    finally:
        st.call(lambda: setattr(st.server, "shutting_down", False))


def test_connection_state_of_a_websocket_client_is_ready(
    server_factory: Callable[..., ServerThread],
) -> None:
    """The same ClientConnection serves it: READY, counted, and released on close."""
    st = web_server(server_factory)

    async def session() -> None:
        async with ws_client(st) as web:
            await web.expect(Welcome)
            st.wait_for(
                lambda server: (
                    [c.state for c in server.directory.clients()] == [ConnectionState.READY]
                )
            )

    asyncio.run(session())
    st.wait_for(lambda server: server.directory.client_count() == 0)


async def test_with_a_certificate_the_page_and_the_websocket_are_served_over_tls(
    server_factory: Callable[..., ServerThread], tmp_path: Path
) -> None:
    cert = make_self_signed(tmp_path)
    st = web_server(server_factory, tls_cert=cert.cert, tls_key=cert.key)
    port = http_port(st)
    context = ssl.create_default_context(cafile=cert.cert)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://{HOST}:{port}/healthz", ssl=context) as response:
            assert await response.text() == "ok\n"
        async with session.ws_connect(
            f"https://{HOST}:{port}/ws",
            protocols=(WEBSOCKET_SUBPROTOCOL,),
            ssl=context,
            headers={"Origin": f"https://{HOST}:{port}"},
        ) as ws:
            peer = WsPeer(ws)
            await peer.expect(Welcome)
            await peer.send(TimeRequest(request_id=4))
            assert (await peer.expect(TimeOk)).request_id == 4
        # Plain HTTP at the TLS port gets no page.
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://{HOST}:{port}/healthz") as response:
                await response.read()
    st.wait_for(lambda server: server.directory.client_count() == 0)


async def test_the_rate_limit_and_the_heartbeat_hold_for_websocket_clients(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory, rate=1, burst=3, heartbeat=0.3)
    async with ws_client(st) as web:
        await web.expect(Welcome)
        for i in range(6):
            await web.send(TimeRequest(request_id=i + 1))
        answers = [await web.expect((TimeOk, ErrorResponse)) for _ in range(6)]
        refused = [a for a in answers if isinstance(a, ErrorResponse)]
        assert len(answers) - len(refused) == 3
        assert {a.code for a in refused} == {ErrorCode.RATE_LIMITED}
        # Silent, it is PINGed; never answering, it is dropped after three intervals.
        await web.expect(Ping, timeout=5)
        await web.closed(timeout=5)
    st.wait_for(lambda server: server.directory.client_count() == 0)
    assert st.call(lambda: st.server.metrics.disconnects.get("heartbeat_timeout")) == 1


async def test_shutdown_tells_websocket_clients_and_closes_them(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = web_server(server_factory)
    async with ws_client(st) as web:
        await web.expect(Welcome)
        stopping = asyncio.create_task(asyncio.to_thread(st.stop))
        notice = await web.expect(Shutdown)
        assert notice.reason
        await web.closed()
        await asyncio.wait_for(stopping, TIMEOUT)


async def test_a_websocket_clients_socket_has_tcp_keepalive(
    server_factory: Callable[..., ServerThread],
) -> None:
    # As on the server's own port: inherited from the HTTP listener (transport.enable_keepalive).
    st = web_server(server_factory, heartbeat=7)
    async with ws_client(st) as web:
        welcome = await web.expect(Welcome)

        def keepalive() -> tuple[int, int, int, int]:
            conn = st.server.directory.client_by_id[welcome.client_id]
            assert conn.transport is not None
            sock = conn.transport.get_extra_info("socket")
            return (
                int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            )

        assert await asyncio.to_thread(st.call, keepalive) == (1, 21, 7, 3)
