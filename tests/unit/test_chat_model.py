"""The chat client's model: typed lines, how lines look, rooms."""

from __future__ import annotations

import pytest

from switchboard.cli import chat_model as model
from switchboard.cli.chat_model import ChatState, CommandError
from switchboard.protocol import (
    ClientInfo,
    Joined,
    Left,
    LeftReason,
    Message,
    MessageFlags,
    NickChanged,
    Receipt,
)


def clock(epoch_ms: int) -> str:
    """A fixed clock for the tests: seconds since the epoch, shown as a time of day."""
    seconds = epoch_ms // 1000
    return f"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


T = (12 * 3600 + 1 * 60 + 33) * 1000  # 12:01:33


def message(text: str, *, room: str = "lobby", nick: str = "alice", flags: int = 0) -> Message:
    return Message(7, 3, "127.0.0.1", 5000, nick, room, T, flags, text)


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["", "   ", "\t", "\n", " \r\n"])
def test_blank_lines_are_not_sent(line: str) -> None:
    assert model.parse_line(line) is None


@pytest.mark.parametrize(
    "line, text",
    [
        ("hello", "hello"),
        ("你好，世界 👋🏽", "你好，世界 👋🏽"),
        ("  indented stays indented", "  indented stays indented"),
        ("trailing newline\n", "trailing newline"),
        ("//shrug", "/shrug"),
        ("//", "/"),
        ("a /msg in the middle", "a /msg in the middle"),
    ],
)
def test_plain_lines_are_said(line: str, text: str) -> None:
    assert model.parse_line(line) == model.Say(text)


@pytest.mark.parametrize(
    "line, action",
    [
        ("/msg 3 hi there", model.PrivateMessage(3, "hi there")),
        ("/msg #3 你好", model.PrivateMessage(3, "你好")),
        ("/MSG 3 x", model.PrivateMessage(3, "x")),
        ("/msg bob hi", model.PrivateMessage("bob", "hi")),
        ("/msg 爱丽丝 你好", model.PrivateMessage("爱丽丝", "你好")),
        ("/msg @12 hi", model.PrivateMessage("12", "hi")),  # a nickname made of digits
        ("/msg @#12 hi", model.PrivateMessage("#12", "hi")),
        ("/msg @@x hi", model.PrivateMessage("@x", "hi")),
        ("/msg #x hi", model.PrivateMessage("#x", "hi")),  # not an id: a nickname
        ("/msg ١٢ hi", model.PrivateMessage("١٢", "hi")),  # ids are ASCII digits
        ("/list", model.ListRooms()),
        ("/who", model.ListMembers(everyone=False)),
        ("/who all", model.ListMembers(everyone=True)),
        ("/time", model.GetTime()),
        ("/name", model.GetName()),
        ("/join dev", model.Join("dev")),
        ("/join 聊天室", model.Join("聊天室")),
        ("/leave", model.Leave(None)),
        ("/leave dev", model.Leave("dev")),
        ("/nick bob", model.ChangeNick("bob")),
        ("/help", model.Help()),
        ("/quit", model.Quit()),
        ("/exit", model.Quit()),
        ("  /quit  ", model.Quit()),
    ],
)
def test_commands(line: str, action: model.Action) -> None:
    assert model.parse_line(line) == action


@pytest.mark.parametrize(
    "line, words",
    [
        ("/msg", "Usage: /msg TO TEXT"),
        ("/msg 3", "Usage: /msg TO TEXT"),
        ("/msg 3    ", "Usage: /msg TO TEXT"),
        ("/msg 0 hi", "'0' is not a client id"),
        ("/msg 4294967296 hi", "is not a client id"),
        ("/msg @ hi", "'@' needs a nickname after it"),
        ("/who everyone", "Usage: /who"),
        ("/list all", "Usage: /list (the rooms)"),
        ("/join", "Usage: /join ROOM"),
        ("/join two words", "Usage: /join ROOM"),
        ("/nick", "Usage: /nick NAME"),
        ("/leave a b", "Usage: /leave [ROOM]"),
        ("/time now", "/time takes no arguments"),
        ("/frobnicate", "Unknown command /frobnicate: /help lists the commands"),
        ("/", "Unknown command /"),
    ],
)
def test_bad_commands_say_why(line: str, words: str) -> None:
    with pytest.raises(CommandError) as info:
        model.parse_line(line)
    assert words in str(info.value)


# Bytes that are not UTF-8 reach the parser as lone surrogates (stdin and the terminal decode
# with surrogateescape): refused whole, as udpchat join does, command or text.
@pytest.mark.parametrize(
    "line", ["ab\udcffc", "/nick \udcff", "/join \udcffroom", "/msg 3 \udcff", "/quit\udcff"]
)
def test_lines_that_are_not_utf8_are_not_sent(line: str) -> None:
    with pytest.raises(CommandError, match=r"^Line not sent: it is not valid UTF-8\.$"):
        model.parse_line(line)


def test_a_typed_replacement_character_is_text() -> None:
    assert model.parse_line("ab\ufffdc") == model.Say("ab\ufffdc")


def test_help_names_every_command() -> None:
    text = "\n".join(model.help_lines())
    for command in ("/msg TO TEXT", "/list", "/who [all]", "/time", "/name", "/join ROOM",
                    "/leave [ROOM]", "/nick NAME", "/help", "/quit", "//", "/msg @12"):  # fmt: skip
        assert command in text


# --- formatting ------------------------------------------------------------------------------


def test_a_room_line() -> None:
    assert model.room_line(message("hi 你好 🎉"), show_room=False, clock=clock) == (
        "[12:01:33] alice(#3): hi 你好 🎉"
    )


def test_a_room_line_in_several_rooms_names_the_room() -> None:
    line = model.room_line(message("hi", room="dev"), show_room=True, clock=clock)
    assert line == "[12:01:33] [dev] alice(#3): hi"


def test_history_is_marked() -> None:
    msg = message("earlier", flags=MessageFlags.HISTORY)
    assert model.room_line(msg, show_room=False, clock=clock) == (
        "[12:01:33] (history) alice(#3): earlier"
    )


def test_a_sender_without_nickname_is_its_id() -> None:
    assert (
        model.room_line(message("x", nick=""), show_room=False, clock=clock) == "[12:01:33] #3: x"
    )


def test_control_characters_are_shown_escaped() -> None:
    # A peer must not be able to clear our screen or forge extra lines.
    line = model.room_line(message("a\x1b[2Jb\nc\r\td\x7f\x9b"), show_room=False, clock=clock)
    assert line == "[12:01:33] alice(#3): a\\x1b[2Jb\\nc\\r\\td\\x7f\\x9b"
    assert "\n" not in line and "\x1b" not in line


def test_own_line() -> None:
    line = model.own_line("bob", 2, "lobby", "hey", T, show_room=False, clock=clock)
    assert line == "[12:01:33] bob(#2): hey"
    line = model.own_line("bob", 2, "dev", "hey", T, show_room=True, clock=clock)
    assert line == "[12:01:33] [dev] bob(#2): hey"


def test_private_lines_and_receipts() -> None:
    assert model.private_line(message("psst", room=""), clock=clock) == (
        "[12:01:33] alice(#3) → you: psst"
    )
    assert model.sent_private_line("#3", "psst", T, clock=clock) == (
        "[12:01:33] you → #3: psst (forwarded)"
    )
    assert model.sent_private_line("bob (#3)", "psst", T, clock=clock) == (
        "[12:01:33] you → bob (#3): psst (forwarded)"
    )


def test_nick_change_line() -> None:
    assert model.nick_changed_line(NickChanged(3, "alice", "carolyn")) == (
        "* alice(#3) is now known as carolyn"
    )
    assert model.nick_changed_line(NickChanged(3, "", "bo\x1bb")) == (
        "* #3 is now known as bo\\x1bb"
    )
    assert model.receipt_line(Receipt(9, 3, 1)) == "* your message to #3 was delivered"
    assert model.receipt_line(Receipt(9, 3, 2)) == (
        "* your message to #3 was not delivered (it left before reading it)"
    )


def test_join_and_leave_notices() -> None:
    assert model.joined_line(Joined("lobby", 3, "alice")) == "* alice(#3) joined lobby"
    assert model.left_line(Left("lobby", 2, "bob", LeftReason.DISCONNECTED)) == (
        "* bob(#2) left lobby (disconnected)"
    )
    assert model.left_line(Left("lobby", 2, "bob", LeftReason.TIMED_OUT)) == (
        "* bob(#2) left lobby (timed out)"
    )
    assert model.left_line(Left("lobby", 2, "bob", LeftReason.LEFT)) == "* bob(#2) left lobby"
    assert model.you_joined_line("lobby", 1, 0) == "* you joined lobby (nobody else is here)"
    assert model.you_joined_line("lobby", 3, 2) == (
        "* you joined lobby (2 other(s) here, 2 earlier message(s) follow)"
    )


def test_members() -> None:
    rows = [ClientInfo(1, "127.0.0.1", 5000, "alice", 0), ClientInfo(2, "::1", 5001, "", 0)]
    assert model.members_lines("In lobby", rows, me=2) == [
        "In lobby: 2",
        "  alice(#1) 127.0.0.1:5000",
        "  #2 [::1]:5001 (you)",
    ]


# --- rooms -----------------------------------------------------------------------------------


def test_plain_lines_go_to_the_room_joined_last() -> None:
    state = ChatState("alice")
    with pytest.raises(CommandError, match="You are in no room: /join one first"):
        state.target_room()
    state.joined("lobby")
    assert state.target_room() == "lobby" and not state.show_rooms
    state.joined("dev")
    assert state.target_room() == "dev" and state.show_rooms
    assert state.prompt_parts() == [
        ("class:prompt", "["),
        ("class:state", "dev"),
        ("class:prompt", "] alice> "),
    ]


def test_join_of_a_room_we_are_in_switches_to_it() -> None:
    state = ChatState("alice")
    state.joined("lobby")
    state.joined("dev")
    assert state.switch("lobby") and state.current == "lobby"
    assert not state.switch("elsewhere") and state.current == "lobby"


def test_leaving_the_current_room_goes_back_to_the_one_joined_before() -> None:
    state = ChatState("alice")
    for room in ("lobby", "dev", "ops"):
        state.joined(room)
    state.left("ops")
    assert state.current == "dev" and state.where_now() == "talking in dev"
    state.switch("lobby")
    state.left("dev")  # not the current room: it stays
    assert state.current == "lobby" and state.rooms == ["lobby"]
    state.left("lobby")
    assert state.current is None and state.where_now() == "you are in no room now: /join one"
    assert state.prompt_parts()[1] == ("class:offline", "no room")


def test_completion_offers_commands_rooms_and_ids() -> None:
    state = ChatState("alice")
    state.joined("lobby")
    words = state.completion_words([1, 5])
    assert set(model.COMMANDS) <= set(words)
    assert words["/join"] == {"lobby": None} and words["/leave"] == {"lobby": None}
    assert words["/msg"] == {"1": None, "5": None}
    words = state.completion_words([1], ["bob", "12", "#3", "@x", "#x"])
    # Each nickname as /msg reads it back: "@" only where it would be read as an id.
    typed = {"1": 1, "bob": "bob", "@12": "12", "@#3": "#3", "@@x": "@x", "#x": "#x"}
    assert list(words["/msg"]) == list(typed)  # type: ignore[call-overload]
    for text, target in typed.items():
        assert model.parse_line(f"/msg {text} hi") == model.PrivateMessage(target, "hi")


def test_a_failed_catch_up_says_what_follows() -> None:
    with_position = model.catch_up_failed_notice("den", "gone (X)", had_position=True)
    assert with_position == (
        "* Could not fetch what was said in den while you were away (gone (X)); "
        "only the lines the server replays follow."
    )
    without = model.catch_up_failed_notice("den\x1b", "gone (X)", had_position=False)
    assert without.startswith("* Could not read the history of den\\x1b (gone (X)); ")
    assert without.endswith("its latest lines will be shown again instead of what you missed.")
