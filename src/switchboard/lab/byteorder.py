"""``switchboard lab byteorder``: what happens when one side forgets ``htons``?

Two listeners: one on the port the client means (7000 by default) and one on that port with
its two bytes swapped (22555).  One client fills its ``sockaddr_in`` the right way (the port
in network byte order, as ``htons`` makes it), one the forgetful way (the port as the CPU
keeps it), and each calls the C library's ``connect()`` with those exact bytes (ctypes:
Python's own ``connect`` always converts, so it cannot make the mistake).  Which listener
accepts shows where the forgetful SYN went, and the capture shows the port on the wire.

Then the same mistake in a protocol field: a TIME request whose request id is written in host
order, to a real ``switchboard serve``, is answered under the id the server read; and a header
written wholly in host order starts with "BS" instead of "SB", which the server refuses
(ERROR BAD_FRAME) and closes the connection over.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import socket
import struct
import sys
import time
from typing import Final

from switchboard.protocol import (
    ErrorCode,
    ErrorResponse,
    FrameDecoder,
    TimeOk,
    TimeRequest,
    Welcome,
    encode,
)
from switchboard.protocol.wire import HEADER, MAGIC, VERSION

from .capture import Segment, open_capture
from .notebook import Experiment, LabUnavailable, Notebook
from .server_process import ServerProcess
from .sockets import close_with_reset

HOST: Final = "127.0.0.1"
#: The port of the lab's example; used when it and its swapped twin are free.
EXAMPLE_PORT: Final = 7000
#: The request id sent in host order.
REQUEST_ID: Final = 1
#: Seconds to wait for a connection or an answer.
WAIT_S: Final = 5.0


def swap16(value: int) -> int:
    """``value``'s two bytes swapped: what a little-endian CPU's u16 reads as on the wire."""
    return ((value & 0xFF) << 8) | (value >> 8)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        metavar="PORT",
        help=(
            f"the port the client means (1024-65535, not a palindrome in bytes; default "
            f"{EXAMPLE_PORT} when it and {swap16(EXAMPLE_PORT)} are free, else a free pair)"
        ),
    )


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen(4)
    except OSError:
        sock.close()
        raise
    return sock


def listeners_for(port: int | None) -> tuple[socket.socket, socket.socket]:
    """Listeners on ``port`` and on ``swap16(port)``; with None, on EXAMPLE_PORT's pair if
    both are free, else on a free pair the kernel helps to find."""
    if port is not None:
        if not 1024 <= port <= 65535 or swap16(port) < 1024 or swap16(port) == port:
            raise LabUnavailable(
                f"--port {port}: the port and its byte-swapped twin ({swap16(port)}) must both "
                "be 1024-65535 and differ"
            )
        try:
            meant = _listener(port)
        except OSError as exc:
            raise LabUnavailable(f"port {port} is in use here: {exc.strerror}") from exc
        try:
            return meant, _listener(swap16(port))
        except OSError as exc:
            meant.close()
            raise LabUnavailable(f"port {swap16(port)} is in use here: {exc.strerror}") from exc
    with contextlib.suppress(OSError):
        return listeners_for(EXAMPLE_PORT)
    for _ in range(200):
        meant = _listener(0)
        twin = swap16(meant.getsockname()[1])
        if twin >= 1024 and twin != meant.getsockname()[1]:
            with contextlib.suppress(OSError):
                return meant, _listener(twin)
        meant.close()
    raise LabUnavailable("found no free port whose byte-swapped twin is free too")


def sockaddr_in(port_field: bytes, host: str = HOST) -> bytes:
    """A struct sockaddr_in (netinet/in.h): family (host order), port, address, padding."""
    return struct.pack("=H", socket.AF_INET) + port_field + socket.inet_aton(host) + bytes(8)


def raw_connect(sock: socket.socket, address: bytes) -> None:
    """The C library's connect() with ``address`` exactly as given."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    buffer = ctypes.create_string_buffer(address, len(address))
    if libc.connect(sock.fileno(), buffer, len(address)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def accept_any(listeners: dict[int, socket.socket]) -> list[tuple[int, socket.socket]]:
    """The connections waiting on any of ``listeners`` (within WAIT_S), accepted: each with
    the port of the listener it came to."""
    ready, _, _ = select.select(list(listeners.values()), [], [], WAIT_S)
    return [(port, sock.accept()[0]) for port, sock in listeners.items() if sock in ready]


def hex_bytes(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def run(args: argparse.Namespace, nb: Notebook) -> None:
    with contextlib.ExitStack() as stack:
        meant_listener, twin_listener = listeners_for(args.port)
        stack.callback(meant_listener.close)
        stack.callback(twin_listener.close)
        meant = meant_listener.getsockname()[1]
        twin = twin_listener.getsockname()[1]
        listeners = {meant: meant_listener, twin: twin_listener}
        server = stack.enter_context(ServerProcess())
        capture = open_capture(nb, [meant, twin, server.port], required=False)
        if capture is not None:
            stack.callback(capture.close)
        nb.step(
            f"this CPU is {sys.byteorder}-endian; listening on {HOST}:{meant} (the port meant) "
            f"and {HOST}:{twin} (its bytes swapped); switchboard serve on port {server.port}"
        )
        right = struct.pack("!H", meant)  # htons(port)
        wrong = struct.pack("=H", meant)  # the port as the CPU stores it
        reached: dict[str, dict[str, object]] = {}
        for label, field in (("htons", right), ("forgot_htons", wrong)):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            stack.callback(close_with_reset, client)
            try:
                raw_connect(client, sockaddr_in(field))
            except OSError as exc:
                reached[label] = {
                    "port_bytes": hex_bytes(field),
                    "error": errno.errorcode.get(exc.errno or 0),
                }
                nb.step(f"connect() with port bytes {hex_bytes(field)}: {exc.strerror}")
                continue
            port = client.getpeername()[1]
            accepted = accept_any(listeners)
            for _, sock in accepted:
                stack.callback(close_with_reset, sock)
            reached[label] = {
                "port_bytes": hex_bytes(field),
                "connected_to": port,
                "accepted_by": accepted[0][0] if accepted else None,
                "source_port": client.getsockname()[1],
            }
            nb.step(
                f"connect() with sin_port bytes {hex_bytes(field)} "
                f"({'htons' if label == 'htons' else 'no htons'}): connected to port {port}"
            )
        protocol = request_id_in_host_order(server, stack)
        whole = header_in_host_order(server, stack)
        segments = capture.finish() if capture is not None else None
    nb.observe("server", {"port": server.port, "pid": server.pid})
    nb.observe("byteorder", sys.byteorder)
    nb.observe("port_meant", meant)
    nb.observe("port_swapped", twin)
    nb.observe("connect", reached)
    nb.observe("request_id_field", protocol)
    nb.observe("whole_header", whole)
    nb.table(
        "the port field",
        ["sin_port written", "bytes on the wire", "port the kernel connected to", "accepted by"],
        [
            [("htons(%d)" if label == "htons" else "%d, no htons") % meant, r["port_bytes"],
             r.get("connected_to", r.get("error")), r.get("accepted_by")]
            for label, r in reached.items()
        ],
    )  # fmt: skip
    nb.table(
        "a protocol field: TIME's request id",
        ["request id written", "bytes on the wire", "server read", "answer"],
        [
            [f"{REQUEST_ID}, network order", hex_bytes(struct.pack("!I", REQUEST_ID)),
             REQUEST_ID, f"TIME OK, request id {REQUEST_ID}"],
            [f"{REQUEST_ID}, host order", protocol["bytes"], protocol["answered_id"],
             f"TIME OK, request id {protocol['answered_id']}"],
            ["the whole header in host order", whole["magic_bytes"], whole["magic_read"],
             whole["answer"]],
        ],
    )  # fmt: skip
    if segments is not None:
        show_wire(nb, segments, reached, server.port)
    if sys.byteorder == "little":
        landed = (
            f"so the same bytes mean 0x{twin:04x} = {twin} on the wire: the forgetful client "
            f"knocked on port {twin}"
        )
        magic = "the magic 'SB' written in host order arrives as 'BS'"
    else:
        landed = (
            "which is this CPU's order too, so here the forgetful client reached the right "
            f"port; run on a little-endian machine (x86, most ARM) it would knock on {twin}"
        )
        magic = "on a little-endian machine the magic 'SB' would arrive as 'BS'"
    nb.explain(
        f"A u16 is two bytes; which comes first is the CPU's choice.  This one is "
        f"{sys.byteorder}-endian, so it keeps {meant} (0x{meant:04x}) as {hex_bytes(wrong)}.  "
        "The network's order is big-endian (most significant byte first), and the kernel "
        f"reads sin_port that way, {landed}.  htons() (host to network, short) swaps the "
        "bytes on a little-endian CPU and does nothing on a big-endian one, which is why "
        "forgetting it goes unnoticed on some machines and breaks on others."
    )
    nb.explain(
        "Switchboard's protocol writes every integer big-endian too (struct's '!' format), "
        "for the same reason: the two ends may be different CPUs, and a byte stream carries "
        "no hint of the order it was written in.  A request id written in host order is read "
        f"as {protocol['answered_id']}; {magic}, which is why the magic is checked first: a "
        "peer that gets the order wrong is refused at once instead of being misread field by "
        "field."
    )


def request_id_in_host_order(
    server: ServerProcess, stack: contextlib.ExitStack
) -> dict[str, object]:
    """A TIME request whose request id alone is written in host order; what came back."""
    header = HEADER.pack(MAGIC, VERSION, 1, 0x02, 0, 0)
    id_bytes = struct.pack("=I", REQUEST_ID)
    frame = header[:6] + id_bytes + header[10:]
    answers, _ = exchange(server, stack, frame, until_closed=False)
    answered = [e.request_id for e in answers if isinstance(e, TimeOk)]
    return {
        "sent_id": REQUEST_ID,
        "bytes": hex_bytes(id_bytes),
        "answered_id": answered[0] if answered else None,
    }


def header_in_host_order(server: ServerProcess, stack: contextlib.ExitStack) -> dict[str, object]:
    """A TIME request whose whole header is written in host order; what came back."""
    right = encode(TimeRequest(request_id=REQUEST_ID))
    fmt = "=" + HEADER.format.lstrip("!")
    frame = struct.pack(fmt, *HEADER.unpack(right[: HEADER.size])) + right[HEADER.size :]
    answers, closed = exchange(server, stack, frame, until_closed=True)
    errors = [e for e in answers if isinstance(e, ErrorResponse)]
    magic = struct.unpack("!H", frame[:2])[0]
    answer = f"ERROR {ErrorCode(errors[0].code).name}" if errors else "no answer"
    answer += ", connection closed" if closed else ", connection still open"
    return {
        "magic_bytes": hex_bytes(frame[:2]),
        "magic_read": f"0x{magic:04x} ({frame[:2].decode('latin-1')!r})",
        "error": ErrorCode(errors[0].code).name if errors else None,
        "answer": answer,
        "closed": closed,
    }


def exchange(
    server: ServerProcess, stack: contextlib.ExitStack, frame: bytes, *, until_closed: bool
) -> tuple[list[object], bool]:
    """Send ``frame`` after WELCOME on a new connection: the frames that came back (up to
    the first answer) and, when ``until_closed``, whether the server then closed the
    connection (within WAIT_S)."""
    sock = socket.create_connection((server.host, server.port), timeout=WAIT_S)
    stack.callback(close_with_reset, sock)
    decoder = FrameDecoder()
    events: list[object] = []
    sent = False
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        decoder.feed(data)
        while (event := decoder.next_event()) is not None:
            if isinstance(event, Welcome) and not sent:
                sock.sendall(frame)
                sent = True
            else:
                events.append(event)
        if events:
            break
    closed = False
    if not until_closed:
        return events, closed
    with contextlib.suppress(OSError):
        sock.settimeout(max(0.0, deadline - time.monotonic()))
        while data := sock.recv(65536):
            decoder.feed(data)
        closed = True
    return events, closed


def show_wire(nb: Notebook, segments: list[Segment], reached: dict[str, dict[str, object]],
              server_port: int) -> None:  # fmt: skip
    """The SYNs' destination ports and the decoded request ids, as the capture shows them."""
    syns = [s for s in segments if s.has("SYN") and not s.has("ACK")]
    nb.observe("syn_destination_ports", [s.dst_port for s in syns if s.dst_port != server_port])
    rows = [[s.number, f"{s.src_port} -> {s.dst_port}", s.flags, ""] for s in syns
            if s.dst_port != server_port]  # fmt: skip
    for s in segments:
        for frame in s.frames:
            if frame.title == "Indication WELCOME":
                continue  # every connection's first frame; not the point here
            notes = [
                line.split(": ", 1)[1]
                for line in frame.fields
                if line.startswith(("Expert Info", "Error message"))
            ]
            what = "; ".join([f"{frame.title}, request id {frame.request_id}", *notes])
            rows.append([s.number, f"{s.src_port} -> {s.dst_port}", s.flags, what])
    nb.table("on the wire (the capture, decoded with the dissector)",
             ["packet", "ports", "flags", "Switchboard"], rows)  # fmt: skip


EXPERIMENT: Final = Experiment(
    name="byteorder",
    question=(
        "A port written without htons(): where does the connection go, and what does the same "
        "mistake do to a protocol field?"
    ),
    add_arguments=add_arguments,
    run=run,
)
