"""Durable room history (server/history.py) through real sockets: HISTORY paging over 10,000
lines, every page boundary and limit, who may read; restarts on the same data directory
(SIGTERM, and SIGKILL in the middle of a broadcast storm); a damaged or unusable database at
start; a full disk while running."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.commands import assert_one_clear_error_line
from support.history_lines import ids_of, join, page, say
from support.peers import RawPeer
from support.servers import ServerProcess, ServerThread, fresh_data_dir, run_cli
from support.waiting import wait_until
from switchboard import defaults
from switchboard.client import AsyncClient, Client
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    ErrorCode,
    ErrorResponse,
    HistoryMode,
    HistoryOk,
    HistoryRequest,
    Joined,
    JoinOk,
    JoinRequest,
    Message,
    MessageFlags,
    PingOk,
    PingRequest,
)
from switchboard.server import ServerConfig
from switchboard.server.history import HistoryQuery, HistoryUnavailable, SqliteHistory

LINES = 10_000
PAGE = defaults.MAX_HISTORY_PAGE


@pytest.fixture(scope="module")
def filled() -> Iterator[tuple[ServerThread, list[int], int]]:
    """A server whose room "big" holds 10,000 lines (and "quiet" none); the ids, the epoch."""
    config = ServerConfig(
        port=0,
        http="off",
        name="history-test",
        data_dir=fresh_data_dir(),
        rate=0,
        log_level="warning",
    )
    st = ServerThread(config).start()
    with RawPeer(st.port) as peer:
        join(peer, "big")
        ids = say(peer, "big", [f"line {i}" for i in range(LINES)])
        join(peer, "quiet")
        ok, _ = page(peer, "big", HistoryMode.LATEST, limit=1)
    yield st, ids, ok.epoch
    st.stop()


def test_after_pages_walk_all_10000_lines_in_order(
    filled: tuple[ServerThread, list[int], int],
) -> None:
    st, ids, epoch = filled
    assert ids == sorted(ids) and len(set(ids)) == LINES
    with RawPeer(st.port) as peer:
        join(peer, "big")
        seen: list[int] = []
        anchor = 0
        while True:
            ok, lines = page(peer, "big", HistoryMode.AFTER, anchor)
            assert ok.epoch == epoch and ok.room == "big"
            assert len(lines) == min(PAGE, LINES - len(seen))
            seen += ids_of(lines)
            if not ok.more:
                break
            anchor = lines[-1].message_id
        assert seen == ids
        assert [m.text for m in lines][-1] == f"line {LINES - 1}"


def test_before_pages_walk_back_from_the_newest(
    filled: tuple[ServerThread, list[int], int],
) -> None:
    st, ids, _ = filled
    with RawPeer(st.port) as peer:
        join(peer, "big")
        ok, lines = page(peer, "big", HistoryMode.LATEST, limit=300)
        assert (ids_of(lines), ok.more) == (ids[-300:], 1)
        collected = ids_of(lines)
        while ok.more:
            ok, lines = page(peer, "big", HistoryMode.BEFORE, lines[0].message_id, limit=999)
            collected = ids_of(lines) + collected
        assert collected == ids


@pytest.mark.parametrize(
    ("mode", "anchor_at", "until_at", "limit", "expected", "more"),
    [
        # (indexes into the room's ids; -1 before the first, LINES past the last)
        (HistoryMode.AFTER, -1, None, 5, slice(0, 5), 1),
        (HistoryMode.AFTER, 0, None, 5, slice(1, 6), 1),
        (HistoryMode.AFTER, LINES - 6, None, 5, slice(LINES - 5, LINES), 0),
        (HistoryMode.AFTER, LINES - 2, None, 5, slice(LINES - 1, LINES), 0),
        (HistoryMode.AFTER, LINES - 1, None, 5, slice(0, 0), 0),
        (HistoryMode.AFTER, LINES, None, 5, slice(0, 0), 0),
        (HistoryMode.BEFORE, LINES, None, 5, slice(LINES - 5, LINES), 1),
        (HistoryMode.BEFORE, LINES - 1, None, 5, slice(LINES - 6, LINES - 1), 1),
        (HistoryMode.BEFORE, 5, None, 5, slice(0, 5), 0),
        (HistoryMode.BEFORE, 4, None, 5, slice(0, 4), 0),
        (HistoryMode.BEFORE, 0, None, 5, slice(0, 0), 0),
        (HistoryMode.BETWEEN, 10, 20, 100, slice(11, 20), 0),
        (HistoryMode.BETWEEN, 10, 20, 9, slice(11, 20), 0),
        (HistoryMode.BETWEEN, 10, 20, 8, slice(11, 19), 1),
        (HistoryMode.BETWEEN, 10, 11, 8, slice(0, 0), 0),
        (HistoryMode.BETWEEN, 20, 10, 8, slice(0, 0), 0),
        (HistoryMode.LATEST, None, None, 1, slice(LINES - 1, LINES), 1),
        (HistoryMode.LATEST, None, None, LINES, slice(LINES - PAGE, LINES), 1),
        (HistoryMode.LATEST, None, None, 0, slice(LINES - PAGE, LINES), 1),
    ],
)
def test_every_page_boundary(
    filled: tuple[ServerThread, list[int], int],
    mode: HistoryMode,
    anchor_at: int | None,
    until_at: int | None,
    limit: int,
    expected: slice,
    more: int,
) -> None:
    st, ids, _ = filled

    def id_at(index: int | None) -> int:
        if index is None:
            return 0
        if index < 0:
            return ids[0] - 1
        return ids[-1] + 1 if index >= LINES else ids[index]

    with RawPeer(st.port) as peer:
        join(peer, "big")
        ok, lines = page(peer, "big", mode, id_at(anchor_at), id_at(until_at), limit)
        assert ids_of(lines) == ids[expected]
        assert ok.more == more


def test_empty_unknown_and_foreign_rooms(filled: tuple[ServerThread, list[int], int]) -> None:
    st, _, _ = filled
    with RawPeer(st.port) as peer:
        join(peer, "quiet")
        for mode in HistoryMode:
            ok, lines = page(peer, "quiet", mode, 0 if mode is HistoryMode.LATEST else 1,
                             5 if mode is HistoryMode.BETWEEN else 0)  # fmt: skip
            assert (ok.count, ok.more, lines) == (0, 0, [])
        # A room that does not exist, and one that does but that the asker is not in.
        for room in ("nowhere", "big"):
            peer.send(HistoryRequest(room, HistoryMode.LATEST, request_id=9))
            error = peer.expect_error(ErrorCode.NOT_IN_ROOM, 9)
            assert room in error.message
        # Bad requests: a mode that does not exist, ids a mode takes none of.
        peer.send(HistoryRequest("quiet", 9, request_id=10))
        assert "mode 9" in peer.expect_error(ErrorCode.BAD_PAYLOAD, 10).message
        peer.send(HistoryRequest("quiet", HistoryMode.LATEST, 5, request_id=11))
        peer.expect_error(ErrorCode.BAD_PAYLOAD, 11)
        peer.send(HistoryRequest("quiet", HistoryMode.AFTER, 5, 9, request_id=12))
        peer.expect_error(ErrorCode.BAD_PAYLOAD, 12)
        peer.send(PingRequest(request_id=13))
        assert peer.expect(PingOk).request_id == 13


def test_a_page_stops_at_its_byte_budget(server_factory: Callable[..., ServerThread]) -> None:
    """1,000 lines of 4,000 bytes would be 4 MB: the page stops before the line that would
    pass 1 MiB of text and says more follow; the next page goes on from there."""
    st = server_factory(rate=0)
    with RawPeer(st.port) as peer:
        join(peer, "wide")
        ids = say(peer, "wide", [f"{i:04d}" + "w" * 3996 for i in range(400)], chunk=100)
        ok, lines = page(peer, "wide", HistoryMode.AFTER, 0)
        fits = defaults.HISTORY_PAGE_BYTES // 4000
        assert (len(lines), ok.more) == (fits, 1)
        ok, rest = page(peer, "wide", HistoryMode.AFTER, lines[-1].message_id)
        assert (
            ids_of(lines) + ids_of(rest)[: len(ids) - len(lines)] == ids[: len(lines) + len(rest)]
        )


def test_answers_keep_request_order_behind_a_broadcast(
    server_factory: Callable[..., ServerThread],
) -> None:
    """A BROADCAST waits for its commit; the PING pipelined behind it is answered after it."""
    st = server_factory()
    with RawPeer(st.port) as peer:
        join(peer, "order")
        for round_ in range(20):
            peer.send(
                BroadcastRequest("order", f"r{round_}", request_id=1), PingRequest(request_id=2)
            )
            assert peer.expect(BroadcastOk).request_id == 1
            assert peer.expect(PingOk).request_id == 2


# --- restarts ----------------------------------------------------------------------------------


def _serve(data_dir: str, factory: Callable[..., ServerProcess]) -> ServerProcess:
    return factory("--data-dir", data_dir, "--rate", "0")


def _stored(port: int, room: str) -> tuple[int, list[Message]]:
    """The epoch and every line of ``room``, paged AFTER from the start."""
    with RawPeer(port) as peer:
        join(peer, room)
        lines: list[Message] = []
        anchor = 0
        while True:
            ok, got = page(peer, room, HistoryMode.AFTER, anchor)
            lines += got
            if not ok.more:
                return ok.epoch, lines
            anchor = got[-1].message_id


def test_sigterm_restart_keeps_every_line_and_its_id(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    data_dir = fresh_data_dir()
    sp = _serve(data_dir, server_process_factory)
    with RawPeer(sp.port) as peer:
        join(peer, "lobby")
        ids = say(peer, "lobby", [f"before {i} ✓" for i in range(300)])
    epoch, before = _stored(sp.port, "lobby")
    assert sp.stop(signal.SIGTERM) == 0
    sp = _serve(data_dir, server_process_factory)
    again, after = _stored(sp.port, "lobby")
    assert again == epoch
    assert after == before and ids_of(after) == ids
    with RawPeer(sp.port) as peer:
        # The replay of a JOIN after the restart is the newest of them, and a new line's id
        # follows the old ones (never reused).
        peer.send(JoinRequest("Lobby", request_id=1))  # a look-alike name is the same room
        ok = peer.expect(JoinOk)
        replay = [peer.expect(Message) for _ in range(ok.history)]
        assert ids_of(replay) == ids[-defaults.ROOM_HISTORY :]
        # Stored as "lobby", shown under the room's name now, in the replay and in HISTORY.
        assert ok.room == "Lobby" and {m.room for m in replay} == {"Lobby"}
        _, lines = page(peer, "lobby", HistoryMode.LATEST, limit=3)
        assert {m.room for m in lines} == {"Lobby"}
        assert say(peer, "lobby", ["after"])[0] > ids[-1]


def test_sigkill_mid_storm_loses_no_line_whose_ok_was_seen(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    """Four senders pipeline BROADCASTs as fast as the server answers; the server is killed
    (SIGKILL: no shutdown at all) in the middle.  After a restart on the same directory every
    line whose OK a sender read is there, once, with its id, in id order."""
    data_dir = fresh_data_dir()
    sp = _serve(data_dir, server_process_factory)
    peers = [RawPeer(sp.port) for _ in range(4)]
    for peer in peers:
        join(peer, "storm")
    confirmed: list[dict[int, str]] = [{} for _ in peers]
    enough = threading.Event()

    def storm(k: int) -> None:
        peer = peers[k]
        sent: dict[int, str] = {}
        n = 0
        try:
            while True:
                batch = []
                for _ in range(50):
                    n += 1
                    sent[n] = f"p{k} line {n}"
                    batch.append(BroadcastRequest("storm", sent[n], request_id=n))
                peer.send(*batch)
                for _ in batch:
                    event = peer.next(10)
                    if event is None:
                        return
                    if isinstance(event, BroadcastOk):
                        confirmed[k][event.message_id] = sent[event.request_id]
                        if sum(map(len, confirmed)) > 2000:
                            enough.set()
        except (OSError, AssertionError):
            return  # the server died under us: what was confirmed is what counts

    threads = [threading.Thread(target=storm, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    assert enough.wait(30), "the storm never got going"
    sp.proc.kill()  # SIGKILL, mid-storm
    sp.proc.wait(10)
    for t in threads:
        t.join(15)
    for peer in peers:
        peer.close()
    sp = _serve(data_dir, server_process_factory)
    _, lines = _stored(sp.port, "storm")
    stored = {m.message_id: m.text for m in lines}
    assert len(stored) == len(lines), "a line is stored twice"
    assert ids_of(lines) == sorted(stored)
    seen = {i: text for c in confirmed for i, text in c.items()}
    assert len(seen) > 2000
    missing = {i: t for i, t in seen.items() if stored.get(i) != t}
    assert not missing, f"{len(missing)} confirmed line(s) lost, e.g. {list(missing.items())[:3]}"


# --- a database that cannot be used ---------------------------------------------------------------


def test_damaged_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / defaults.HISTORY_DB_FILE).write_bytes(b"this is not a database\n" * 500)
    result = run_cli("serve", "--port", "0", "--data-dir", str(tmp_path), timeout=30)
    line = assert_one_clear_error_line(result, 2)
    assert defaults.HISTORY_DB_FILE in line and "not a database" in line


def test_unusable_data_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run_cli("serve", "--port", "0", "--data-dir", str(not_a_dir / "sub"), timeout=30)
    assert "cannot make the data directory" in assert_one_clear_error_line(result, 2)
    # The database's place taken by a directory: it cannot be opened.
    (tmp_path / "d" / defaults.HISTORY_DB_FILE).mkdir(parents=True)
    result = run_cli("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), timeout=30)
    assert "cannot open the history database" in assert_one_clear_error_line(result, 2)


def test_a_second_server_on_the_same_data_dir_is_refused(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    data_dir = fresh_data_dir()
    _serve(data_dir, server_process_factory)
    result = run_cli("serve", "--port", "0", "--data-dir", data_dir, timeout=30)
    assert "in use by another switchboard server" in assert_one_clear_error_line(result, 2)


def test_memory_only_keeps_nothing_on_disk(
    server_factory: Callable[..., ServerThread], tmp_path: Path
) -> None:
    st = server_factory(data_dir="none")
    with RawPeer(st.port) as peer:
        join(peer, "mem")
        ids = say(peer, "mem", ["a", "b", "c"])
        ok, lines = page(peer, "mem", HistoryMode.AFTER, ids[0])
        assert ids_of(lines) == ids[1:] and ok.epoch > 0
    assert not any(Path(st.config.data_dir or tmp_path).glob("*.sqlite3"))


# --- a full disk ----------------------------------------------------------------------------------


def test_disk_full_answers_history_unavailable_and_the_server_goes_on(
    server_factory: Callable[..., ServerThread],
) -> None:
    """SQLite's max_page_count makes the database full, as a full disk would: the sender gets
    HISTORY_UNAVAILABLE, nobody gets the line, everything else is served; once there is room
    again BROADCASTs succeed."""
    st = server_factory()
    store = st.server.history
    assert isinstance(store, SqliteHistory)
    with RawPeer(st.port) as alice, RawPeer(st.port) as bob:
        join(alice, "full")
        join(bob, "full")
        alice.expect(Joined)
        stored = say(alice, "full", ["fits"])
        bob.expect(Message)

        def fill_the_disk() -> None:
            # On the writer thread, between transactions (the store's own connection): not
            # one page more than the database has now.
            db = store._writer
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")

        def make_room() -> None:
            store._writer.execute("PRAGMA max_page_count = 1000000")

        st.on_history_writer(fill_the_disk)
        # The pages' free space takes a line or two; then the disk is full.
        for n in range(10):
            alice.send(
                BroadcastRequest("full", f"{n}" * 4000, request_id=5), PingRequest(request_id=6)
            )
            answer = alice.next()
            if isinstance(answer, ErrorResponse):
                break
            assert isinstance(answer, BroadcastOk), answer
            stored.append(answer.message_id)
            assert bob.expect(Message).message_id == answer.message_id
            assert alice.expect(PingOk).request_id == 6
        else:
            raise AssertionError("10 lines of 4,000 bytes fitted in a full database")
        assert (answer.code, answer.request_id) == (ErrorCode.HISTORY_UNAVAILABLE, 5)
        assert "full" in answer.message and "neither stored nor delivered" in answer.message
        assert alice.expect(PingOk).request_id == 6  # in order, and still served
        _, lines = page(bob, "full", HistoryMode.LATEST)
        assert ids_of(lines) == stored  # the failed line is nowhere
        bob.send(PingRequest(request_id=3))
        assert bob.expect(PingOk).request_id == 3  # bob never got the failed line
        st.on_history_writer(make_room)
        again = say(alice, "full", ["room again"])
        assert bob.expect(Message).message_id == again[0]


def test_store_layer_reports_a_full_database(tmp_path: Path) -> None:
    """The store alone: a full database is HistoryUnavailable naming the cause, and nothing
    of the failed transaction is kept."""
    store = SqliteHistory(tmp_path / "h.sqlite3", keep=100, max_age_s=0)
    try:
        line = Message(1, 1, "127.0.0.1", 1, "a", "r", 0, MessageFlags.HISTORY, "x")
        store.write([line])
        pages = store._writer.execute("PRAGMA page_count").fetchone()[0]
        store._writer.execute(f"PRAGMA max_page_count = {pages}")
        big = [
            Message(i, 1, "127.0.0.1", 1, "a", "r", 0, MessageFlags.HISTORY, "y" * 4000)
            for i in range(2, 50)
        ]
        with pytest.raises(HistoryUnavailable, match="full"):
            store.write(big)
        count = sqlite3.connect(tmp_path / "h.sqlite3").execute("SELECT count(*) FROM lines")
        assert count.fetchone()[0] == 1
    finally:
        store.close()


# --- the client library -----------------------------------------------------------------------


def test_client_catches_up_with_missed_and_keeps_live_lines_apart(
    server_factory: Callable[..., ServerThread],
) -> None:
    """``Client.history`` returns a page with its lines (never mixed with live MESSAGEs, which
    stay indications); ``Client.missed`` pages AFTER an id to the end, and says nothing is
    missed from a store of another epoch (it was reset)."""
    st = server_factory(rate=0)
    with Client("127.0.0.1", st.port, nick="reader") as reader, RawPeer(st.port) as talker:
        join(talker, "lobby")
        ids = say(talker, "lobby", [f"old {i}" for i in range(2500)])
        reader.join("lobby")
        epoch, lines = reader.missed("lobby", ids[99])
        assert ids_of(lines) == ids[100:]
        assert [m.text for m in lines[:2]] == ["old 100", "old 101"]
        talker.expect(Joined)
        live = say(talker, "lobby", ["live"])
        page_ = reader.history("lobby", HistoryMode.BEFORE, live[0], limit=3)
        assert (ids_of(list(page_.lines)), page_.more, page_.epoch) == (ids[-3:], True, epoch)
        # The live line is an indication, after the JOIN's replay (also indications).
        indications = []
        while (frame := reader.next_indication(5)) is not None:
            indications.append(frame)
            if isinstance(frame, Message) and not frame.flags & MessageFlags.HISTORY:
                break
        assert indications[-1].message_id == live[0]
        assert reader.missed("lobby", ids[-1], epoch=epoch ^ 1) == (epoch, [])


# --- retention ----------------------------------------------------------------------------------


def test_a_room_keeps_its_newest_lines_within_the_slack(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3", keep=32, max_age_s=0)
    key = "lobby"
    try:
        written = kept = 0
        for batch in (5, 20, 9, 1, 30, 3):
            lines = [
                Message(written + i, 1, "127.0.0.1", 1, "a", key, 0, MessageFlags.HISTORY, "t")
                for i in range(1, batch + 1)
            ]
            store.write(lines)
            written += batch
            count = (
                sqlite3.connect(tmp_path / "h.sqlite3")
                .execute("SELECT count(*), max(id) FROM lines")
                .fetchone()
            )
            # Never more than keep + keep/16 (34); back to keep when that is passed; the
            # newest kept.
            kept = kept + batch if kept + batch <= 34 else 32
            assert count == (kept, written)
        everything = store.page(
            "lobby", [], HistoryQuery(HistoryMode.LATEST, 0, 0, 100, 1 << 20), written
        )
        assert ids_of(everything.lines)[-1] == written and len(everything.lines) >= 32
    finally:
        store.close()


def test_lines_past_their_age_are_deleted_while_the_server_runs(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = server_factory(history_max_age=1.0, heartbeat=0.4)
    with RawPeer(st.port) as peer:
        join(peer, "aging")
        say(peer, "aging", ["soon gone"])
        _, lines = page(peer, "aging", HistoryMode.LATEST)
        assert [m.text for m in lines] == ["soon gone"]

        def gone() -> bool:
            peer.send(HistoryRequest("aging", HistoryMode.LATEST, request_id=3))
            ok = peer.expect(HistoryOk)
            for _ in range(ok.count):
                peer.expect(Message)
            return ok.count == 0

        assert wait_until(gone, 10.0), "a line older than --history-max-age is still there"
        # Nor replayed by a JOIN, though the live room's cache still holds it.
        with RawPeer(st.port) as late:
            late.send(JoinRequest("aging", request_id=1))
            assert late.expect(JoinOk).history == 0


# --- reads off the loop -----------------------------------------------------------------------


def test_pipelined_history_requests_are_bounded_and_answered_in_order(
    server_factory: Callable[..., ServerThread],
) -> None:
    """HISTORY is read off the loop: one connection may have MAX_HISTORY_READS under way;
    the rest of a pipelined burst is answered RATE_LIMITED, every answer in request order."""
    st = server_factory(rate=0)
    burst = 40
    with RawPeer(st.port) as peer:
        join(peer, "many")
        ids = say(peer, "many", ["one", "two"])
        peer.send(
            *(HistoryRequest("many", HistoryMode.LATEST, request_id=i + 1) for i in range(burst))
        )
        answered: list[int] = []
        limited: list[int] = []
        while len(answered) + len(limited) < burst:
            event = peer.next()
            if isinstance(event, HistoryOk):
                answered.append(event.request_id)
                assert ids_of([peer.expect(Message) for _ in range(event.count)]) == ids
            else:
                assert isinstance(event, ErrorResponse), event
                assert event.code == ErrorCode.RATE_LIMITED
                limited.append(event.request_id)
        assert answered + limited == list(range(1, burst + 1))  # in order
        assert len(answered) >= defaults.MAX_HISTORY_READS
        peer.send(HistoryRequest("many", HistoryMode.LATEST, request_id=99))
        assert peer.expect(HistoryOk).request_id == 99  # the bound is per request under way


def test_a_cold_room_joined_after_a_restart_replays_only_older_lines(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    """The replay of a room coming back to life is read off the loop: pipelined behind the
    JOIN, a BROADCAST and a HISTORY are answered after it, in order; the replay has the
    stored lines only, the new line is in the HISTORY answer and in no replay twice."""
    data_dir = fresh_data_dir()
    sp = _serve(data_dir, server_process_factory)
    with RawPeer(sp.port) as peer:
        join(peer, "cold")
        stored = say(peer, "cold", [f"stored {i}" for i in range(5)])
    sp.stop(signal.SIGTERM)
    sp = _serve(data_dir, server_process_factory)
    with RawPeer(sp.port) as alice, RawPeer(sp.port) as bob:
        alice.send(
            JoinRequest("cold", request_id=1),
            BroadcastRequest("cold", "fresh", request_id=2),
            HistoryRequest("cold", HistoryMode.LATEST, request_id=3),
        )
        ok = alice.expect(JoinOk)
        replay = [alice.expect(Message) for _ in range(ok.history)]
        assert ids_of(replay) == stored
        fresh = alice.expect(BroadcastOk)
        assert fresh.message_id > stored[-1]
        answer = alice.expect(HistoryOk)
        lines = [alice.expect(Message) for _ in range(answer.count)]
        assert answer.request_id == 3 and ids_of(lines) == [*stored, fresh.message_id]
        # A second member, later: the cache, warm now, has both.
        bob.send(JoinRequest("cold", request_id=1))
        ok = bob.expect(JoinOk)
        assert ids_of([bob.expect(Message) for _ in range(ok.history)]) == [
            *stored,
            fresh.message_id,
        ]


def test_a_database_with_a_damaged_page_is_one_line_and_exit_2(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / defaults.HISTORY_DB_FILE, keep=10_000, max_age_s=0)
    lines = [
        Message(i, 1, "127.0.0.1", 1, "a", "r", 0, MessageFlags.HISTORY, f"line {i} " * 20)
        for i in range(1, 400)
    ]
    store.write(lines)
    store._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    path = tmp_path / defaults.HISTORY_DB_FILE
    data = bytearray(path.read_bytes())
    page_size = 4096
    assert len(data) > 6 * page_size
    data[4 * page_size : 5 * page_size] = b"\xa5" * page_size  # a b-tree page, not the header
    path.write_bytes(bytes(data))
    result = run_cli("serve", "--port", "0", "--data-dir", str(tmp_path), timeout=30)
    line = assert_one_clear_error_line(result, 2)
    assert "history database" in line and ("damaged" in line or "malformed" in line)


def test_an_unwritable_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A database the server may not write: mode 0400 for a user, and (the tests run as root
    in CI, whom modes do not stop) the immutable attribute, which stops root too."""
    store = SqliteHistory(tmp_path / defaults.HISTORY_DB_FILE, keep=10, max_age_s=0)
    store.close()
    path = tmp_path / defaults.HISTORY_DB_FILE
    for leftover in tmp_path.glob(defaults.HISTORY_DB_FILE + "-*"):
        leftover.unlink()
    path.chmod(0o400)
    immutable = False
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)]).returncode != 0:
            pytest.skip("running as root, and no chattr +i here to make a file unwritable")
        immutable = True
    try:
        result = run_cli("serve", "--port", "0", "--data-dir", str(tmp_path), timeout=30)
        line = assert_one_clear_error_line(result, 2)
        assert str(path) in line
        assert "permission denied" in line.lower() or "not permitted" in line.lower()
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o600)


async def test_the_async_client_pages_and_catches_up(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = server_factory(rate=0)
    with RawPeer(st.port) as talker:
        join(talker, "async")
        ids = say(talker, "async", [f"a{i}" for i in range(1500)])
    client = await AsyncClient.connect("127.0.0.1", st.port, nick="aio")
    try:
        await client.join("async")
        epoch, lines = await client.missed("async", ids[9])
        assert ids_of(lines) == ids[10:]  # two pages
        first = await client.history("async", HistoryMode.LATEST, limit=2)
        assert (ids_of(list(first.lines)), first.more, first.epoch) == (ids[-2:], True, epoch)
        assert await client.missed("async", ids[-1], epoch=epoch + 1) == (epoch, [])
    finally:
        await client.close()
