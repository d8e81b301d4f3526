"""The interactive client's menu model: no terminal, no socket."""

from __future__ import annotations

import argparse

import pytest

from switchboard.cli import menu
from switchboard.cli.interactive import auth_hint, explain, utf8_argument
from switchboard.cli.menu import (
    CommandError,
    Connect,
    Disconnect,
    Exit,
    GetName,
    GetTime,
    ListClients,
    SendMessage,
    ShowHelp,
    ShowMenu,
    parse_command,
)
from switchboard.client import AuthError
from switchboard.client.errors import error_for
from switchboard.protocol import ErrorCode


def test_menu_shows_only_connect_and_exit_while_disconnected() -> None:
    assert menu.menu_lines(False) == ["1. Connect", "7. Exit"]
    assert menu.menu_lines(True) == [
        "1. Connect",
        "2. Disconnect",
        "3. Get server time",
        "4. Get server name",
        "5. List clients",
        "6. Send message",
        "7. Exit",
        "8. List rooms",
    ]


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("1", Connect(ask=True)),
        ("2", Disconnect()),
        ("3", GetTime(None)),
        ("4", GetName()),
        ("5", ListClients()),
        ("6", SendMessage()),
        ("7", Exit()),
        (" 3 100 ", GetTime(100)),
        ("6 4 hi", SendMessage(4, "hi")),
        ("6 alice hi", SendMessage("alice", "hi")),
        ("send @4 hi", SendMessage("4", "hi")),
        ("8", menu.ListRooms()),
        ("rooms", menu.ListRooms()),
    ],
)
def test_numbers_when_connected(line: str, action: menu.Action) -> None:
    assert parse_command(line, connected=True) == action


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("connect", Connect()),
        ("connect 127.0.0.1 7000", Connect("127.0.0.1", 7000)),
        ("CONNECT example.org", Connect("example.org", None)),
        ("connect localhost:7100", Connect("localhost", 7100)),
        ("connect [::1]:7100", Connect("::1", 7100)),
        ("connect [::1]", Connect("::1", None)),
        ("connect ::1 7100", Connect("::1", 7100)),
        ("disconnect", Disconnect()),
        ("time", GetTime(1)),
        ("time 100", GetTime(100)),
        ("name", GetName()),
        ("list", ListClients()),
        ("ls", ListClients()),
        ("send", SendMessage()),
        ("send 3", SendMessage(3, None)),
        ("send #3 hello there", SendMessage(3, "hello there")),
        ("send 3   你好 👍  and  spaces ", SendMessage(3, "你好 👍  and  spaces")),
        ("quit", Exit()),
        ("exit", Exit()),
        ("q", Exit()),
        ("help", ShowHelp()),
        ("?", ShowHelp()),
        ("", ShowMenu()),
        ("   ", ShowMenu()),
    ],
)
def test_typed_commands(line: str, action: menu.Action) -> None:
    assert parse_command(line, connected=True) == action


@pytest.mark.parametrize("line", ["2", "3", "4", "5", "6", "time", "name", "send 3 hi", "list"])
def test_only_connect_and_exit_while_disconnected(line: str) -> None:
    with pytest.raises(CommandError, match=r"Not connected: choose 1 \(connect\) first\."):
        parse_command(line, connected=False)


@pytest.mark.parametrize("line", ["1", "7", "connect", "quit", "help", ""])
def test_allowed_while_disconnected(line: str) -> None:
    parse_command(line, connected=False)


@pytest.mark.parametrize(
    ("line", "connected", "message"),
    [
        ("9", True, "There is no option 9: choose 1, 2, 3, 4, 5, 6, 7, 8."),
        ("0", False, "There is no option 0: choose 1, 7."),
        ("lsit", True, "Unknown command 'lsit': did you mean 'list'?"),
        ("frobnicate", True, "Unknown command 'frobnicate': Type help"),
        ("conect", False, "did you mean 'connect'?"),
        ("name now", True, "'name' takes no arguments."),
        ("help me", True, "'help' takes no arguments."),
        ("connect a b c", True, "Usage: connect [HOST] [PORT]"),
        ("connect h:1 2", True, "Usage: connect [HOST] [PORT]"),
        ("connect h 0", True, "'0' is not a port number (1-65535)."),
        ("connect h 65536", True, "'65536' is not a port number"),
        ("connect h:http", True, "'http' is not a port number"),
        ("connect :7000", True, "has no host"),
        ("connect [::1", True, "a closing ']' is missing"),
        ("connect [::1]7000", True, "expected ':PORT'"),
        ("time 0", True, "'0' is not a number of requests (1-10,000)."),
        ("time 10001", True, "is not a number of requests"),
        ("time many", True, "is not a number of requests"),
        ("time -1", True, "is not a number of requests"),
        ("send 0 hi", True, "'0' is not a client id"),
        ("send @ hi", True, "'@' needs a nickname after it"),
        ("send 0 hi", True, "'0' is not a client id"),
        ("send 4294967296 hi", True, "is not a client id"),
    ],
)
def test_errors_are_sentences(line: str, connected: bool, message: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(line, connected)
    assert message in str(info.value)


def test_answers_to_questions() -> None:
    assert menu.parse_count(" 100 ") == 100
    assert menu.parse_count(str(menu.MAX_TIME_REQUESTS)) == menu.MAX_TIME_REQUESTS
    assert menu.parse_port("7000") == 7000
    assert menu.parse_target("#12") == 12
    assert menu.parse_target(str(menu.MAX_CLIENT_ID)) == menu.MAX_CLIENT_ID
    assert menu.parse_host(" example.org ") == "example.org"
    for bad in ("", "two words"):
        with pytest.raises(CommandError):
            menu.parse_host(bad)
    with pytest.raises(CommandError, match="not a client id"):
        menu.parse_target("")


# Bytes that are not UTF-8 arrive as lone surrogates (surrogateescape): the whole line is
# refused before any word of it is used (a host name, a nickname, a text).
@pytest.mark.parametrize(
    ("line", "connected"),
    [("connect \udcff 7000", False), ("send 1 a\udcffb", True), ("\udcff", False)],
)
def test_lines_that_are_not_utf8_are_ignored(line: str, connected: bool) -> None:
    with pytest.raises(CommandError, match=r"^Line ignored: it is not valid UTF-8\.$"):
        parse_command(line, connected)


# Python hands every host name to the idna codec, which raises UnicodeError (not a socket
# error) for these; refused here, each is one sentence.
@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("a..b", "'a..b' is not a valid host name."),
        ("x" * 64 + ".org", "is not a valid host name."),
        ("\ufffd.org", "'\ufffd.org' is not a valid host name."),
        ("\udcff", "Not a valid host name: it is not valid UTF-8."),
        ("a\x00b", "'a\\x00b' is not a server address."),
    ],
)
def test_host_names_the_resolver_cannot_take(host: str, message: str) -> None:
    with pytest.raises(CommandError) as info:
        menu.parse_host(host)
    assert message in str(info.value)
    if host.isprintable():
        with pytest.raises(CommandError, match="is not a valid host name"):
            parse_command(f"connect {host} 7000", connected=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "fe80::1%lo", "münchen.de", "x" * 63])
def test_host_names_that_pass(host: str) -> None:
    assert menu.parse_host(host) == host


def test_arguments_that_are_not_utf8_are_usage_errors() -> None:
    assert utf8_argument("bob") == "bob"
    with pytest.raises(argparse.ArgumentTypeError, match="not valid UTF-8"):
        utf8_argument("b\udcffb")


@pytest.mark.parametrize(
    ("code", "token_given", "words"),
    [
        (ErrorCode.AUTH_REQUIRED, False, "requires a token (AUTH_REQUIRED): pass --token or set $"),
        # A HELLO (for --nick) carries an empty token, which the server calls wrong.
        (ErrorCode.AUTH_FAILED, False, "requires a token (AUTH_FAILED): pass --token or set $"),
        (ErrorCode.AUTH_FAILED, True, "refused the token (AUTH_FAILED): check --token or $"),
    ],
)
def test_auth_errors_say_what_to_do(code: int, token_given: bool, words: str) -> None:
    exc = error_for(code, "whatever")
    assert isinstance(exc, AuthError)
    assert words + "SWITCHBOARD_TOKEN" in auth_hint(exc, token_given=token_given)


def test_completion_words_follow_the_state() -> None:
    assert set(menu.completions(False)) == {"connect", "quit", "exit", "help"}
    words = menu.completions(True, [5, 2, 5])
    assert set(words) == {
        "connect", "disconnect", "time", "name", "list", "send", "quit", "exit", "help", "rooms"
    }  # fmt: skip
    assert words["send"] == {"2": None, "5": None}  # the ids of the last list, once each
    assert set(words["time"]) == {"1", "100"}  # type: ignore[arg-type]
    assert menu.completions(True)["send"] is None


def test_help_lists_what_is_available() -> None:
    offline = "\n".join(menu.help_lines(False))
    online = "\n".join(menu.help_lines(True))
    assert "connect [HOST] [PORT]" in offline and "quit" in offline
    assert "send TO TEXT" not in offline and "send TO TEXT" in online
    assert "rooms" in online and "(or 8)" in online
    assert "time [N]" in online and "(or 3)" in online


def test_ids_hint() -> None:
    assert menu.ids_hint([]) == "see 'list'"
    assert menu.ids_hint([1, 3]) == "last list: 1, 3"
    assert menu.ids_hint(list(range(1, 21))).endswith(", ... (20 in all)")


@pytest.mark.parametrize(
    ("code", "message", "words"),
    [
        (ErrorCode.NO_SUCH_CLIENT, "no client 9", "No client #9 is connected — list the clients"),
        (ErrorCode.TEXT_TOO_LONG, "text is 5000 bytes (max 4096)", "too long: text is 5000"),
        (ErrorCode.RECIPIENT_BUSY, "busy", "Client #9 is not reading its messages"),
        (ErrorCode.RATE_LIMITED, "slow down", "Too many requests"),
        (ErrorCode.INTERNAL_ERROR, "oops", "The server refused: oops (INTERNAL_ERROR)."),
        (250, "from the future", "The server refused: from the future ("),
    ],
)
def test_errors_in_words(code: int, message: str, words: str) -> None:
    assert words in explain(error_for(code, message), 9)
