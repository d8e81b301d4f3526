"""The Wireshark dissector (tools/wireshark/switchboard.lua) on real captures.

Each test captures a session on loopback with ``dumpcap`` (only the test's own ports), runs
``tshark`` with the dissector over the file, and checks that every frame the peers exchanged
decodes with the values they sent and received: the header, every payload field, the Info
column, a frame split across two TCP segments, frames coalesced into one segment, and expert
info on malformed input.  Needs tshark and dumpcap, and the right to capture (root or
dumpcap's capabilities); skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.peers import RawPeer
from support.services import LoopThread, UdpChatFactory
from switchboard.client import Client
from switchboard.protocol import (
    HEADER_SIZE,
    Ack,
    Acks,
    BroadcastRequest,
    ClientInfo,
    ErrorCode,
    ErrorResponse,
    Event,
    Frame,
    HelloRequest,
    HistoryMode,
    HistoryOk,
    HistoryRequest,
    Joined,
    JoinRequest,
    LeaveRequest,
    Left,
    ListOk,
    ListRequest,
    Message,
    NameRequest,
    NickChanged,
    NickRequest,
    Ping,
    PingRequest,
    Pong,
    Receipt,
    Receipts,
    RoomInfo,
    RoomsOk,
    RoomsRequest,
    SendNickOk,
    SendNickRequest,
    SendRequest,
    Shutdown,
    TimeRequest,
    Welcome,
    encode,
)
from switchboard.protocol.messages import (
    ALL_MESSAGES,
    BroadcastOk,
    HelloOk,
    JoinOk,
    LeaveOk,
    NameOk,
    NickOk,
    PingOk,
    SendOk,
    TimeOk,
)
from switchboard.services.udpchat import codec as udp

REPO = Path(__file__).resolve().parents[2]
LUA = REPO / "tools" / "wireshark" / "switchboard.lua"
#: Deadline for anything the test waits on.
WAIT_S = 10.0
#: The expert-info group of malformed packets (PI_MALFORMED), as tshark prints it.
PI_MALFORMED = "117440512"


# --- capturing ---------------------------------------------------------------------------------


def capture_tools() -> tuple[str, str]:
    tshark, dumpcap = shutil.which("tshark"), shutil.which("dumpcap")
    if tshark is None or dumpcap is None:
        pytest.skip("tshark/dumpcap not installed (Debian: tshark; make test as root installs it)")
    return tshark, dumpcap


class Capture:
    """``dumpcap`` on ``lo`` writing ``path``, limited to ``ports_filter`` and its probe port.

    Readiness and completeness are proven, not hoped for: ``sync`` sends a unique probe
    datagram to a port of our own until the probe shows up in the file.  Packets on one
    interface are written in order, so everything sent before the probe is in the file too.
    """

    def __init__(self, dumpcap: str, path: Path, ports_filter: str) -> None:
        self.path = path
        self._probe_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._probe_rx.bind(("127.0.0.1", 0))
        self._probe_tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe_port = self._probe_rx.getsockname()[1]
        self._probe_addr = ("127.0.0.1", probe_port)
        capture_filter = f"({ports_filter}) or udp port {probe_port}"
        self.proc = subprocess.Popen(
            [dumpcap, "-q", "-i", "lo", "-f", capture_filter, "-w", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def sync(self) -> None:
        """Return once everything sent so far is in the file (dumpcap flushes every ~0.5 s)."""
        marker = b"switchboard-capture-probe-" + os.urandom(8).hex().encode()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                error = self.proc.stderr.read() if self.proc.stderr else ""
                if "ermission" in error or "not permitted" in error:
                    pytest.skip(f"capturing on lo is not permitted here: {error.strip()}")
                raise AssertionError(f"dumpcap exited with {self.proc.returncode}: {error}")
            self._probe_tx.sendto(marker, self._probe_addr)
            if self.path.exists() and marker in self.path.read_bytes():
                return
            time.sleep(0.05)  # the poll cadence; the deadline bounds the loop
        raise AssertionError(f"the capture did not show a probe within {WAIT_S}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # dumpcap finishes the file on SIGINT
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT_S)
        self._probe_rx.close()
        self._probe_tx.close()


@contextlib.contextmanager
def start_capture(tmp_path: Path, ports_filter: str) -> Iterator[Capture]:
    _, dumpcap = capture_tools()
    capture = Capture(dumpcap, tmp_path / "session.pcapng", ports_filter)
    try:
        capture.sync()
        yield capture
    finally:
        capture.stop()


# --- running tshark ----------------------------------------------------------------------------


def keep_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: tshark repeats a key for each tree of one protocol in a packet."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            if not isinstance(out[key], list) or not out.get(f"{key}#list"):
                out[key] = [out[key]]
                out[f"{key}#list"] = True
            out[key].append(value)
        else:
            out[key] = value
    return out


def trees(layers: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The (possibly repeated) subtrees named ``key``, in order."""
    value = layers.get(key)
    if value is None:
        return []
    return list(value) if layers.get(f"{key}#list") else [value]


def tshark(pcap: Path, *args: str) -> str:
    tshark_bin, _ = capture_tools()
    result = subprocess.run(
        [tshark_bin, "-r", str(pcap), "-X", f"lua_script:{LUA}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # A Lua error in the dissector is printed, not fatal: refuse it.
    assert "Lua Error" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result.stdout


@dataclasses.dataclass
class Packet:
    number: int
    layers: dict[str, Any]
    info: str
    expert_groups: list[str]
    expert_messages: list[str]


def dissect(pcap: Path, *extra: str) -> list[Packet]:
    """Every packet of ``pcap``: its JSON layers, Info column and expert info."""
    decoded = json.loads(tshark(pcap, *extra, "-T", "json"), object_pairs_hook=keep_duplicates)
    columns = tshark(
        pcap, *extra, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
        "-E", "aggregator=\x1f",
        "-e", "frame.number", "-e", "_ws.col.Info", "-e", "_ws.expert.group",
        "-e", "_ws.expert.message",
    )  # fmt: skip
    rows = {}
    for line in columns.splitlines():
        cells = [*line.split("\t"), "", "", ""]
        rows[int(cells[0])] = (cells[1], cells[2], cells[3])
    packets = []
    for entry in decoded:
        layers = entry["_source"]["layers"]
        number = int(layers["frame"]["frame.number"])
        info, groups, messages = rows[number]
        packets.append(
            Packet(
                number,
                layers,
                info,
                [g for g in groups.split("\x1f") if g],
                [m for m in messages.split("\x1f") if m],
            )
        )
    return packets


# --- what a frame should look like in tshark's JSON --------------------------------------------

#: Python field name -> display-filter field, where the Lua uses another name than Python's.
RENAMED = {"version": "proto_version", "clients": "clients.count"}
RENAMED_BY_CLASS = {
    "ErrorResponse": {"code": "error_code", "name": "error_name", "message": "error_message"},
    "NameOk": {"name": "server_name"},
    "Left": {"reason": "left_reason"},
    "Shutdown": {"reason": "shutdown_reason"},
    "RoomsOk": {"total": "rooms.total", "more": "rooms.more", "rooms": "rooms.count"},
    "HistoryRequest": {
        "mode": "history.mode",
        "anchor": "history.anchor",
        "until": "history.until",
        "limit": "history.limit",
    },
    "HistoryOk": {"epoch": "history.epoch", "more": "history.more", "count": "history.count"},
}
#: Record list fields: the tree each record is shown in, and its fields as tshark shows them.
RECORD_TREES = {"clients": "switchboard.client", "rooms": "switchboard.room_info"}
#: The expected-fields key of an id list's ids (shown under its count: ``ids_of``).
ID_LIST = "message ids"


def ids_of(tree: dict[str, Any]) -> list[str]:
    """The message ids listed under an ACKS' or RECEIPTS' count, in order."""
    under = tree.get("switchboard.message_ids.count_tree", {})
    found = under.get("switchboard.message_id", [])
    return list(found) if isinstance(found, list) else [found]


def expected_fields(frame: Frame) -> dict[str, Any]:
    cls = type(frame)
    wire = encode(frame)
    out: dict[str, Any] = {
        "switchboard.magic": "0x5342",
        "switchboard.version": "1",
        "switchboard.class": str(int(cls.MESSAGE_CLASS)),
        "switchboard.type": f"0x{int(cls.MESSAGE_TYPE):04x}",
        "switchboard.request_id": str(frame.request_id),
        "switchboard.length": str(len(wire) - HEADER_SIZE),
    }
    if cls.ANSWERS is not None:
        out["switchboard.answers"] = f"0x{int(cls.ANSWERS):04x}"
    renamed = {**RENAMED, **RENAMED_BY_CLASS.get(cls.__name__, {})}
    for f in dataclasses.fields(frame):
        if f.name == "request_id":
            continue
        value = getattr(frame, f.name)
        key = "switchboard." + renamed.get(f.name, f.name)
        if f.name in RECORD_TREES:
            out[key] = str(len(value))
            out[RECORD_TREES[f.name]] = [record_fields(info) for info in value]
        elif f.name == "message_ids":  # ACKS, RECEIPTS: a count, the ids under it
            out["switchboard.message_ids.count"] = str(len(value))
            out[ID_LIST] = [str(message_id) for message_id in value]
        elif f.name == "flags":
            out[key] = f"0x{value:02x}"
        else:
            out[key] = str(value)
    return out


def record_fields(info: ClientInfo | RoomInfo) -> dict[str, str]:
    if isinstance(info, RoomInfo):
        return {
            "switchboard.room_info.name": info.name,
            "switchboard.room_info.members": str(info.members),
            "switchboard.room_info.flags": f"0x{info.flags:02x}",
        }
    return {
        "switchboard.client.id": str(info.client_id),
        "switchboard.client.ip": info.ip,
        "switchboard.client.port": str(info.port),
        "switchboard.client.nick": info.nick,
        "switchboard.client.connected_ms": str(info.connected_ms),
    }


def matches(tree: dict[str, Any], expected: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The expected fields ``tree`` gets wrong: name -> (expected, decoded)."""
    wrong = {}
    for key, want in expected.items():
        got = ids_of(tree) if key == ID_LIST else tree.get(key)
        if key in RECORD_TREES.values():
            got = trees(tree, key)
            got = (
                [{k: v for k, v in record.items() if k in want[0]} for record in got]
                if want
                else got
            )
        if got != want:
            wrong[key] = (want, got)
    return wrong


# --- a raw TCP connection that records everything --------------------------------------------


class RawConnection(RawPeer):
    """A RawPeer that records every frame sent and received, and answers a heartbeat PING
    with PONG whenever it reads one.

    TCP_NODELAY makes each ``sendall`` leave at once as its own segment.
    """

    def __init__(self, port: int) -> None:
        self.sent: list[Frame] = []
        self.received: list[Frame] = []
        self.pings = 0
        super().__init__(port, welcome=False, timeout=WAIT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self.sock.getsockname()[1]

    def send(self, *items: Frame | bytes) -> None:
        super().send(*items)
        self.sent.extend(item for item in items if isinstance(item, Frame))

    def next(self, timeout: float = WAIT_S) -> Event | None:
        event = super().next(timeout)
        if event is not None:
            assert isinstance(event, Frame), event
            self.received.append(event)
            if isinstance(event, Ping):
                self.pings += 1
                self.send(Pong())
        return event

    def silent(self, seconds: float) -> bool:
        """Whether nothing arrives for ``seconds`` (the server waits for the rest of a frame)."""
        readable, _, _ = select.select([self.sock], [], [], seconds)
        return not readable and not self.events and self.decoder.buffered == 0


def frames_by_stream(packets: list[Packet], server_port: int) -> dict[tuple[int, str], list[Any]]:
    """Decoded Switchboard trees per (client port, "sent"/"received"), in capture order."""
    out: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for packet in packets:
        tcp = packet.layers.get("tcp")
        if not isinstance(tcp, dict):
            continue
        src, dst = int(tcp["tcp.srcport"]), int(tcp["tcp.dstport"])
        for tree in trees(packet.layers, "switchboard"):
            if dst == server_port:
                out[(src, "sent")].append(tree)
            else:
                out[(dst, "received")].append(tree)
    return out


def assert_stream_decodes(decoded: list[Any], frames: list[Frame], what: str) -> None:
    assert len(decoded) == len(frames), (
        f"{what}: {len(frames)} frames on the wire, {len(decoded)} decoded: "
        f"{[type(f).__name__ for f in frames]}"
    )
    for index, (tree, frame) in enumerate(zip(decoded, frames, strict=True)):
        wrong = matches(tree, expected_fields(frame))
        assert not wrong, f"{what} frame {index} ({frame!r}) decoded wrongly: {wrong}"
        assert "_ws.expert" not in json.dumps(tree), f"{what} frame {index} has expert info"


def find(packets: list[Packet], text: str) -> Packet:
    hits = [p for p in packets if text in p.info]
    assert len(hits) == 1, f"{len(hits)} packets show {text!r}: {[p.info for p in packets]}"
    return hits[0]


# --- TCP ---------------------------------------------------------------------------------------

SPLIT_TEXT = "你好 👋 split across two segments"


def test_tcp_session_decodes_every_message_type(server_factory: Any, tmp_path: Path) -> None:
    capture_tools()
    # A one-second heartbeat so that a silent connection sees PING within the test.
    server = server_factory(name="dissector-test", heartbeat=1.0)
    port = server.port
    connections: list[RawConnection] = []

    def connect() -> RawConnection:
        conn = RawConnection(port)
        connections.append(conn)
        return conn

    with start_capture(tmp_path, f"tcp port {port}") as capture:  # stops dumpcap on exit
        try:
            idle = connect()  # says nothing until the heartbeat PINGs it
            idle.expect(Welcome)
            alice, bob = connect(), connect()
            a_id = alice.expect(Welcome).client_id
            b_id = bob.expect(Welcome).client_id

            # Four requests in one send: one segment, four frames.
            alice.send(  # version 1: her receipts come one RECEIPT per message
                HelloRequest(version=1, nick="alice", request_id=1),
                TimeRequest(request_id=2),
                NameRequest(request_id=3),
                PingRequest(request_id=4),
            )
            for cls in (HelloOk, TimeOk, NameOk, PingOk):
                alice.expect(cls)
            bob.send(HelloRequest(nick="鲍勃", request_id=1))
            bob.expect(HelloOk)
            alice.send(ListRequest(request_id=5))
            listed = alice.expect(ListOk)
            assert [c.client_id for c in listed.clients] == [idle_id(idle), a_id, b_id]

            # One SEND written in two segments; the second also carries a whole TIME request.
            split = encode(SendRequest(b_id, SPLIT_TEXT, request_id=6))
            cut = HEADER_SIZE + 4 + 4 + 3  # inside the text, inside 你
            alice.sock.sendall(split[:cut])
            capture.sync()  # the first part is on the wire, as a segment of its own
            assert alice.silent(0.1), "the server answered half a frame"
            alice.sock.sendall(split[cut:] + encode(TimeRequest(request_id=7)))
            alice.sent.extend(
                [SendRequest(b_id, SPLIT_TEXT, request_id=6), TimeRequest(request_id=7)]
            )
            sent_ok = alice.expect(SendOk)
            alice.expect(TimeOk)
            message = bob.expect(Message)
            assert (message.text, message.sender_id) == (SPLIT_TEXT, a_id)
            bob.send(Ack(message.message_id))
            assert alice.expect(Receipt).message_id == sent_ok.message_id

            alice.send(SendRequest(999, "anyone?", request_id=8))
            assert alice.expect(ErrorResponse).code == ErrorCode.NO_SUCH_CLIENT

            alice.send(JoinRequest("lobby", request_id=9))
            alice.expect(JoinOk)
            bob.send(JoinRequest("lobby", request_id=2))
            bob.expect(JoinOk)
            alice.expect(Joined)
            bob.send(BroadcastRequest("lobby", "hi room 🎉", request_id=3))
            bob.expect(BroadcastOk)
            assert alice.expect(Message).room == "lobby"
            alice.send(NickRequest("alice2", request_id=10))
            alice.expect(NickOk)
            assert bob.expect(NickChanged) == NickChanged(a_id, "alice", "alice2")
            alice.send(LeaveRequest("lobby", request_id=11))
            alice.expect(LeaveOk)
            assert bob.expect(Left).nick == "alice2"
            bob.send(RoomsRequest(request_id=4))
            assert bob.expect(RoomsOk).rooms == (RoomInfo("lobby", 1, 1),)
            bob.send(HistoryRequest("lobby", HistoryMode.AFTER, 0, 0, 10, request_id=5))
            assert bob.expect(HistoryOk).count == 1
            assert bob.expect(Message).text == "hi room 🎉"
            alice.send(SendNickRequest("鲍勃", "by name", request_id=12))
            assert alice.expect(SendNickOk).target == b_id
            by_name = bob.expect(Message)
            bob.send(Ack(by_name.message_id))
            alice.expect(Receipt)
            # Version 2 (bob's HELLO): alice acknowledges two MESSAGEs with one ACKS and bob
            # hears of both in one RECEIPTS.
            bob.send(SendRequest(a_id, "one", request_id=5), SendRequest(a_id, "two", request_id=6))
            bob.expect(SendOk)
            bob.expect(SendOk)
            first, second = alice.expect(Message), alice.expect(Message)
            alice.send(Acks((first.message_id, second.message_id)))
            assert bob.expect(Receipts).message_ids == (first.message_id, second.message_id)

            # The client library, on a connection of its own.
            with Client("127.0.0.1", port, nick="carol", timeout=WAIT_S) as carol:
                library_time = carol.time()
                assert carol.name() == "dissector-test"

            # Malformed input on another connection: unknown type, truncated text, bad magic.
            bad = connect()
            bad.expect(Welcome)
            bad.sock.sendall(b"SB\x01\x01\x00\x3e" + (1).to_bytes(4, "big") + bytes(4))
            assert bad.expect(ErrorResponse).code == ErrorCode.UNKNOWN_TYPE
            truncated = SendRequest(a_id, "abc", request_id=2)
            wire = bytearray(encode(truncated))
            wire[HEADER_SIZE + 4 : HEADER_SIZE + 8] = (100).to_bytes(4, "big")  # text: 100 bytes?
            bad.sock.sendall(bytes(wire))
            assert bad.expect(ErrorResponse).code == ErrorCode.BAD_PAYLOAD
            bad.sock.sendall(b"XX\x01\x01\x00\x02" + (3).to_bytes(4, "big") + bytes(4))
            assert bad.expect(ErrorResponse).code == ErrorCode.BAD_FRAME
            assert bad.expect_closed(WAIT_S) == []

            # The idle connection's heartbeat: PING within two intervals, answered with PONG.
            if idle.pings == 0:
                idle.expect(Ping, skip_pings=False)
            server.stop()  # SHUTDOWN to everyone still connected
            for conn in (idle, alice, bob):
                conn.expect_closed(WAIT_S)
                assert isinstance(conn.received[-1], Shutdown)
            capture.sync()
        finally:
            for conn in connections:
                conn.close()

    packets = dissect(capture.path)
    streams = frames_by_stream(packets, port)

    # Every frame of the well-behaved connections, both ways, field by field.
    for name, conn in (("idle", idle), ("alice", alice), ("bob", bob)):
        assert_stream_decodes(streams[(conn.port, "sent")], conn.sent, f"{name} sent")
        assert_stream_decodes(streams[(conn.port, "received")], conn.received, f"{name} received")
    seen = {
        tuple(tree.get(f"switchboard.{key}") for key in ("class", "type", "answers"))
        for frames in streams.values()
        for tree in frames
    }
    for message_cls in ALL_MESSAGES:
        answers = message_cls.ANSWERS
        key = (
            str(int(message_cls.MESSAGE_CLASS)),
            f"0x{int(message_cls.MESSAGE_TYPE):04x}",
            f"0x{int(answers):04x}" if answers is not None else None,
        )
        assert key in seen, f"no {message_cls.__name__} in the capture"

    # The library's TIME answer as the dissector read it.
    carol_time = [t for (p, d), frames in streams.items() if d == "received" for t in frames
                  if t.get("switchboard.answers") == "0x0002"
                  and t["switchboard.epoch_ms"] == str(library_time.epoch_ms)]  # fmt: skip
    assert len(carol_time) == 1

    # The Info column.
    coalesced = find(packets, 'Request HELLO id=1 nick="alice"')
    assert coalesced.info == (
        'Request HELLO id=1 nick="alice" | Request TIME id=2 | Request NAME id=3 '
        "| Request PING_REQUEST id=4"
    )
    assert len(trees(coalesced.layers, "switchboard")) == 4
    assert any("Response OK id=2 (TIME)" in p.info for p in packets)
    find(packets, "Response ERROR id=8 NO_SUCH_CLIENT")
    find(packets, f'Indication MESSAGE #{a_id}→#{b_id} "{SPLIT_TEXT}"')
    find(packets, f'Indication MESSAGE #{b_id}→#{a_id} in "lobby" "hi room 🎉"')
    find(packets, 'Request SEND id=8 →#999 "anyone?"')
    find(packets, f'Indication LEFT "lobby" #{a_id} "alice2" LEFT')
    find(packets, 'Request SEND_NICK id=12 →"鲍勃" "by name"')
    find(packets, f'Indication NICK_CHANGED #{a_id} "alice"→"alice2"')
    find(packets, "Request ROOMS id=4")
    find(packets, 'Request HISTORY id=5 "lobby" AFTER')

    # The split frame: reassembled in the packet of its second segment, next to the TIME.
    second = find(packets, f'Request SEND id=6 →#{b_id} "{SPLIT_TEXT}"')
    assert second.info == f'Request SEND id=6 →#{b_id} "{SPLIT_TEXT}" | Request TIME id=7'
    segments = second.layers["tcp.segments"]
    assert segments["tcp.segment.count"] == "2"
    assert int(segments["tcp.reassembled.length"]) == len(split)
    first_number, second_number = (int(str(n)) for n in trees(segments, "tcp.segment"))
    assert second_number == second.number
    first = next(p for p in packets if p.number == first_number)
    assert int(first.layers["tcp"]["tcp.len"]) == cut
    assert "switchboard" not in first.layers  # nothing to show until the rest arrives
    message_tree = next(t for t in streams[(bob.port, "received")]
                        if t["switchboard.type"] == "0x0081")  # fmt: skip
    assert message_tree["switchboard.recipient_id"] == str(b_id)

    # Malformed frames carry expert info, and only they are marked malformed.
    bad_sent = [p for p in packets if trees(p.layers, "switchboard")
                and int(p.layers["tcp"]["tcp.srcport"]) == bad.port]  # fmt: skip
    assert [p.expert_messages for p in bad_sent] == [
        ["No message of type 0x003e in class Request"],
        ["Payload ends inside the text field: 100 bytes announced, 3 left"],
        ["magic 0x5858, not 0x5342"],
    ]
    assert [p.info for p in bad_sent] == [
        "Request 0x003e id=1 [unknown type]",
        f"Request SEND id=2 →#{a_id} [malformed]",
        "Bad frame: magic 0x5858, not 0x5342",
    ]
    malformed = {p.number for p in packets if PI_MALFORMED in p.expert_groups}
    assert malformed == {p.number for p in bad_sent}
    error_codes = [t["switchboard.error_code"] for t in streams[(bad.port, "received")]
               if t["switchboard.type"] == "0x0041"]  # fmt: skip
    codes = (ErrorCode.UNKNOWN_TYPE, ErrorCode.BAD_PAYLOAD, ErrorCode.BAD_FRAME)
    assert error_codes == [str(int(code)) for code in codes]

    # Without the heuristic, the port table ("Decode As") gives the same result.
    by_port = dissect(
        capture.path,
        "--disable-heuristic",
        "switchboard_tcp",
        "-d",
        f"tcp.port=={port},switchboard",
    )
    assert [p.info for p in by_port] == [p.info for p in packets]


def idle_id(conn: RawConnection) -> int:
    welcome = conn.received[0]
    assert isinstance(welcome, Welcome)
    return welcome.client_id


# --- UDP ---------------------------------------------------------------------------------------


class RawDatagrams:
    """A UDP socket speaking chat datagrams, recording what it sends and receives."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(WAIT_S)
        self.sock.connect(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.sent: list[udp.Datagram] = []
        self.received: list[udp.Datagram] = []

    def send(self, datagram: udp.Datagram) -> None:
        self.sock.send(udp.encode(datagram))
        self.sent.append(datagram)

    def recv(self) -> udp.Datagram:
        datagram = udp.decode(self.sock.recv(2048))
        self.received.append(datagram)
        return datagram

    def close(self) -> None:
        self.sock.close()


def expected_datagram(datagram: udp.Datagram) -> dict[str, str]:
    name = type(datagram).__name__.upper()
    out = {
        "switchboard_udpchat.magic": "0x5355",
        "switchboard_udpchat.version": "1",
        "switchboard_udpchat.type": f"0x{int(udp.DatagramType[name]):02x}",
        "switchboard_udpchat.seq": str(datagram.seq),
    }
    for field in dataclasses.fields(datagram):
        value = getattr(datagram, field.name)
        key = {
            "nick": "nick", "text": "text", "members": "members", "expiry_ms": "expiry_ms",
            "code": "error_code",
            "reason": "reason" if isinstance(datagram, udp.Error) else "left_reason",
            "timestamp_ms": "timestamp_ms",
            "token": "token" if isinstance(datagram, udp.Welcome) else "session",
        }.get(field.name)  # fmt: skip
        if key is None:
            continue
        if isinstance(value, bytes):
            out[f"switchboard_udpchat.{key}"] = value.hex(":")
        elif field.name == "nick" and not value and isinstance(datagram, udp.Error):
            out[f"switchboard_udpchat.{key}"] = ""
        else:
            out[f"switchboard_udpchat.{key}"] = str(value)
    if isinstance(datagram, udp.Join):  # zero bytes up to JOIN_SIZE
        padding = udp.JOIN_SIZE - udp.HEADER_SIZE - len(datagram.nick.encode())
        out["switchboard_udpchat.padding"] = bytes(padding).hex(":")
    return out


def test_udp_chat_session_decodes(
    udpchat_server: UdpChatFactory, loop_thread: LoopThread, tmp_path: Path
) -> None:
    capture_tools()
    server = udpchat_server()
    with start_capture(tmp_path, f"udp port {server.port}") as capture:
        alice, bob, carol = (RawDatagrams(server.port) for _ in range(3))
        try:
            alice.send(udp.Join(1, "alice"))
            a_token = alice.recv()
            assert isinstance(a_token, udp.Welcome)
            bob.send(udp.Join(1, "鲍勃"))
            b_welcome = bob.recv()
            assert isinstance(b_welcome, udp.Welcome) and b_welcome.members == 1
            assert isinstance(alice.recv(), udp.Joined)
            carol.send(udp.Join(1, "ALICE"))
            refused = carol.recv()
            assert isinstance(refused, udp.Error) and refused.code == udp.ChatErrorCode.NICK_IN_USE
            bob.send(udp.Chat(1, b_welcome.token, "hi alice 👋"))
            assert isinstance(alice.recv(), udp.Relay)
            alice.send(udp.Keepalive(2, a_token.token))
            assert alice.recv() == udp.Ack(2)
            bob.send(udp.Leave(2, b_welcome.token))
            assert bob.recv() == udp.Ack(2)
            assert isinstance(alice.recv(), udp.Left)
            # Garbage: a CHAT without its token (the server ignores it).
            garbage = bytes([0x53, 0x55, 1, udp.DatagramType.CHAT]) + bytes(5)
            carol.sock.send(garbage)
            loop_thread.call(server.close())  # SHUTDOWN to alice
            assert isinstance(alice.recv(), udp.Shutdown)
            capture.sync()
        finally:
            for client in (alice, bob, carol):
                client.close()

    packets = dissect(capture.path)
    by_stream: dict[tuple[int, str], list[Packet]] = defaultdict(list)
    for packet in packets:
        if "switchboard_udpchat" not in packet.layers:
            continue
        udp_layer = packet.layers["udp"]
        src, dst = int(udp_layer["udp.srcport"]), int(udp_layer["udp.dstport"])
        if dst == server.port:
            by_stream[(src, "sent")].append(packet)
        else:
            by_stream[(dst, "received")].append(packet)

    garbage_packet = by_stream[(carol.port, "sent")].pop()
    assert garbage_packet.info == 'CHAT seq=0 "" [malformed]'
    assert garbage_packet.expert_messages == ["CHAT carries a 0-byte token"]
    assert PI_MALFORMED in garbage_packet.expert_groups

    for name, client in (("alice", alice), ("bob", bob), ("carol", carol)):
        for direction, datagrams in (("sent", client.sent), ("received", client.received)):
            decoded = by_stream[(client.port, direction)]
            assert len(decoded) == len(datagrams), (
                f"{name} {direction}: {[p.info for p in decoded]}"
            )
            for packet, datagram in zip(decoded, datagrams, strict=True):
                tree = packet.layers["switchboard_udpchat"]
                want = expected_datagram(datagram)
                wrong = {k: (v, tree.get(k)) for k, v in want.items() if tree.get(k) != v}
                assert not wrong, f"{name} {direction} {datagram!r}: {wrong}"
                assert PI_MALFORMED not in packet.expert_groups, packet.info

    infos = [p.info for p in packets]
    assert 'JOIN seq=1 "鲍勃"' in infos
    assert f'WELCOME seq=1 "鲍勃" others=1 expiry={b_welcome.expiry_ms}ms' in infos
    assert "ERROR seq=1 NICK_IN_USE" in infos
    assert 'RELAY seq=1 "鲍勃": "hi alice 👋"' in infos
    assert 'CHAT seq=1 "hi alice 👋"' in infos
    assert 'LEFT seq=2 "鲍勃" LEFT' in infos
    assert "ACK seq=2" in infos
    assert any(info.startswith("SHUTDOWN seq=") for info in infos)
