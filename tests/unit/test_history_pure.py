"""The pure parts of room history: the memory store's page selection (the rule the SQLite
store's queries follow), the client session gathering a HistoryOk's lines, the chat's merge of
a catch-up, and the chat's last-seen file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.cli import chat_model
from switchboard.cli.seen import MAX_ROOMS, Position, SeenLines
from switchboard.client.session import ClientSession, HistoryPage, Reply
from switchboard.protocol import (
    HistoryMode,
    HistoryOk,
    HistoryRequest,
    Message,
    MessageFlags,
    encode,
)
from switchboard.server.history import HistoryQuery, MemoryHistory, select_page


def line(message_id: int, text: str = "x", flags: int = MessageFlags.HISTORY) -> Message:
    return Message(message_id, 1, "127.0.0.1", 5000, "amy", "lobby", 0, flags, text)


IDS = [3, 5, 8, 13, 21, 34, 55]
LINES = [line(i) for i in IDS]


def ids(page: HistoryPage | object) -> list[int]:
    return [m.message_id for m in page.lines]  # type: ignore[attr-defined]


def query(mode: HistoryMode, anchor: int = 0, until: int = 0, limit: int = 3) -> HistoryQuery:
    return HistoryQuery(mode, anchor, until, limit, 1 << 20)


@pytest.mark.parametrize(
    ("q", "expected", "more"),
    [
        (query(HistoryMode.LATEST), [21, 34, 55], True),
        (query(HistoryMode.LATEST, limit=10), IDS, False),
        (query(HistoryMode.BEFORE, 21), [5, 8, 13], True),
        (query(HistoryMode.BEFORE, 5), [3], False),
        (query(HistoryMode.BEFORE, 3), [], False),
        (query(HistoryMode.AFTER, 0), [3, 5, 8], True),
        (query(HistoryMode.AFTER, 21), [34, 55], False),
        (query(HistoryMode.AFTER, 55), [], False),
        (query(HistoryMode.BETWEEN, 3, 34), [5, 8, 13], True),
        (query(HistoryMode.BETWEEN, 3, 21), [5, 8, 13], False),
        (query(HistoryMode.BETWEEN, 21, 3), [], False),
    ],
)
def test_select_page(q: HistoryQuery, expected: list[int], more: bool) -> None:
    page = select_page(LINES, q, through=1000)
    assert (ids(page), page.more) == (expected, more)


def test_lines_not_delivered_yet_are_left_out() -> None:
    assert ids(select_page(LINES, query(HistoryMode.LATEST), through=20)) == [5, 8, 13]


def test_a_page_stops_at_its_bytes_but_holds_at_least_one_line() -> None:
    wide = [line(i, "w" * 100) for i in range(1, 6)]
    page = select_page(wide, HistoryQuery(HistoryMode.AFTER, 0, 0, 10, 250), through=99)
    assert (ids(page), page.more) == ([1, 2], True)
    page = select_page(wide, HistoryQuery(HistoryMode.AFTER, 0, 0, 10, 10), through=99)
    assert (ids(page), page.more) == ([1], True)


def test_the_memory_store_answers_from_the_replay_cache() -> None:
    store = MemoryHistory()
    assert store.epoch > 0 and store.last_id == 0
    assert ids(store.page("lobby", LINES, query(HistoryMode.AFTER, 8), 1000)) == [13, 21, 34]
    assert store.latest("lobby", 50, 1000) == []  # nothing beyond the cache


@given(
    st.sets(st.integers(1, 200), max_size=40),
    st.sampled_from(list(HistoryMode)),
    st.integers(0, 210),
    st.integers(0, 210),
    st.integers(1, 50),
)
def test_paging_walks_every_line_once(
    present: set[int], mode: HistoryMode, anchor: int, until: int, limit: int
) -> None:
    """Paging on from each page (AFTER: its last id; BEFORE: its first) yields every line of
    the range once, in order, and ``more`` is false exactly at the end."""
    lines = [line(i) for i in sorted(present)]
    if mode is HistoryMode.LATEST:
        anchor = until = 0
    elif mode is not HistoryMode.BETWEEN:
        until = 0
    low = anchor if mode in (HistoryMode.AFTER, HistoryMode.BETWEEN) else 0
    high = until if mode is HistoryMode.BETWEEN else anchor if mode is HistoryMode.BEFORE else 999
    expected = [i for i in sorted(present) if low < i < high]
    seen: list[int] = []
    page = select_page(lines, query(mode, anchor, until, limit), through=999)
    while True:
        got = ids(page)
        assert len(got) <= limit
        if mode in (HistoryMode.LATEST, HistoryMode.BEFORE):
            seen = got + seen
        else:
            seen += got
        if not page.more:
            break
        assert got
        if mode in (HistoryMode.LATEST, HistoryMode.BEFORE):
            page = select_page(lines, query(HistoryMode.BEFORE, got[0], 0, limit), 999)
        else:
            page = select_page(lines, query(mode, got[-1], until, limit), 999)
    assert seen == expected


# --- the client session ------------------------------------------------------------------------


def test_the_session_gathers_a_history_answer_apart_from_live_messages() -> None:
    session = ClientSession()
    request_id, _, _ = session.prepare(HistoryRequest("lobby", HistoryMode.AFTER, 2))
    live = line(9, "live", MessageFlags.NONE)
    ok = HistoryOk("lobby", 77, 1, 2, request_id=request_id)
    data = encode(live) + encode(ok) + encode(line(3)) + encode(line(4))
    meanings = [meaning for _, meaning in session.receive(data[:30])]
    meanings += [meaning for _, meaning in session.receive(data[30:])]
    assert meanings[0] == live  # an indication, as before
    replies = [m for m in meanings if isinstance(m, Reply)]
    assert len(replies) == 1 and all(m is None for m in meanings[1:-1])
    page = replies[0].result
    assert isinstance(page, HistoryPage)
    assert (page.epoch, page.more, [m.message_id for m in page.lines]) == (77, True, [3, 4])


def test_an_empty_history_answer_is_a_page_at_once() -> None:
    session = ClientSession()
    request_id, _, _ = session.prepare(HistoryRequest("lobby"))
    ((_, meaning),) = session.receive(encode(HistoryOk("lobby", 5, 0, 0, request_id=request_id)))
    assert isinstance(meaning, Reply) and meaning.result == HistoryPage(
        HistoryOk("lobby", 5, 0, 0, request_id=request_id), ()
    )


# --- the chat's catch-up -----------------------------------------------------------------------


def test_caught_up_merges_missed_and_arrived_lines_once_in_id_order() -> None:
    missed = [line(11), line(12), line(14)]
    arrived = [line(9), line(12), line(14), line(15, flags=MessageFlags.NONE)]  # replay, live
    shown = chat_model.caught_up(10, missed, arrived)
    assert [(m.message_id, was_missed) for m, was_missed in shown] == [
        (11, True), (12, True), (14, True), (15, False)
    ]  # fmt: skip


def test_missed_lines_are_marked() -> None:
    text = chat_model.room_line(line(1, "hi"), show_room=False, missed=True, clock=lambda ms: "T")
    assert text == "[T] (missed) amy(#1): hi"
    assert chat_model.missed_notice("lobby", 0) == "* nothing was said in lobby while you were away"


# --- the last-seen file ------------------------------------------------------------------------


def test_seen_lines_are_kept_per_server_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "seen.json"
    one = SeenLines(path, "127.0.0.1:7000")
    one.advance("lobby", 5, 10)
    one.advance("lobby", 5, 8)  # older: ignored
    one.save()
    other = SeenLines(path, "10.0.0.1:7000")
    other.advance("lobby", 9, 3)
    other.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SeenLines(path, "127.0.0.1:7000").position("lobby") == Position(5, 10)
    assert SeenLines(path, "10.0.0.1:7000").position("lobby") == Position(9, 3)
    again = SeenLines(path, "127.0.0.1:7000")
    again.advance("lobby", 6, 2)  # another epoch: the store was reset
    assert again.position("lobby") == Position(6, 2)


@pytest.mark.parametrize(
    "content",
    ["", "not json", "[]", '{"servers": []}', '{"servers": {"127.0.0.1:7000": {"rooms": '
     '{"lobby": [1, -2], "den": "x", "ok": [1, 2]}}}}'],
)  # fmt: skip
def test_a_bad_seen_file_is_as_none(tmp_path: Path, content: str) -> None:
    path = tmp_path / "seen.json"
    path.write_text(content, encoding="utf-8")
    seen = SeenLines(path, "127.0.0.1:7000")
    assert seen.position("lobby") is None and seen.position("den") is None
    seen.advance("lobby", 1, 1)
    seen.save()
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == 1


def test_the_seen_file_is_bounded_and_a_failed_write_is_silent(tmp_path: Path) -> None:
    seen = SeenLines(tmp_path / "seen.json", "s")
    for i in range(MAX_ROOMS + 5):
        seen.advance(f"r{i}", 1, i + 1)
    assert seen.position("r0") is None and seen.position(f"r{MAX_ROOMS + 4}") is not None
    blocked = tmp_path / "file"
    blocked.write_text("")
    nowhere = SeenLines(blocked / "seen.json", "s")  # its folder is a file
    nowhere.advance("lobby", 1, 1)
    nowhere.save()
    assert not os.path.exists(blocked / "seen.json")
