"""Protocol version 2 over real sockets: ACKS and RECEIPTS (docs/PROTOCOL.md, ACKS, RECEIPTS
and "Versioning").  The guarantees are version 1's: exactly one answer per SEND, at most one
outcome per message, NOT_DELIVERED when the recipient goes away; a version-1 client never
sees a version-2 frame."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from support.peers import RawPeer
from support.servers import ServerThread
from switchboard import defaults
from switchboard.client import Client
from switchboard.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Acks,
    Frame,
    HelloOk,
    HelloRequest,
    Message,
    Receipt,
    Receipts,
    ReceiptStatus,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
    encode,
)

DELIVERED, NOT_DELIVERED = ReceiptStatus.DELIVERED, ReceiptStatus.NOT_DELIVERED


def _hello(peer: RawPeer, version: int) -> HelloOk:
    peer.send(HelloRequest(version=version, request_id=1))
    return peer.expect(HelloOk)


def _send(sender: RawPeer, target: Any, count: int, first_request: int = 10) -> list[int]:
    """``count`` SENDs to ``target.client_id`` in one write; the message ids from their OKs,
    in order."""
    to = target.client_id
    sender.send(*(SendRequest(to, f"m{i}", request_id=first_request + i) for i in range(count)))
    return [sender.expect(SendOk).message_id for _ in range(count)]


def _messages(peer: RawPeer, count: int) -> list[Message]:
    return [peer.expect(Message) for _ in range(count)]


def _outcomes(peer: RawPeer, count: int) -> tuple[list[Frame], dict[int, int]]:
    """Receipts and RECEIPTS frames until ``count`` message outcomes are in: the frames, and
    message id -> status (an id seen twice fails the test)."""
    frames: list[Frame] = []
    seen: dict[int, int] = {}
    while len(seen) < count:
        event = peer.next()
        assert event is not None, f"closed after {frames}"
        if isinstance(event, Receipt):
            ids, status = (event.message_id,), event.status
        elif isinstance(event, Receipts):
            ids, status = event.message_ids, event.status
        else:
            continue
        frames.append(event)
        for message_id in ids:
            assert message_id not in seen, f"two outcomes for message {message_id}: {frames}"
            seen[message_id] = status
    return frames, seen


def _quiet(peer: RawPeer) -> None:
    """Nothing more is queued for ``peer``: a TIME's answer is the next frame it gets."""
    peer.send(TimeRequest(request_id=999))
    assert isinstance(peer.next(), TimeOk)


def test_welcome_states_version_2_and_hello_negotiates_the_lower(server: ServerThread) -> None:
    with RawPeer(server.port) as old, RawPeer(server.port) as new, RawPeer(server.port) as future:
        assert old.welcome is not None and old.welcome.version == PROTOCOL_VERSION == 2
        assert _hello(old, 1).version == 1
        assert _hello(new, 2).version == 2
        assert _hello(future, 7).version == 2


def test_a_version_2_sender_hears_of_a_run_of_acks_in_one_receipts(server: ServerThread) -> None:
    with RawPeer(server.port) as a, RawPeer(server.port) as b:
        _hello(a, 2)
        sent = _send(a, b, 5)
        messages = _messages(b, 5)
        b.send(*(Ack(m.message_id) for m in messages))  # version-1 ACKs, one write
        frames, outcomes = _outcomes(a, 5)
        assert outcomes == dict.fromkeys(sent, DELIVERED)
        assert all(isinstance(f, Receipts) for f in frames), frames
        assert len(frames) <= 2, "one RECEIPTS per run (two if TCP split the ACKs)"
        assert all(f.target == b.client_id for f in frames)  # type: ignore[attr-defined]
        _quiet(a)


def test_a_version_1_sender_gets_one_receipt_per_message_of_an_acks(server: ServerThread) -> None:
    with RawPeer(server.port) as a, RawPeer(server.port) as b:
        sent = _send(a, b, 4)  # no HELLO: version 1
        messages = _messages(b, 4)
        b.send(Acks(tuple(m.message_id for m in messages)))
        frames, outcomes = _outcomes(a, 4)
        assert outcomes == dict.fromkeys(sent, DELIVERED)
        assert [type(f) for f in frames] == [Receipt] * 4, "a version-1 client sees no RECEIPTS"
        _quiet(a)


def test_one_acks_for_two_senders_of_both_versions_duplicates_and_strangers(
    server: ServerThread,
) -> None:
    """One ACKS settling messages of a version-1 and a version-2 sender, with an id twice,
    an unknown id and someone else's id: each message gets exactly one outcome."""
    with (
        RawPeer(server.port) as old,
        RawPeer(server.port) as new,
        RawPeer(server.port) as b,
        RawPeer(server.port) as other,
    ):
        _hello(new, 2)
        from_old = _send(old, b, 2)
        from_new = _send(new, b, 3)
        elsewhere = _send(new, other, 1, first_request=50)
        _messages(b, 5)
        _messages(other, 1)
        ids = (*from_old, *from_new, from_new[0], 10**12, elsewhere[0])
        b.send(Acks(ids))
        old_frames, old_outcomes = _outcomes(old, 2)
        new_frames, new_outcomes = _outcomes(new, 3)
        assert old_outcomes == dict.fromkeys(from_old, DELIVERED)
        assert [type(f) for f in old_frames] == [Receipt, Receipt]
        assert new_outcomes == dict.fromkeys(from_new, DELIVERED)
        assert new_frames == [Receipts(b.client_id, DELIVERED, tuple(from_new))]
        # "other" still owes its ACK: acknowledging it now settles it, once.
        other.send(Ack(elsewhere[0]))
        assert _outcomes(new, 1)[1] == {elsewhere[0]: DELIVERED}
        for peer in (old, new):
            _quiet(peer)


def test_a_recipient_that_leaves_settles_everything_not_delivered_in_batches(
    server_factory: Callable[..., ServerThread],
) -> None:
    """More unacknowledged messages than one RECEIPTS holds: NOT_DELIVERED for every one of
    them, MAX_IDS_PER_FRAME ids a frame; a version-1 sender's own come one RECEIPT each."""
    per_frame = defaults.MAX_IDS_PER_FRAME
    total = per_frame + 10
    server = server_factory(max_unacked=total + 10, rate=0)
    with RawPeer(server.port) as new, RawPeer(server.port) as old:
        _hello(new, 2)
        b = RawPeer(server.port)
        sent: list[int] = []
        for first in range(0, total, 1000):
            sent += _send(new, b, min(1000, total - first), first_request=first + 10)
        old_sent = _send(old, b, 3, first_request=9000)
        _messages(b, total + 3)
        b.close()  # without acknowledging anything
        frames, outcomes = _outcomes(new, total)
        assert outcomes == dict.fromkeys(sent, NOT_DELIVERED)
        assert [len(f.message_ids) for f in frames] == [per_frame, 10]  # type: ignore[attr-defined]
        old_frames, old_outcomes = _outcomes(old, 3)
        assert old_outcomes == dict.fromkeys(old_sent, NOT_DELIVERED)
        assert [type(f) for f in old_frames] == [Receipt] * 3


def test_a_malformed_acks_is_ignored_and_the_connection_goes_on(server: ServerThread) -> None:
    with RawPeer(server.port) as a, RawPeer(server.port) as b:
        _hello(a, 2)
        sent = _send(a, b, 2)
        messages = _messages(b, 2)
        good = encode(Acks(tuple(m.message_id for m in messages)))
        bad = bytearray(good)
        struct.pack_into("!I", bad, 14, 3)  # says three ids, holds two
        b.send(bytes(bad))
        _quiet(b)  # no answer to it, and b is still served
        b.send(good)
        assert _outcomes(a, 2)[1] == dict.fromkeys(sent, DELIVERED)


def test_the_client_library_acknowledges_a_read_with_one_acks(server: ServerThread) -> None:
    """The library speaks version 2: its receipts arrive as RECEIPTS and wait_receipt still
    gives one status per message; as a recipient it sends ACKS (traced)."""
    traced: list[str] = []

    def trace(direction: str, event: Any, raw: bytes) -> None:
        traced.append(f"{direction} {type(event).__name__}")

    with (
        Client("127.0.0.1", server.port, nick="sender") as sender,
        Client("127.0.0.1", server.port, nick="reader", trace=trace) as reader,
    ):
        with RawPeer(server.port) as raw:
            _hello(raw, 2)
            sent = _send(raw, RawPeerById(reader.client_id), 3)
            _, outcomes = _outcomes(raw, 3)
            assert outcomes == dict.fromkeys(sent, DELIVERED)
        assert any(line.endswith("Acks") for line in traced if line.startswith("->")), traced
        ok = sender.send(reader.client_id, "hello")
        assert sender.wait_receipt(ok.message_id, timeout=5.0) == DELIVERED


class RawPeerById:
    """Just a client id, where ``_send`` needs a target."""

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
