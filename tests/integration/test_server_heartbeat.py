"""Heartbeats with short intervals: PING after one silent interval, closed after three."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest

from support.peers import RawPeer
from support.servers import ServerThread
from switchboard.client import Client
from switchboard.protocol import (
    Ack,
    JoinOk,
    JoinRequest,
    Left,
    LeftReason,
    Message,
    Ping,
    Pong,
    ReceiptStatus,
    TimeOk,
    TimeRequest,
)

HOST = "127.0.0.1"
BEAT = 0.2


@pytest.fixture
def st(server_factory: Any, caplog: pytest.LogCaptureFixture) -> ServerThread:
    caplog.set_level(logging.INFO, logger="switchboard.server")
    return server_factory(heartbeat=BEAT)


def test_a_silent_client_is_pinged_then_removed_after_three_intervals(
    st: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(HOST, st.port, timeout=5) as watcher, RawPeer(st.port) as silent:
        assert silent.welcome is not None and silent.welcome.heartbeat_ms == 200
        connected = time.monotonic()
        ping = silent.expect(Ping, skip_pings=False)
        pinged_after = time.monotonic() - connected
        assert ping.request_id == 0
        assert pinged_after >= BEAT * 0.9
        assert silent.client_id in [c.client_id for c in watcher.list_clients()]
        # It never answers: one PING only, then the server closes without another frame.
        assert silent.expect_closed(timeout=5) == []
        closed_after = time.monotonic() - connected
        assert 3 * BEAT * 0.9 <= closed_after < 3 * BEAT + 1.5
        st.wait_for(lambda s: silent.client_id not in s.directory.client_by_id)
        assert [c.client_id for c in watcher.list_clients()] == [watcher.client_id]
    lines = [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "disconnect"]
    assert any(f"#{silent.client_id} " in m and "heartbeat timeout" in m for m in lines), lines


def test_answering_pings_keeps_a_connection(st: ServerThread) -> None:
    with RawPeer(st.port) as peer:
        start = time.monotonic()
        for _ in range(4):
            peer.expect(Ping, timeout=5, skip_pings=False)
            peer.send(Pong())
        assert time.monotonic() - start > 3 * BEAT  # outlived the silence limit
        peer.send(TimeRequest(request_id=1))
        assert peer.expect(TimeOk).request_id == 1
        assert peer.client_id in st.client_ids()


def test_any_frame_counts_as_life(st: ServerThread) -> None:
    with RawPeer(st.port) as peer:
        start = time.monotonic()
        for _ in range(4):
            peer.expect(Ping, timeout=5, skip_pings=False)
            peer.send(Ack(123_456))  # an ACK nobody waits for: ignored, but alive
        assert time.monotonic() - start > 3 * BEAT
        assert peer.client_id in st.client_ids()


def test_the_client_library_answers_pings_by_itself(st: ServerThread) -> None:
    pings = threading.Semaphore(0)

    def tracer(direction: str, event: Any, raw: bytes | None) -> None:
        if direction == "<<-" and isinstance(event, Ping):
            pings.release()

    with Client(HOST, st.port, timeout=5, trace=tracer) as client:
        start = time.monotonic()
        for _ in range(4):
            assert pings.acquire(timeout=5), "no PING arrived"
        assert time.monotonic() - start > 3 * BEAT
        assert client.client_id in st.client_ids()
        assert client.time().epoch_ms > 0
        assert client.next_indication(timeout=0) is None  # PINGs are not indications


def test_timed_out_target_settles_receipts_and_leaves_rooms(st: ServerThread) -> None:
    with Client(HOST, st.port, timeout=5) as sender, RawPeer(st.port) as silent:
        sender.join("r")
        silent.send(JoinRequest("r", request_id=1))
        assert silent.expect(JoinOk).members == 2
        ok = sender.send(silent.client_id, "are you there?")
        assert silent.expect(Message).message_id == ok.message_id
        silent.expect_closed(timeout=5)
        assert sender.wait_receipt(ok.message_id, timeout=5) == ReceiptStatus.NOT_DELIVERED
        deadline = time.monotonic() + 5
        while True:
            frame = sender.next_indication(timeout=max(0.0, deadline - time.monotonic()))
            assert frame is not None, "no LEFT for the timed-out member"
            if isinstance(frame, Left):
                break
        assert (frame.room, frame.client_id, frame.reason) == (
            "r",
            silent.client_id,
            LeftReason.TIMED_OUT,
        )


def keepalive_of(st: ServerThread, client_id: int) -> tuple[int, int, int, int]:
    """SO_KEEPALIVE and TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT of a client's socket on the
    server (read from the socket the server accepted, whatever set them)."""

    def read() -> tuple[int, int, int, int]:
        conn = st.server.directory.client_by_id[client_id]
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        return (
            int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )

    return st.call(read)


def test_accepted_sockets_have_tcp_keepalive(server_factory: Any) -> None:
    # Keepalive after three heartbeats, probes a heartbeat apart: set on the listening
    # socket and inherited by every accepted one (transport.enable_keepalive).
    st = server_factory(heartbeat=7)
    with Client(HOST, st.port, timeout=5) as client:
        assert keepalive_of(st, client.client_id) == (1, 21, 7, 3)
