"""``switchboard chat`` with nicknames and rooms: ``/msg NICK``, ``/list`` (the rooms), ``/who``,
and the line a nickname change shows; piped clients in subprocesses and one in a terminal."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from support.commands import STAMP, Chat, alice_and_bob
from support.servers import ServerProcess, ServerThread
from support.terminals import spawn_chat
from support.waiting import WAIT_S
from switchboard.client import Client
from switchboard.protocol import Message

Factory = Callable[..., ServerProcess]


def test_msg_by_nickname_and_unknown_nickname(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice, bob = alice_and_bob(chats, server.port)
    alice.say("/msg BOB psst")
    bob.expect(rf"^{STAMP} alice\(#{alice.client_id}\) → you: psst$")
    alice.expect(rf"^{STAMP} you → BOB \(#{bob.client_id}\): psst \(forwarded\)$")
    alice.expect(rf"^\* your message to #{bob.client_id} was delivered$")
    alice.say("/msg carol hello?")
    alice.expect(r"^Nobody is connected as carol — list the clients first\.$")
    alice.say(f"/msg #{bob.client_id} by id")
    bob.expect(r"→ you: by id$")
    assert alice.finish() == 0 and bob.finish() == 0


def test_nick_change_is_shown_to_the_room_once(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice, bob = alice_and_bob(chats, server.port)
    bob.say("/join dev")
    bob.expect(r"^\* you joined dev")
    alice.say("/join dev")  # alice and bob now share two rooms
    alice.expect(r"^\* you joined dev")
    bob.say("/nick robert")
    bob.expect(rf"^\* you are now robert\(#{bob.client_id}\)$")
    alice.expect(rf"^\* bob\(#{bob.client_id}\) is now known as robert$")
    alice.say("/who")  # a round trip: anything about the change has arrived by its answer
    alice.expect(r"^In dev: 2$")
    assert alice.finish() == 0 and bob.finish() == 0
    assert alice.count(r"is now known as") == 1, alice.text()
    assert bob.count(r"is now known as") == 0, bob.text()  # its own change: "you are now"


def test_list_shows_the_rooms_and_who_shows_the_members(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice = chats(server.port, "alice").joined()
    bob = chats(server.port, "bob", "--room", "dev").joined()
    alice.say("/list")
    alice.expect(r"^2 room\(s\):$")
    alice.expect(r"^  dev    1 member$")
    alice.expect(r"^  lobby  1 member  \(you are in it\)$")
    alice.say("/who all")
    alice.expect(r"^Connected clients: 2$")
    alice.say("/list everything")
    alice.expect(r"^Usage: /list \(the rooms\)")
    assert alice.finish() == 0 and bob.finish() == 0


def test_terminal_msg_by_nickname_and_list(server: ServerThread, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = spawn_chat(server.port, "bob", tmp_path)
    try:
        with Client("127.0.0.1", server.port, nick="alice", timeout=WAIT_S) as alice:
            alice.join("lobby")
            child.expect_exact("you joined lobby")
            child.expect_exact("] bob>")
            child.send("/msg alice 你好\r")
            frame = alice.next_indication(timeout=WAIT_S)
            while frame is not None and not isinstance(frame, Message):
                frame = alice.next_indication(timeout=WAIT_S)
            assert isinstance(frame, Message) and (frame.room, frame.text) == ("", "你好")
            child.expect(rf"you → alice \(#{alice.client_id}\): 你好 \(forwarded\)")
            child.expect_exact("] bob>")
            alice.set_nick("carolyn")
            child.expect_exact(f"alice(#{alice.client_id}) is now known as carolyn")
            child.expect_exact("] bob>")
            child.send("/list\r")
            child.expect(re.escape("lobby  2 members  (you are in it)"))
            child.expect_exact("] bob>")
            child.send("/quit\r")
            child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.logfile_read.getvalue()
    finally:
        if child.isalive():
            child.terminate(force=True)
