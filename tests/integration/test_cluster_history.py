"""Room history on a cluster (server/cluster_history.py), with real nodes and a Redis of the
test's own: lines said through node A are read through node B (HISTORY's four modes, paged,
with their boundaries), replayed on a JOIN on B, kept when the room empties; a line's id comes
from the room's one order whichever node said it; without Redis, BROADCAST and HISTORY get
CLUSTER_UNAVAILABLE and the node goes on serving; a client library catches up across nodes."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import redis

from support.history_lines import ids_of, join, page, say
from support.peers import RawPeer, assert_still_serving
from support.redis_servers import Node, RedisServer, start_inproc_node
from support.waiting import wait_until
from switchboard import defaults
from switchboard.client import Client
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    ErrorCode,
    ErrorResponse,
    FrameDecoder,
    HistoryMode,
    HistoryOk,
    HistoryRequest,
    Joined,
    JoinOk,
    JoinRequest,
    LeaveOk,
    LeaveRequest,
    Left,
    Message,
    MessageFlags,
    Ping,
    encode,
)
from switchboard.protocol.codec import decode_payload
from switchboard.protocol.fastpath import encode_message, sender_block
from switchboard.server.cluster_history import (
    LINE_SCRIPT,
    SEQ_BITS,
    entry_id,
    line_id,
    lines_key,
)

PAGE = defaults.MAX_HISTORY_PAGE
LINES = 2_500


def test_lines_said_through_a_are_read_through_b_in_every_mode(node: Node) -> None:
    a, b = node("a", "--rate", "0"), node("b", "--rate", "0")
    with RawPeer(a.port) as ann, RawPeer(b.port) as bob:
        join(ann, "big")
        join(bob, "big")
        ann.expect(Joined)
        ids = say(ann, "big", [f"line {i}" for i in range(LINES)])
        assert ids == sorted(ids) and len(set(ids)) == LINES
        assert ids_of([bob.expect(Message) for _ in range(LINES)]) == ids  # live, same ids
        join(bob, "quiet")

        # LATEST: the newest page, oldest first, and more behind it.
        ok, lines = page(bob, "big", HistoryMode.LATEST)
        assert (ok.room, ok.count, ok.more) == ("big", PAGE, 1)
        assert ids_of(lines) == ids[-PAGE:]
        assert [m.text for m in lines[-2:]] == [f"line {LINES - 2}", f"line {LINES - 1}"]
        assert {(m.room, m.sender_id) for m in lines} == {("big", ann.client_id)}
        epoch = ok.epoch
        assert epoch != 0

        # BEFORE, page after page back to the first line; AFTER, forward to the last.
        back: list[int] = []
        anchor = ids[-1] + 1
        while True:
            ok, lines = page(bob, "big", HistoryMode.BEFORE, anchor, limit=777)
            assert ok.epoch == epoch
            back = ids_of(lines) + back
            if not ok.more:
                break
            anchor = lines[0].message_id
        assert back == ids
        forward: list[int] = []
        anchor = 0
        while True:
            ok, lines = page(bob, "big", HistoryMode.AFTER, anchor)
            forward += ids_of(lines)
            if not ok.more:
                break
            anchor = lines[-1].message_id
        assert forward == ids

        # The boundaries: ids are exclusive; nothing beyond either end.
        assert ids_of(page(bob, "big", HistoryMode.BEFORE, ids[1])[1]) == ids[:1]
        ok, lines = page(bob, "big", HistoryMode.BEFORE, ids[0])
        assert (ok.count, ok.more) == (0, 0)
        ok, lines = page(bob, "big", HistoryMode.AFTER, ids[-1])
        assert (ok.count, ok.more) == (0, 0)
        ok, lines = page(bob, "big", HistoryMode.AFTER, ids[-2])
        assert (ids_of(lines), ok.more) == (ids[-1:], 0)
        ok, lines = page(bob, "big", HistoryMode.BETWEEN, ids[10], ids[20])
        assert (ids_of(lines), ok.more) == (ids[11:20], 0)
        ok, lines = page(bob, "big", HistoryMode.BETWEEN, ids[10], ids[20], limit=4)
        assert (ids_of(lines), ok.more) == (ids[11:15], 1)
        ok, lines = page(bob, "big", HistoryMode.BETWEEN, ids[10], ids[11])
        assert (ok.count, ok.more) == (0, 0)
        ok, lines = page(bob, "big", HistoryMode.LATEST, limit=1)
        assert (ids_of(lines), ok.more) == (ids[-1:], 1)

        # The same answers on the node that stored them.
        ok, lines = page(ann, "big", HistoryMode.AFTER, ids[99], limit=5)
        assert (ids_of(lines), ok.epoch) == (ids[100:105], epoch)

        # An empty room; a room that does not exist and one bob is not in are alike.
        ok, lines = page(bob, "quiet", HistoryMode.LATEST)
        assert (ok.room, ok.count, ok.more, ok.epoch) == ("quiet", 0, 0, epoch)
        for room in ("nowhere", "big"):
            with RawPeer(b.port) as stranger:
                stranger.send(HistoryRequest(room, HistoryMode.LATEST, request_id=9))
                stranger.expect_error(ErrorCode.NOT_IN_ROOM, 9)
        assert_still_serving(bob)


def test_a_join_on_b_replays_lines_said_on_a_and_an_emptied_room_keeps_them(
    node: Node, redis_server: RedisServer
) -> None:
    a, b = node("a"), node("b", "--history", "3")
    # The start-up line says where the history is (the URL without a password).
    line = a.wait_for_log(r"room history: Redis streams switchboard:lines:ROOM at redis://")
    assert redis_server.url.split("@")[-1] in line and "shared by the cluster" in line
    with RawPeer(a.port) as ann:
        join(ann, "kept")
        ids = say(ann, "kept", [f"said {i}" for i in range(5)])
        ann.send(LeaveRequest("kept", request_id=2))
        ann.expect(LeaveOk)
    # The room has ended (no member on any node): its lines are still in Redis.
    assert redis_server.command("EXISTS", "switchboard:lines:kept").strip() == b":1"
    with RawPeer(b.port) as bob:
        bob.send(JoinRequest("kept", request_id=1))
        ok = bob.expect(JoinOk)
        assert (ok.members, ok.history) == (1, 3)  # node b replays --history 3
        replay = [bob.expect(Message) for _ in range(ok.history)]
        assert [(m.message_id, m.text) for m in replay] == [
            (ids[i], f"said {i}") for i in range(2, 5)
        ]
        assert all(m.flags & MessageFlags.HISTORY for m in replay)
        _, lines = page(bob, "kept", HistoryMode.LATEST)
        assert ids_of(lines) == ids
        more = say(bob, "kept", ["after the gap"])
        assert more[0] > ids[-1]


def test_ids_follow_the_room_s_one_order_with_senders_on_two_nodes(node: Node) -> None:
    """Two senders on two nodes at once: every member sees the lines in one order, their
    ids increase in that order, each sender's OK names the id the members saw, and HISTORY
    gives the same order and ids (node-numbered ids would not increase across nodes)."""
    a, b = node("a", "--rate", "0"), node("b", "--rate", "0")
    peers = [RawPeer(n.port) for n in (a, b, a, b)]
    try:
        for i, peer in enumerate(peers):
            join(peer, "order")
            for earlier in peers[:i]:
                earlier.expect(Joined)
        count = 150
        for sender, tag in ((peers[0], "a"), (peers[1], "b")):
            sender.send(
                *(BroadcastRequest("order", f"{tag}{i}", request_id=i + 1) for i in range(count))
            )
        sent: dict[str, int] = {}
        for sender in peers[:2]:
            oks = 0
            while oks < count:
                got = sender.next(10)
                if isinstance(got, BroadcastOk):
                    oks += 1
        seen: list[list[tuple[int, str]]] = []
        for index, peer in enumerate(peers):
            lines: list[tuple[int, str]] = []
            expected = 2 * count - (count if index < 2 else 0)
            while len(lines) < expected:
                got = peer.next(10)
                if isinstance(got, Message):
                    lines.append((got.message_id, got.text))
                elif isinstance(got, BroadcastOk):
                    sent[str(got.request_id)] = got.message_id
                else:
                    assert isinstance(got, Ping), got
            seen.append(lines)
        order = seen[2]
        assert seen[3] == order
        assert len(order) == 2 * count
        assert [i for i, _ in order] == sorted({i for i, _ in order})  # strictly increasing
        assert {t[0] for _, t in order} == {"a", "b"}
        # Each sender saw the other's lines, in the room's order, with the same ids.
        assert seen[0] == [x for x in order if x[1].startswith("b")]
        assert seen[1] == [x for x in order if x[1].startswith("a")]
        _, history = page(peers[3], "order", HistoryMode.LATEST)
        assert [(m.message_id, m.text) for m in history] == order
    finally:
        for peer in peers:
            peer.close()


def test_each_sender_s_ok_carries_the_id_its_members_see(node: Node) -> None:
    a, b = node("a"), node("b")
    with RawPeer(a.port) as ann, RawPeer(b.port) as bob:
        join(ann, "ids")
        join(bob, "ids")
        ann.expect(Joined)
        for i in range(5):
            sender, listener = (ann, bob) if i % 2 == 0 else (bob, ann)
            sender.send(BroadcastRequest("ids", f"n{i}", request_id=i + 1))
            ok = sender.expect(BroadcastOk)
            message = listener.expect(Message)
            assert (message.message_id, message.text) == (ok.message_id, f"n{i}")
            assert ok.reached == 1


def test_without_redis_broadcast_and_history_are_cluster_unavailable(
    node: Node, redis_server: RedisServer
) -> None:
    a = node("a", "--cluster-lease", "3")
    with RawPeer(a.port) as ann:
        join(ann, "lost")
        say(ann, "lost", ["before"])
        redis_server.kill()
        # Whether the node has noticed yet or finds out with this request: a typed answer,
        # within the command timeout, never a hang; requests behind it are answered too.
        ann.send(
            BroadcastRequest("lost", "into the void", request_id=11),
            HistoryRequest("lost", HistoryMode.LATEST, request_id=12),
        )
        first = ann.expect(ErrorResponse, timeout=10)
        assert (first.code, first.request_id) == (ErrorCode.CLUSTER_UNAVAILABLE, 11), first
        ann.expect_error(ErrorCode.CLUSTER_UNAVAILABLE, 12, timeout=10)
        assert_still_serving(ann)
        ann.send(HistoryRequest("lost", HistoryMode.AFTER, 1, request_id=13))
        ann.expect_error(ErrorCode.CLUSTER_UNAVAILABLE, 13, timeout=10)
        ann.send(BroadcastRequest("lost", "again", request_id=14))
        ann.expect_error(ErrorCode.CLUSTER_UNAVAILABLE, 14, timeout=10)
        assert_still_serving(ann, 15)


def test_a_client_catches_up_on_another_node_with_exactly_the_missed_lines(node: Node) -> None:
    """Join on A, read a few lines, drop; lines said on B meanwhile; rejoin on B and ask for
    what came after the last id seen: exactly the missed lines, in order."""
    a, b = node("a"), node("b")
    with RawPeer(b.port) as talker:
        join(talker, "catch")
        with Client("127.0.0.1", a.port, nick="reader") as reader:
            reader.join("catch")
            talker.expect(Joined)
            seen = say(talker, "catch", [f"seen {i}" for i in range(3)])
            got = [reader.next_indication(5) for _ in range(3)]
            assert [m.message_id for m in got if isinstance(m, Message)] == seen
            epoch, caught = reader.missed("catch", 0)
            assert ids_of(caught) == seen
        assert talker.expect(Left).client_id == reader.client_id  # the drop, seen on B
        # The room's LEFT and the client's end reach B by different streams: B still lists
        # reader, and holds its nickname, until it has read the end (seen under load: the
        # HELLO below refused with NICK_IN_USE, taken by #1).
        assert wait_until(lambda: reader.client_id not in talker.listed())
        missed_texts = [f"missed {i}" for i in range(40)]
        missed = say(talker, "catch", missed_texts)
        with Client("127.0.0.1", b.port, nick="reader") as again:
            again.join("catch")
            talker.expect(Joined)
            got_epoch, lines = again.missed("catch", seen[-1], epoch)
            assert got_epoch == epoch
            assert ids_of(lines) == missed
            assert [m.text for m in lines] == missed_texts
            live = say(talker, "catch", ["live"])
            assert live[0] > missed[-1]
            assert ids_of(again.missed("catch", missed[-1], epoch)[1]) == live


def test_history_ok_says_the_epoch_and_a_reset_redis_gives_another(
    node: Node, redis_server: RedisServer
) -> None:
    a = node("a")
    with RawPeer(a.port) as ann:
        join(ann, "ep")
        say(ann, "ep", ["one"])
        first = page(ann, "ep", HistoryMode.LATEST)[0]
        assert first.epoch != 0
        assert page(ann, "ep", HistoryMode.LATEST)[0].epoch == first.epoch
        redis_server.command("DEL", "switchboard:history-epoch")  # what a reset store lacks
        ann.send(HistoryRequest("ep", HistoryMode.LATEST, request_id=3))
        ok = ann.expect(HistoryOk)
        for _ in range(ok.count):
            ann.expect(Message)
        assert ok.epoch not in (0, first.epoch)


# --- the line script against Redis itself ------------------------------------------------------


def list_of(frame: bytes) -> list[Message]:
    """The MESSAGEs a frame holds, decoded as they are (flags untouched)."""
    decoder = FrameDecoder(max_frame=len(frame))
    decoder.feed(frame)
    buf = decoder.buffer
    return [decode_payload(k, r, buf, s, e) for k, r, s, e in decoder.frames()]


def _line_frame(text: str) -> bytes:
    return encode_message(0, sender_block(7, "127.0.0.1", 1, "x"), b"r", 1, 0, text.encode())


def _say(db: redis.Redis, room: str, text: str, *, keep: int = 100, age_ms: int = 0) -> int:
    frame = _line_frame(text)
    at = len(frame) - len(text.encode()) - 5
    args = (room, frame, 7, keep, age_ms, 10_000, lines_key(room), at, len(text.encode()))
    entry = db.eval(LINE_SCRIPT, 0, *args)
    return line_id(entry)


def test_the_line_script_fills_in_the_id_and_stays_above_every_entry(
    redis_server: RedisServer,
) -> None:
    db = redis.Redis.from_url(redis_server.url)
    try:
        first = _say(db, "r", "one")
        ((entry, fields),) = db.xrange("switchboard:lines:r")
        assert line_id(entry) == first and entry_id(first) == entry.decode()
        assert (fields[b"t"], fields[b"r"]) == (b"3", b"r")  # text bytes, room as said
        # Kept as a page sends it: the id filled in, marked as history.
        (line,) = list_of(fields[b"f"])
        assert (line.message_id, line.text, line.flags) == (first, "one", MessageFlags.HISTORY)
        notice = db.xrange("switchboard:room:r")[-1]
        assert notice[0] == entry  # one id in both streams
        (live,) = list_of(notice[1][b"f"])
        assert (live.message_id, live.text, live.flags) == (first, "one", 0)
        # Entries from a clock that ran ahead (or a Redis clock set back): the next line's
        # id is still above them, in both streams.
        ahead = (first >> SEQ_BITS) + 100_000
        db.xadd("switchboard:room:r", {"d": "1"}, id=f"{ahead}-5")
        second = _say(db, "r", "two")
        assert second == ahead << SEQ_BITS | 6
        db.xadd("switchboard:lines:r", {"f": b""}, id=f"{ahead + 1}-0")
        assert _say(db, "r", "three") == (ahead + 1) << SEQ_BITS | 1
    finally:
        db.close()


def test_the_line_script_keeps_about_keep_lines_and_none_past_their_age(
    redis_server: RedisServer,
) -> None:
    db = redis.Redis.from_url(redis_server.url)
    try:
        for i in range(300):
            _say(db, "capped", f"l{i}", keep=10)
        assert 10 <= db.xlen("switchboard:lines:capped") <= 10 + 100  # MAXLEN ~: whole nodes
        assert db.pttl("switchboard:lines:capped") == -1  # no age limit: no expiry
        now_ms = int(db.time()[0]) * 1000
        db.xadd("switchboard:lines:aged", {"f": b""}, id=f"{now_ms - 60_000}-0")
        kept = _say(db, "aged", "new", age_ms=30_000)
        assert [line_id(e) for e, _ in db.xrange("switchboard:lines:aged")] == [kept]
        assert 0 < db.pttl("switchboard:lines:aged") <= 30_000  # gone with the room's silence
    finally:
        db.close()


def test_a_line_redis_refuses_is_a_typed_error_and_is_stored_nowhere(
    node: Node, redis_server: RedisServer
) -> None:
    """Redis at its ``maxmemory`` (noeviction) refuses the line's step: the sender gets
    HISTORY_UNAVAILABLE (or CLUSTER_UNAVAILABLE, should the node's own lease renewal have been
    refused first), the line is in no history and reached nobody; once Redis has room, lines
    are stored again."""
    a = node("a", "--cluster-lease", "15")
    with RawPeer(a.port) as ann, RawPeer(a.port) as bob:
        join(ann, "full")
        join(bob, "full")
        ann.expect(Joined)
        kept = say(ann, "full", ["kept"])
        assert bob.expect(Message).message_id == kept[0]
        redis_server.command("CONFIG", "SET", "maxmemory", "1")
        try:
            ann.send(BroadcastRequest("full", "refused", request_id=5))
            refusal = ann.expect(ErrorResponse, timeout=10)
        finally:
            redis_server.command("CONFIG", "SET", "maxmemory", "0")
        assert refusal.request_id == 5
        assert refusal.code in (ErrorCode.HISTORY_UNAVAILABLE, ErrorCode.CLUSTER_UNAVAILABLE)
        if refusal.code == ErrorCode.HISTORY_UNAVAILABLE:
            assert "neither stored nor delivered" in refusal.message
        assert_still_serving(ann)

        # Stored again once Redis has room (the node may first have to notice Redis is
        # usable again, if it counted it lost).
        def stored() -> bool:
            ann.send(BroadcastRequest("full", "after", request_id=6))
            got = ann.next(10)
            while isinstance(got, Ping):
                got = ann.next(10)
            assert isinstance(got, (BroadcastOk, ErrorResponse)), got
            if isinstance(got, ErrorResponse):
                assert got.code == ErrorCode.CLUSTER_UNAVAILABLE, got
            return isinstance(got, BroadcastOk)

        assert wait_until(stored, timeout=20, step=0.2)
        assert bob.expect(Message).text == "after"  # "refused" reached nobody
        _, lines = page(bob, "full", HistoryMode.LATEST)
        assert [m.text for m in lines] == ["kept", "after"]


def test_every_line_whose_ok_was_seen_survives_its_node_killed_mid_storm(node: Node) -> None:
    """The durability promise on a cluster: node A killed (SIGKILL) in the middle of a storm
    of BROADCASTs; through node B, every line whose OK the sender saw is in the history, in
    order, with its id, none twice."""
    lease = ("--cluster-lease", "15")  # A's member leaves B's rooms after the paging
    a, b = node("a", "--rate", "0", *lease), node("b", "--rate", "0", *lease)
    with RawPeer(b.port) as bob:
        join(bob, "storm")  # the room lives on node B through the kill
        ann = RawPeer(a.port)
        try:
            join(ann, "storm")
            ann.send(*(BroadcastRequest("storm", f"s{i}", request_id=i + 1) for i in range(2000)))
            oks: dict[int, int] = {}
            while len(oks) < 300:
                got = ann.next(10)
                if isinstance(got, BroadcastOk):
                    oks[got.request_id] = got.message_id
            a.stop(signal.SIGKILL)
            while (got := ann.next(10)) is not None:  # what was on its way before the kill
                if isinstance(got, BroadcastOk):
                    oks[got.request_id] = got.message_id
        finally:
            ann.close()
        with RawPeer(b.port) as reader:  # its first frames are the answers to its requests
            join(reader, "storm")
            stored: list[Message] = []
            anchor = 0
            while True:
                ok, lines = page(reader, "storm", HistoryMode.AFTER, anchor)
                stored += lines
                if not ok.more:
                    break
                anchor = lines[-1].message_id
            by_id = {m.message_id: m.text for m in stored}
            assert len(by_id) == len(stored)  # none twice
            assert ids_of(stored) == sorted(by_id)
            for request_id, message_id in oks.items():
                assert by_id.get(message_id) == f"s{request_id - 1}"
            # In the order they were sent (one sender, one connection).
            texts = [m.text for m in stored]
            assert texts == [f"s{i}" for i in range(len(texts))]


def test_a_connection_s_lines_waiting_for_a_stalled_redis_are_bounded(
    node: Node, redis_server: RedisServer
) -> None:
    """Redis stopped (SIGSTOP: no answer, no error) under a flood of BROADCASTs: one
    connection has at most CLUSTER_MAX_WAITING_LINES lines waiting; the next is RATE_LIMITED;
    every one gets exactly one answer, in order, once the command timeout passes."""
    limit = defaults.CLUSTER_MAX_WAITING_LINES
    a = node("a", "--rate", "0", "--cluster-lease", "3")  # command timeout: 1 s
    with RawPeer(a.port) as ann:
        join(ann, "stall")
        assert redis_server.proc is not None
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            ann.send(
                *(BroadcastRequest("stall", f"x{i}", request_id=i + 1) for i in range(limit + 1))
            )
            codes = []
            for _ in range(limit + 1):
                got = ann.expect((BroadcastOk, ErrorResponse), timeout=20)  # type: ignore[arg-type]
                codes.append((got.request_id, getattr(got, "code", 0)))
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        assert [r for r, _ in codes] == list(range(1, limit + 2))  # in order, once each
        assert codes[-1][1] == ErrorCode.RATE_LIMITED
        assert {c for _, c in codes[:-1]} == {ErrorCode.CLUSTER_UNAVAILABLE}
        assert_still_serving(ann)


def test_a_room_back_under_a_look_alike_name_has_its_history(node: Node) -> None:
    """History is kept under the room's look-alike key, as on one server: "Lobby" emptied on
    node A and brought back as "LOBBY" on node B replays and pages the lines of "Lobby"."""
    a, b = node("a"), node("b")
    with RawPeer(a.port) as ann:
        join(ann, "Lobby")
        ids = say(ann, "Lobby", ["one", "two"])
    with RawPeer(b.port) as bob:
        bob.send(JoinRequest("LOBBY", request_id=1))
        deadline_ok = bob.expect(JoinOk)
        if deadline_ok.room != "LOBBY":  # ann's LEAVE may not have ended the room yet
            assert deadline_ok.room == "Lobby"
        replay = [bob.expect(Message) for _ in range(deadline_ok.history)]
        assert [(m.message_id, m.text, m.room) for m in replay] == [
            (ids[0], "one", deadline_ok.room),
            (ids[1], "two", deadline_ok.room),
        ]
        _, lines = page(bob, deadline_ok.room, HistoryMode.LATEST)
        assert ids_of(lines) == ids
        assert {m.room for m in lines} == {deadline_ok.room}


def test_a_join_during_a_flood_gets_each_line_once_replayed_or_live(node: Node) -> None:
    """Lines flood a room from node B while bob joins it on node A, where a member already
    is, so that node A's reading of the room's stream races bob's JOIN (behind it: the lines
    before the JOIN must not reach bob live too; ahead of it: those read before bob was a
    member there must still reach him): every line reaches bob once, either in his JOIN's
    replay or live after it, in id order, none lost.  Six rounds: both races happen."""
    a, b = node("a", "--rate", "0"), node("b", "--rate", "0")
    for round_ in range(6):
        room = f"flood{round_}"
        with RawPeer(a.port) as ann, RawPeer(b.port) as alice:
            join(ann, room)
            join(alice, room)
            ann.expect(Joined)
            count = 600
            alice.send(*(BroadcastRequest(room, f"f{i}", request_id=i + 1) for i in range(count)))
            alice.expect(BroadcastOk)  # the flood is under way
            with RawPeer(a.port) as bob:
                bob.send(JoinRequest(room, request_id=1))
                ok = bob.expect(JoinOk, timeout=10)
                replay = [bob.expect(Message) for _ in range(ok.history)]
                seen = [m.message_id for m in replay]
                last = f"f{count - 1}"
                while last not in (m.text for m in replay):
                    got = bob.next(10)
                    if isinstance(got, Message):
                        seen.append(got.message_id)
                        if got.text == last:
                            break
                    else:
                        assert isinstance(got, Ping), got
                assert len(seen) == len(set(seen)), "a line reached bob twice"
                assert seen == sorted(seen)
                # None lost between the replay and the live lines: what the room holds from
                # bob's first line on is what bob got.
                stored: list[int] = []
                anchor = seen[0] - 1
                while True:
                    page_ok, lines = page(bob, room, HistoryMode.AFTER, anchor)
                    stored += ids_of(lines)
                    if not page_ok.more:
                        break
                    anchor = lines[-1].message_id
                assert seen == stored, "a line never reached bob"


def test_a_line_read_between_a_join_and_its_answer_still_reaches_the_joiner(
    redis_server: RedisServer,
) -> None:
    """The other race of a JOIN with the node's reading of the room's stream, made certain
    in-process: another node's line lands in the stream just after bob's JOIN there, and this
    node reads it (and hands it to the members it has) before bob is a member here; bob
    still gets it, live, after his JoinOk."""
    st = start_inproc_node(redis_server)
    try:
        directory = st.server.shared_directory
        assert directory is not None
        with RawPeer(st.port) as ann, RawPeer(st.port) as bob:
            join(ann, "race")  # the node reads the room's stream from now on
            claim = directory._claim_room
            line = Message(5, 99, "127.0.0.1", 1, "far", "race", 0, 0, "said elsewhere")

            async def claim_then_a_line_is_read(conn: Any, name: str) -> None:
                await claim(conn, name)
                entry = await directory.node.redis.xadd(
                    "switchboard:room:race", {"f": encode(line), "s": 0}
                )
                deadline = time.monotonic() + 5
                while directory._room_cursor.get("race") != entry:
                    assert time.monotonic() < deadline, "the node never read the line"
                    await asyncio.sleep(0.005)

            directory._claim_room = claim_then_a_line_is_read  # type: ignore[method-assign]
            bob.send(JoinRequest("race", request_id=1))
            assert bob.expect(JoinOk).history == 0
            assert bob.expect(Message).text == "said elsewhere"
            assert ann.expect(Joined).client_id == bob.client_id
            assert ann.expect(Message).text == "said elsewhere"
    finally:
        st.stop()
