"""The pure parts of a cluster's room history (server/cluster_history.py): line ids are
stream entry ids and back, and the XRANGE bounds of each HISTORY mode."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from switchboard.protocol import HistoryMode, MessageFlags
from switchboard.protocol.fastpath import encode_message, sender_block
from switchboard.server.cluster_history import (
    MAX_LINE_ID,
    SEQ_BITS,
    decode_lines,
    entry_id,
    line_id,
    page_bounds,
    page_frames,
)
from switchboard.server.history import HistoryQuery


@given(st.integers(0, (1 << 43) - 1), st.integers(0, (1 << SEQ_BITS) - 1))
def test_an_entry_id_is_a_line_id_and_back(ms: int, seq: int) -> None:
    entry = f"{ms}-{seq}"
    assert entry_id(line_id(entry)) == entry
    assert line_id(entry.encode()) == ms << SEQ_BITS | seq
    assert line_id(entry) <= MAX_LINE_ID


@given(st.integers(0, 1 << 43), st.integers(0, (1 << SEQ_BITS) - 1), st.integers(0, 5))
def test_line_ids_order_as_entry_ids_do(ms: int, seq: int, step: int) -> None:
    later = (ms, seq + step) if seq + step < 1 << SEQ_BITS else (ms + 1, 0)
    assert line_id(f"{ms}-{seq}") <= line_id(f"{later[0]}-{later[1]}")


def query(mode: HistoryMode, anchor: int = 0, until: int = 0) -> HistoryQuery:
    return HistoryQuery(mode, anchor, until, 10, 1 << 20)


def test_each_mode_reads_between_exclusive_entry_ids() -> None:
    top = "(" + entry_id(MAX_LINE_ID)
    a, u = 5 << SEQ_BITS | 1, 9 << SEQ_BITS
    assert page_bounds(query(HistoryMode.LATEST)) == ("(0-0", top)
    assert page_bounds(query(HistoryMode.BEFORE, a)) == ("(0-0", "(5-1")
    assert page_bounds(query(HistoryMode.AFTER, a)) == ("(5-1", top)
    assert page_bounds(query(HistoryMode.BETWEEN, a, u)) == ("(5-1", "(9-0")


def test_ranges_that_hold_no_id_read_nothing() -> None:
    assert page_bounds(query(HistoryMode.BEFORE, 0)) is None
    assert page_bounds(query(HistoryMode.BEFORE, 1)) is None
    assert page_bounds(query(HistoryMode.BETWEEN, 7, 8)) is None
    assert page_bounds(query(HistoryMode.BETWEEN, 9, 3)) is None
    assert page_bounds(query(HistoryMode.AFTER, MAX_LINE_ID)) is None
    assert page_bounds(query(HistoryMode.AFTER, (1 << 64) - 1)) is None


def test_a_page_stops_at_what_was_delivered() -> None:
    a = 5 << SEQ_BITS | 1
    assert page_bounds(query(HistoryMode.LATEST), a) == ("(0-0", "(5-2")
    assert page_bounds(query(HistoryMode.AFTER, a), a) is None
    assert page_bounds(query(HistoryMode.BETWEEN, 0, 1 << 40), a) == ("(0-0", "(5-2")


def _entry(i: int, text: str, room: str = "lobby") -> tuple[bytes, dict[bytes, bytes]]:
    frame = encode_message(i, sender_block(1, "127.0.0.1", 9, "a"), room.encode(), 5, 1,
                           text.encode())  # fmt: skip
    fields = {b"f": frame, b"t": str(len(text.encode())).encode(), b"r": room.encode()}
    return entry_id(i).encode(), fields


def test_a_page_of_frames_keeps_the_limit_and_the_byte_budget_as_lines_do() -> None:
    entries = [_entry(i, "x" * 10) for i in range(1, 8)]
    q = HistoryQuery(HistoryMode.AFTER, 0, 0, 5, 25)
    frames = page_frames(entries, "lobby", q)
    assert len(frames) == 2  # 10 + 10 <= 25 < 30
    assert frames == [fields[b"f"] for _, fields in entries[:2]]
    assert len(page_frames(entries, "lobby", HistoryQuery(HistoryMode.AFTER, 0, 0, 5, 1))) == 1
    assert len(page_frames(entries, "lobby", HistoryQuery(HistoryMode.AFTER, 0, 0, 5, 999))) == 5


def test_a_line_said_under_a_look_alike_name_is_renamed_in_a_page() -> None:
    (frame,) = page_frames([_entry(3, "hi", room="Lobby")], "LOBBY", query(HistoryMode.LATEST))
    (line,) = decode_lines([frame])
    assert (line.message_id, line.room, line.text) == (3, "LOBBY", "hi")
    assert line.flags & MessageFlags.HISTORY
