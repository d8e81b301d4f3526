"""The chat member's state machine, without sockets; and a whole room over a simulated lossy
network with a virtual clock."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.services.udpchat.codec import (
    Ack,
    Chat,
    ChatErrorCode,
    Datagram,
    Error,
    Join,
    Joined,
    Keepalive,
    Leave,
    Left,
    Relay,
    Shutdown,
    Welcome,
    decode,
    encode,
)
from switchboard.services.udpchat.peer import (
    ChatPeer,
    Event,
    Ignored,
    JoinRefused,
    LeaveDone,
    Lost,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    MessageRefusedError,
    MessagesLost,
    NoAnswer,
    NotJoinedError,
    Phase,
    Rejoining,
    ReorderBuffer,
    Retrying,
    RetrySchedule,
    ServerBack,
    ServerShutdown,
    ServerSilent,
    Welcomed,
)
from switchboard.services.udpchat.room import ChatRoom

TOKEN = b"T" * 8


def sent(peer: ChatPeer) -> list[Datagram]:
    return [decode(d) for d in peer.datagrams_to_send()]


def joined_peer(now: float = 0.0, expiry_ms: int = 20_000, **kwargs: object) -> ChatPeer:
    peer = ChatPeer("alice", **kwargs)  # type: ignore[arg-type]
    peer.join(now)
    [join] = sent(peer)
    assert isinstance(join, Join)
    peer.receive(encode(Welcome(join.seq, "alice", TOKEN, 2, expiry_ms)), now)
    assert peer.pop_events() == [Welcomed("alice", 2)]
    return peer


# --- retry schedule -----------------------------------------------------------------------------


def test_retry_schedule_is_bounded_exponential() -> None:
    schedule = RetrySchedule(0.25, 2.0, 7)
    assert list(schedule.delays()) == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert schedule.total_s == 9.75


def test_join_is_retried_with_back_off_then_given_up() -> None:
    peer = ChatPeer("alice", retry=RetrySchedule(0.25, 1.0, 4))
    peer.join(0.0)
    first = sent(peer)
    assert first == [Join(1, "alice")]
    times = [0.0]
    now = 0.0
    for _ in range(10):
        deadline = peer.next_deadline()
        assert deadline is not None
        now = deadline
        peer.tick(now)
        again = sent(peer)
        if not again:
            break
        assert again == first  # the same seq: the server can tell a retry
        times.append(now)
    assert times == [0.0, 0.25, 0.75, 1.75]
    events = peer.pop_events()
    assert events[:3] == [Retrying("JOIN", 2, 4), Retrying("JOIN", 3, 4), Retrying("JOIN", 4, 4)]
    assert events[3] == NoAnswer("JOIN", 4, 2.75)
    assert now == 2.75
    assert peer.phase is Phase.IDLE


def test_welcome_stops_the_retries() -> None:
    peer = joined_peer()
    assert peer.phase is Phase.JOINED
    assert peer.token == TOKEN
    peer.tick(1.0)
    assert sent(peer) == []  # no retry, no keepalive yet
    assert peer.next_deadline() == 5.0  # the first keepalive


def test_stale_welcome_is_ignored() -> None:
    peer = ChatPeer("alice")
    peer.join(0.0)
    peer.receive(encode(Welcome(99, "alice", TOKEN, 0, 20_000)), 0.1)
    assert peer.phase is Phase.JOINING and peer.pop_events() == []


def test_refused_join() -> None:
    peer = ChatPeer("alice")
    peer.join(0.0)
    peer.receive(encode(Error(1, ChatErrorCode.NICK_IN_USE, "in use", "alice")), 0.1)
    assert peer.pop_events() == [JoinRefused(ChatErrorCode.NICK_IN_USE, "in use")]
    assert peer.phase is Phase.IDLE
    assert peer.next_deadline() is None
    peer.join(0.2, "alice2")
    assert sent(peer)[-1] == Join(2, "alice2")


def test_invalid_nick_is_refused_locally() -> None:
    with pytest.raises(ValueError, match=re.escape("'|'")):
        ChatPeer("a|b").join(0.0)


def test_chat_lines_are_numbered_from_one() -> None:
    peer = joined_peer()
    peer.send("one", 1.0)
    peer.send("two", 1.1)
    assert sent(peer) == [Chat(1, TOKEN, "one"), Chat(2, TOKEN, "two")]


def test_too_long_or_unjoined_messages_are_refused() -> None:
    peer = joined_peer()
    with pytest.raises(MessageRefusedError, match="1201 bytes"):
        peer.send("x" * 1201, 1.0)
    with pytest.raises(MessageRefusedError, match="control"):
        peer.send("\x1b[2J", 1.0)
    assert sent(peer) == []
    with pytest.raises(NotJoinedError):
        ChatPeer("bob").send("hi", 0.0)


def test_keepalives_and_server_silence() -> None:
    peer = joined_peer(keepalive_s=5.0, server_silence_s=15.0)
    peer.tick(5.0)
    [keepalive] = sent(peer)
    assert isinstance(keepalive, Keepalive) and keepalive.token == TOKEN
    peer.receive(encode(Ack(keepalive.seq)), 5.01)
    for t in (10.0, 15.0, 20.0, 20.5):
        peer.tick(t)
    assert len(sent(peer)) == 3
    assert peer.pop_events() == [ServerSilent(15.5)]  # last heard at 5.01
    peer.tick(25.0)
    assert peer.pop_events() == []  # said once
    peer.receive(encode(Ack(4)), 25.5)
    assert peer.pop_events() == [ServerBack()]


@pytest.mark.parametrize(
    ("keepalive_s", "expiry_ms", "every_s"),
    [
        (5.0, 20_000, 5.0),  # the defaults agree
        (5.0, 60_000, 5.0),  # a patient server: our own interval
        (5.0, 2_000, 0.5),  # a strict server: a quarter of its expiry
        (0.3, 2_000, 0.3),  # asked for more often than needed
        (5.0, 0, 0.1),  # a server announcing no expiry cannot make us flood it
    ],
)
def test_keepalive_interval_fits_the_announced_expiry(
    keepalive_s: float, expiry_ms: int, every_s: float
) -> None:
    peer = joined_peer(keepalive_s=keepalive_s, expiry_ms=expiry_ms)
    assert peer.keepalive_every == pytest.approx(every_s)
    now = 0.0
    for _ in range(3):
        deadline = peer.next_deadline()
        assert deadline == pytest.approx(now + every_s)
        peer.tick(deadline)
        [keepalive] = sent(peer)
        assert isinstance(keepalive, Keepalive)
        peer.receive(encode(Ack(keepalive.seq)), deadline)
        now = deadline


def test_relays_become_messages_and_duplicates_are_dropped() -> None:
    peer = joined_peer()
    for seq in (7, 8, 8, 7):
        peer.receive(encode(Relay(seq, "bob", 1000 + seq, f"m{seq}")), 1.0)
    assert peer.pop_events() == [
        MessageReceived("bob", 1007, "m7"),
        MessageReceived("bob", 1008, "m8"),
    ]
    assert peer.duplicates == 2


def test_gap_is_reported_after_the_reorder_wait() -> None:
    peer = joined_peer(reorder_wait_s=0.5)
    peer.receive(encode(Relay(1, "bob", 1, "one")), 1.0)
    peer.receive(encode(Relay(4, "bob", 4, "four")), 1.1)
    assert peer.pop_events() == [MessageReceived("bob", 1, "one")]
    assert peer.next_deadline() == pytest.approx(1.6)
    peer.tick(1.59)
    assert peer.pop_events() == []
    peer.tick(1.6)
    assert peer.pop_events() == [MessagesLost("bob", 2), MessageReceived("bob", 4, "four")]
    peer.receive(encode(Relay(2, "bob", 2, "late")), 1.7)  # too late: already counted lost
    assert peer.pop_events() == []


def test_reordered_messages_are_put_back_in_order() -> None:
    peer = joined_peer()
    for seq in (1, 3, 4, 2):
        peer.receive(encode(Relay(seq, "bob", seq, str(seq))), 1.0)
    texts = [e.text for e in peer.pop_events() if isinstance(e, MessageReceived)]
    assert texts == ["1", "2", "3", "4"]


def test_announcements_are_sequenced_too() -> None:
    peer = joined_peer(reorder_wait_s=0.5)
    peer.receive(encode(Joined(1, "carol", 10)), 1.0)
    peer.receive(encode(Relay(1, "carol", 11, "hi")), 1.0)
    peer.receive(encode(Left(3, "carol", 12)), 1.0)  # announcement 2 was lost
    peer.tick(2.0)
    assert peer.pop_events() == [
        MemberJoined("carol", 10),
        MessageReceived("carol", 11, "hi"),
        MessagesLost("", 1),
        MemberLeft("carol", 12, 0),
    ]


def test_newcomers_are_numbered_from_one() -> None:
    peer = joined_peer(reorder_wait_s=0.5)
    peer.receive(encode(Joined(1, "dave", 10)), 1.0)
    peer.receive(encode(Relay(2, "dave", 11, "second")), 1.0)  # the first was lost
    peer.tick(2.0)
    assert peer.pop_events() == [
        MemberJoined("dave", 10),
        MessagesLost("dave", 1),
        MessageReceived("dave", 11, "second"),
    ]


def test_not_a_member_rejoins() -> None:
    peer = joined_peer()
    peer.send("hello?", 1.0)
    sent(peer)
    peer.receive(encode(Error(1, ChatErrorCode.NOT_A_MEMBER, "not a member")), 1.1)
    assert peer.pop_events() == [Rejoining("not a member")]
    assert peer.phase is Phase.JOINING
    [join] = sent(peer)
    assert isinstance(join, Join) and join.nick == "alice"


def test_a_bare_error_is_shown_by_its_meaning() -> None:
    """The server leaves the reason out of an ERROR that would be larger than the request
    (no reflector): the member still says why."""
    peer = joined_peer()
    peer.receive(encode(Error(1, ChatErrorCode.NOT_A_MEMBER, "")), 1.1)
    assert peer.pop_events() == [Rejoining("not a member (expired, or server restarted)")]
    refused = ChatPeer("bob")
    refused.join(0.0)
    refused.receive(encode(Error(1, ChatErrorCode.ADDRESS_FULL, "")), 0.1)
    assert refused.pop_events() == [JoinRefused(7, "too many members from this address")]


def test_leave_acknowledged() -> None:
    peer = joined_peer()
    peer.leave(1.0)
    [leave] = sent(peer)
    assert isinstance(leave, Leave) and leave.token == TOKEN
    peer.receive(encode(Ack(leave.seq)), 1.1)
    assert peer.pop_events() == [LeaveDone(acknowledged=True)]
    assert peer.phase is Phase.CLOSED


def test_leave_unacknowledged_gives_up() -> None:
    peer = joined_peer(retry=RetrySchedule(0.1, 0.2, 3))
    peer.leave(1.0)
    for _ in range(10):
        deadline = peer.next_deadline()
        if deadline is None:
            break
        peer.tick(deadline)
    assert len(sent(peer)) == 3
    events = peer.pop_events()
    assert events[-2:] == [NoAnswer("LEAVE", 3, pytest.approx(0.5)), LeaveDone(False)]


def test_shutdown_closes() -> None:
    peer = joined_peer()
    peer.receive(encode(Shutdown(1, 99)), 1.0)
    assert peer.pop_events() == [ServerShutdown(99)]
    assert peer.phase is Phase.CLOSED


def test_garbage_is_ignored() -> None:
    peer = joined_peer()
    peer.receive(b"garbage", 1.0)
    peer.receive(encode(Join(1, "x")), 1.0)
    assert [type(e) for e in peer.pop_events()] == [Ignored, Ignored]


def test_reorder_buffer_limit_forces_the_gap() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(10.0, first=1, limit=3)
    assert buffer.offer(3, 3, 0.0) == []
    assert buffer.offer(4, 4, 0.0) == []
    assert buffer.offer(5, 5, 0.0) == []
    assert buffer.offer(6, 6, 0.0) == [Lost(2), 3, 4, 5, 6]
    assert buffer.deadline is None


# --- a whole room on a simulated lossy network ----------------------------------------------------


@dataclass
class Network:
    """Datagrams in flight with delivery times; drops, delays and duplicates by a seeded RNG."""

    rng: random.Random
    drop: float
    reorder: float
    duplicate: float
    flights: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    serial: int = 0

    def send(self, now: float, to: str, data: bytes) -> None:
        if self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            delay = 0.001 + (0.1 * self.rng.random() if self.rng.random() < self.reorder else 0)
            self.serial += 1
            self.flights.append((now + delay, self.serial, to, data))

    def next_time(self) -> float | None:
        return min((f[0] for f in self.flights), default=None)

    def pop_due(self, now: float) -> list[tuple[str, bytes]]:
        due = sorted(f for f in self.flights if f[0] <= now)
        self.flights = [f for f in self.flights if f[0] > now]
        return [(to, data) for _, _, to, data in due]


def run_room(seed: int, drop: float, reorder: float, duplicate: float) -> dict[str, list[Event]]:
    rng = random.Random(seed)
    net = Network(rng, drop, reorder, duplicate)
    room = ChatRoom(member_expiry_s=30.0)
    names = ["alice", "bob", "carol"]
    peers = {n: ChatPeer(n, retry=RetrySchedule(0.2, 1.0, 12)) for n in names}
    events: dict[str, list[Event]] = {n: [] for n in names}
    addr = {n: ("127.0.0.1", 5000 + i) for i, n in enumerate(names)}
    by_addr = {a: n for n, a in addr.items()}
    now = 0.0
    script = {name: [f"{name} says {i}" for i in range(20)] for name in names}

    def pump(name: str) -> None:
        for data in peers[name].datagrams_to_send():
            net.send(now, "server", data + b"|" + name.encode())
        events[name] += peers[name].pop_events()

    for name in names:
        peers[name].join(now)
        pump(name)
    for _ in range(20000):
        deadlines = [t for t in (net.next_time(), *(p.next_deadline() for p in peers.values()))
                     if t is not None]  # fmt: skip
        next_script = now + 0.05
        if all(not s for s in script.values()) and all(
            p.phase is Phase.CLOSED for p in peers.values()
        ):
            break
        now = min([*deadlines, next_script])
        for to, data in net.pop_due(now):
            if to == "server":
                payload, _, sender = data.rpartition(b"|")
                for out, dest in room.receive(payload, addr[sender.decode()], now, int(now * 1000)):
                    net.send(now, by_addr[(dest[0], dest[1])], out)
            else:
                peers[to].receive(data, now)
                pump(to)
        for name, peer in peers.items():
            peer.tick(now)
            if now >= next_script - 1e-9 and peer.phase is Phase.JOINED:
                if script[name]:
                    peer.send(script[name].pop(0), now)
                elif all(p.phase is not Phase.JOINING for p in peers.values()) and all(
                    not s for s in script.values()
                ):
                    peer.leave(now)
            pump(name)
    return events


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_lossy_room_delivers_or_reports_every_message(seed: int) -> None:
    """On a network that drops 15 %, delays 20 % and duplicates 10 % of datagrams, every
    member joins, nothing is shown twice or out of order, and what is not shown is counted
    in a gap notice (except a sender's first lines before a late joiner first hears them)."""
    events = run_room(seed, drop=0.15, reorder=0.2, duplicate=0.1)
    for name, evs in events.items():
        assert any(isinstance(e, Welcomed) for e in evs), (name, evs)
        received: dict[str, list[int]] = {}
        lost: dict[str, int] = {}
        for e in evs:
            if isinstance(e, MessageReceived):
                received.setdefault(e.nick, []).append(int(e.text.rsplit(" ", 1)[1]))
            elif isinstance(e, MessagesLost) and e.nick:
                lost[e.nick] = lost.get(e.nick, 0) + e.count
        for sender, numbers in received.items():
            assert numbers == sorted(set(numbers)), (name, sender, numbers)  # no dupes, in order
            span = numbers[-1] - numbers[0] + 1
            assert span - len(numbers) <= lost.get(sender, 0), (name, sender, numbers, lost)


def test_lossless_room_delivers_everything() -> None:
    events = run_room(1, drop=0.0, reorder=0.0, duplicate=0.0)
    for name, evs in events.items():
        texts = [e.text for e in evs if isinstance(e, MessageReceived)]
        others = [n for n in events if n != name]
        assert len(texts) == 20 * len(others)
        assert not [e for e in evs if isinstance(e, MessagesLost)]


def test_lossy_room_shows_gap_notices_and_drops_duplicates() -> None:
    """The loss is real: with a fixed seed some lines are lost and reported as such."""
    events = run_room(7, drop=0.15, reorder=0.2, duplicate=0.1)
    notices = [e for evs in events.values() for e in evs if isinstance(e, MessagesLost)]
    retries = [e for evs in events.values() for e in evs if isinstance(e, Retrying)]
    assert notices and sum(n.count for n in notices) >= 2
    assert retries
    assert all(any(isinstance(e, LeaveDone) for e in evs) for evs in events.values())


def test_late_duplicates_after_a_departure_are_dropped_until_they_rejoin() -> None:
    peer = joined_peer(reorder_wait_s=0.5)
    peer.receive(encode(Relay(1, "bob", 1, "one")), 1.0)
    peer.receive(encode(Left(1, "bob", 2)), 1.0)
    peer.receive(encode(Relay(1, "bob", 1, "one")), 1.1)  # a delayed copy
    assert [type(e) for e in peer.pop_events()] == [MessageReceived, MemberLeft]
    peer.receive(encode(Joined(2, "bob", 3)), 2.0)
    peer.receive(encode(Relay(1, "bob", 4, "new session")), 2.0)
    assert peer.pop_events() == [MemberJoined("bob", 3), MessageReceived("bob", 4, "new session")]
