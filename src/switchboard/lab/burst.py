"""``switchboard lab burst``: 100 TIME requests sent as 100 ``send()`` calls: how many TCP
segments, and how many ``recv()`` calls on the server?

Three runs against a real ``switchboard serve`` process, one connection each: Nagle on (the
default), Nagle off (``TCP_NODELAY``), and all requests written with one ``send()`` of one
buffer.  Segments are counted by the kernel (the client socket's ``TCP_INFO``
``tcpi_data_segs_out``) and, when tshark is installed, in a capture decoded with the
project's dissector, which shows several Switchboard frames in one segment as Wireshark does;
the server's reads are the read() system calls its process made meanwhile (/proc/PID/io).
Every answer is matched to its request by request id.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from switchboard.protocol import FrameDecoder, TimeOk, TimeRequest, Welcome, encode

from .capture import Segment, open_capture
from .notebook import Experiment, LabUnavailable, Notebook
from .server_process import ServerProcess
from .sockets import close_with_reset

#: Requests per run by default, and the most one run may send.
REQUESTS: Final = 100
MAX_REQUESTS: Final = 10_000
#: Seconds to wait for all answers of one run.
ANSWER_TIMEOUT_S: Final = 10.0
#: Offset of ``tcpi_data_segs_out`` in struct tcp_info (include/uapi/linux/tcp.h, Linux
#: 4.6+): 8 bytes of u8 fields, 24 u32, two u64 rates, two u64 byte counts, then
#: segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out.
_DATA_SEGS_OUT: Final = 156
_TCP_INFO_SIZE: Final = 160


@dataclass(frozen=True)
class Mode:
    name: str  # the key under which each observation records this run
    label: str
    nodelay: bool
    one_buffer: bool


MODES: Final = (
    Mode("nagle_on", "Nagle on (the default)", nodelay=False, one_buffer=False),
    Mode("nagle_off", "Nagle off (TCP_NODELAY)", nodelay=True, one_buffer=False),
    Mode("one_buffer", "one buffer, one send()", nodelay=False, one_buffer=True),
)


@dataclass(frozen=True)
class Run:
    mode: Mode
    client_port: int
    send_calls: int
    segments: int
    server_reads: int
    answers: int
    matched: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests",
        type=int,
        default=REQUESTS,
        metavar="N",
        help=f"TIME requests per run (1-{MAX_REQUESTS}, default {REQUESTS})",
    )


def data_segments_sent(sock: socket.socket) -> int:
    """Segments carrying data this socket has sent (TCP_INFO ``tcpi_data_segs_out``)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    if len(info) < _TCP_INFO_SIZE:
        raise LabUnavailable("this kernel's TCP_INFO has no segment counts (Linux 4.6+ has)")
    return int(struct.unpack_from("=I", info, _DATA_SEGS_OUT)[0])


def read_answers(sock: socket.socket, decoder: FrameDecoder, wanted: int) -> list[int]:
    """The request ids of the next ``wanted`` TIME answers (other frames skipped)."""
    ids: list[int] = []
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while len(ids) < wanted:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        decoder.feed(data)
        while (event := decoder.next_event()) is not None:
            if isinstance(event, TimeOk):
                ids.append(event.request_id)
    return ids


def burst(server: ServerProcess, mode: Mode, count: int) -> Run:
    """One connection, ``count`` TIME requests the way ``mode`` says, every answer read."""
    sock = socket.create_connection((server.host, server.port), timeout=ANSWER_TIMEOUT_S)
    try:
        if mode.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        decoder = FrameDecoder()
        # WELCOME first, so that the server is idle, waiting in epoll, when the burst starts.
        while not isinstance(decoder.next_event(), Welcome):
            data = sock.recv(65536)
            if not data:
                raise LabUnavailable("the server closed the connection before WELCOME")
            decoder.feed(data)
        requests = [encode(TimeRequest(request_id=n)) for n in range(1, count + 1)]
        segments_before = data_segments_sent(sock)
        reads_before = server.read_calls()
        if mode.one_buffer:
            sock.sendall(b"".join(requests))
            send_calls = 1
        else:
            for request in requests:
                sock.sendall(request)  # one send() each: a 14-byte frame is never split
            send_calls = count
        ids = read_answers(sock, decoder, count)
        reads = server.read_calls() - reads_before
        segments = data_segments_sent(sock) - segments_before
        return Run(
            mode,
            sock.getsockname()[1],
            send_calls,
            segments,
            reads,
            len(ids),
            sorted(ids) == list(range(1, count + 1)),
        )
    finally:
        close_with_reset(sock)  # no TIME_WAIT left behind by the experiment


def frames_per_segment(segments: Sequence[Segment], run: Run, server_port: int) -> list[int]:
    """For each client-to-server data segment of ``run``'s connection: its frame count."""
    return [
        len(s.frames)
        for s in segments
        if s.src_port == run.client_port and s.dst_port == server_port and s.payload > 0
    ]


def run(args: argparse.Namespace, nb: Notebook) -> None:
    count = args.requests
    if not 1 <= count <= MAX_REQUESTS:
        raise LabUnavailable(f"--requests must be 1-{MAX_REQUESTS}, not {count}")
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ServerProcess())
        nb.step(f"started switchboard serve on {server.host}:{server.port} (pid {server.pid})")
        capture = open_capture(nb, [server.port], required=False)
        if capture is not None:
            stack.callback(capture.close)
            nb.step(f"capturing on lo: {capture.filter}")
        runs = []
        for mode in MODES:
            result = burst(server, mode, count)
            nb.step(
                f"{mode.label}: {result.send_calls} send() call(s) of {count} TIME requests "
                f"-> {result.segments} segment(s), {result.server_reads} server read(s), "
                f"{result.answers} answers"
            )
            runs.append(result)
        segments = capture.finish() if capture is not None else None
    nb.table(
        f"{count} TIME requests on one connection per run",
        ["run", "send() calls", "TCP segments", "server read() calls", "answers", "ids matched"],
        [
            [r.mode.label, r.send_calls, r.segments, r.server_reads, r.answers,
             "yes" if r.matched else "NO"]
            for r in runs
        ],
    )  # fmt: skip
    by_mode = {r.mode.name: r for r in runs}
    nb.observe("server", {"port": server.port, "pid": server.pid})
    nb.observe("requests", count)
    nb.observe("send_calls", {name: r.send_calls for name, r in by_mode.items()})
    nb.observe("segments", {name: r.segments for name, r in by_mode.items()})
    nb.observe("server_reads", {name: r.server_reads for name, r in by_mode.items()})
    nb.observe("answers", {name: r.answers for name, r in by_mode.items()})
    nb.observe("answers_matched", {name: r.matched for name, r in by_mode.items()})
    if segments is not None:
        show_capture(nb, segments, runs, server.port)
    size = len(encode(TimeRequest(request_id=1))) * count
    nb.explain(
        "A TCP socket is a byte stream: send() copies bytes into the socket's send buffer and "
        f"the kernel decides how many segments carry them.  Here {count} send() calls became "
        f"{by_mode['nagle_on'].segments} segments with Nagle on and "
        f"{by_mode['nagle_off'].segments} with TCP_NODELAY, and one buffer became "
        f"{by_mode['one_buffer'].segments}.  Nagle's algorithm (the default) holds a small "
        "write back while earlier data is unacknowledged, and sends what gathered meanwhile as "
        "one segment when the ACK arrives.  TCP_NODELAY lets each write leave at once, except "
        "that Linux still appends a small write to a segment that has not left the host yet "
        "(autocorking, net.ipv4.tcp_autocorking), so on a busy machine both counts vary from "
        "run to run, between a handful and one per send().  One buffer written with one send() "
        f"needs as few segments as its size allows: {size} bytes fit in one loopback segment "
        "(its MSS is about 64 KiB)."
    )
    reads = ", ".join(f"{r.server_reads} ({r.mode.label})" for r in runs)
    nb.explain(
        "On the other side recv() (read()) returns whatever has arrived, however the segments "
        f"cut it: for {count} requests per run the server made {reads} read() calls.  A read "
        "is not a message, which is why the protocol frames each message with its length, and "
        "why each answer carries its request's id: the client matches answers to requests by "
        "id, not by the order of reads."
    )


def show_capture(nb: Notebook, segments: Sequence[Segment], runs: Sequence[Run], port: int) -> None:
    """The capture's view: segments and frames per run, and the fullest segment's frames."""
    counts = {run.mode.name: frames_per_segment(segments, run, port) for run in runs}
    nb.observe("captured_segments", {name: len(c) for name, c in counts.items()})
    nb.observe("max_frames_per_segment", {name: max(c, default=0) for name, c in counts.items()})
    nb.table(
        "the capture, decoded with the dissector (client to server)",
        ["run", "data segments", "frames in the fullest", "segments with several frames"],
        [
            [run.mode.label, len(counts[run.mode.name]), max(counts[run.mode.name], default=0),
             sum(1 for n in counts[run.mode.name] if n > 1)]
            for run in runs
        ],
    )  # fmt: skip
    nagle = next((r for r in runs if r.mode.name == "nagle_on"), runs[0])
    fullest = max(
        (s for s in segments if s.src_port == nagle.client_port and s.dst_port == port),
        key=lambda s: len(s.frames),
        default=None,
    )
    if fullest is not None and len(fullest.frames) > 1:
        parts = fullest.info.split(" | ")
        if len(parts) > 6:
            parts = [*parts[:3], f"... {len(parts) - 6} more ...", *parts[-3:]]
        nb.step(
            f"packet {fullest.number} ({nagle.mode.label}): {fullest.payload} bytes of TCP "
            f"payload, {len(fullest.frames)} Switchboard frames; Wireshark's Info column: "
            + " | ".join(parts)
        )
        nb.observe("fullest_segment_info", fullest.info)


EXPERIMENT: Final = Experiment(
    name="burst",
    question=(
        "100 quick send() calls: how many TCP segments and server recv() calls, with Nagle "
        "on and off, and in one buffer?"
    ),
    add_arguments=add_arguments,
    run=run,
)
