"""The client limit, and backpressure: a reader that never reads."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from support.peers import RawPeer
from switchboard.client import Client, RecipientBusy, ServerFull
from switchboard.protocol import (
    Ack,
    ErrorCode,
    ErrorResponse,
    Message,
    Receipt,
    ReceiptStatus,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
)

HOST = "127.0.0.1"


# --- the client limit -------------------------------------------------------------------------


def test_the_client_limit_refuses_then_readmits(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.server")
    st = server_factory(max_clients=3)
    admitted = [Client(HOST, st.port, timeout=5) for _ in range(3)]
    try:
        # The library raises a typed error from the constructor ...
        with pytest.raises(ServerFull) as info:
            Client(HOST, st.port, timeout=5)
        assert info.value.code == ErrorCode.SERVER_FULL and info.value.name == "SERVER_FULL"
        # ... and on the wire: ERROR SERVER_FULL about the connection (id 0), no WELCOME, close.
        refused = [RawPeer(st.port, welcome=False) for _ in range(20)]
        for peer in refused:
            seen = peer.expect_closed(timeout=5)
            assert len(seen) == 1 and isinstance(seen[0], ErrorResponse), seen
            assert (seen[0].code, seen[0].request_id) == (ErrorCode.SERVER_FULL, 0)
            assert "3" in seen[0].message
            peer.close()
        # The admitted clients noticed nothing and the server still serves them.
        for client in admitted:
            assert len(client.list_clients()) == 3
            assert client.next_indication(timeout=0) is None
        # A slot frees: the next client is admitted, with a fresh id.
        admitted.pop(0).close()
        st.wait_for(lambda s: s.directory.client_count() == 2)
        newcomer = Client(HOST, st.port, timeout=5)
        admitted.append(newcomer)
        assert newcomer.client_id > max(c.client_id for c in admitted[:-1])
        assert [c.client_id for c in newcomer.list_clients()] == [c.client_id for c in admitted]
        with pytest.raises(ServerFull):
            Client(HOST, st.port, timeout=5)
    finally:
        for client in admitted:
            client.close()
    # Refusals from one source are summarised (logs.RepeatedEvents): a few lines, then a
    # count, which the next heartbeat tick or this flush logs.
    st.call(lambda: st.server.source_log.flush())
    refusals = [r for r in caplog.records if getattr(r, "event", "") == "refused"]
    assert refusals and all("full" in r.getMessage() for r in refusals)
    counted = [r.__dict__["count"] for r in caplog.records if getattr(r, "kind", "") == "refused"]
    assert len(refusals) + sum(counted) == 22


def test_a_refused_client_never_hangs(server_factory: Any) -> None:
    st = server_factory(max_clients=1)
    with RawPeer(st.port) as first:
        start = time.monotonic()
        with RawPeer(st.port, welcome=False) as second:
            second.expect_closed(timeout=5)
        assert time.monotonic() - start < 2
        first.send(TimeRequest(request_id=1))
        assert first.expect(TimeOk).request_id == 1


# --- backpressure ----------------------------------------------------------------------------

TEXT = "x" * 4000


def flood_until_busy(sender: Client, target_id: int, limit: int = 20_000) -> list[int]:
    """SEND large messages until RECIPIENT_BUSY; the message ids that were forwarded."""
    forwarded: list[int] = []
    for _ in range(limit):
        try:
            forwarded.append(sender.send(target_id, TEXT).message_id)
        except RecipientBusy as exc:
            assert exc.code == ErrorCode.RECIPIENT_BUSY and exc.name == "RECIPIENT_BUSY"
            return forwarded
    raise AssertionError(f"no RECIPIENT_BUSY after {limit} messages")


def collect_receipts(client: Client, ids: list[int], timeout: float = 10) -> dict[int, int]:
    """Exactly one receipt for each of ``ids`` (and no other), within ``timeout``."""
    receipts: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(receipts) < len(ids):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(receipts)} of {len(ids)} receipts"
        frame = client.next_indication(timeout=remaining)
        if isinstance(frame, Receipt):
            assert frame.message_id not in receipts, "two receipts for one message"
            receipts[frame.message_id] = frame.status
    assert set(receipts) == set(ids)
    assert client.next_indication(timeout=0.05) is None
    return receipts


def test_a_reader_that_never_reads_gets_recipient_busy_then_recovers(
    server_factory: Any,
) -> None:
    st = server_factory(write_high_water=64 * 1024, write_hard_limit=64 * 1024 * 1024)
    with Client(HOST, st.port, timeout=10) as sender, RawPeer(st.port, rcvbuf=4096) as slow:
        forwarded = flood_until_busy(sender, slow.client_id)
        assert len(forwarded) > 10
        # Busy is about that one recipient: others are served as usual.
        with Client(HOST, st.port, timeout=5) as other:
            ok = sender.send(other.client_id, "hello")
            assert sender.wait_receipt(ok.message_id) == ReceiptStatus.DELIVERED
            receipt = sender.next_indication(timeout=5)
            assert isinstance(receipt, Receipt) and receipt.message_id == ok.message_id
        assert slow.client_id in st.client_ids()
        # The reader wakes up: it gets every forwarded message, in order, and ACKs them.
        for message_id in forwarded:
            msg = slow.expect(Message, timeout=10)
            assert (msg.message_id, msg.text) == (message_id, TEXT)
            slow.send(Ack(message_id))
        receipts = collect_receipts(sender, forwarded)
        assert set(receipts.values()) == {ReceiptStatus.DELIVERED}
        # Drained: it accepts messages again.
        ok = sender.send(slow.client_id, "again")
        assert slow.expect(Message).text == "again"


def test_a_slow_reader_over_the_hard_limit_is_disconnected(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.server")
    st = server_factory(write_high_water=64 * 1024, write_hard_limit=96 * 1024)
    with (
        Client(HOST, st.port, timeout=10) as sender,
        RawPeer(st.port) as helper,
        RawPeer(st.port, rcvbuf=4096) as slow,
    ):
        # While it still reads, the slow client sends 2,000 messages to a helper that holds
        # back its ACKs: their receipts will be what pushes it past the hard limit later.
        slow.send(*[SendRequest(helper.client_id, "r", request_id=i + 1) for i in range(2000)])
        held = [helper.expect(Message).message_id for _ in range(2000)]
        # Now it stops reading altogether; the sender floods it until it is busy ...
        forwarded = flood_until_busy(sender, slow.client_id)
        assert slow.client_id in st.client_ids()
        # ... and the 2,000 receipts (about 54 KB) take it over the hard limit.
        helper.send(*[Ack(mid) for mid in held])
        st.wait_for(lambda s: slow.client_id not in s.directory.client_by_id, timeout=10)
        # Everything sent to it that it never acknowledged is settled as not delivered.
        receipts = collect_receipts(sender, forwarded)
        assert set(receipts.values()) == {ReceiptStatus.NOT_DELIVERED}
        assert helper.client_id in st.client_ids()
    reasons = [
        getattr(r, "reason", "") for r in caplog.records if getattr(r, "event", "") == "disconnect"
    ]
    assert any("too slow" in reason for reason in reasons), reasons


def test_a_reader_that_never_reads_is_eventually_dropped(server_factory: Any) -> None:
    # The server stops reading from a connection it cannot write to, so a peer that never
    # reads falls silent too: the heartbeat removes it and settles its receipts.
    st = server_factory(
        heartbeat=0.3, write_high_water=64 * 1024, write_hard_limit=64 * 1024 * 1024
    )
    with Client(HOST, st.port, timeout=10) as sender, RawPeer(st.port, rcvbuf=4096) as slow:
        forwarded = flood_until_busy(sender, slow.client_id)
        st.wait_for(lambda s: slow.client_id not in s.directory.client_by_id, timeout=10)
        receipts = collect_receipts(sender, forwarded)
        assert set(receipts.values()) == {ReceiptStatus.NOT_DELIVERED}
        with pytest.raises(Exception) as info:
            sender.send(slow.client_id, "gone?")
        assert getattr(info.value, "code", None) == ErrorCode.NO_SUCH_CLIENT


def test_recipient_busy_on_the_wire(server_factory: Any) -> None:
    st = server_factory(write_high_water=64 * 1024, write_hard_limit=64 * 1024 * 1024)
    with RawPeer(st.port) as sender, RawPeer(st.port, rcvbuf=4096) as slow:
        # Pipeline SENDs in batches; every one is answered, in order, until one is busy.
        next_id, busy = 1, None
        while busy is None and next_id < 20_000:
            batch = range(next_id, next_id + 50)
            sender.send(*[SendRequest(slow.client_id, TEXT, request_id=i) for i in batch])
            for i in batch:
                reply = sender.next()
                assert reply is not None and reply.request_id == i, reply
                if isinstance(reply, ErrorResponse):
                    assert reply.code == ErrorCode.RECIPIENT_BUSY, reply
                    busy = busy or i
                else:
                    assert isinstance(reply, SendOk)
            next_id += 50
        assert busy is not None
