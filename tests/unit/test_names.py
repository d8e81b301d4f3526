"""The name rules shared by the TCP server and the UDP chat room (switchboard.names), and
``display.safe`` for what peers chose."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.display import safe
from switchboard.names import NameIndex, name_keys, name_problem, normalise

LIMIT = 32


def problem(name: str) -> str | None:
    return name_problem(normalise(name), what="nickname", limit=LIMIT)


@pytest.mark.parametrize(
    "invisible",
    [
        "\u034f",  # COMBINING GRAPHEME JOINER
        "\ufe0f",  # VARIATION SELECTOR-16
        "\u3164",  # HANGUL FILLER
        "\u115f",  # HANGUL CHOSEONG FILLER
        "\u2800",  # BRAILLE PATTERN BLANK (not default-ignorable, but blank)
        "\u200b",  # ZERO WIDTH SPACE
        "\u200d",  # ZERO WIDTH JOINER
        "\u00ad",  # SOFT HYPHEN
        "\u202e",  # RIGHT-TO-LEFT OVERRIDE
        "\u2066",  # LEFT-TO-RIGHT ISOLATE
        "\U000e0041",  # TAG LATIN CAPITAL LETTER A
    ],
)
def test_invisible_characters_are_refused(invisible: str) -> None:
    for name in (f"bob{invisible}", f"b{invisible}ob", invisible):
        found = problem(name)
        assert found is not None and "invisible" in found, (name, found)


@pytest.mark.parametrize(
    "name", ["", "x" * 33, "two words", "tab\tx", "nl\n", "bell\x07", "nbsp\u00a0x", "\u0301x"]
)
def test_other_refusals(name: str) -> None:
    assert problem(name) is not None


@pytest.mark.parametrize("name", ["alice", "Zoë", "李小龙", "bob_2", "[x]", "👩", "x" * 32, "ñ"])
def test_ordinary_names_pass(name: str) -> None:
    assert problem(name) is None


def test_names_are_kept_in_nfc() -> None:
    assert normalise("jose\u0301") == "josé"  # decomposed -> precomposed
    assert problem("jose\u0301") is None
    # 33 decomposed characters are 32 precomposed ones: the limit counts the kept form.
    assert problem("e\u0301" * 32) is None


@pytest.mark.parametrize(
    "lookalike",
    [
        "Alice",
        "ALICE",
        "jose\u0301",  # checked against josé below
        "\u0430lice",  # Cyrillic а
        "ａｌｉｃｅ",  # fullwidth
        "𝐚𝐥𝐢𝐜𝐞",  # mathematical bold
        "𝖺𝗅𝗂𝖼𝖾",  # mathematical sans-serif
        "AIice",  # capital I for l
        "a1ice",  # digit one for l
    ],
)
def test_lookalikes_share_a_key(lookalike: str) -> None:
    taken = "josé" if lookalike.startswith("jose") else "alice"
    index: NameIndex[str] = NameIndex(LIMIT)
    index.add(taken, "holder")
    assert index.find(lookalike) == "holder", (lookalike, name_keys(lookalike), name_keys(taken))


@pytest.mark.parametrize(("a", "b"), [("alice", "alicia"), ("bob", "bób"), ("ann", "anna")])
def test_different_names_do_not_collide(a: str, b: str) -> None:
    index: NameIndex[str] = NameIndex(LIMIT)
    index.add(a, "holder")
    assert index.find(b) is None


def test_index_forgets_only_its_own_holder() -> None:
    index: NameIndex[str] = NameIndex(LIMIT)
    index.add("Alice", "first")
    index.remove("alice", "someone else")
    assert index.find("ALICE") == "first"
    index.remove("Alice", "first")
    assert index.find("alice") is None and len(index) == 0


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("a\u2066b\u2069c", "a\\u2066b\\u2069c"),
        ("rlm\u200fx", "rlm\\u200fx"),
        ("\x1b[2Jclear", "\\x1b[2Jclear"),
        ("two\nlines", "two\\nlines"),
        ("sep\u2028x", "sep\\u2028x"),
        ("c1\x9bx", "c1\\x9bx"),
        ("lone\udcffsurrogate", "lone\\udcffsurrogate"),
        ("👩\u200d💻 héllo 你好", "👩\u200d💻 héllo 你好"),  # joiners and letters stay
    ],
)
def test_safe_neutralises_controls_and_bidi(raw: str, shown: str) -> None:
    assert safe(raw) == shown


def test_every_client_shows_a_bidi_override_escaped() -> None:
    """listen and the interactive client (render.describe), chat (chat_model.room_line) and
    the UDP chat client (cli.udpchat_join.describe) all print through ``safe``."""
    from switchboard.cli import chat_model, render
    from switchboard.cli import udpchat_join as udp_client
    from switchboard.protocol import Message
    from switchboard.services.udpchat.peer import MessageReceived

    text = "abc\u202edef"
    msg = Message(1, 2, "127.0.0.1", 5000, "eve", "lobby", 0, 0, text)
    lines = [
        render.describe(msg),
        chat_model.room_line(msg, show_room=True),
        udp_client.describe(MessageReceived("eve", 0, text)) or "",
    ]
    for line in lines:
        assert "\u202e" not in line and "abc\\u202edef" in line, line


def test_index_answers_overlong_names_without_a_skeleton() -> None:
    index: NameIndex[str] = NameIndex(LIMIT)
    index.add("e\u0301" * LIMIT, "holder")  # 64 code points, 32 once composed
    assert index.find("é" * LIMIT) == "holder"
    assert index.find("a" * 60_000) is None


@given(st.text(max_size=40))
def test_any_text_is_judged_and_accepted_names_have_stable_keys(text: str) -> None:
    name = normalise(text)
    found = name_problem(name, what="nickname", limit=LIMIT)
    assert found is None or isinstance(found, str)
    if found is None:
        assert normalise(name) == name
        keys = name_keys(name)
        assert keys and keys == name_keys(text)
        index: NameIndex[str] = NameIndex(LIMIT)
        index.add(name, "v")
        assert index.find(text) == "v"
        folded = normalise(name.casefold())
        if len(folded) <= LIMIT:  # "ß" * 32 folds to 64 characters: not a name any more
            assert index.find(folded) == "v"
