"""``switchboard chat`` against a real ``switchboard serve``: piped clients in subprocesses,
synchronised by waiting (with deadlines) for the lines they print, and one in a pseudo-terminal."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.commands import STAMP, Chat, alice_and_bob
from support.servers import ServerProcess, ServerThread, run_cli
from support.terminals import spawn_chat
from support.waiting import WAIT_S
from switchboard.cli.chat import LEAVE_HINT
from switchboard.client import Client
from switchboard.protocol import Message

Factory = Callable[..., ServerProcess]


def line_of(chat: Chat, text: str) -> str:
    """The pattern of ``chat``'s line saying ``text`` in a room, as everybody shows it."""
    return rf"^{STAMP} {re.escape(chat.nick)}\(#{chat.client_id}\): {re.escape(text)}$"


def test_three_people_chat_in_english_and_chinese(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice, bob = alice_and_bob(chats, server.port)
    carol = chats(server.port, "carol").joined()
    for member in (alice, bob):
        member.expect(rf"^\* carol\(#{carol.client_id}\) joined lobby$")
    people = [alice, bob, carol]
    said = [
        (alice, "hello everyone"),
        (bob, "你好，我是 bob 🐼"),
        (carol, "emoji too: 🎉👍🏽 and ZWJ 👩‍💻"),
        (alice, "再见 and goodbye"),
    ]
    for speaker, text in said:
        speaker.say(text)
        for member in people:  # everyone, the speaker too, shows the line with its stamp
            member.expect(line_of(speaker, text))
    for member in people:
        assert member.finish() == 0, member.stderr
    for speaker, text in said:
        for member in people:
            assert member.count(line_of(speaker, text)) == 1, (member.nick, text, member.text())
    # Nobody saw a line that was not said, and the server logged each one with its sender.
    for member in people:
        room_lines = [line for line in member.lines if re.match(STAMP, line)]
        assert len(room_lines) == len(said), member.text()
    for speaker, text in said:
        server.wait_for_log(
            rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}\S* INFO  room lobby "
            rf"#{speaker.client_id}\({speaker.nick}\): {re.escape(text)}"
        )


def test_leave_and_rejoin_replays_the_history_marked(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice, bob = alice_and_bob(chats, server.port)
    alice.say("first")
    bob.expect(line_of(alice, "first"))
    bob.say("/leave")
    bob.expect(r"^\* you left lobby; you are in no room now: /join one$")
    alice.expect(rf"^\* bob\(#{bob.client_id}\) left lobby$")
    alice.say("while you were away")
    alice.expect(line_of(alice, "while you were away"))
    bob.say("nobody hears this")
    bob.expect(r"^You are in no room: /join one first \(nothing was sent\)\.$")
    bob.say("/join lobby")
    bob.expect(r"^\* you joined lobby \(1 other\(s\) here, 2 earlier message\(s\) follow\)$")
    history = rf"^{STAMP} \(history\) alice\(#{alice.client_id}\): "
    bob.expect(history + "first$")
    bob.expect(history + "while you were away$")
    alice.expect(rf"^\* bob\(#{bob.client_id}\) joined lobby$")
    bob.say("back again")
    alice.expect(line_of(bob, "back again"))
    assert bob.finish() == 0 and alice.finish() == 0
    assert bob.count("nobody hears this") == 0 and alice.count("nobody hears this") == 0


def test_a_newcomer_when_the_server_is_full_gets_in_after_someone_leaves(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory("--max-clients", "2")
    alice = chats(server.port, "alice").joined()
    bob = chats(server.port, "bob").joined()
    refused = chats(server.port, "carol")
    assert refused.finish() == 2
    assert "is full" in refused.stderr and "SERVER_FULL" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    # With --retry it waits for a free slot, which bob's /quit makes.
    carol = chats(server.port, "carol", "--retry", "20")
    # The second refusal is the retrying carol's (the first was the one that gave up).
    server.wait_for_log(r"refused .*server full", timeout=WAIT_S, count=2)
    assert carol.proc.poll() is None
    bob.say("/quit")
    assert bob.wait() == 0
    alice.expect(rf"^\* bob\(#{bob.client_id}\) left lobby$")  # /quit leaves first
    carol.joined()
    alice.expect(rf"^\* carol\(#{carol.client_id}\) joined lobby$")
    carol.say("made it")
    alice.expect(line_of(carol, "made it"))
    assert carol.finish() == 0 and alice.finish() == 0


def test_a_nickname_in_use_or_invalid_is_refused_with_exit_code_2(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice = chats(server.port, "alice").joined()
    taken = chats(server.port, "ALICE")
    assert taken.finish() == 2
    assert "is taken" in taken.stderr and "NICK_IN_USE" in taken.stderr, taken.stderr
    invalid = chats(server.port, "two words")
    assert invalid.finish() == 2
    assert "INVALID_NICK" in invalid.stderr and "Traceback" not in invalid.stderr
    # The refused ones never joined: alice saw nobody come.
    alice.say("/who")
    alice.expect(r"^In lobby: 1$")
    assert alice.finish() == 0
    assert alice.count(r"^\* .*\(#\d+\) joined lobby") == 0, alice.text()


def test_a_member_killed_abruptly_is_seen_leaving(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice, bob = alice_and_bob(chats, server.port)
    bob.proc.send_signal(signal.SIGKILL)
    bob.proc.wait(WAIT_S)
    alice.expect(rf"^\* bob\(#{bob.client_id}\) left lobby \(disconnected\)$")
    assert alice.finish() == 0


def test_server_shutdown_ends_the_chat_with_exit_code_3_without_reconnecting(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice = chats(server.port, "alice", "--no-reconnect").joined()
    server.stop()
    alice.expect(r"^\* The server shut down \(received SIGTERM\): the chat is over\.$")
    assert alice.wait() == 3  # without its input ending: it quits by itself


def test_long_lines_are_refused_before_sending_and_empty_lines_are_not_sent(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory("--max-text", "64")
    alice, bob = alice_and_bob(chats, server.port)
    alice.say("你" * 22)  # 22 characters, 66 bytes
    alice.expect(r"^The message is too long: text is 66 bytes of UTF-8 \(max 64\)\.$")
    alice.say("")
    alice.say("   ")
    alice.say("你" * 21)  # 63 bytes: fine
    bob.expect(line_of(alice, "你" * 21))
    assert alice.finish() == 0 and bob.finish() == 0
    assert len([line for line in bob.lines if re.match(STAMP, line)]) == 1, bob.text()
    # Nothing but that one line reached the server before it: no error, no empty message.
    server.wait_for_log(" room lobby ")
    logged = [line for line in server.log if " room lobby " in line or " error " in line]
    assert len(logged) == 1 and "你" * 21 in logged[0], logged


def test_lines_not_utf8_are_refused_and_not_sent(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice, bob = alice_and_bob(chats, server.port)
    for raw in (b"ab\xffc", b"/nick \xff", b"/join \xff", b"/msg 1 \xff"):
        alice.say_bytes(raw)
        alice.expect(r"^Line not sent: it is not valid UTF-8\.$")
    alice.say("ok \ufffd fine")  # a replacement character typed as such is text
    bob.expect(line_of(alice, "ok \ufffd fine"))  # the same nickname: /nick was not sent
    assert alice.finish() == 0 and bob.finish() == 0
    assert bob.count(r"ab.c|you are now|joined \S*\ufffd") == 0, bob.text()
    assert alice.count("you are now") == 0, alice.text()


def test_nick_and_room_arguments_not_utf8_are_usage_errors(server: ServerThread) -> None:
    for args in (("--nick", "\udcff"), ("--nick", "al", "--room", "\udcff")):
        result = run_cli("chat", *args, port=server.port, input="")
        assert result.returncode == 2, result
        assert result.stderr.splitlines()[-1].endswith("not valid UTF-8"), result.stderr
        assert "Traceback" not in result.stderr


def test_a_token_server_is_one_line_with_what_to_do(
    server_factory: Callable[..., ServerThread], tmp_path: Path, chats: Callable[..., Chat]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n", encoding="utf-8")
    server = server_factory(auth_token_file=str(tokens))
    chat = chats(server.port, "alice")
    assert chat.finish() == 2
    assert chat.lines == [], chat.text()  # no "* Connection lost" line besides
    assert chat.stderr == (
        f"switchboard: cannot connect to 127.0.0.1:{server.port}: the server requires a token "
        "(AUTH_REQUIRED): pass --token or set $SWITCHBOARD_TOKEN\n"
    )
    assert chats(server.port, "bob", "--token", "s3cret").joined().finish() == 0


def test_private_message_with_receipt_before_the_input_ends(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice, bob = alice_and_bob(chats, server.port)
    bob.say(f"/msg {alice.client_id} 悄悄话 psst")
    assert bob.finish() == 0  # the end of input still waits for the receipt
    assert bob.count(rf"^{STAMP} you → #{alice.client_id}: 悄悄话 psst \(forwarded\)$") == 1
    assert bob.count(rf"^\* your message to #{alice.client_id} was delivered$") == 1
    alice.expect(rf"^{STAMP} bob\(#{bob.client_id}\) → you: 悄悄话 psst$")
    alice.say("/msg 999 anyone?")
    alice.expect(r"^No client #999 is connected")
    assert alice.finish() == 0


def test_several_rooms_name_the_room_and_lines_go_to_the_current_one(
    server_process_factory: Factory, chats: Callable[..., Chat]
) -> None:
    server = server_process_factory()
    alice = chats(server.port, "alice").joined()
    bob = chats(server.port, "bob", "--room", "dev").joined()
    alice.say("/join dev")
    alice.expect(r"^\* you joined dev \(1 other\(s\) here\)$")
    bob.expect(rf"^\* alice\(#{alice.client_id}\) joined dev$")
    alice.say("in dev")
    bob.expect(line_of(alice, "in dev"))  # bob is in one room: no room shown
    alice.expect(rf"^{STAMP} \[dev\] alice\(#{alice.client_id}\): in dev$")
    alice.say("/join lobby")
    alice.expect(r"^\* talking in lobby now$")
    alice.say("in the lobby")
    alice.expect(rf"^{STAMP} \[lobby\] alice\(#{alice.client_id}\): in the lobby$")
    alice.say("/who")
    alice.expect(r"^In lobby: 1$")
    alice.say("/who all")
    alice.expect(r"^Connected clients: 2$")
    assert alice.finish() == 0 and bob.finish() == 0
    assert bob.count("in the lobby") == 0


# --- a real terminal --------------------------------------------------------------------------


def test_a_line_arriving_while_typing_leaves_the_typed_text_intact(
    server: ServerThread, tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = spawn_chat(server.port, "bob", tmp_path)
    try:
        with Client("127.0.0.1", server.port, nick="alice", timeout=WAIT_S) as alice:
            alice.join("lobby")
            child.expect_exact("you joined lobby")
            child.expect_exact("] bob>")
            child.send("half ")  # typed, no Enter (the space is drawn as a cursor move)
            child.expect_exact("half")
            alice.broadcast("lobby", "你好 while you type")
            child.expect(r"\[\d\d:\d\d:\d\d\] alice\(#\d+\): 你好 while you type")
            child.expect_exact("] bob>")  # the prompt is redrawn below the line ...
            child.expect_exact("half")  # ... with the typed text intact
            child.send("done\r")
            deadline = time.monotonic() + WAIT_S
            while True:
                frame = alice.next_indication(timeout=max(0.0, deadline - time.monotonic()))
                assert frame is not None, "alice never got bob's line"
                if isinstance(frame, Message):
                    break
            assert (frame.room, frame.sender_nick, frame.text) == ("lobby", "bob", "half done")
            # Ctrl-C only reaches prompt_toolkit while a prompt is drawn (the terminal is raw
            # then); between prompts it would be a SIGINT.  Our own line comes, then the prompt.
            child.expect(r"bob\(#\d+\): half done")
            child.expect_exact("] bob>")
            child.sendcontrol("c")  # Ctrl-C on an empty line says how to leave ...
            child.expect_exact(LEAVE_HINT)
            child.expect_exact("] bob>")
            child.send("oops")
            child.expect_exact("oops")
            child.sendcontrol("c")  # ... on a typed line throws it away ...
            child.send("/time\r")
            child.expect_exact("Server time: ")
            child.expect_exact("] bob>")
            child.send("/quit\r")  # ... and Ctrl-D or /quit leaves
            child.expect_exact("Bye.")
            child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.logfile_read.getvalue()
        shown = child.logfile_read.getvalue()
        assert shown.count(LEAVE_HINT) == 1 and "Unknown command" not in shown
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_terminal_asks_for_another_nickname_and_ends_on_shutdown(
    server_factory: Callable[..., ServerThread], tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    server = server_factory()
    child = spawn_chat(server.port, "bob", tmp_path, "--no-reconnect")
    try:
        with Client("127.0.0.1", server.port, nick="BOB", timeout=WAIT_S):
            child.expect_exact("is taken by #1 (NICK_IN_USE).")
            child.expect_exact("Another nickname:")
            child.send("bob2\r")
            child.expect(r"connected to 'test-server' as bob2\(#\d+\)")
            child.expect_exact("you joined lobby")
            child.expect_exact("] bob2>")
            # The prompt is waiting for a line when the server goes: it ends by itself.
            server.stop()
            child.expect_exact("The server shut down (test finished): the chat is over.")
            child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 3, child.logfile_read.getvalue()
    finally:
        if child.isalive():
            child.terminate(force=True)
