"""The chat room's server state, without sockets: datagrams and clock readings in and out."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.services.udpchat.codec import (
    JOIN_SIZE,
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
    LeftReason,
    Relay,
    Shutdown,
    Welcome,
    decode,
    encode,
)
from switchboard.services.udpchat.room import ChatRoom, Outgoing, ReplayWindow

ALICE = ("127.0.0.1", 1001)
BOB = ("127.0.0.1", 1002)
CAROL = ("127.0.0.1", 1003)


def make_room(**kwargs: object) -> ChatRoom:
    counter = itertools.count(1)
    return ChatRoom(new_token=lambda: next(counter).to_bytes(8, "big"), **kwargs)  # type: ignore[arg-type]


def send(
    room: ChatRoom, datagram: Datagram, addr: tuple[str, int], now: float = 0.0
) -> list[tuple[Datagram, tuple[str, int]]]:
    return decoded(room.receive(encode(datagram), addr, now, 1000))


def decoded(out: list[Outgoing]) -> list[tuple[Datagram, tuple[str, int]]]:
    return [(decode(data), (addr[0], addr[1])) for data, addr in out]


def join(room: ChatRoom, nick: str, addr: tuple[str, int], now: float = 0.0) -> bytes:
    out = send(room, Join(1, nick), addr, now)
    welcome = out[0][0]
    assert isinstance(welcome, Welcome), out
    return welcome.token


def test_join_welcomes_and_announces_to_the_others() -> None:
    room = make_room()
    assert send(room, Join(5, "alice"), ALICE) == [
        (Welcome(5, "alice", bytes(7) + b"\x01", 0, 20_000), ALICE)
    ]
    out = send(room, Join(1, "bob"), BOB)
    assert out == [
        (Welcome(1, "bob", bytes(7) + b"\x02", 1, 20_000), BOB),
        (Joined(1, "bob", 1000), ALICE),
    ]
    assert [e.kind for e in room.pop_events()] == ["joined", "joined"]


@pytest.mark.parametrize(
    ("expiry_s", "announced_ms"), [(2.0, 2000), (0.0004, 0), (1e12, 0xFFFF_FFFF)]
)
def test_welcome_announces_the_member_expiry(expiry_s: float, announced_ms: int) -> None:
    room = make_room(member_expiry_s=expiry_s)
    [(welcome, _)] = send(room, Join(1, "alice"), ALICE)
    assert isinstance(welcome, Welcome) and welcome.expiry_ms == announced_ms


def test_nickname_in_use_case_insensitively() -> None:
    room = make_room()
    join(room, "Alice", ALICE)
    out = send(room, Join(2, "aLiCe"), BOB)
    assert out == [(Error(2, ChatErrorCode.NICK_IN_USE, "the nickname 'Alice' is in use",
                          "aLiCe"), BOB)]  # fmt: skip
    assert room.stats.refused == 1
    assert len(room.members) == 1


def test_invalid_nickname() -> None:
    room = make_room()
    [(error, _addr)] = send(room, Join(3, "bad|nick"), ALICE)
    assert isinstance(error, Error) and error.code == ChatErrorCode.INVALID_NICK
    assert error.nick == "bad|nick" and "'|'" in error.reason
    [(error, _)] = send(room, Join(4, "esc\x1b"), ALICE)
    assert isinstance(error, Error) and error.nick == ""  # not echoed: unprintable
    assert not room.members


def test_retried_join_is_welcomed_again_without_a_second_announcement() -> None:
    room = make_room()
    join(room, "alice", ALICE)
    token = join(room, "bob", BOB)
    out = send(room, Join(1, "bob"), BOB)  # our WELCOME was lost; bob retries
    assert out == [(Welcome(1, "bob", token, 1, 20_000), BOB)]
    assert room.stats.joins == 2


def test_room_full() -> None:
    room = make_room(max_members=2)
    join(room, "a", ALICE)
    join(room, "b", BOB)
    [(error, _)] = send(room, Join(1, "c"), CAROL)
    assert isinstance(error, Error) and error.code == ChatErrorCode.ROOM_FULL


def test_chat_is_relayed_to_everyone_else_with_the_senders_seq() -> None:
    room = make_room()
    a = join(room, "alice", ALICE)
    join(room, "bob", BOB)
    join(room, "carol", CAROL)
    out = send(room, Chat(1, a, "hi all"), ALICE)
    assert sorted(out, key=lambda x: x[1]) == [
        (Relay(1, "alice", 1000, "hi all"), BOB),
        (Relay(1, "alice", 1000, "hi all"), CAROL),
    ]


def test_duplicate_chat_is_dropped_but_reordered_chat_is_relayed() -> None:
    room = make_room()
    a = join(room, "alice", ALICE)
    join(room, "bob", BOB)
    assert len(send(room, Chat(2, a, "two"), ALICE)) == 1
    assert len(send(room, Chat(1, a, "one"), ALICE)) == 1  # late, not a duplicate
    assert send(room, Chat(2, a, "two"), ALICE) == []
    assert room.stats.duplicates == 1


def test_replay_window() -> None:
    window = ReplayWindow()
    assert window.accept(1) and window.accept(3) and window.accept(2)
    assert not window.accept(2) and not window.accept(3)
    assert window.accept(100)
    assert not window.accept(36)  # 64 or more behind: too old
    assert window.accept(37) and not window.accept(37)


def test_leave_announces_and_is_acknowledged_even_when_repeated() -> None:
    room = make_room()
    join(room, "alice", ALICE)
    b = join(room, "bob", BOB)
    out = send(room, Leave(7, b), BOB)
    assert out == [(Left(2, "bob", 1000, LeftReason.LEFT), ALICE), (Ack(7), BOB)]
    assert send(room, Leave(7, b), BOB) == [(Ack(7), BOB)]
    assert [m.nick for m in room.members] == ["alice"]
    # The name is free again.
    join(room, "BOB", CAROL)


def test_keepalive_and_not_a_member() -> None:
    room = make_room()
    a = join(room, "alice", ALICE)
    assert send(room, Keepalive(9, a), ALICE) == [(Ack(9), ALICE)]
    [(error, _)] = send(room, Keepalive(10, bytes(8)), BOB)
    assert isinstance(error, Error) and error.code == ChatErrorCode.NOT_A_MEMBER
    [(error, _)] = send(room, Chat(1, bytes(8), "x"), BOB)
    assert isinstance(error, Error) and error.code == ChatErrorCode.NOT_A_MEMBER


def test_control_characters_in_chat_are_refused() -> None:
    room = make_room()
    a = join(room, "alice", ALICE)
    join(room, "bob", BOB)
    [(error, addr)] = send(room, Chat(1, a, "\x1b[2J"), ALICE)
    assert addr == ALICE and isinstance(error, Error) and error.code == ChatErrorCode.BAD_TEXT


def test_silent_members_expire_and_departure_is_announced() -> None:
    room = make_room(member_expiry_s=20.0)
    a = join(room, "alice", ALICE, now=0.0)
    join(room, "bob", BOB, now=0.0)
    send(room, Keepalive(2, a), ALICE, now=15.0)
    assert room.next_expiry() == 20.0
    assert room.expire(19.9, 2000) == []
    out = decoded(room.expire(20.1, 2000))
    assert out == [(Left(2, "bob", 2000, LeftReason.TIMED_OUT), ALICE)]
    assert room.stats.expired == 1
    assert room.next_expiry() == 35.0
    assert [e.kind for e in room.pop_events()][-1] == "expired"


def test_any_datagram_refreshes_and_follows_the_address() -> None:
    room = make_room(member_expiry_s=10.0)
    a = join(room, "alice", ALICE, now=0.0)
    join(room, "bob", BOB, now=0.0)
    moved = ("127.0.0.1", 2001)
    send(room, Chat(1, a, "from a new port"), moved, now=8.0)
    send(room, Keepalive(5, join(room, "carol", CAROL, now=8.0)), CAROL, now=8.0)
    out = decoded(room.expire(12.0, 0))
    # alice heard of bob and carol joining (1, 2); carol of nobody yet.
    assert sorted(out, key=lambda x: x[1]) == [
        (Left(1, "bob", 0, LeftReason.TIMED_OUT), CAROL),
        (Left(3, "bob", 0, LeftReason.TIMED_OUT), moved),
    ]


def test_garbage_is_counted_never_raised() -> None:
    room = make_room()
    for data in (b"", b"hello", b"SU\x01\x99\x00\x00\x00\x01\x00", encode(Ack(1))):
        assert room.receive(data, ALICE, 0.0, 0) == []
    assert room.stats.garbage == 4
    events = room.pop_events()
    assert {e.kind for e in events} == {"garbage"}
    assert "not sent to a server" in events[-1].detail


def test_shutdown_tells_everyone() -> None:
    room = make_room()
    join(room, "alice", ALICE)
    join(room, "bob", BOB)
    out = decoded(room.shutdown(5000))
    assert sorted(out, key=lambda x: x[1]) == [(Shutdown(2, 5000), ALICE), (Shutdown(1, 5000),
                                                                           BOB)]  # fmt: skip
    assert not room.members


# --- no reflector: no answer larger than its request ---------------------------------------------


def test_unknown_token_gets_an_error_no_larger_than_the_request() -> None:
    """A KEEPALIVE or CHAT with an unknown token (17 bytes) was answered with a 53-byte
    ERROR: 3.1 times the traffic towards whatever source address the datagram claimed."""
    room = make_room()
    for request in (Keepalive(7, bytes(8)), Chat(1, bytes(8), ""), Chat(2, bytes(8), "hi")):
        data = encode(request)
        [(answer, to)] = room.receive(data, ALICE, 0.0, 1000)
        assert len(answer) <= len(data), request
        assert to == ALICE
        error = decode(answer)
        assert isinstance(error, Error) and error.code == ChatErrorCode.NOT_A_MEMBER


def test_unpadded_join_is_refused_in_a_bare_error() -> None:
    room = make_room()
    data = encode(Join(1, "alice", padding=0))  # 14 bytes; its WELCOME would be 28
    [(answer, _)] = room.receive(data, ALICE, 0.0, 1000)
    assert len(answer) <= len(data)
    error = decode(answer)
    assert isinstance(error, Error) and error.code == ChatErrorCode.JOIN_NOT_PADDED
    assert not room.members
    # A padded JOIN is as large as any WELCOME, and a refusal keeps its reason.
    assert len(encode(Join(1, "alice"))) == JOIN_SIZE
    join(room, "alice", ALICE)
    [(error, _)] = send(room, Join(2, "ALICE"), BOB)
    assert isinstance(error, Error) and error.reason == "the nickname 'alice' is in use"


def test_a_welcome_resent_to_a_small_join_is_refused() -> None:
    """A spoofed small JOIN for a member's own name from its address: no WELCOME to it."""
    room = make_room()
    join(room, "alice", ALICE)
    data = encode(Join(1, "alice", padding=0))
    [(answer, _)] = room.receive(data, ALICE, 0.0, 1000)
    assert len(answer) <= len(data)


_TOKENS = st.sampled_from([bytes(8), (1).to_bytes(8, "big"), (2).to_bytes(8, "big")])
_CLIENT_DATAGRAMS = st.one_of(
    st.builds(Join, st.integers(0, 9), st.text(max_size=40), st.none() | st.integers(0, 200)),
    st.builds(Keepalive, st.integers(0, 9), _TOKENS),
    st.builds(Leave, st.integers(0, 9), _TOKENS),
    st.builds(Chat, st.integers(0, 9), _TOKENS, st.text(max_size=40)),
)


@given(st.lists(st.tuples(_CLIENT_DATAGRAMS, st.sampled_from([ALICE, BOB, CAROL])), max_size=30))
@settings(max_examples=300)
def test_no_answer_to_the_sender_is_larger_than_its_request(
    traffic: list[tuple[Datagram, tuple[str, int]]],
) -> None:
    room = make_room()
    for datagram, addr in traffic:
        try:
            data = encode(datagram)
        except ValueError:
            continue  # a nickname longer than an identity can carry
        for answer, to in room.receive(data, addr, 0.0, 1000):
            # The answers (announcements and relays go to members, whose address the room
            # learnt from a JOIN answered no larger, and may share the sender's).
            if to == addr and isinstance(decode(answer), Welcome | Error | Ack):
                assert len(answer) <= len(data), (datagram, decode(answer))


# --- members per address -------------------------------------------------------------------------


def test_one_address_cannot_fill_the_room() -> None:
    """One socket held 253 members alive and locked everyone else out."""
    room = make_room(max_per_address=3)
    for i in range(3):
        join(room, f"sock{i}", ("10.0.0.1", 5000 + i))
    [(error, _)] = send(room, Join(1, "sock3"), ("10.0.0.1", 5003))
    assert isinstance(error, Error) and error.code == ChatErrorCode.ADDRESS_FULL
    assert error.reason == "3 members from this address already"
    join(room, "elsewhere", ("10.0.0.2", 5000))  # another address is not affected
    # One leaves: its place is free again.
    token = room.by_name.find("sock0").token  # type: ignore[union-attr]
    send(room, Leave(9, token), ("10.0.0.1", 5000))
    join(room, "sock3", ("10.0.0.1", 5003))


def test_a_member_that_moves_is_counted_at_its_new_address() -> None:
    room = make_room(max_per_address=1)
    token = join(room, "alice", ("10.0.0.1", 5000))
    send(room, Keepalive(2, token), ("10.0.0.9", 6000))  # NAT rebinding
    join(room, "bob", ("10.0.0.1", 5001))  # the old address is free
    [(error, _)] = send(room, Join(1, "carol"), ("10.0.0.9", 6001))
    assert isinstance(error, Error) and error.code == ChatErrorCode.ADDRESS_FULL


@pytest.mark.parametrize("lookalike", ["\u0430lice", "ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞", "AIice", "ALICE"])
def test_lookalike_nicknames_are_in_use(lookalike: str) -> None:
    """The TCP server's rules (switchboard.names): Cyrillic, fullwidth, mathematical and
    capital-I look-alikes of a member's name are that name."""
    room = make_room()
    join(room, "alice", ALICE)
    [(error, _)] = send(room, Join(2, lookalike), BOB)
    assert isinstance(error, Error) and error.code == ChatErrorCode.NICK_IN_USE, lookalike


@pytest.mark.parametrize("invisible", ["\u034f", "\ufe0f", "\u3164", "\u115f", "\u2800"])
def test_invisible_suffixes_are_invalid(invisible: str) -> None:
    room = make_room()
    [(error, _)] = send(room, Join(2, "bob" + invisible), BOB)
    assert isinstance(error, Error) and error.code == ChatErrorCode.INVALID_NICK
    assert "invisible" in error.reason


def test_nicknames_are_kept_in_nfc() -> None:
    room = make_room()
    [(welcome, _)] = send(room, Join(1, "jose\u0301"), ALICE)
    assert isinstance(welcome, Welcome) and welcome.nick == "josé"
    [(error, _)] = send(room, Join(1, "josé"), BOB)
    assert isinstance(error, Error) and error.code == ChatErrorCode.NICK_IN_USE
