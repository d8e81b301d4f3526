"""Nicknames and rooms from the command line, in subprocesses: ``send NICK``, ``rooms``, and
``listen`` printing NICK_CHANGED."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from support.commands import Follower, assert_one_clear_error_line
from support.servers import ServerThread, run_cli
from switchboard import defaults
from switchboard.client import Client
from switchboard.protocol import Message
from switchboard.server.app import SwitchboardServer

HOST = "127.0.0.1"


def test_send_by_nickname(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5, nick="alice") as alice:
        result = run_cli("send", "ALICE", "hi by name", "--wait-receipt", "5", port=server.port)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(f"to ALICE (#{alice.client_id}): delivered")
        msg = alice.next_indication(timeout=5)
        assert isinstance(msg, Message) and msg.text == "hi by name"
        result = run_cli("send", "alice", "again", "--json", port=server.port)
        obj = json.loads(result.stdout)
        assert (obj["to"], obj["to_nick"], obj["status"]) == (alice.client_id, "alice", "forwarded")


def test_send_to_an_unknown_nickname_names_it(server: ServerThread) -> None:
    result = run_cli("send", "carol", "hello", port=server.port)
    err = assert_one_clear_error_line(result, 1)
    assert "NO_SUCH_CLIENT" in err and "'carol'" in err
    result = run_cli("send", "carol", "hello", "--json", port=server.port)
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "NO_SUCH_CLIENT"


def test_digits_are_an_id_and_at_digits_a_nickname(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as by_id, Client(HOST, server.port) as by_nick:
        by_nick.set_nick(str(by_id.client_id))  # a nickname that is the other one's id
        result = run_cli("send", str(by_id.client_id), "to the id", "--json", port=server.port)
        assert json.loads(result.stdout)["to"] == by_id.client_id
        result = run_cli("send", f"@{by_id.client_id}", "to the nick", "--json", port=server.port)
        assert json.loads(result.stdout)["to"] == by_nick.client_id
        result = run_cli("send", f"#{by_id.client_id}", "to the id", "--json", port=server.port)
        assert json.loads(result.stdout)["to"] == by_id.client_id
        texts = []
        while (frame := by_nick.next_indication(timeout=0.5)) is not None:
            if isinstance(frame, Message):
                texts.append(frame.text)
        assert texts == ["to the nick"]


def test_send_with_an_empty_at_is_a_usage_error(server: ServerThread) -> None:
    result = run_cli("send", "@", "hello", port=server.port)
    err = assert_one_clear_error_line(result, 2)
    assert "'@' needs a nickname" in err


def test_rooms_text_and_json(server: ServerThread) -> None:
    result = run_cli("rooms", port=server.port)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["0 room(s)"]
    with Client(HOST, server.port, timeout=5) as alice, Client(HOST, server.port) as bob:
        alice.join("lobby")
        bob.join("lobby")
        bob.join("chess")
        result = run_cli("rooms", port=server.port)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "2 room(s):",
            "  chess  1 member",
            "  lobby  2 members",
        ]
        result = run_cli("rooms", "--json", port=server.port)
        assert json.loads(result.stdout) == {
            "rooms": [
                {"name": "chess", "members": 1, "member": False},
                {"name": "lobby", "members": 2, "member": False},
            ]
        }


def test_rooms_lists_every_page(server: ServerThread) -> None:
    names = [f"r{i:04d}" for i in range(defaults.MAX_ROOMS_LISTED + 3)]
    per_owner = defaults.MAX_ROOMS_PER_CLIENT  # more rooms than one connection may be in
    with ExitStack() as stack:
        for start in range(0, len(names), per_owner):
            owner = stack.enter_context(Client(HOST, server.port, timeout=5))
            for name in names[start : start + per_owner]:
                owner.join(name)
        result = run_cli("rooms", "--json", port=server.port)
        assert result.returncode == 0, result.stderr
        assert [r["name"] for r in json.loads(result.stdout)["rooms"]] == names


@pytest.fixture
def listeners(server: ServerThread) -> Iterator[tuple[Follower, Follower]]:
    """``listen --room lobby``, as text and as --json, stopped after the test."""
    port = str(server.port)
    text = Follower("listen", "--room", "lobby", "--port", port)
    as_json = Follower("listen", "--json", "--room", "lobby", "--port", port)
    yield text, as_json
    text.stop()
    as_json.stop()


def test_listen_prints_nick_changes(
    server: ServerThread, listeners: tuple[Follower, Follower]
) -> None:
    text_listener, json_listener = listeners
    assert json.loads(json_listener.line())["event"] == "welcome"

    def both_listening(srv: SwitchboardServer) -> bool:
        room = srv.directory.room("lobby")
        return room is not None and len(room.members) == 2

    server.wait_for(both_listening, timeout=10)
    with Client(HOST, server.port, timeout=5) as alice:
        alice.set_nick("alice")
        alice.join("lobby")
        joined = f"alice (#{alice.client_id}) joined lobby"
        while text_listener.line().strip() != joined:
            pass
        while json.loads(json_listener.line()).get("nick") != "alice":
            pass
        alice.set_nick("carolyn")
        assert text_listener.line().strip() == (
            f"alice (#{alice.client_id}) is now known as carolyn"
        )
        assert json.loads(json_listener.line()) == {
            "event": "nick_changed",
            "id": alice.client_id,
            "old_nick": "alice",
            "nick": "carolyn",
        }
