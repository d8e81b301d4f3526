"""Each request type against an in-process server, through real sockets on loopback."""

from __future__ import annotations

import time
from typing import Any

import pytest

from support.peers import RawPeer
from support.servers import ServerThread
from switchboard.client import Client, NoSuchClient, TextTooLong
from switchboard.protocol import (
    PROTOCOL_VERSION,
    Ack,
    ErrorCode,
    ErrorResponse,
    ListOk,
    ListRequest,
    Message,
    NameOk,
    NameRequest,
    PingOk,
    PingRequest,
    Receipt,
    ReceiptStatus,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
)

HOST = "127.0.0.1"
GREETING = "你好，世界！Grüße 👋🏽🎉 — ok"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_welcome_describes_the_connection(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        w = peer.welcome
        assert w is not None and w.request_id == 0
        assert w.client_id >= 1
        assert w.server_name == "test-server"
        assert w.version == PROTOCOL_VERSION  # the highest HELLO may negotiate
        assert w.heartbeat_ms == 10_000
        assert (w.max_frame, w.max_text, w.max_clients) == (65536, 4096, 1024)
        # The client's own address as the server sees it: that of our socket.
        assert (w.ip, w.port) == peer.sock.getsockname()[:2]


def test_welcome_announces_configured_limits(server_factory: Any) -> None:
    st = server_factory(
        name="Zentrale ☎", heartbeat=2.5, max_frame=8192, max_text=100, max_clients=7
    )
    with Client(HOST, st.port, timeout=5) as client:
        w = client.welcome
        assert (w.server_name, w.heartbeat_ms, w.max_frame, w.max_text, w.max_clients) == (
            "Zentrale ☎",
            2500,
            8192,
            100,
            7,
        )
        assert client.name() == "Zentrale ☎"


def test_ids_increase_and_are_never_reused(server: ServerThread) -> None:
    ids = []
    for _ in range(3):
        with Client(HOST, server.port, timeout=5) as client:
            ids.append(client.client_id)
        server.wait_for(lambda s: s.directory.client_count() == 0)
    with Client(HOST, server.port) as a, Client(HOST, server.port) as b:
        ids += [a.client_id, b.client_id]
    assert ids == sorted(ids) and len(set(ids)) == 5 and ids[0] >= 1


def test_time_is_the_servers_clock(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as client:
        before = now_ms()
        t = client.time()
        after = now_ms()
    assert before <= t.epoch_ms <= after
    local = time.localtime(t.epoch_ms / 1000)
    assert t.utc_offset_s == local.tm_gmtoff
    assert t.zone == local.tm_zone
    assert abs(t.datetime.timestamp() * 1000 - t.epoch_ms) < 1


def test_name(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as client:
        assert client.name() == "test-server"
        assert client.server_name == "test-server"


def test_list_shows_every_client_in_id_order(server: ServerThread) -> None:
    with (
        RawPeer(server.port) as raw,
        Client(HOST, server.port, timeout=5, nick="Ada") as ada,
        Client(HOST, server.port, timeout=5) as anon,
    ):
        before = now_ms()
        clients = anon.list_clients()
        raw_address = raw.sock.getsockname()[:2]
    assert [c.client_id for c in clients] == [raw.client_id, ada.client_id, anon.client_id]
    by_id = {c.client_id: c for c in clients}
    assert (by_id[raw.client_id].ip, by_id[raw.client_id].port) == raw_address
    for client in (ada, anon):
        info = by_id[client.client_id]
        assert (info.ip, info.port) == (client.welcome.ip, client.welcome.port)
    assert by_id[ada.client_id].nick == "Ada"
    assert by_id[anon.client_id].nick == ""
    assert all(before - 10_000 <= c.connected_ms <= before for c in clients)
    assert by_id[raw.client_id].connected_ms <= by_id[anon.client_id].connected_ms


def test_list_forgets_departed_clients(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as stays:
        with Client(HOST, server.port, timeout=5) as leaves:
            gone = leaves.client_id
            assert len(stays.list_clients()) == 2
        server.wait_for(lambda s: gone not in s.directory.client_by_id)
        assert [c.client_id for c in stays.list_clients()] == [stays.client_id]


def test_ping_request(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as client:
        assert 0 < client.ping() < 5
    with RawPeer(server.port) as raw:
        raw.send(PingRequest(request_id=0xFFFFFFFF))
        assert raw.expect(PingOk).request_id == 0xFFFFFFFF


# --- SEND ---------------------------------------------------------------------------------------


def test_send_forwards_unicode_text_with_a_delivered_receipt(server: ServerThread) -> None:
    with (
        Client(HOST, server.port, timeout=5, nick="sender") as alice,
        Client(HOST, server.port, timeout=5) as bob,
    ):
        before = now_ms()
        ok = alice.send(bob.client_id, GREETING)
        assert isinstance(ok, SendOk)
        assert ok.target == bob.client_id and ok.message_id >= 1
        msg = bob.next_indication(timeout=5)
        assert isinstance(msg, Message)
        assert msg.text == GREETING
        assert msg.message_id == ok.message_id
        assert (msg.sender_id, msg.sender_ip, msg.sender_port, msg.sender_nick) == (
            alice.client_id,
            alice.welcome.ip,
            alice.welcome.port,
            "sender",
        )
        assert msg.room == "" and msg.flags == 0 and msg.request_id == 0
        assert before <= msg.sent_ms <= now_ms()
        # Bob's library acknowledged it by itself; Alice hears so.
        assert alice.wait_receipt(ok.message_id, timeout=5) == ReceiptStatus.DELIVERED
        receipt = alice.next_indication(timeout=5)
        assert isinstance(receipt, Receipt)
        assert (receipt.message_id, receipt.target, receipt.status) == (
            ok.message_id,
            bob.client_id,
            ReceiptStatus.DELIVERED,
        )
        assert bob.next_indication(timeout=0.05) is None  # exactly one MESSAGE


def test_send_to_an_unknown_id(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as client:
        for target in (client.client_id + 1000, 0, 0xFFFFFFFF):
            with pytest.raises(NoSuchClient) as info:
                client.send(target, "anyone there?")
            assert info.value.code == ErrorCode.NO_SUCH_CLIENT
            assert info.value.name == "NO_SUCH_CLIENT"
            assert str(target) in info.value.message
        assert client.next_indication(timeout=0.05) is None  # no receipt for a refused SEND


def test_send_to_a_client_that_has_left(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as client:
        with Client(HOST, server.port, timeout=5) as gone:
            gone_id = gone.client_id
        server.wait_for(lambda s: gone_id not in s.directory.client_by_id)
        with pytest.raises(NoSuchClient):
            client.send(gone_id, "too late")


def test_send_to_yourself(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as client:
        ok = client.send(client.client_id, GREETING)
        assert client.wait_receipt(ok.message_id, timeout=5) == ReceiptStatus.DELIVERED
        frames = [client.next_indication(timeout=5) for _ in range(2)]
        msg = next(f for f in frames if isinstance(f, Message))
        assert (msg.text, msg.sender_id) == (GREETING, client.client_id)
        assert any(isinstance(f, Receipt) for f in frames)


def test_text_limit_is_counted_in_utf8_bytes(server_factory: Any) -> None:
    st = server_factory(max_text=40)
    with RawPeer(st.port) as target, RawPeer(st.port) as sender:
        exactly = "😀" * 10  # 40 bytes, 10 characters
        sender.send(SendRequest(target.client_id, exactly, request_id=1))
        assert sender.expect(SendOk).request_id == 1
        assert target.expect(Message).text == exactly
        too_long = "é" * 20 + "x"  # 21 characters, 41 bytes
        sender.send(SendRequest(target.client_id, too_long, request_id=2))
        sender.expect_error(ErrorCode.TEXT_TOO_LONG, 2)
        # Too long wins over an unknown target: the request is refused before any lookup.
        sender.send(SendRequest(999_999, too_long, request_id=3), TimeRequest(request_id=4))
        sender.expect_error(ErrorCode.TEXT_TOO_LONG, 3)
        assert sender.expect(TimeOk).request_id == 4
    with Client(HOST, st.port, timeout=5) as client:
        # The library refuses locally, with the same error type, before sending anything.
        with pytest.raises(TextTooLong) as info:
            client.send(client.client_id, too_long)
        assert info.value.code == ErrorCode.TEXT_TOO_LONG


def test_default_text_limit_is_4_kib(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        peer.send(
            SendRequest(peer.client_id, "a" * 4096, request_id=1),
            SendRequest(peer.client_id, "a" * 4097, request_id=2),
        )
        assert len(peer.expect(Message).text) == 4096
        assert peer.expect(SendOk).request_id == 1
        peer.expect_error(ErrorCode.TEXT_TOO_LONG, 2)


def test_not_delivered_when_the_target_leaves_without_acknowledging(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as sender:
        with RawPeer(server.port) as target:
            ok = sender.send(target.client_id, "will you ack?")
            assert target.expect(Message).message_id == ok.message_id
        # Closed without ACK: the receipt says so, and says it once.
        assert sender.wait_receipt(ok.message_id, timeout=5) == ReceiptStatus.NOT_DELIVERED
        receipt = sender.next_indication(timeout=5)
        assert isinstance(receipt, Receipt) and receipt.status == ReceiptStatus.NOT_DELIVERED
        assert sender.next_indication(timeout=0.1) is None


def test_one_response_and_one_receipt_per_send(server: ServerThread) -> None:
    """Exactly one answer per SEND and one receipt per forwarded message, whatever ACKs come."""
    with RawPeer(server.port) as sender, RawPeer(server.port) as target:
        sends = [SendRequest(target.client_id, f"m{i}", request_id=100 + i) for i in range(20)]
        sender.send(*sends, SendRequest(999_999, "lost", request_id=200))
        oks = [sender.expect(SendOk) for _ in range(20)]
        assert [ok.request_id for ok in oks] == list(range(100, 120))
        sender.expect_error(ErrorCode.NO_SUCH_CLIENT, 200)
        msgs = [target.expect(Message) for _ in range(20)]
        assert [m.text for m in msgs] == [f"m{i}" for i in range(20)]
        assert [m.message_id for m in msgs] == [ok.message_id for ok in oks]
        # ACK the even ones twice, an unknown id once; ACKs from a non-recipient are ignored.
        sender.send(Ack(msgs[1].message_id), Ack(10**12))
        acks = [Ack(m.message_id) for m in msgs[::2]]
        target.send(*acks, *acks)
        target.sock.close()  # the odd ones were never acknowledged
        receipts = [sender.expect(Receipt) for _ in range(20)]
        status = {r.message_id: r.status for r in receipts}
        assert len(status) == 20
        for i, m in enumerate(msgs):
            expected = ReceiptStatus.DELIVERED if i % 2 == 0 else ReceiptStatus.NOT_DELIVERED
            assert status[m.message_id] == expected, i
            assert all(r.target == target.client_id for r in receipts)
        # And nothing else: the next frame answers our next request.
        sender.send(NameRequest(request_id=300))
        assert sender.expect(NameOk).request_id == 300


def test_no_receipt_when_the_sender_is_gone(server: ServerThread) -> None:
    with RawPeer(server.port) as target:
        with RawPeer(server.port) as sender:
            sender.send(SendRequest(target.client_id, "bye", request_id=1))
            assert sender.expect(SendOk).request_id == 1
        msg = target.expect(Message)
        server.wait_for(lambda s: s.directory.client_count() == 1)
        target.send(Ack(msg.message_id), ListRequest(request_id=2))  # must not crash anything
        ok = target.expect(ListOk)
        assert [c.client_id for c in ok.clients] == [target.client_id]


def test_list_of_a_room_that_does_not_exist_is_empty(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        peer.send(ListRequest("nowhere", request_id=5))
        ok = peer.expect(ListOk)
        assert (ok.room, ok.clients, ok.request_id) == ("nowhere", (), 5)


def test_error_response_for_unknown_target_is_well_formed(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        peer.send(SendRequest(424242, "x", request_id=9))
        err = peer.expect(ErrorResponse)
        assert (err.code, err.name, err.request_id) == (6, "NO_SUCH_CLIENT", 9)
        assert "424242" in err.message
