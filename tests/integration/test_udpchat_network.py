"""The UDP chat room through real sockets on loopback: raw datagrams against the server, and
the client's session (the code behind ``switchboard udpchat join``) against both."""

from __future__ import annotations

import socket
import threading
import time

from support.network import free_port
from support.services import LoopThread, MemberFactory, RelayFactory, UdpChatFactory
from support.waiting import WAIT_S, wait_until
from switchboard.services.udpchat.codec import (
    Ack,
    Chat,
    ChatErrorCode,
    Datagram,
    DatagramType,
    Error,
    Join,
    Joined,
    Keepalive,
    Leave,
    Left,
    LeftReason,
    Relay,
    Welcome,
    decode,
    encode,
)
from switchboard.services.udpchat.peer import RetrySchedule
from switchboard.services.udpchat.relay import FaultPlan

FAST = {"keepalive_s": 0.2, "retry": RetrySchedule(0.1, 0.4, 8)}


class RawClient:
    """A UDP socket speaking datagrams directly."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(WAIT_S)
        self.sock.connect(("127.0.0.1", port))

    def send(self, datagram: Datagram) -> None:
        self.sock.send(encode(datagram))

    def recv(self, timeout: float = WAIT_S) -> Datagram:
        self.sock.settimeout(timeout)
        return decode(self.sock.recv(2048))

    def recv_until(self, kind: type, timeout: float = WAIT_S) -> Datagram:
        for _ in range(100):
            datagram = self.recv(timeout)
            if isinstance(datagram, kind):
                return datagram
        raise AssertionError(f"no {kind.__name__}")

    def join(self, nick: str, seq: int = 1) -> bytes:
        self.send(Join(seq, nick))
        welcome = self.recv_until(Welcome)
        assert isinstance(welcome, Welcome)
        return welcome.token

    def close(self) -> None:
        self.sock.close()


def test_join_chat_and_leave_with_announcements(udpchat_server: UdpChatFactory) -> None:
    server = udpchat_server()
    alice, bob = RawClient(server.port), RawClient(server.port)
    try:
        before = time.time_ns() // 1_000_000
        a = alice.join("alice")
        b = bob.join("bob")
        joined = alice.recv()
        assert isinstance(joined, Joined) and (joined.seq, joined.nick) == (1, "bob")
        assert before <= joined.timestamp_ms <= time.time_ns() // 1_000_000
        bob.send(Chat(1, b, "hi alice 👋"))
        relay = alice.recv()
        assert isinstance(relay, Relay) and (relay.seq, relay.nick, relay.text) == (
            1, "bob", "hi alice 👋")  # fmt: skip
        assert relay.timestamp_ms >= joined.timestamp_ms
        alice.send(Keepalive(2, a))
        assert alice.recv() == Ack(2)
        bob.send(Leave(2, b))
        assert bob.recv() == Ack(2)
        left = alice.recv()
        assert isinstance(left, Left) and (left.seq, left.nick, left.reason) == (
            2, "bob", LeftReason.LEFT)  # fmt: skip
    finally:
        alice.close()
        bob.close()


def test_duplicate_and_invalid_nicknames(udpchat_server: UdpChatFactory) -> None:
    server = udpchat_server()
    clients = [RawClient(server.port) for _ in range(4)]
    try:
        clients[0].join("Alice")
        clients[1].send(Join(1, "alice"))
        assert clients[1].recv() == Error(
            1, ChatErrorCode.NICK_IN_USE, "the nickname 'Alice' is in use", "alice"
        )
        for seq, bad in enumerate(["", "x" * 33, "  ", "a|b", "back\\slash", "nul\x00"], 2):
            clients[2].send(Join(seq, bad))
            error = clients[2].recv()
            assert isinstance(error, Error) and error.code == ChatErrorCode.INVALID_NICK, bad
        clients[3].join("alice2")  # the room still works
        assert [m.nick for m in server.room.members] == ["Alice", "alice2"]
    finally:
        for client in clients:
            client.close()


def test_silent_member_expires_and_is_announced(udpchat_server: UdpChatFactory) -> None:
    server = udpchat_server(member_expiry_s=1.0)  # alice's keepalives: every 0.1 s
    alice, ghost = RawClient(server.port), RawClient(server.port)
    try:
        a = alice.join("alice")
        ghost.join("ghost")
        assert isinstance(alice.recv(), Joined)
        # alice keeps sending keepalives; ghost says nothing.
        stop = threading.Event()

        def keepalives() -> None:
            seq = 10
            while not stop.wait(0.1):
                seq += 1
                alice.send(Keepalive(seq, a))

        thread = threading.Thread(target=keepalives, daemon=True)
        thread.start()
        try:
            left = alice.recv_until(Left, timeout=5.0)
        finally:
            stop.set()
            thread.join(WAIT_S)
        assert isinstance(left, Left) and left.nick == "ghost"
        assert left.reason == LeftReason.TIMED_OUT
        assert [m.nick for m in server.room.members] == ["alice"]
        assert server.room.stats.expired == 1
        ghost.send(Chat(1, b"\x00" * 8, "am I here?"))
        error = ghost.recv()
        assert isinstance(error, Error) and error.code == ChatErrorCode.NOT_A_MEMBER
    finally:
        alice.close()
        ghost.close()


def test_garbage_is_ignored_and_counted(udpchat_server: UdpChatFactory) -> None:
    server = udpchat_server()
    client = RawClient(server.port)
    gone = RawClient(server.port)
    try:
        a = client.join("alice")
        gone.join("gone")
        gone.close()  # relays to it now meet a closed port (ICMP port unreachable)
        for junk in (
            b"",
            b"\x00",
            b"GET / HTTP/1.1\r\n\r\n",
            b"SU" + bytes(3000),
            encode(Ack(1)),
            bytes([0x53, 0x55, 1, DatagramType.CHAT]) + bytes(5),
        ):
            client.sock.send(junk)  # fmt: skip
        client.send(Chat(1, a, "still alive?"))
        client.send(Keepalive(9, a))
        assert client.recv_until(Ack) == Ack(9)
        assert wait_until(lambda: server.room.stats.garbage == 6)
    finally:
        client.close()


def test_client_session_end_to_end(udpchat_server: UdpChatFactory, member: MemberFactory) -> None:
    server = udpchat_server()
    bob = member(server.port, "bob", **FAST)
    assert bob.out.wait_for("* Welcome, bob! you are alone in the room")
    alice = member(server.port, "alice", **FAST)
    assert alice.out.wait_for("* Welcome, alice! 1 other in the room")
    assert bob.out.wait_for("* alice joined")
    alice.say("hello bob 👍🏽")
    assert bob.out.wait_for("alice: hello bob 👍🏽")
    bob.say("x" * 1201)
    assert bob.err.wait_for("! message not sent: message too long: 1201 bytes")
    bob.say("hi alice")
    assert alice.out.wait_for("bob: hi alice")
    alice.say("/quit")
    assert alice.exit_code() == 0
    assert bob.out.wait_for("* alice left")
    assert bob.exit_code() == 0
    assert not server.room.members
    assert "hello bob" not in alice.out.text  # nobody hears themselves


def test_duplicate_nickname_without_a_terminal_exits_2(
    udpchat_server: UdpChatFactory, member: MemberFactory
) -> None:
    server = udpchat_server()
    first = member(server.port, "alice", **FAST)
    assert first.out.wait_for("Welcome")
    second = member(server.port, "ALICE", **FAST)
    assert second.exit_code() == 2
    assert "nickname refused: the nickname 'alice' is in use" in second.err.text


def test_lossy_network_shows_retries_and_gap_notices(
    udpchat_server: UdpChatFactory, lossy_relay: RelayFactory, member: MemberFactory
) -> None:
    server = udpchat_server()
    dropped: dict[str, int] = {"join": 0}

    def drop_if(data: bytes, upstream: bool) -> bool:
        if not upstream:
            return False
        datagram = decode(data)
        if isinstance(datagram, Join) and datagram.nick == "alice" and dropped["join"] < 2:
            dropped["join"] += 1  # alice's first two JOINs are lost
            return True
        # bob's lines 2 and 3 are lost on the way to the server
        return isinstance(datagram, Chat) and datagram.seq in (2, 3) and bob_token == datagram.token

    bob_token = b""
    # Duplicates too: every member must still show each line once.
    relay = lossy_relay(server.port, FaultPlan(duplicate=0.5, seed=3), drop_if=drop_if)
    alice = member(relay.port, "alice", **FAST)
    assert alice.err.wait_for("! no answer to JOIN yet, retrying (2/8)")
    assert alice.err.wait_for("retrying (3/8)")
    assert alice.out.wait_for("* Welcome, alice!")
    bob = member(relay.port, "bob", **FAST)
    assert bob.out.wait_for("* Welcome, bob!")
    bob_token = bob.peer.token
    for i in range(1, 6):
        bob.say(f"line {i}")
    assert alice.out.wait_for("bob: line 5")
    assert alice.out.wait_for("! 2 messages from bob were lost")
    shown = [line.split("bob: ", 1)[1] for line in alice.out.lines() if "bob: " in line]
    assert shown == ["line 1", "line 4", "line 5"]
    assert relay.counts.duplicated > 0


def test_client_says_when_the_server_stops_answering(
    udpchat_server: UdpChatFactory, lossy_relay: RelayFactory, member: MemberFactory
) -> None:
    server = udpchat_server()
    outage = threading.Event()
    relay = lossy_relay(server.port, drop_if=lambda data, upstream: outage.is_set())
    alice = member(relay.port, "alice", keepalive_s=0.1, server_silence_s=0.4)
    assert alice.out.wait_for("Welcome")
    outage.set()
    assert alice.out.wait_for("! The server is not answering")
    outage.clear()
    assert alice.out.wait_for("! The server is answering again")


def test_server_shutdown_is_announced(
    loop_thread: LoopThread, udpchat_server: UdpChatFactory, member: MemberFactory
) -> None:
    server = udpchat_server()
    alice = member(server.port, "alice", **FAST)
    assert alice.out.wait_for("Welcome")
    loop_thread.call(server.close())
    assert alice.exit_code() == 3  # the session ended from the other side
    assert "* The server is shutting down" in alice.out.text


def test_unreachable_server_gives_up(member: MemberFactory) -> None:
    port = free_port(kind=socket.SOCK_DGRAM)  # nothing listens there now
    alice = member(port, "alice", retry=RetrySchedule(0.05, 0.1, 3))
    assert alice.exit_code() == 2  # no session could be had
    assert "no answer from the server" in alice.err.text
    assert "nothing is listening" in alice.err.text
