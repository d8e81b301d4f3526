"""Shutdown reaching every client, and IPv6."""

from __future__ import annotations

import time
from typing import Any

import pytest

from support.network import needs_ipv6
from support.peers import RawPeer
from support.servers import ServerThread
from switchboard.client import Client, ConnectionLost, RecipientBusy
from switchboard.protocol import (
    Message,
    ReceiptStatus,
    SendOk,
    SendRequest,
    Shutdown,
)

HOST = "127.0.0.1"


def test_shutdown_reaches_every_client(server: ServerThread) -> None:
    clients = [Client(HOST, server.port, timeout=5) for _ in range(3)]
    raw = RawPeer(server.port)
    try:
        start = time.monotonic()
        server.stop()
        elapsed = time.monotonic() - start
        # A raw peer sees SHUTDOWN with its reason, then the end of the stream.
        seen = raw.expect_closed(timeout=5)
        assert len(seen) == 1 and isinstance(seen[0], Shutdown), seen
        assert seen[0].reason == "test finished" and seen[0].request_id == 0
        for client in clients:
            frame = client.next_indication(timeout=5)
            assert isinstance(frame, Shutdown) and frame.reason == "test finished"
            with pytest.raises(ConnectionLost) as info:
                client.next_indication(timeout=5)
            assert "shut down" in info.value.reason
            with pytest.raises(ConnectionLost):
                client.time()
        # Every client read and closed: no need to wait out the grace period.
        assert elapsed < 1.5
    finally:
        raw.close()
        for client in clients:
            client.close()


def test_shutdown_does_not_wait_forever_for_a_peer_that_never_reads(
    server_factory: Any,
) -> None:
    st = server_factory(shutdown_grace=0.5)
    with Client(HOST, st.port, timeout=10) as sender, RawPeer(st.port, rcvbuf=4096) as slow:
        # Fill everything between the server and the non-reader, so that SHUTDOWN cannot
        # even be written to it.
        for _ in range(20_000):
            try:
                sender.send(slow.client_id, "x" * 4000)
            except RecipientBusy:
                break
        else:
            raise AssertionError("the non-reader never became busy")
        start = time.monotonic()
        st.stop()
        assert time.monotonic() - start < 0.5 + 1.5
        with pytest.raises(ConnectionLost):
            sender.time()


def test_pending_receipts_when_the_server_shuts_down(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as sender, RawPeer(server.port) as target:
        ok = sender.send(target.client_id, "never acknowledged")
        assert target.expect(Message).message_id == ok.message_id
        server.stop()
        # The receipt can no longer come: waiting for it fails at once, it does not hang.
        start = time.monotonic()
        try:
            status = sender.wait_receipt(ok.message_id, timeout=10)
        except ConnectionLost:
            pass
        else:  # a NOT_DELIVERED receipt that made it out before the close is fine too
            assert status == ReceiptStatus.NOT_DELIVERED
        assert time.monotonic() - start < 3


@needs_ipv6
@pytest.mark.parametrize("bind", ["::1", "::"])
def test_ipv6(server_factory: Any, bind: str) -> None:
    st = server_factory(host=bind)
    with Client("::1", st.port, timeout=5) as a, RawPeer(st.port, "::1") as b:
        assert a.welcome.ip == "::1"
        assert b.welcome is not None and b.welcome.ip == "::1"
        assert b.welcome.port == b.sock.getsockname()[1]
        listed = a.list_clients()
        assert [(c.ip, c.port) for c in listed] == [
            ("::1", a.welcome.port),
            ("::1", b.welcome.port),
        ]
        ok = a.send(b.client_id, "über IPv6 🌐")
        msg = b.expect(Message)
        assert (msg.sender_ip, msg.sender_port, msg.text) == ("::1", a.welcome.port, "über IPv6 🌐")
        assert ok.target == b.client_id
        b.send(SendRequest(a.client_id, "back", request_id=1))
        assert b.expect(SendOk).request_id == 1
        assert isinstance(a.next_indication(timeout=5), Message)
