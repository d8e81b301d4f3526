"""The reversal service's pure core: line splitting, grapheme reversal, goodbye detection."""

from __future__ import annotations

import time

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from switchboard.services.reverse.core import (
    GOODBYE,
    LineSplitter,
    LineTooLong,
    Reply,
    SplitterClosedError,
    answer_line,
    grapheme_clusters,
    is_goodbye,
    reverse_graphemes,
)

# (input, expected) pairs: each cluster must survive whole.
TRICKY = [
    ("你好👍🏽e\u0301", "e\u0301👍🏽好你"),
    ("hello", "olleh"),
    ("", ""),
    ("👨\u200d👩\u200d👧\u200d👦 family", "ylimaf 👨\u200d👩\u200d👧\u200d👦"),
    ("🇫🇷🇯🇵", "🇯🇵🇫🇷"),  # regional-indicator pairs are flags, not letters
    ("a\u0308o\u0301u\u0323\u0302", "u\u0323\u0302o\u0301a\u0308"),  # stacked combining marks
    ("🏳️\u200d🌈!", "!🏳️\u200d🌈"),  # variation selector and ZWJ
    ("ก\u0e33ไทย", "ยทไก\u0e33"),  # Thai SARA AM extends its base
    ("한국어", "어국한"),
    ("मनीषा", "षानीम"),  # Devanagari vowel signs stay on their consonants
    ("a\tb c", "c b\ta"),
]


@pytest.mark.parametrize(("text", "expected"), TRICKY)
def test_reverse_graphemes_keeps_clusters_whole(text: str, expected: str) -> None:
    assert reverse_graphemes(text) == expected


CLUSTERS = ["a", "Z", "好", "👍🏽", "e\u0301", "👨\u200d👩\u200d👧", "🇫🇷", "한", " ", "!", "ñ"]


@given(st.lists(st.sampled_from(CLUSTERS), max_size=30))
def test_reverse_is_the_cluster_list_reversed(clusters: list[str]) -> None:
    assert reverse_graphemes("".join(clusters)) == "".join(reversed(clusters))


#: Code points whose grapheme rules look back or forward: regional indicators, ZWJ, extenders,
#: Extended_Pictographic, Indic conjuncts (GB9c), Hangul jamo, Prepend, CR/LF, controls.
RULE_CHARS = (
    "\U0001f1eb\U0001f1f7\u200d\u0301\ufe0f\U0001f3fd👍🏳"
    "\u0915\u094d\u0930\u1100\u1161\u11a8\u0600\r\n\x07a"
)


@given(st.text(alphabet=RULE_CHARS, max_size=80), st.integers(min_value=1, max_value=9))
def test_windowed_segmentation_matches_the_whole_text(text: str, window: int) -> None:
    # Tiny windows put a slice boundary everywhere a rule could look across it.
    assert grapheme_clusters(text, window) == regex.findall(r"\X", text)


def _best_of(runs: int, text: str) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        reverse_graphemes(text)
        best = min(best, time.perf_counter() - start)
    return best


def test_reversal_is_linear_on_regional_indicators() -> None:
    """16,000 flag halves (a 64 KiB line) took 0.8 s: \\X counted every indicator back to
    the start of the line at each boundary.  Eight times the text must cost about eight
    times the time (quadratic was 64 times); the ratio is generous for a loaded machine."""
    flag = "\U0001f1fa"
    small, large = _best_of(5, flag * 2000), _best_of(5, flag * 16000)
    assert large / small < 24, (small, large)
    assert reverse_graphemes(flag * 16000 + "x") == "x" + flag * 16000


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"bye", True),
        (b"  bye \t", True),
        (b"goodbye", False),
        (b"Bye", False),
        (b"\x1b", True),
        (b"hello \x1b[A world", True),
        (b"\xff\x1b", True),  # ESC wins over invalid UTF-8
        (b"", False),
    ],
)
def test_goodbye_detection(line: bytes, expected: bool) -> None:
    assert is_goodbye(line) is expected


def test_answer_line() -> None:
    assert answer_line("你好👍🏽".encode()) == Reply("👍🏽好你")
    assert answer_line(b"bye") == Reply(GOODBYE, close=True)
    assert answer_line(b"ab\xffc") == Reply("ERROR: invalid UTF-8 at byte 2")
    assert answer_line(b"\xed\xa0\x80") == Reply("ERROR: invalid UTF-8 at byte 0")  # surrogate
    assert Reply("e\u0301").encode() == b"e\xcc\x81\n"


# --- splitter -----------------------------------------------------------------------------------


def split_all(chunks: list[bytes], max_line: int = 64) -> list[bytes | LineTooLong]:
    splitter = LineSplitter(max_line)
    out: list[bytes | LineTooLong] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out


def test_splitter_lines_and_crlf() -> None:
    assert split_all([b"one\ntwo\r\n\nthree"]) == [b"one", b"two", b""]
    splitter = LineSplitter(64)
    assert splitter.feed(b"a\r") == []
    assert splitter.feed(b"\nb\rc\n") == [b"a", b"b\rc"]
    assert splitter.pending == 0


STREAM = "héllo\r\n你好👍🏽\nbye\n\n".encode() + b"\xffend\n"


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_splitter_every_split_point(cut: int) -> None:
    assert split_all([STREAM[:cut], STREAM[cut:]]) == split_all([STREAM])


def test_splitter_byte_at_a_time() -> None:
    chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert split_all(chunks) == ["héllo".encode(), "你好👍🏽".encode(), b"bye", b"", b"\xffend"]


def test_line_at_the_limit_is_accepted_with_either_ending() -> None:
    assert split_all([b"x" * 8 + b"\n"], max_line=8) == [b"x" * 8]
    assert split_all([b"x" * 8 + b"\r", b"\n"], max_line=8) == [b"x" * 8]
    assert split_all([b"x" * 8, b"\r", b"\n"], max_line=8) == [b"x" * 8]


def test_line_too_long_is_detected_without_waiting_for_the_newline() -> None:
    splitter = LineSplitter(8)
    assert splitter.feed(b"ok\n" + b"x" * 8) == [b"ok"]
    assert splitter.feed(b"y") == [LineTooLong(8)]
    assert splitter.closed
    assert splitter.pending == 0
    with pytest.raises(SplitterClosedError):
        splitter.feed(b"\n")


def test_line_too_long_with_newline_in_the_same_chunk() -> None:
    assert split_all([b"a\n" + b"x" * 9 + b"\nlater\n"], max_line=8) == [b"a", LineTooLong(8)]


def test_too_long_reply_closes() -> None:
    reply = LineTooLong(65536).reply
    assert reply.close
    assert reply.text == "ERROR: line longer than 65536 bytes; closing the connection"


def test_finish_returns_the_unterminated_rest() -> None:
    splitter = LineSplitter(64)
    splitter.feed(b"done\npartial\r")
    assert splitter.finish() == b"partial"
    assert splitter.finish() is None


def test_splitter_buffer_stays_bounded() -> None:
    splitter = LineSplitter(1024)
    for _ in range(100):
        splitter.feed(b"z" * 10 + b"\n")
        assert splitter.pending == 0
    splitter.feed(b"q" * 1024)
    assert splitter.pending == 1024


@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(min_value=1, max_value=50))
def test_splitter_fuzz_invariant(chunks: list[bytes], max_line: int) -> None:
    """Any bytes: lines that rebuild the input, or LineTooLong last; never an exception."""
    splitter = LineSplitter(max_line)
    out: list[bytes | LineTooLong] = []
    for chunk in chunks:
        if splitter.closed:
            break
        out += splitter.feed(chunk)
    lines = [item for item in out if isinstance(item, bytes)]
    assert all(b"\n" not in line and len(line) <= max_line for line in lines)
    if out and isinstance(out[-1], LineTooLong):
        assert all(isinstance(item, bytes) for item in out[:-1])
        return
    data = b"".join(chunks)
    complete = data[: data.rfind(b"\n") + 1]
    expected = [line[:-1] if line.endswith(b"\r") else line for line in complete.split(b"\n")[:-1]]
    assert lines == expected
