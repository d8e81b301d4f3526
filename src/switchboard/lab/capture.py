"""Packet captures for the experiments: ``dumpcap`` on an interface, decoded by ``tshark``
with the project's dissector (tools/wireshark/switchboard.lua) into segments and frames.

``PacketCapture`` starts dumpcap with a BPF filter on the experiment's ports (and a probe
port of its own), and proves the capture is running, then complete, instead of hoping: its
``sync`` sends a unique UDP probe datagram through the captured interface until the probe is
in the file, and packets on one interface are written in order, so everything sent before the
probe is in the file too.  dumpcap is started and stopped by its pid (SIGINT, which makes it
finish the file; SIGKILL after a deadline) and never outlives the ``with`` block.

``read_segments`` runs tshark over the file (``-T pdml``: every field with the text Wireshark
shows for it) and returns one ``Segment`` per TCP packet with the Switchboard frames the
dissector found in it, so "several frames in one segment" reads as it does in Wireshark.

The module also holds the ``capture`` experiment (``switchboard lab capture``, at the end):
the menu's seven operations on the wire, annotated.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from switchboard.client import Client
from switchboard.protocol import Message

from .notebook import Experiment, LabUnavailable, MissingTool, Notebook, require_tool
from .server_process import ServerProcess, die_with_parent
from .sockets import retire_time_waits

#: The dissector, in the source tree beside the package (``pip install -e .``).
DISSECTOR = Path(__file__).resolve().parents[3] / "tools" / "wireshark" / "switchboard.lua"
#: Seconds dumpcap may take to show the probe (it writes its file about every 0.5 s).
SYNC_TIMEOUT_S = 10.0
#: Seconds dumpcap may take to finish its file after SIGINT, and tshark to decode one.
STOP_TIMEOUT_S = 5.0
DECODE_TIMEOUT_S = 60.0
#: Header fields every frame has: shown once in the frame's title, not again in its fields.
_HEADER_FIELDS = frozenset(
    {"switchboard.magic", "switchboard.version", "switchboard.class", "switchboard.type",
     "switchboard.length", "switchboard.frame_length"}
)  # fmt: skip


class CaptureError(LabUnavailable):
    """A capture could not be made or read; the message says why in one line."""


def capture_unavailable() -> LabUnavailable | None:
    """Why no capture can be decoded here (a tool missing, naming its Debian package; the
    dissector not beside the package), or None."""
    for program in ("dumpcap", "tshark"):
        if shutil.which(program) is None:
            return MissingTool(program, "tshark")
    if not DISSECTOR.is_file():
        return CaptureError(
            f"the Wireshark dissector is not at {DISSECTOR} (a source checkout has it)"
        )
    return None


def open_capture(
    nb: Notebook, ports: Sequence[int], *, required: bool, **options: str
) -> PacketCapture | None:
    """A started PacketCapture of ``ports`` written to ``--pcap`` when asked for (the caller
    closes it).  When a capture cannot be had here: the reason, raised if the experiment
    needs the capture or the user asked for the file, otherwise written as a step and None."""
    reason = capture_unavailable()
    capture = None
    if reason is None:
        capture = PacketCapture(ports, path=nb.pcap, **options)
        try:
            capture.start()
        except CaptureError as exc:
            capture.close()
            capture, reason = None, exc
        except BaseException:  # Ctrl-C while waiting for the probe: dumpcap must not stay
            capture.close()
            raise
    if reason is not None:
        if required or nb.pcap is not None:
            raise reason
        nb.step(f"no packet capture ({reason}): the counts below come from the kernel alone")
    return capture


@dataclass(frozen=True)
class DecodedFrame:
    """One Switchboard frame as the dissector shows it."""

    title: str  # "Request TIME", "Response OK (TIME)", ...
    request_id: int
    fields: tuple[str, ...]  # "Client id: 1", nested records indented by two spaces


@dataclass(frozen=True)
class Segment:
    """One captured TCP packet and the Switchboard frames that end in it."""

    number: int
    time: float  # seconds since the first packet of the capture
    epoch: float  # the kernel's timestamp (seconds since the Unix epoch, as time.time())
    src: str
    src_port: int
    dst: str
    dst_port: int
    flags: str  # "SYN, ACK", "PSH, ACK", ...
    payload: int  # TCP payload bytes
    frames: tuple[DecodedFrame, ...] = field(default=())
    info: str = ""  # the Info column: "Request TIME id=4 | Request TIME id=5 | ..."

    def has(self, flag: str) -> bool:
        return flag in self.flags.replace(" ", "").split(",")


class PacketCapture:
    """``dumpcap -i INTERFACE -f FILTER -w PATH`` for the length of a ``with`` block.

    ``ports``: the TCP ports to keep; ``probe_to``: where the sync probe is sent (an address
    reached through ``interface``; on ``lo`` a socket of our own receives it); ``namespace``:
    capture inside that network namespace; ``path``: the file (a temporary one by default,
    removed when the block ends; a path given is kept).  ``finish`` (inside the block) ends
    the capture and returns what it holds.
    """

    def __init__(
        self,
        ports: Sequence[int],
        *,
        interface: str = "lo",
        probe_to: str = "127.0.0.1",
        namespace: str | None = None,
        path: str | None = None,
    ) -> None:
        self.dumpcap = require_tool("dumpcap", "tshark")
        self._own_dir: str | None = None
        if path is None:
            self._own_dir = tempfile.mkdtemp(prefix="switchboard-lab-")
            path = os.path.join(self._own_dir, "capture.pcapng")
        self.path = Path(path)
        self.interface = interface
        self.namespace = namespace
        self._probe_tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._probe_rx: socket.socket | None = None
        if probe_to.startswith("127."):
            self._probe_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._probe_rx.bind((probe_to, 0))
            probe_port = self._probe_rx.getsockname()[1]
        else:
            probe_port = 9  # discard: nothing need listen, the datagram only has to pass
        self.probe_port = probe_port
        self._probe_addr = (probe_to, probe_port)
        tcp = " or ".join(f"tcp port {port}" for port in ports)
        self.filter = f"({tcp}) or udp port {probe_port}" if tcp else f"udp port {probe_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PacketCapture:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start dumpcap and return once the probe shows it is capturing."""
        argv = [self.dumpcap, "-q", "-i", self.interface, "-f", self.filter, "-w", str(self.path)]
        if self.namespace is not None:
            argv = ["ip", "netns", "exec", self.namespace, *argv]
        # stderr is read only once dumpcap has exited (with -q it says nothing meanwhile).
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        self.sync()

    def sync(self) -> None:
        """Return once everything sent through the interface so far is in the file."""
        assert self.proc is not None, "start() first"
        marker = b"switchboard-lab-probe-" + os.urandom(8).hex().encode()
        scanned = self.path.stat().st_size if self.path.exists() else 0
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None
                error = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise CaptureError(
                    f"dumpcap on {self.interface} stopped (exit {self.proc.returncode}): "
                    + (error[-1] if error else "no message")
                )
            try:
                self._probe_tx.sendto(marker, self._probe_addr)
            except OSError as exc:
                raise CaptureError(f"the capture probe could not be sent: {exc}") from exc
            if self._written_since(scanned, marker):
                return
            time.sleep(0.05)  # dumpcap's own flush cadence is ~0.5 s; the deadline bounds it
        raise CaptureError(f"dumpcap showed no probe packet within {SYNC_TIMEOUT_S:g}s")

    def _written_since(self, offset: int, marker: bytes) -> bool:
        """Whether ``marker`` is in the file past ``offset`` (what the sync started from:
        only the new part of a growing capture is read)."""
        try:
            with self.path.open("rb") as capture:
                capture.seek(offset)
                return marker in capture.read()
        except FileNotFoundError:
            return False  # dumpcap has not created it yet

    def stop(self) -> None:
        """Stop dumpcap by its pid (the file is complete as of the last ``sync``)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # dumpcap finishes the file on SIGINT
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        self._probe_tx.close()
        if self._probe_rx is not None:
            self._probe_rx.close()

    def close(self) -> None:
        """Stop, and delete the file unless the caller named it."""
        self.stop()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def finish(self) -> list[Segment]:
        """Wait until everything sent so far is captured, stop, and decode the file: the TCP
        packets (the probes left out)."""
        self.sync()
        self.stop()
        return read_segments(self.path)


def read_segments(path: Path | str) -> list[Segment]:
    """Every TCP packet of the capture file ``path``, with the Switchboard frames in it and
    the Info column of Wireshark's packet list."""
    details = _tshark(path, "-T", "pdml")
    columns = _tshark(path, "-T", "fields", "-e", "frame.number", "-e", "_ws.col.Info")
    info = {}
    for line in columns.decode(errors="replace").splitlines():
        number, _, text = line.partition("\t")
        if number.isdigit():
            info[int(number)] = text
    return [
        dataclasses.replace(segment, info=info.get(segment.number, ""))
        for segment in parse_pdml(details)
    ]


def _tshark(path: Path | str, *output: str) -> bytes:
    """tshark's reading of the TCP packets of ``path`` with the dissector, in ``output``."""
    tshark = require_tool("tshark", "tshark")
    argv = [tshark, "-r", str(path), "-X", f"lua_script:{DISSECTOR}", "-Y", "tcp", *output]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=DECODE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CaptureError(f"tshark took over {DECODE_TIMEOUT_S:g}s to read {path}") from exc
    errors = done.stderr.decode(errors="replace")
    if done.returncode != 0 or "Lua Error" in errors + done.stdout.decode(errors="replace"):
        lines = errors.strip().splitlines()
        raise CaptureError(f"tshark could not read {path}: {lines[-1] if lines else '?'}")
    return done.stdout


def parse_pdml(document: bytes) -> list[Segment]:
    """Segments from tshark's PDML (the packet details, as Wireshark shows them)."""
    segments = []
    for packet in ET.fromstring(document).iter("packet"):
        protos = {proto.get("name"): proto for proto in packet.findall("proto")}
        tcp = protos.get("tcp")
        ip = protos.get("ip") or protos.get("ipv6")
        if tcp is None or ip is None:
            continue
        values = {
            node.get("name", ""): node
            for proto in (protos["frame"], ip, tcp)
            for node in proto.iter("field")
        }

        def show(name: str, nodes: dict[str, ET.Element] = values) -> str:
            node = nodes.get(name)
            return "" if node is None else node.get("show", "")

        prefix = "ipv6" if ip.get("name") == "ipv6" else "ip"
        flags_text = (values.get("tcp.flags") or ET.Element("x")).get("showname", "")
        flags = (
            flags_text[flags_text.find("(") + 1 : flags_text.rfind(")")]
            if "(" in flags_text
            else ""
        )
        frames = tuple(
            _decoded_frame(proto)
            for proto in packet.findall("proto")
            if proto.get("name") == "switchboard"
        )
        segments.append(
            Segment(
                number=int(show("frame.number")),
                time=float(show("frame.time_relative") or 0),
                epoch=float(show("frame.time_epoch") or 0),
                src=show(f"{prefix}.src"),
                src_port=int(show("tcp.srcport")),
                dst=show(f"{prefix}.dst"),
                dst_port=int(show("tcp.dstport")),
                flags=flags,
                payload=int(show("tcp.len") or 0),
                frames=frames,
            )
        )
    return segments


def _decoded_frame(proto: ET.Element) -> DecodedFrame:
    title = proto.get("showname", "")
    title = title.split(", ", 1)[1] if ", " in title else title
    request_id = 0
    lines: list[str] = []

    def walk(node: ET.Element, depth: int) -> None:
        nonlocal request_id
        for child in node.findall("field"):
            name = child.get("name", "")
            if name == "switchboard.request_id":
                request_id = int(child.get("show", "0"))
            if name in _HEADER_FIELDS or name in (
                "switchboard.string_length",
                "switchboard.request_id",
            ):
                continue
            text = child.get("showname") or child.get("show") or ""
            if text:
                lines.append("  " * depth + text)
            # Record trees (a LIST's clients) show their fields; a value's own sub-fields
            # (an address's family, a time's second rendering) add nothing to its line.
            if child.get("show") in (None, "") or name in (
                "switchboard.client",
                "switchboard.room_info",
            ):
                walk(child, depth + 1)

    walk(proto, 0)
    return DecodedFrame(title, request_id, tuple(lines))


# --- the `capture` experiment ----------------------------------------------------------------

#: The menu client's operations, in the lab's order, each with what it does on the wire.
OPERATIONS: Final = (
    ("connect", "TCP handshake, then the server's WELCOME (client B connects too)"),
    ("time", "TIME request, OK (TIME) response"),
    ("name", "NAME request, OK (NAME) response"),
    ("list", "LIST request, OK (LIST) response with one record per client"),
    ("send", "SEND to client B: OK (SEND), B gets MESSAGE and acknowledges it, A gets RECEIPT"),
    ("receive", "client B sends to A: A gets MESSAGE and acknowledges it"),
    ("disconnect", "A closes: FIN and ACK both ways"),
)
#: Seconds any one operation may take.
OPERATION_TIMEOUT_S: Final = 5.0


def _capture_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--text",
        default="hello",
        help="the message A sends to B, and B answers with reversed (default 'hello')",
    )


def _run_capture(args: argparse.Namespace, nb: Notebook) -> None:
    marks: list[tuple[str, float]] = []  # (operation, time.time() when it was on the wire)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ServerProcess())
        capture = open_capture(nb, [server.port], required=True)
        assert capture is not None
        stack.callback(capture.close)
        nb.step(f"switchboard serve on {server.host}:{server.port}; capturing: {capture.filter}")

        def done(operation: str, what: str) -> None:
            capture.sync()  # every packet of the operation is in the file, and timestamped
            marks.append((operation, time.time()))
            nb.step(f"{operation}: {what}")

        a = Client(server.host, server.port, timeout=OPERATION_TIMEOUT_S)
        stack.callback(a.close)
        b = Client(server.host, server.port, timeout=OPERATION_TIMEOUT_S)
        stack.callback(b.close)
        done("connect", f"client A is #{a.client_id}, client B is #{b.client_id}")
        now = a.time()
        done("time", f"{now.epoch_ms} ms since the epoch, zone {now.zone}")
        done("name", f"{a.name()!r}")
        listed = a.list_clients()
        done("list", ", ".join(f"#{c.client_id} {c.ip}:{c.port}" for c in listed))
        labels = {a.client_id: "A", b.client_id: "B"}
        parties = {c.port: labels[c.client_id] for c in listed if c.client_id in labels}
        sent = a.send(b.client_id, args.text)
        got = next_message(b)
        status = a.wait_receipt(sent.message_id, OPERATION_TIMEOUT_S)
        done("send", f"B got {got.text!r}; A's receipt: {status.name}")
        b.send(a.client_id, args.text[::-1])
        done("receive", f"A got {next_message(a).text!r}")
        a.close()
        done("disconnect", "A closed its connection")
        segments = capture.finish()
        b.close()
        server.stop()
        # A closed first, so A's end waits in TIME_WAIT for a minute: ended now instead.
        retire_time_waits([((c.ip, c.port), (server.host, server.port)) for c in listed])
    nb.observe("server", {"port": server.port, "pid": server.pid})
    annotate(nb, segments, marks, parties, server.port)


def next_message(client: Client) -> Message:
    """The next MESSAGE indication ``client`` receives (RECEIPTs passed over)."""
    deadline = time.monotonic() + OPERATION_TIMEOUT_S
    while (remaining := deadline - time.monotonic()) > 0:
        event = client.next_indication(remaining)
        if isinstance(event, Message):
            return event
    raise CaptureError(f"no MESSAGE arrived within {OPERATION_TIMEOUT_S:g}s")


def annotate(
    nb: Notebook,
    segments: Sequence[Segment],
    marks: Sequence[tuple[str, float]],
    parties: dict[int, str],
    server_port: int,
) -> None:
    """The capture, operation by operation: each packet and the frames the dissector found."""

    def who(port: int) -> str:
        return "server" if port == server_port else f"client {parties.get(port, port)}"

    operations: list[dict[str, object]] = []
    start = 0.0
    for operation, until in marks:
        packets = [s for s in segments if start < s.epoch <= until]
        start = until
        rows = []
        frames: list[dict[str, object]] = []
        for s in packets:
            route = f"{who(s.src_port)} -> {who(s.dst_port)}"
            if not s.frames:
                rows.append([s.number, route, s.flags, f"{s.payload} bytes", ""])
            for frame in s.frames:
                # A record's own fields (indented) stay in --json; its one-line title says it.
                top = [line for line in frame.fields if not line.startswith(" ")]
                rows.append([s.number, route, s.flags, frame.title, "; ".join(top)])
                frames.append(
                    {"packet": s.number, "from": who(s.src_port), "to": who(s.dst_port),
                     "message": frame.title, "request_id": frame.request_id,
                     "fields": list(frame.fields)}
                )  # fmt: skip
        nb.table(
            f"{operation}: {dict(OPERATIONS)[operation]}",
            ["packet", "from -> to", "TCP flags", "Switchboard frame", "fields"],
            rows,
        )
        operations.append(
            {"operation": operation, "packets": len(packets),
             "flags": [s.flags for s in packets], "frames": frames}
        )  # fmt: skip
    nb.observe("operations", operations)
    nb.explain(
        "Each menu operation is one request and its response, matched by the request id the "
        "client chose; the server also speaks unasked (indications: WELCOME on connect, "
        "MESSAGE to the recipient, RECEIPT to the sender once the recipient acknowledged it), "
        "with request id 0 or the message's own id.  The recipient, a client of the library, "
        "acknowledges with ACKS (every MESSAGE of one read in one frame), as protocol version "
        "2 allows once WELCOME says the server speaks it; a client on version 1 sends one ACK "
        "per MESSAGE.  Every frame starts with the same 14-byte "
        "header (magic 'SB', version, class, type, request id, payload length), which is how "
        "the dissector finds frames in the TCP byte stream however the segments cut it.  "
        "Connect and disconnect are TCP's own: SYN, SYN-ACK, ACK before WELCOME, and a FIN "
        "from each side after the last frame.  Open the file kept with --pcap in Wireshark "
        "with tools/wireshark/switchboard.lua to see the same trees."
    )


EXPERIMENT: Final = Experiment(
    name="capture",
    question=(
        "What does each of the menu's seven operations put on the wire, frame by frame, as "
        "Wireshark shows it?"
    ),
    add_arguments=_capture_arguments,
    run=_run_capture,
)
