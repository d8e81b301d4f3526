"""Chat rooms on the server, through real sockets: NICK, JOIN, BROADCAST, LEAVE, history,
JOINED/LEFT, LIST of a room, the log of room messages, and members that do not read."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from typing import Any

import pytest

from support.peers import RawPeer, drain, next_of
from support.servers import ServerThread, queued_bytes
from switchboard.client import Client, NicknameError, RoomError
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    ErrorCode,
    Joined,
    JoinOk,
    JoinRequest,
    Left,
    LeftReason,
    Message,
    MessageFlags,
)
from switchboard.server.logs import JsonFormatter

HOST = "127.0.0.1"
WAIT_S = 5.0


# --- NICK ------------------------------------------------------------------------------------


def test_nicknames_are_unique_case_insensitively(server: ServerThread) -> None:
    with Client(HOST, server.port) as alice, Client(HOST, server.port) as other:
        assert alice.set_nick("Straße") == "Straße"
        for taken in ("Straße", "STRASSE", "strasse"):
            with pytest.raises(NicknameError) as info:
                other.set_nick(taken)
            assert info.value.code == ErrorCode.NICK_IN_USE
            assert f"#{alice.client_id}" in info.value.message
        assert alice.set_nick("STRASSE") == "STRASSE"  # your own name in another case
        assert alice.set_nick("alice") == "alice"
        assert other.set_nick("Straße") == "Straße"  # the old one was given back


@pytest.mark.parametrize(
    "nick", ["", "x" * 33, "two words", "tab\there", "nl\n", "bell\x07", "nbsp\u00a0x"]
)
def test_invalid_nicknames(server: ServerThread, nick: str) -> None:
    with Client(HOST, server.port) as client:
        with pytest.raises(NicknameError) as info:
            client.set_nick(nick)
        assert info.value.code == ErrorCode.INVALID_NICK


@pytest.mark.parametrize("nick", ["x" * 32, "小明", "🦊fox", "o'neil-2"])
def test_valid_nicknames(server: ServerThread, nick: str) -> None:
    with Client(HOST, server.port) as client:
        assert client.set_nick(nick) == nick
        assert [c.nick for c in client.list_clients()] == [nick]


# --- rooms -----------------------------------------------------------------------------------


def test_broadcast_reaches_every_other_member_with_sender_and_server_time(
    server: ServerThread,
) -> None:
    with (
        Client(HOST, server.port, nick="alice") as alice,
        Client(HOST, server.port, nick="bob") as bob,
        Client(HOST, server.port, nick="carol") as carol,
        Client(HOST, server.port, nick="dave") as outsider,
    ):
        assert alice.join("lobby").members == 1
        assert bob.join("lobby").members == 2
        joined = next_of(alice, Joined)
        assert (joined.room, joined.client_id, joined.nick) == ("lobby", bob.client_id, "bob")
        assert carol.join("lobby").members == 3
        before = time.time_ns() // 1_000_000
        ok = bob.broadcast("lobby", "你好 everyone 👋")
        after = time.time_ns() // 1_000_000
        assert isinstance(ok, BroadcastOk) and ok.reached == 2
        for member in (alice, carol):
            msg = next_of(member, Message)
            assert (msg.message_id, msg.room, msg.text) == (
                ok.message_id,
                "lobby",
                "你好 everyone 👋",
            )
            assert (msg.sender_id, msg.sender_nick) == (bob.client_id, "bob")
            assert (msg.sender_ip, msg.sender_port) == (bob.welcome.ip, bob.welcome.port)
            assert before <= msg.sent_ms <= after
            assert msg.flags == 0
        # The sender gets no copy, and someone outside the room gets nothing.
        assert not [f for f in drain(bob) if isinstance(f, Message)]
        assert drain(outsider) == []


def test_a_client_in_several_rooms(server: ServerThread) -> None:
    with Client(HOST, server.port, nick="a") as a, Client(HOST, server.port, nick="b") as b:
        a.join("one")
        a.join("two")
        b.join("two")
        assert [c.client_id for c in a.list_clients("one")] == [a.client_id]
        assert [c.client_id for c in a.list_clients("two")] == [a.client_id, b.client_id]
        assert len(a.list_clients()) == 2
        assert a.broadcast("one", "only me").reached == 0
        assert a.broadcast("two", "to b").reached == 1
        msg = next_of(b, Message)
        assert (msg.room, msg.text) == ("two", "to b")
        with pytest.raises(RoomError) as info:
            b.broadcast("one", "not a member")
        assert info.value.code == ErrorCode.NOT_IN_ROOM
        with pytest.raises(RoomError) as info:
            b.leave("one")
        assert info.value.code == ErrorCode.NOT_IN_ROOM
        for bad in ("two words", "", "r" * 33, "room\n", "\x1b[2J"):
            with pytest.raises(RoomError) as info:
                b.join(bad)
            assert info.value.code == ErrorCode.INVALID_ROOM, bad


@pytest.mark.parametrize(
    "how, reason",
    [
        ("leave", LeftReason.LEFT),
        ("close", LeftReason.DISCONNECTED),
        ("reset", LeftReason.DISCONNECTED),
    ],
)
def test_members_see_others_leave(server: ServerThread, how: str, reason: LeftReason) -> None:
    # A heartbeat timeout (TIMED_OUT) is in test_server_heartbeat.
    with Client(HOST, server.port, nick="stay") as stay:
        stay.join("lobby")
        stay.join("side")
        if how == "reset":  # an abrupt end: RST, nothing said
            peer = RawPeer(server.port)
            peer.send(JoinRequest("lobby", request_id=1), JoinRequest("side", request_id=2))
            assert peer.expect(JoinOk).room == "lobby" and peer.expect(JoinOk).room == "side"
            gone_id = peer.client_id
            # Linger 0: close() sends RST instead of FIN.
            peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
        else:
            gone = Client(HOST, server.port, nick="gone")
            gone.join("lobby")
            gone.join("side")
            gone_id = gone.client_id
            if how == "leave":
                gone.leave("lobby")
                gone.leave("side")
            gone.close()
        lefts = [next_of(stay, Left), next_of(stay, Left)]
        assert {(f.room, f.client_id, f.reason) for f in lefts} == {
            ("lobby", gone_id, reason),
            ("side", gone_id, reason),
        }
        assert [c.client_id for c in stay.list_clients("lobby")] == [stay.client_id]


def test_history_is_replayed_on_join_marked_and_bounded(server_factory: Any) -> None:
    st = server_factory(history=5)
    with Client(HOST, st.port, nick="talker") as talker:
        talker.join("lobby")
        ids = [talker.broadcast("lobby", f"line {i} 汉字").message_id for i in range(8)]
        with Client(HOST, st.port, nick="late") as late:
            ok = late.join("lobby")
            assert (ok.members, ok.history) == (2, 5)
            replay = [next_of(late, Message) for _ in range(5)]
            assert [m.message_id for m in replay] == ids[-5:]  # the last five, oldest first
            assert [m.text for m in replay] == [f"line {i} 汉字" for i in range(3, 8)]
            assert all(m.flags & MessageFlags.HISTORY for m in replay)
            assert all(m.sender_nick == "talker" and m.room == "lobby" for m in replay)
            # Live lines after the replay are not marked.
            talker.broadcast("lobby", "live")
            live = next_of(late, Message)
            assert (live.text, live.flags) == ("live", 0)
            # Leave and come back: replayed again, the live line now included.
            late.leave("lobby")
            assert late.join("lobby").history == 5
            again = [next_of(late, Message) for _ in range(5)]
            assert again[-1].text == "live" and again[-1].flags & MessageFlags.HISTORY


def test_default_history_is_fifty(server: ServerThread) -> None:
    with RawPeer(server.port) as talker, Client(HOST, server.port) as late:
        talker.send(JoinRequest("r", request_id=1))
        talker.expect(JoinOk)
        talker.send(*[BroadcastRequest("r", str(i), request_id=i + 2) for i in range(60)])
        for _ in range(60):
            talker.expect(BroadcastOk)
        assert late.join("r").history == 50
        assert [next_of(late, Message).text for _ in range(50)] == [str(i) for i in range(10, 60)]


def test_the_log_records_each_room_message_with_time_and_sender(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.server")
    server = server_factory()  # after the level is set: the server reads it at start
    with Client(HOST, server.port, nick="alice") as alice:
        alice.join("lobby")
        ok = alice.broadcast("lobby", "hello 世界")
        alice.broadcast("lobby", "forged\n2026-01-01 INFO  connect #9")
        alice.broadcast("lobby", "reversed \u202eenil")
    records = [r for r in caplog.records if getattr(r, "event", "") == "room_message"]
    assert len(records) == 3
    first = records[0]
    assert first.getMessage() == f"room lobby #{alice.client_id}(alice): hello 世界"
    entry = json.loads(JsonFormatter().format(first))
    assert entry["sender"] == alice.client_id and entry["nick"] == "alice"
    assert entry["message_id"] == ok.message_id and entry["room"] == "lobby"
    assert abs(entry["sent_ms"] - first.created * 1000) < 1000 and entry["ts"]
    # A line break in a message cannot forge a log line.
    assert "\n" not in records[1].getMessage() and "\\n" in records[1].getMessage()
    # Nor can a right-to-left override reverse the rest of the line on screen.
    assert records[2].getMessage().endswith("reversed \\u202eenil")


# --- members that do not read ----------------------------------------------------------------


def test_a_member_that_does_not_read_is_skipped_and_never_blocks_the_room(
    server_factory: Any,
) -> None:
    st = server_factory(write_high_water=64 * 1024, write_hard_limit=64 * 1024 * 1024)
    text = "x" * 4000
    with (
        Client(HOST, st.port, nick="talker", timeout=10) as talker,
        Client(HOST, st.port, nick="reader", timeout=10) as reader,
        RawPeer(st.port, rcvbuf=4096) as stuck,
    ):
        talker.join("lobby")
        reader.join("lobby")
        stuck.send(JoinRequest("lobby", request_id=1))
        stuck.expect(JoinOk)
        reached: list[int] = []
        for _ in range(5000):  # bounded: the stuck member fills its buffers long before
            reached.append(talker.broadcast("lobby", text).reached)
            if reached[-1] == 1:
                break
        assert reached[0] == 2 and reached[-1] == 1, reached[-5:]
        # The room goes on for the members that read: later lines reach them at once.
        for i in range(20):
            assert talker.broadcast("lobby", f"after {i}").reached == 1
        # The reader got every line, in order.
        texts = [next_of(reader, Message, timeout=10).text for _ in range(len(reached) + 20)]
        assert texts == [text] * len(reached) + [f"after {i}" for i in range(20)]

        # The server holds no more for the stuck member than its high-water mark allows
        # (still connected: it was skipped, not dropped).
        assert stuck.client_id in st.client_ids()
        assert queued_bytes(st, stuck.client_id) < 64 * 1024 + 2 * len(text) + 1024
