"""Output amplification: requests whose answers are much larger than the requests.

A JOIN of a room with a full history answers with 51 frames (about 200 KB with 4 KB texts)
for a 17-byte request; a LIST with many clients connected answers with kilobytes; a TIME
answers with twice its size.  Pipelined by a client that does not read, such requests must
not queue more than the write limits allow: past the high-water mark the server stops
processing that client's requests (the rest of the batch already read included), keeps them,
and goes on once the client has read what it was sent.  Other clients are served meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from support.peers import RawPeer, assert_still_serving
from support.servers import ServerProcess, ServerThread, queued_bytes, shrink_send_buffer
from switchboard.client import Client
from switchboard.protocol import (
    Frame,
    JoinOk,
    JoinRequest,
    ListOk,
    ListRequest,
    Message,
    MessageFlags,
    TimeOk,
    TimeRequest,
    encode,
)
from switchboard.server.states import ConnectionState

HOST = "127.0.0.1"
ROOM = "flood"
TEXT = "h" * 4000
HISTORY = 50
WAIT_S = 30.0


@contextlib.contextmanager
def full_room(port: int, count: int = HISTORY, text: str = TEXT) -> Iterator[Client]:
    """A member of a room whose history holds ``count`` messages of ``text`` (the room and
    its history last while it has members)."""
    with Client(HOST, port, timeout=10) as filler:
        filler.join(ROOM)
        for _ in range(count):
            filler.broadcast(ROOM, text)
        yield filler


def conn_state(st: ServerThread, client_id: int) -> tuple[bool, bool, int] | None:
    """(write_paused, closing, bytes of requests read but not yet processed), or None once
    the client is gone."""

    def read() -> tuple[bool, bool, int] | None:
        conn = st.server.directory.client_by_id.get(client_id)
        if conn is None:
            return None
        return conn.write_paused, conn.state >= ConnectionState.CLOSING, conn.buffered

    return st.call(read)


def read_replies(peer: RawPeer, count: int, reply: type[Frame], timeout: float = 60) -> int:
    """Exactly ``count`` ``reply`` answers, request ids 1..count in order, each JOIN answer
    followed by the history MESSAGEs it announces; returns how many of those came."""
    deadline = time.monotonic() + timeout
    expected, owed, history = 1, 0, 0
    while expected <= count or owed:
        frame = peer.next(max(0.0, deadline - time.monotonic()))
        assert frame is not None, f"closed after {expected - 1} of {count} answers"
        if isinstance(frame, Message):
            assert owed and frame.flags & MessageFlags.HISTORY and frame.text == TEXT, frame
            owed -= 1
            history += 1
            continue
        if frame.request_id == 0:
            continue  # a PING
        assert not owed, f"an answer before the history owed: {frame}"
        assert isinstance(frame, reply) and frame.request_id == expected, (frame, expected)
        if isinstance(frame, JoinOk):
            owed = frame.history
        expected += 1
    return history


CASES: dict[str, tuple[Callable[[int], Frame], type[Frame], int, int, int, int]] = {
    # request, its answer, how many, high-water mark, hard limit, one answer's size at most
    "join": (lambda i: JoinRequest(ROOM, request_id=i), JoinOk, 300, 64 << 10, 1 << 20, 210_000),
    "list": (lambda i: ListRequest(request_id=i), ListOk, 2_000, 64 << 10, 256 << 10, 8_000),
    # (20,000: the default rate limit's burst)
    "time": (lambda i: TimeRequest(request_id=i), TimeOk, 20_000, 64 << 10, 256 << 10, 64),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pipelined_requests_stop_at_the_high_water_mark_and_resume(
    server_factory: Any, case: str
) -> None:
    make, reply, count, high_water, hard_limit, one_answer = CASES[case]
    st: ServerThread = server_factory(
        write_high_water=high_water, write_hard_limit=hard_limit, heartbeat=60.0
    )
    with contextlib.ExitStack() as stack:
        if case == "join":
            stack.enter_context(full_room(st.port))
        if case == "list":  # 100 clients connected: each LIST answer is about 4 KB
            for _ in range(100):
                stack.enter_context(RawPeer(st.port))
        with RawPeer(st.port, rcvbuf=4096) as hostile, Client(HOST, st.port, timeout=10) as other:
            # The kernel holds little for it: nearly all it is owed stays in the server.
            shrink_send_buffer(st, hostile.client_id)
            pipelined = b"".join(encode(make(i)) for i in range(1, count + 1))
            sender = threading.Thread(target=hostile.sock.sendall, args=(pipelined,))
            sender.start()
            try:
                # It reads nothing: the server pauses it once its queue passes the mark.
                st.wait_for(lambda s: _paused_or_gone(s, hostile.client_id), timeout=WAIT_S)
                state = conn_state(st, hostile.client_id)
                assert state is not None, "the client was dropped for its own answers"
                paused, closing, _ = state
                assert paused and not closing
                # What it is owed stays within the mark plus about one answer and one check's
                # worth of small answers, far below what its requests would produce.
                queued = queued_bytes(st, hostile.client_id)
                assert queued <= high_water + one_answer + 16 * 1024, queued
                assert queued < hard_limit
                # A bystander is served while the hostile client's requests wait.
                started = time.monotonic()
                assert other.time().epoch_ms > 0
                assert other.name() == "test-server"
                assert time.monotonic() - started < 5.0
                # The hostile client reads at last: every answer, in order, then it is served
                # as usual (the requests the server held back were not lost).
                history = read_replies(hostile, count, reply)
                if case == "join":
                    assert history == count * HISTORY
            finally:
                sender.join(WAIT_S)
            assert_still_serving(hostile)
            assert conn_state(st, hostile.client_id) == (False, False, 0)


def _paused_or_gone(server: Any, client_id: int) -> bool:
    conn = server.directory.client_by_id.get(client_id)
    return conn is None or bool(conn.write_paused)


# --- the case, against `switchboard serve` with its defaults --------------------------


@pytest.fixture
def default_server(server_process_factory: Any) -> Iterator[ServerProcess]:
    yield server_process_factory()


def test_pipelined_joins_of_a_full_history_keep_server_memory_bounded(
    default_server: ServerProcess,
) -> None:
    # 1,000 JOINs (17 KB sent) of a room holding 50 messages of 4 KB: about 200 MB of
    # answers.  Before the fix the server built all of them at once (RSS +400 MB) and then
    # dropped the client as too slow; now it builds them as the client reads them.
    sp = default_server
    joins = 1_000
    room = full_room(sp.port)
    room.__enter__()
    proc = psutil.Process(sp.proc.pid)
    baseline = proc.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    bystander_waits: list[float] = []
    bystander_done = threading.Event()

    def bystander() -> None:
        with Client(HOST, sp.port, timeout=10) as other:
            while not bystander_done.is_set():
                started = time.monotonic()
                other.time()
                bystander_waits.append(time.monotonic() - started)
                bystander_done.wait(0.02)

    asker = threading.Thread(target=bystander)
    asker.start()
    try:
        with RawPeer(sp.port) as hostile:
            hostile.send(*[JoinRequest(ROOM, request_id=i) for i in range(1, joins + 1)])
            history = read_replies(hostile, joins, JoinOk, timeout=120)
            assert history == joins * HISTORY
            assert_still_serving(hostile)
    finally:
        bystander_done.set()
        asker.join(WAIT_S)
        stop.set()
        sampler.join(WAIT_S)
        room.__exit__(None, None, None)
    growth = peak[0] - baseline
    print(f"server RSS: baseline {baseline >> 20} MiB, peak +{growth >> 20} MiB")
    assert growth < 64 * 1024 * 1024, f"server RSS grew by {growth >> 20} MiB"
    # Answered throughout, each within a generous deadline.
    assert bystander_waits and max(bystander_waits) < 5.0, max(bystander_waits, default=None)


# --- a client that reads as fast as it asks: served in turns ----------------------------------


def test_a_client_that_reads_as_fast_as_it_asks_is_served_in_turns(server_factory: Any) -> None:
    # It never reaches its high-water mark, so back-pressure never stops it: before, its
    # 3,000 pipelined JOINs (over a second of work) ran in one go while everyone else waited.
    # Now a batch yields after a time slice, its remaining requests held, so a bystander's
    # TIME is answered while most of them are still waiting.
    st: ServerThread = server_factory(heartbeat=60.0)
    joins = 3_000
    with (
        full_room(st.port, text="s" * 1000),
        RawPeer(st.port) as hostile,
        Client(HOST, st.port, timeout=10) as other,
    ):
        received = [0]
        reading = threading.Event()

        def read_all() -> None:  # as fast as the socket goes, nothing decoded
            hostile.sock.settimeout(WAIT_S)
            reading.set()
            with contextlib.suppress(OSError):
                while chunk := hostile.sock.recv(1 << 20):
                    received[0] += len(chunk)

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        reading.wait(WAIT_S)
        hostile.send(*[JoinRequest(ROOM, request_id=i) for i in range(1, joins + 1)])

        def joined(server: Any) -> bool:
            room = server.directory.room_registry.by_name.get(ROOM)
            return room is not None and hostile.client_id in room.members

        st.wait_for(joined, timeout=WAIT_S)
        assert other.time().epoch_ms > 0
        held = st.call(lambda: st.server.directory.client_by_id[hostile.client_id].buffered)
        assert held > 0, "the bystander was answered only after every JOIN"
        # Every JOIN is answered in the end (51 frames each).
        st.wait_for(
            lambda s: s.directory.client_by_id[hostile.client_id].buffered == 0,
            timeout=60,
        )
        hostile.sock.shutdown(socket.SHUT_WR)
    reader.join(WAIT_S)
    assert received[0] > joins * HISTORY * 1000
