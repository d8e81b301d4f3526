"""The load generator behind ``switchboard bench``, in the manner of vmbench.

N connections, spread over K worker processes (each its own uvloop event loop), keep up to W
requests in flight each.  After a warm-up, a fixed measured window counts operations and
records their latency in a histogram; then no new requests are sent and the workers wait (up
to a drain timeout) for every answer, so that what never came back is counted as *lost*.
An operation is a successful one: an ERROR answer is counted under ``errors``, never as an
operation (a rate-limited server answers refusals faster than it does the work).

Modes (an operation, and its latency):

* ``time``: every client pipelines TIME requests; an answer, its round trip.
* ``list``: N clients connected, the first one pipelines LIST; an answer, its round trip.
* ``send``: client i sends to client (i+1) mod N, the recipient acknowledges, the sender's
  receipt frees its window slot (with protocol version 2, the default, each connection says
  HELLO version 2 during set-up, acknowledges every MESSAGE of one read with one ACKS and gets
  its receipts in RECEIPTS frames, as the project's client library does; ``--protocol 1``
  acknowledges each MESSAGE with an ACK and gets a RECEIPT each); an operation is a MESSAGE
  arriving at its recipient, its latency from send to arrival.  The send time travels in
  the message text (16 hex digits of the monotonic clock, which Linux shares between
  processes), so no per-message state is kept anywhere.  Messages *sent* in the
  measured window are counted (wherever they arrive), and so are the receipts of messages
  sent in it (the sender knows each batch's send time, and one sender's receipts come back
  in its sending order): with nothing lost, ``receipts`` equals ``ops``.
* ``broadcast``: all N join one room and broadcast; a MESSAGE arriving at a member, from
  send to arrival; the window frees on BroadcastOk.  As for send, messages sent in the
  measured window are counted.

The generator is lean so that it saturates as late as possible: frames are split with one
``struct.unpack_from`` each straight from the receive buffer, every batch of requests goes
out in one write (a pre-encoded frame repeated), and latencies are recorded once per group
of answers that share a send time rather than once per answer.

Server CPU per operation comes from ``/proc/<pid>/stat`` read at both ends of the measured
window (see procstat): when the generator saturates first, throughput measures the generator
while CPU per operation still measures the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from switchboard.defaults import MAX_IDS_PER_FRAME
from switchboard.eventloop import run
from switchboard.protocol import (
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    Ack,
    Acks,
    BroadcastRequest,
    HelloRequest,
    JoinRequest,
    ListRequest,
    MessageType,
    Pong,
    SendRequest,
    TimeRequest,
    encode,
    error_name,
)

from .histogram import Histogram
from .procstat import ProcError, cpu_seconds

MODES: Final = ("time", "send", "list", "broadcast")
#: The room the broadcast mode's clients join.
BENCH_ROOM: Final = "bench"
#: Hex digits of the send time at the start of every send/broadcast text.
STAMP_BYTES: Final = 16
DEFAULT_SIZE: Final = 32
DEFAULT_DURATION: Final = 5.0
DEFAULT_WARMUP: Final = 1.0
DEFAULT_WINDOW: Final = 1
#: Seconds to wait after the measured window for answers still in flight before they count
#: as lost: far longer than any healthy round trip, short enough not to stall a suite.
DRAIN_TIMEOUT_S: Final = 5.0
#: Seconds for all connections (and their WELCOMEs and JOINs) to be set up.
SETUP_TIMEOUT_S: Final = 60.0
#: Connections opened at once while setting up: below the usual listen backlog (128).
CONNECT_BATCH: Final = 100

_NS: Final = 1_000_000_000
_unpack_header = struct.Struct("!HHHII").unpack_from
_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_u32 = struct.Struct("!I").unpack_from
_unpack_u64 = struct.Struct("!Q").unpack_from
_pack_u64 = struct.Struct("!Q").pack

_OK: Final = int(MessageType.OK)
_ERROR: Final = int(MessageType.ERROR)
_WELCOME: Final = int(MessageType.WELCOME)
_MESSAGE: Final = int(MessageType.MESSAGE)
_RECEIPT: Final = int(MessageType.RECEIPT)
_RECEIPTS: Final = int(MessageType.RECEIPTS)
_PING: Final = int(MessageType.PING)
_ADDR_BYTES: Final = {0: 0, 4: 4, 6: 16}

# Answers come back in request order, so the generator needs no distinct request ids.
_TIME_REQUEST: Final = encode(TimeRequest(request_id=1))
_LIST_REQUEST: Final = encode(ListRequest("", request_id=1))
_JOIN_REQUEST: Final = encode(JoinRequest(BENCH_ROOM, request_id=1))
_HELLO_V2: Final = encode(HelloRequest(version=2, request_id=1))
_PONG: Final = encode(Pong())
#: An ACK's header: the acknowledged message id (u64) follows.
_ACK_HEAD: Final = encode(Ack(0))[:HEADER_SIZE]
#: An ACKS header without its length (u32), then the id count (u32) and the ids (u64 each).
_ACKS_HEAD: Final = encode(Acks(()))[: HEADER_SIZE - 4]
_pack_acks_sizes = struct.Struct("!II").pack


def _head(frame: bytes, text_len: int) -> bytes:
    """``frame`` without its last ``text_len`` bytes: a request up to its text."""
    return frame[: len(frame) - text_len]


class BenchError(Exception):
    """The benchmark could not run (no server, bad options, a worker failed)."""


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to measure; the CLI's options."""

    host: str
    port: int
    mode: str
    clients: int
    window: int = DEFAULT_WINDOW
    duration: float = DEFAULT_DURATION
    warmup: float = DEFAULT_WARMUP
    requests: int | None = None
    #: The protocol version the send mode's connections negotiate (2: ACKS and RECEIPTS).
    protocol: int = PROTOCOL_VERSION
    size: int = DEFAULT_SIZE
    procs: int | None = None
    server_pid: int | None = None
    drain_timeout: float = DRAIN_TIMEOUT_S
    #: Load processes poll without ever sleeping (see busy_poll()).
    busy_poll: bool = False
    #: More ports of the same cluster (``serve --cluster``): client i connects to the i-th of
    #: ``port`` and these in turn, so that in the send ring every message crosses nodes.
    more_ports: tuple[int, ...] = ()
    #: More processes whose CPU counts with the server's (the other nodes, Redis).
    more_pids: tuple[int, ...] = ()

    def check(self) -> None:
        """Raise BenchError for options that cannot make a benchmark."""
        if self.mode not in MODES:
            raise BenchError(f"unknown mode {self.mode!r} (one of {', '.join(MODES)})")
        if self.clients < 1:
            raise BenchError("--clients must be at least 1")
        if self.mode == "send" and self.clients < 2:
            raise BenchError("send needs at least 2 clients (client i sends to client i+1)")
        if self.window < 1:
            raise BenchError("--window must be at least 1")
        if self.duration <= 0 or self.warmup < 0:
            raise BenchError("--duration must be positive and --warmup not negative")
        if self.drain_timeout < 0:
            raise BenchError("--drain-timeout must not be negative")
        if self.requests is not None and self.requests < 1:
            raise BenchError("--requests must be at least 1")
        if self.mode in ("send", "broadcast") and self.size < STAMP_BYTES:
            raise BenchError(
                f"--size must be at least {STAMP_BYTES} for {self.mode} "
                "(the send time travels in the text)"
            )
        if self.size < 0:
            raise BenchError("--size must not be negative")
        if self.procs is not None and self.procs < 1:
            raise BenchError("--procs must be at least 1")
        if not 0 < self.port < 65536:
            raise BenchError(f"port {self.port} is not a port number (1-65535)")

    def worker_count(self) -> int:
        if self.procs is not None:
            return min(self.procs, self.clients)
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
        return max(1, min(cpus, self.clients))


# --- the worker process ------------------------------------------------------------------------


class _Worker:
    """One worker process's shared state: clock window, counters, histogram."""

    def __init__(self, mode: str, window: int, size: int, protocol: int = PROTOCOL_VERSION) -> None:
        self.mode = mode
        self.window = window
        #: Acknowledge with ACKS, one per read (protocol version 2), instead of an ACK each.
        self.batched_acks = mode == "send" and protocol >= 2
        self.pad = b"x" * (size - STAMP_BYTES) if size >= STAMP_BYTES else b""
        self.t1 = 1 << 62  # measured window [t1, t2), monotonic ns; set by "go"
        self.t2 = 1 << 62
        self.send_until = 0  # no new requests from this time on
        self.quota = -1  # requests left to send in the measured window (-1: no quota)
        self.hist = Histogram()
        self.ops = 0
        self.sent = 0
        self.answered = 0
        self.oks = 0
        self.delivered = 0
        self.reached = 0
        self.receipts = 0
        self.not_delivered = 0
        self.errors: dict[str, int] = {}
        self.conns: list[_LoadConnection] = []
        self.broken: str | None = None

    def allowance(self, now: int, wanted: int) -> int:
        """How many of ``wanted`` new requests may go out now."""
        if now >= self.send_until:
            return 0
        if self.quota >= 0 and now >= self.t1:
            if wanted > self.quota:
                wanted = self.quota
            self.quota -= wanted
        return wanted

    def in_flight(self) -> int:
        return sum(c.in_flight for c in self.conns)

    def error(self, code: int) -> None:
        name = error_name(code)
        self.errors[name] = self.errors.get(name, 0) + 1


class _LoadConnection(asyncio.Protocol):
    """One benchmark client: reads frames in bulk and refills its window in one write."""

    __slots__ = (
        "active",
        "buf",
        "client_id",
        "head",
        "in_flight",
        "pending",
        "set_up",
        "transport",
        "w",
        "welcomed",
    )

    def __init__(self, worker: _Worker, loop: asyncio.AbstractEventLoop) -> None:
        self.w = worker
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.client_id = 0
        self.active = False
        self.in_flight = 0
        #: [send time, count] per batch still unanswered (time and list: answers are in order;
        #: send: receipts, and the errors that stand for them, come back in sending order).
        self.pending: deque[list[int]] = deque()
        #: The request frame up to its send-time stamp (send, broadcast).
        self.head = b""
        self.welcomed: asyncio.Future[int] = loop.create_future()
        #: The set-up request's answer (JOIN for broadcast, HELLO for send with version 2).
        self.set_up: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(BenchError("the server closed the connection"))
        elif self.w.send_until and self.w.broken is None and self.in_flight:
            self.w.broken = "the server closed a connection during the benchmark"
        self.in_flight = 0

    def refill(self, now: int, out: list[bytes]) -> None:
        """Top the window up: the new requests are appended to ``out`` as one chunk."""
        w = self.w
        k = w.allowance(now, w.window - self.in_flight)
        if k <= 0:
            return
        self.in_flight += k
        w.sent += k
        mode = w.mode
        if mode == "time":
            self.pending.append([now, k])
            out.append(_TIME_REQUEST * k)
        elif mode == "list":
            self.pending.append([now, k])
            out.append(_LIST_REQUEST * k)
        else:
            if mode == "send":
                self.pending.append([now, k])
            out.append((self.head + b"%016x" % now + w.pad) * k)

    def start(self, now: int) -> None:
        out: list[bytes] = []
        self.refill(now, out)
        if out and self.transport is not None:
            self.transport.write(out[0])

    def data_received(self, data: bytes) -> None:
        w = self.w
        now = time.monotonic_ns()
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        out: list[bytes] = []
        answers = 0
        oks = 0
        t1, t2 = w.t1, w.t2
        measuring = t1 <= now < t2
        group_ts = 0
        group_n = 0
        hist = w.hist
        batched = w.batched_acks
        acked: list[bytes | bytearray] = []  # the ids of this read's MESSAGEs (batched)
        while n - pos >= 14:
            magic, _, mtype, _, length = _unpack_header(buf, pos)
            end = pos + 14 + length
            if end > n:
                break
            if magic != MAGIC:
                w.broken = "the server sent a frame with a bad magic"
                if self.transport is not None:
                    self.transport.abort()
                return
            p = pos + 14
            if mtype == _MESSAGE:
                q = p + 13 + _ADDR_BYTES.get(buf[p + 12], 0) + 2
                q += 2 + _unpack_u16(buf, q)[0]
                room_len = _unpack_u16(buf, q)[0]
                q += 2 + room_len + 13
                ts = int(buf[q : q + STAMP_BYTES], 16)
                w.delivered += 1
                if not room_len:  # direct messages are acknowledged, room messages never
                    if batched:
                        acked.append(buf[p : p + 8])
                    else:
                        out.append(_ACK_HEAD + _pack_u64(_unpack_u64(buf, p)[0]))
                if t1 <= ts < t2:  # sent in the measured window
                    w.ops += 1
                    if ts == group_ts:
                        group_n += 1
                    else:
                        if group_n:
                            hist.record(now - group_ts, group_n)
                        group_ts, group_n = ts, 1
            elif mtype == _OK:
                if self.set_up is not None and not self.set_up.done():
                    self.set_up.set_result(None)  # the set-up's JOIN or HELLO, not measured
                else:
                    answers += 1
                    oks += 1
                    w.oks += 1
                    if w.mode == "broadcast":
                        self.in_flight -= 1
                        if length >= 14:  # the null server answers with the type alone
                            w.reached += _unpack_u32(buf, p + 10)[0]
            elif mtype == _RECEIPT:
                self.in_flight -= 1
                if t1 <= self._settle_one() < t2:
                    w.receipts += 1
                    if length >= 13 and buf[p + 12] != 1:
                        w.not_delivered += 1
            elif mtype == _RECEIPTS and length >= 9:
                count = _unpack_u32(buf, p + 5)[0]
                failed = buf[p + 4] != 1
                self.in_flight -= count
                for _ in range(count):
                    if t1 <= self._settle_one() < t2:
                        w.receipts += 1
                        if failed:
                            w.not_delivered += 1
            elif mtype == _ERROR:
                w.error(_unpack_u16(buf, p)[0] if length >= 2 else 0)
                if self.set_up is not None and not self.set_up.done():
                    self.set_up.set_exception(BenchError("the server refused the set-up"))
                else:
                    answers += 1
                    if w.mode in ("send", "broadcast"):
                        self.in_flight -= 1  # no receipt or message will follow
                        if w.mode == "send":
                            self._settle_one()
            elif mtype == _PING:
                out.append(_PONG)
            elif mtype == _WELCOME and length >= 4 and not self.welcomed.done():
                self.client_id = _unpack_u32(buf, p)[0]
                self.welcomed.set_result(self.client_id)
            pos = end
        # One ACKS for every MESSAGE of this read (MAX_IDS_PER_FRAME ids a frame at most).
        for first in range(0, len(acked), MAX_IDS_PER_FRAME):
            ids = acked[first : first + MAX_IDS_PER_FRAME]
            count = len(ids)
            out.append(_ACKS_HEAD + _pack_acks_sizes(4 + 8 * count, count) + b"".join(ids))
        if pos:
            del buf[:pos]
        if group_n:
            hist.record(now - group_ts, group_n)
        if answers:
            w.answered += answers
            if w.mode in ("time", "list"):
                self.in_flight -= answers
                if measuring:
                    w.ops += oks
                pending = self.pending
                while answers and pending:
                    head = pending[0]
                    take = head[1] if head[1] <= answers else answers
                    if measuring:
                        hist.record(now - head[0], take)
                    head[1] -= take
                    answers -= take
                    if not head[1]:
                        pending.popleft()
        if self.active:
            self.refill(now, out)
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _settle_one(self) -> int:
        """send mode: the send time of the oldest message still without its receipt (or
        error), now settled; 0 if none is on record."""
        pending = self.pending
        if not pending:
            return 0
        head = pending[0]
        head[1] -= 1
        if not head[1]:
            pending.popleft()
        return int(head[0])


def busy_poll(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Keep ``loop`` from ever sleeping until the returned function is called.

    A callback that always schedules itself again leaves the loop a ready callback on every
    pass, so it polls its sockets with a zero timeout instead of blocking in ``epoll_wait``:
    an answer is read the moment it arrives instead of after this process's CPU has been
    woken up, which on a virtual machine costs tens of microseconds per round trip.  The
    price is a whole CPU per load process, so it is for latency at low load (``time`` with
    one client and W=1), where a sleeping load generator measures its own wake-ups."""
    handle: asyncio.Handle | None = None

    def spin() -> None:
        nonlocal handle
        handle = loop.call_soon(spin)

    def stop() -> None:
        if handle is not None:
            handle.cancel()

    spin()
    return stop


def raise_file_limit(wanted: int | None) -> None:
    """Raise this process's open-file limit (soft RLIMIT_NOFILE) to ``wanted``, or to the hard
    limit when ``wanted`` is None; never above the hard limit, never lower than it is.

    Quietly leaves the limit where it is when it may not be raised: a benchmark then reports
    the connections it could not open."""
    try:
        import resource
    except ImportError:
        return
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted is None:
        if hard == infinity:
            return
        target = hard
    else:
        target = wanted if hard == infinity else min(wanted, hard)
    if soft != infinity and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _open(
    worker: _Worker, host: str, port: int, count: int, mode: str
) -> list[_LoadConnection]:
    loop = asyncio.get_running_loop()
    conns: list[_LoadConnection] = []
    for first in range(0, count, CONNECT_BATCH):
        batch = [_LoadConnection(worker, loop) for _ in range(min(CONNECT_BATCH, count - first))]
        await asyncio.gather(
            *(loop.create_connection(lambda c=c: c, host, port) for c in batch)  # type: ignore[misc]
        )
        await asyncio.gather(*(c.welcomed for c in batch))
        setup = {"broadcast": _JOIN_REQUEST, "send": _HELLO_V2 if worker.batched_acks else b""}
        request = setup.get(mode)
        if request:
            for c in batch:
                c.set_up = loop.create_future()
                assert c.transport is not None
                c.transport.write(request)
            await asyncio.gather(*(c.set_up for c in batch if c.set_up is not None))
        conns.extend(batch)
    return conns


async def _open_spread(
    worker: _Worker, cfg: BenchConfig, ports: tuple[int, ...], count: int, first_index: int
) -> list[_LoadConnection]:
    """Client ``first_index + j`` on ``ports[(first_index + j) % len(ports)]``, in order."""
    by_port: dict[int, list[int]] = {}
    for j in range(count):
        by_port.setdefault(ports[(first_index + j) % len(ports)], []).append(j)
    conns: list[_LoadConnection | None] = [None] * count
    for port, indices in by_port.items():
        opened = await _open(worker, cfg.host, port, len(indices), cfg.mode)
        for j, conn in zip(indices, opened, strict=True):
            conns[j] = conn
    return [c for c in conns if c is not None]


async def _worker_run(
    pipe: multiprocessing.connection.Connection, cfg: BenchConfig, count: int, first_index: int
) -> None:
    loop = asyncio.get_running_loop()
    worker = _Worker(cfg.mode, cfg.window, cfg.size, cfg.protocol)
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def on_pipe() -> None:
        try:
            inbox.put_nowait(pipe.recv())
        except (EOFError, OSError):
            loop.remove_reader(pipe.fileno())
            inbox.put_nowait(("quit",))

    loop.add_reader(pipe.fileno(), on_pipe)
    try:
        ports = (cfg.port, *cfg.more_ports)
        if len(ports) == 1:
            opening = _open(worker, cfg.host, cfg.port, count, cfg.mode)
        else:
            opening = _open_spread(worker, cfg, ports, count, first_index)
        conns = await asyncio.wait_for(opening, SETUP_TIMEOUT_S)
    except (OSError, TimeoutError, BenchError) as exc:
        what = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        pipe.send(("error", f"cannot set up {count} connection(s): {what}"))
        return
    worker.conns = conns
    pipe.send(("ready", [c.client_id for c in conns]))
    msg = await inbox.get()
    if msg[0] != "go":
        return
    _, targets, _, t1, t2, send_until, quota = msg
    worker.t1, worker.t2, worker.send_until, worker.quota = t1, t2, send_until, quota
    text_len = cfg.size
    # The text (send time, then padding) is written after the head by refill().
    text = "x" * text_len
    for index, conn in enumerate(conns):
        global_index = first_index + index
        if cfg.mode == "send":
            conn.head = _head(encode(SendRequest(targets[index], text, request_id=1)), text_len)
            conn.active = True
        elif cfg.mode == "broadcast":
            conn.head = _head(encode(BroadcastRequest(BENCH_ROOM, text, request_id=1)), text_len)
            conn.active = True
        else:
            conn.active = cfg.mode == "time" or global_index == 0
    stop_polling = busy_poll(loop) if cfg.busy_poll else None
    try:
        await _load(worker, cfg, conns, pipe, inbox, msg)
    finally:
        if stop_polling is not None:
            stop_polling()
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    await asyncio.sleep(0)


async def _load(
    worker: _Worker,
    cfg: BenchConfig,
    conns: list[_LoadConnection],
    pipe: multiprocessing.connection.Connection,
    inbox: asyncio.Queue[Any],
    go: tuple[Any, ...],
) -> None:
    """From "go" to the report: load, measure, drain."""
    _, _, t0, t1, _, send_until, quota = go
    await asyncio.sleep(max(0.0, (t0 - time.monotonic_ns()) / _NS))
    now = time.monotonic_ns()
    for conn in conns:
        if conn.active:
            conn.start(now)
    # Wait for the end of sending (the window's end, or the quota spent), then drain.
    while True:
        now = time.monotonic_ns()
        if worker.broken is not None:
            break
        if now >= send_until:
            break
        if quota >= 0 and worker.quota == 0 and now >= t1 and worker.in_flight() == 0:
            break
        await asyncio.sleep(0.002 if quota >= 0 else min(0.05, (send_until - now) / _NS))
    stopped = min(time.monotonic_ns(), send_until)
    worker.send_until = 0  # no new requests from here on
    drain_deadline = time.monotonic_ns() + int(cfg.drain_timeout * _NS)
    while worker.in_flight() and time.monotonic_ns() < drain_deadline and worker.broken is None:
        await asyncio.sleep(0.005)
    pipe.send(("drained", stopped, worker.broken))
    # Others' messages may still arrive at our clients (and need their ACK) until every
    # worker has drained: only then does the parent ask for the report.
    await inbox.get()
    pipe.send(
        (
            "result",
            {
                "hist": worker.hist.to_sparse(),
                "max": worker.hist.max,
                "ops": worker.ops,
                "sent": worker.sent,
                "answered": worker.answered,
                "oks": worker.oks,
                "delivered": worker.delivered,
                "reached": worker.reached,
                "receipts": worker.receipts,
                "not_delivered": worker.not_delivered,
                "errors": worker.errors,
            },
        )
    )


def _worker_main(
    pipe: multiprocessing.connection.Connection, cfg: BenchConfig, count: int, first_index: int
) -> None:
    raise_file_limit(count + 64)
    try:
        run(_worker_run(pipe, cfg, count, first_index))
    except Exception as exc:  # reported to the parent, which prints one clear line
        with contextlib.suppress(OSError):
            pipe.send(("error", f"worker failed: {exc.__class__.__name__}: {exc}"))
    finally:
        pipe.close()


# --- the parent ------------------------------------------------------------------------------


def _recv(pipe: multiprocessing.connection.Connection, timeout: float, what: str) -> Any:
    if not pipe.poll(timeout):
        raise BenchError(f"a load worker did not answer in time ({what})")
    try:
        msg = pipe.recv()
    except EOFError:
        raise BenchError(f"a load worker exited unexpectedly ({what})") from None
    if msg[0] == "error":
        raise BenchError(msg[1])
    return msg


#: Seconds between two updates of the progress line.
PROGRESS_EVERY_S: Final = 0.25

#: ``run_bench``'s ``progress``: called with a short line saying where the run is.
Progress = Callable[[str], None]


def _sleep_until(
    deadline_ns: int, progress: Progress | None = None, label: Callable[[int], str] | None = None
) -> None:
    """Sleep until ``deadline_ns``, telling ``progress`` ``label(now)`` every quarter second."""
    while True:
        now = time.monotonic_ns()
        delay = (deadline_ns - now) / _NS
        if delay <= 0:
            return
        if progress is not None and label is not None:
            progress(label(now))
            delay = min(delay, PROGRESS_EVERY_S)
        time.sleep(delay)


def _cpu(pid: int | None, more: tuple[int, ...] = ()) -> float | None:
    if pid is None:
        return None
    total = 0.0
    for one in (pid, *more):
        try:
            total += cpu_seconds(one)
        except ProcError as exc:
            raise BenchError(f"--server-pid {one}: {exc}") from None
    return total


def run_bench(cfg: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run one benchmark and return the report (the ``--json`` object); ``progress`` is told
    where the run is (connecting, warming up, measuring, draining) a few times a second."""
    cfg.check()
    if progress is not None:
        progress(f"connecting {cfg.clients} client(s)")
    _cpu(cfg.server_pid, cfg.more_pids)  # fail early on a wrong pid
    k = cfg.worker_count()
    shares = [cfg.clients // k + (1 if i < cfg.clients % k else 0) for i in range(k)]
    method = "fork" if sys.platform == "linux" else "spawn"
    ctx: Any = multiprocessing.get_context(method)
    pipes: list[multiprocessing.connection.Connection] = []
    procs: list[Any] = []
    first = 0
    try:
        for share in shares:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main, args=(child_end, cfg, share, first), daemon=True
            )
            proc.start()
            child_end.close()
            pipes.append(parent_end)
            procs.append(proc)
            first += share
        ids: list[int] = []
        for pipe in pipes:
            ids.extend(_recv(pipe, SETUP_TIMEOUT_S + 10, "connecting")[1])
        n = len(ids)
        ring = [ids[(i + 1) % n] for i in range(n)]
        now = time.monotonic_ns()
        t0 = now + 100_000_000  # 0.1 s for the "go" to reach every worker
        t1 = t0 + int(cfg.warmup * _NS)
        t2 = t1 + int(cfg.duration * _NS)
        first = 0
        for pipe, share in zip(pipes, shares, strict=True):
            quota = -1
            if cfg.requests is not None:
                quota = cfg.requests * share // cfg.clients
                if cfg.mode == "list":
                    quota = cfg.requests if first == 0 else 0
            # With a quota the window ends when it is spent; then t2 only bounds the run.
            pipe.send(
                ("go", ring[first : first + share], t0, t1, t2 if quota < 0 else 1 << 62, t2, quota)
            )
            first += share
        _sleep_until(t1, progress, lambda now: f"warming up, {(t1 - now) / _NS:.1f} s left")
        cpu1 = _cpu(cfg.server_pid, cfg.more_pids)
        cpu2: float | None = None
        if cfg.requests is None:
            _sleep_until(
                t2,
                progress,
                lambda now: f"measuring, {(now - t1) / _NS:.1f} of {cfg.duration:g} s",
            )
            cpu2 = _cpu(cfg.server_pid, cfg.more_pids)
        if progress is not None:
            progress("draining" if cfg.requests is None else f"sending {cfg.requests:,} requests")
        stops: list[int] = []
        broken: list[str] = []
        for pipe in pipes:
            _, stopped, why = _recv(pipe, cfg.duration + cfg.drain_timeout + 30, "draining")
            stops.append(stopped)
            if why:
                broken.append(why)
        if cfg.requests is not None:
            cpu2 = _cpu(cfg.server_pid, cfg.more_pids)
        results = []
        for pipe in pipes:
            pipe.send(("report",))
        for pipe in pipes:
            results.append(_recv(pipe, 30, "reporting")[1])
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for pipe in pipes:
            pipe.close()
    if broken:
        raise BenchError(broken[0])
    seconds = cfg.duration if cfg.requests is None else max(1, max(stops) - t1) / _NS
    return _report(cfg, results, seconds, cpu1, cpu2)


def _report(
    cfg: BenchConfig,
    results: list[dict[str, Any]],
    seconds: float,
    cpu1: float | None,
    cpu2: float | None,
) -> dict[str, Any]:
    hist = Histogram()
    errors: dict[str, int] = {}
    totals = dict.fromkeys(
        ("ops", "sent", "answered", "oks", "delivered", "reached", "receipts", "not_delivered"), 0
    )
    for res in results:
        hist.merge(Histogram.from_sparse(res["hist"], res["max"]))
        for key in totals:
            totals[key] += res[key]
        for name, count in res["errors"].items():
            errors[name] = errors.get(name, 0) + count
    unanswered = max(0, totals["sent"] - totals["answered"])
    if cfg.mode == "send":
        lost = unanswered + max(0, totals["oks"] - totals["delivered"])
    elif cfg.mode == "broadcast":
        lost = unanswered + max(0, totals["reached"] - totals["delivered"])
    else:
        lost = unanswered
    ops = totals["ops"]
    cpu_per_op: float | None = None
    if cpu1 is not None and cpu2 is not None and ops:
        cpu_per_op = round((cpu2 - cpu1) * 1e6 / ops, 3)

    def ms(q: float) -> float:
        return round(hist.percentile(q) / 1e6, 4)

    return {
        "mode": cfg.mode,
        "clients": cfg.clients,
        "window": cfg.window,
        "size": cfg.size,
        "seconds": round(seconds, 3),
        "ops": ops,
        "ops_per_sec": round(ops / seconds, 1),
        "server_cpu_us_per_op": cpu_per_op,
        "latency_ms": {
            "p50": ms(50),
            "p90": ms(90),
            "p99": ms(99),
            "p999": ms(99.9),
            "max": round(hist.max / 1e6, 4),
        },
        "errors": errors,
        "lost": lost,
        "receipts": totals["receipts"] if cfg.mode == "send" else None,
        "procs": len(results),
        "busy_poll": cfg.busy_poll,
        "protocol": cfg.protocol,
    }
