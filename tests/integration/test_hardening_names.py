"""Look-alike nicknames and room names on the TCP server, through real sockets: kept in NFC,
compared by case fold and by the TS #39 confusable skeleton, invisible characters refused."""

from __future__ import annotations

import pytest

from support.servers import ServerThread
from switchboard.client import Client, NicknameError, RoomError
from switchboard.protocol import ErrorCode

HOST = "127.0.0.1"


@pytest.mark.parametrize(
    "lookalike",
    [
        "\u0430lice",  # Cyrillic а
        "ａｌｉｃｅ",  # fullwidth
        "𝐚𝐥𝐢𝐜𝐞",  # mathematical bold
        "AIice",  # capital I for the l
        "ALICE",
    ],
)
def test_lookalike_nicknames_are_in_use(server: ServerThread, lookalike: str) -> None:
    with Client(HOST, server.port) as alice, Client(HOST, server.port) as other:
        alice.set_nick("alice")
        with pytest.raises(NicknameError) as info:
            other.set_nick(lookalike)
        assert info.value.code == ErrorCode.NICK_IN_USE
        assert f"#{alice.client_id}" in info.value.message


@pytest.mark.parametrize("invisible", ["\u034f", "\ufe0f", "\u3164", "\u115f", "\u2800"])
def test_invisible_suffixes_are_invalid(server: ServerThread, invisible: str) -> None:
    with Client(HOST, server.port) as bob, Client(HOST, server.port) as other:
        bob.set_nick("bob")
        with pytest.raises(NicknameError) as info:
            other.set_nick("bob" + invisible)
        assert info.value.code == ErrorCode.INVALID_NICK
        assert "invisible" in info.value.message
        with pytest.raises(RoomError) as room_info:
            other.join("lobby" + invisible)
        assert room_info.value.code == ErrorCode.INVALID_ROOM


def test_decomposed_and_precomposed_are_one_nickname(server: ServerThread) -> None:
    with Client(HOST, server.port) as first, Client(HOST, server.port) as second:
        assert first.set_nick("jose\u0301") == "josé"  # kept and shown in NFC
        with pytest.raises(NicknameError) as info:
            second.set_nick("josé")
        assert info.value.code == ErrorCode.NICK_IN_USE
        [me] = [c for c in second.list_clients() if c.client_id == first.client_id]
        assert me.nick == "josé"


def test_lookalike_room_names_are_one_room(server: ServerThread) -> None:
    with Client(HOST, server.port) as a, Client(HOST, server.port) as b:
        assert a.join("lobby").room == "lobby"
        ok = b.join("L\u043ebby")  # capital L, Cyrillic о
        assert (ok.room, ok.members) == ("lobby", 2)  # the existing room, by its name
        assert b.broadcast("LOBBY", "hi").reached == 1
        assert {c.client_id for c in a.list_clients("Lobby")} == {a.client_id, b.client_id}
        b.leave("LOBBY")
        assert [c.client_id for c in a.list_clients("lobby")] == [a.client_id]
