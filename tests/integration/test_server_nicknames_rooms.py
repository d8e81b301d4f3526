"""Addressing by nickname (SEND_NICK), NICK_CHANGED and ROOMS, through real sockets."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from support.network import HOST
from support.peers import RawPeer, drain, next_of
from support.servers import ServerThread
from switchboard import defaults
from switchboard.client import AsyncClient, Client, NicknameError, NoSuchClient, TextTooLong
from switchboard.protocol import (
    ErrorCode,
    ErrorResponse,
    HelloRequest,
    JoinRequest,
    Message,
    NickChanged,
    NickRequest,
    Receipt,
    ReceiptStatus,
    RoomFlags,
    RoomInfo,
    RoomsOk,
    RoomsRequest,
    SendNickOk,
    SendNickRequest,
)

# --- SEND_NICK -------------------------------------------------------------------------------


def test_send_by_nickname_reaches_its_holder_with_receipt(server: ServerThread) -> None:
    with Client(HOST, server.port) as alice, Client(HOST, server.port) as bob:
        bob.set_nick("Bob")
        ok = alice.send("bob", "hi bob")  # compared as NICK compares: case-insensitively
        assert ok.target == bob.client_id
        message = next_of(bob, Message)
        assert (message.sender_id, message.room, message.text) == (alice.client_id, "", "hi bob")
        assert message.message_id == ok.message_id
        assert alice.wait_receipt(ok.message_id, 5) == ReceiptStatus.DELIVERED


def test_send_by_nickname_to_an_unknown_nickname_names_it(server: ServerThread) -> None:
    with Client(HOST, server.port) as alice:
        with pytest.raises(NoSuchClient) as info:
            alice.send("carol", "anyone?")
        assert info.value.code == ErrorCode.NO_SUCH_CLIENT
        assert "'carol'" in info.value.message
        assert alice.ping() >= 0  # the connection goes on


def test_send_by_nickname_follows_the_nickname_not_the_client(server: ServerThread) -> None:
    """The server resolves the nickname when it forwards: after bob gives "bob" up and carol
    takes it, a SEND_NICK "bob" reaches carol (a LIST-then-SEND client would have the old id)."""
    with (
        Client(HOST, server.port) as alice,
        Client(HOST, server.port) as bob,
        Client(HOST, server.port) as carol,
    ):
        bob.set_nick("bob")
        assert alice.send("bob", "one").target == bob.client_id
        bob.set_nick("robert")
        carol.set_nick("bob")
        ok = alice.send("bob", "two")
        assert ok.target == carol.client_id
        assert next_of(carol, Message).text == "two"
        assert [f.text for f in drain(bob) if isinstance(f, Message)] == ["one"]


def test_numeric_nickname_is_addressed_as_a_nickname(server: ServerThread) -> None:
    """A str target is a nickname even when it is all digits; an int is an id."""
    with Client(HOST, server.port) as alice, Client(HOST, server.port) as twelve:
        twelve.set_nick(str(alice.client_id))  # the nickname is another client's id
        assert alice.send(str(alice.client_id), "to the nickname").target == twelve.client_id
        assert alice.send(alice.client_id, "to the id").target == alice.client_id
        assert next_of(twelve, Message).text == "to the nickname"


def test_send_by_nickname_refuses_long_text_before_looking(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        text = "x" * (defaults.MAX_TEXT + 1)
        peer.send(SendNickRequest("nobody", text, request_id=3))
        reply = peer.expect(ErrorResponse)
        assert (reply.request_id, reply.code) == (3, ErrorCode.TEXT_TOO_LONG)
    with Client(HOST, server.port) as alice, pytest.raises(TextTooLong):
        alice.send("nobody", text)  # refused by the library before it is sent


def test_send_nick_on_the_wire(server: ServerThread) -> None:
    with RawPeer(server.port) as peer, Client(HOST, server.port) as bob:
        bob.set_nick("bob")
        peer.send(SendNickRequest("BOB", "raw", request_id=9))
        ok = peer.expect(SendNickOk)
        assert (ok.request_id, ok.target) == (9, bob.client_id)
        assert next_of(bob, Message).text == "raw"
        receipt = peer.expect(Receipt)
        assert (receipt.message_id, receipt.status) == (ok.message_id, ReceiptStatus.DELIVERED)


# --- NICK_CHANGED ----------------------------------------------------------------------------


def test_nick_change_is_told_once_to_each_member_of_shared_rooms(server: ServerThread) -> None:
    with (
        Client(HOST, server.port) as alice,
        Client(HOST, server.port) as bob,
        Client(HOST, server.port) as stranger,
    ):
        alice.set_nick("alice")
        for room in ("lobby", "chess"):
            alice.join(room)
            bob.join(room)
        stranger.join("elsewhere")
        drain(alice)
        drain(bob)
        assert alice.set_nick("carolyn") == "carolyn"
        changes = [f for f in drain(bob) if isinstance(f, NickChanged)]
        assert changes == [NickChanged(alice.client_id, "alice", "carolyn")]  # once, not twice
        assert not [f for f in drain(alice) if isinstance(f, NickChanged)]  # not to itself
        assert not [f for f in drain(stranger) if isinstance(f, NickChanged)]
        # The same nickname again changes nothing and says nothing; a change of case does.
        alice.set_nick("carolyn")
        assert not [f for f in drain(bob) if isinstance(f, NickChanged)]
        alice.set_nick("Carolyn")
        assert next_of(bob, NickChanged) == NickChanged(alice.client_id, "carolyn", "Carolyn")


def test_first_nickname_and_hello_nickname_are_told(server: ServerThread) -> None:
    with RawPeer(server.port) as peer, Client(HOST, server.port) as bob:
        bob.join("lobby")
        peer.send(JoinRequest("lobby", request_id=1))
        peer.send(NickRequest("anon", request_id=2))
        change = next_of(bob, NickChanged)
        assert (change.old_nick, change.new_nick) == ("", "anon")
        peer_id = change.client_id
        peer.send(HelloRequest(nick="named", request_id=3))  # HELLO with a nickname is a NICK too
        assert next_of(bob, NickChanged) == NickChanged(peer_id, "anon", "named")


def test_refused_nick_change_is_not_told(server: ServerThread) -> None:
    with Client(HOST, server.port) as alice, Client(HOST, server.port) as bob:
        alice.set_nick("alice")
        bob.set_nick("bob")
        alice.join("lobby")
        bob.join("lobby")
        drain(bob)
        with pytest.raises(NicknameError) as info:
            alice.set_nick("BOB")
        assert info.value.code == ErrorCode.NICK_IN_USE
        assert not [f for f in drain(bob) if isinstance(f, NickChanged)]


# --- ROOMS -----------------------------------------------------------------------------------


def test_rooms_lists_names_members_and_membership(server: ServerThread) -> None:
    with Client(HOST, server.port) as alice, Client(HOST, server.port) as bob:
        empty = alice.rooms()
        assert (empty.total, empty.more, empty.rooms) == (0, 0, ())
        alice.join("lobby")
        bob.join("lobby")
        bob.join("chess")
        assert alice.list_rooms() == [
            RoomInfo("chess", 1, RoomFlags.NONE),
            RoomInfo("lobby", 2, RoomFlags.MEMBER),
        ]
        assert bob.list_rooms() == [
            RoomInfo("chess", 1, RoomFlags.MEMBER),
            RoomInfo("lobby", 2, RoomFlags.MEMBER),
        ]
        bob.leave("chess")  # an emptied room is gone
        assert [r.name for r in alice.list_rooms()] == ["lobby"]


def test_rooms_are_paged_at_the_limit(server: ServerThread) -> None:
    limit = defaults.MAX_ROOMS_LISTED
    names = [f"r{i:04d}" for i in range(limit + 5)]
    per_owner = defaults.MAX_ROOMS_PER_CLIENT  # more rooms than one connection may be in
    with ExitStack() as stack, Client(HOST, server.port) as asker:
        for start in range(0, len(names), per_owner):
            owner = stack.enter_context(Client(HOST, server.port))
            for future in [owner.submit(JoinRequest(n)) for n in names[start : start + per_owner]]:
                owner.result(future)
        first = asker.rooms()
        assert (first.total, first.more, len(first.rooms)) == (limit + 5, 1, limit)
        assert [r.name for r in first.rooms] == names[:limit]
        second = asker.rooms(first.rooms[-1].name)
        assert (second.total, second.more) == (limit + 5, 0)
        assert [r.name for r in second.rooms] == names[limit:]
        assert [r.name for r in asker.list_rooms()] == names


def test_rooms_request_on_the_wire(server: ServerThread) -> None:
    with RawPeer(server.port) as peer, Client(HOST, server.port) as bob:
        bob.join("b")
        bob.join("a")
        peer.send(RoomsRequest("a", request_id=5))
        ok = peer.expect(RoomsOk)
        assert ok == RoomsOk(2, 0, (RoomInfo("b", 1, RoomFlags.NONE),), request_id=5)


# --- the asyncio client ------------------------------------------------------------------------


async def test_async_client_sends_by_nickname_and_lists_rooms(server: ServerThread) -> None:
    async with (
        await AsyncClient.connect(HOST, server.port, timeout=5, nick="ayla") as a,
        await AsyncClient.connect(HOST, server.port, timeout=5, nick="bo") as b,
    ):
        ok = await a.send("BO", "你好")
        assert ok.target == b.client_id
        assert await a.wait_receipt(ok.message_id, 5) == ReceiptStatus.DELIVERED
        with pytest.raises(NoSuchClient):
            await a.send("nobody", "x")
        await b.join("lobby")
        assert await a.list_rooms() == [RoomInfo("lobby", 1, RoomFlags.NONE)]
        assert (await b.rooms()).rooms == (RoomInfo("lobby", 1, RoomFlags.MEMBER),)


def test_send_by_a_huge_nickname_is_answered_briefly(server: ServerThread) -> None:
    """A nickname field of 60,000 control characters: NO_SUCH_CLIENT with a short message
    (escaped whole, it would not even fit an ERROR's str16), and the connection goes on."""
    with RawPeer(server.port) as peer:
        peer.send(SendNickRequest("\x00" * 60_000, "hi", request_id=4))
        error = peer.expect_error(ErrorCode.NO_SUCH_CLIENT, 4)
        assert len(error.message) < 500 and "60000 characters" in error.message
        peer.send(RoomsRequest(request_id=5))
        assert peer.expect(RoomsOk).request_id == 5
