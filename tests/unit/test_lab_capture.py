"""switchboard.lab.capture's reading of tshark's PDML, and byteorder's hand-made sockaddr_in,
on byte and text literals (no tshark, no sockets).

The PDML below is cut down from ``tshark -T pdml`` with the dissector over a real capture:
one segment carrying two requests (several frames in one segment), and a LIST answer with a
client record, whose sub-fields are kept indented while a value's own sub-fields (a
string's length) are left out.
"""

from __future__ import annotations

import socket
import struct
import sys

from switchboard.lab.byteorder import sockaddr_in, swap16
from switchboard.lab.capture import DecodedFrame, parse_pdml

HEADER = """
    <field name="switchboard.magic" showname="Magic: 0x5342" show="0x5342"/>
    <field name="switchboard.version" showname="Version: 1" show="1"/>
    <field name="switchboard.class" showname="Class: {cls}" show="1"/>
    <field name="switchboard.type" showname="Type: {type}" show="0x0002"/>
    <field name="switchboard.request_id" showname="Request id: {rid}" show="{rid}"/>
    <field name="switchboard.length" showname="Payload length: 0" show="0"/>
"""


def packet(number: int, flags: str, length: int, src: int, dst: int, protos: str) -> str:
    return f"""
<packet>
  <proto name="geninfo"/>
  <proto name="frame">
    <field name="frame.time_epoch" showname="Epoch Time" show="1796594981.500000000"/>
    <field name="frame.time_relative" showname="Time since reference" show="0.250000000"/>
    <field name="frame.number" showname="Frame Number: {number}" show="{number}"/>
  </proto>
  <proto name="ip">
    <field name="ip.src" show="127.0.0.1"/>
    <field name="ip.dst" show="127.0.0.1"/>
  </proto>
  <proto name="tcp">
    <field name="tcp.srcport" show="{src}"/>
    <field name="tcp.dstport" show="{dst}"/>
    <field name="tcp.len" show="{length}"/>
    <field name="tcp.flags" showname="Flags: 0x018 ({flags})" show="0x0018">
      <field name="tcp.flags.push" showname="... Push: Set" show="1"/>
    </field>
  </proto>
  {protos}
</packet>"""


TWO_REQUESTS = packet(
    7, "PSH, ACK", 28, 40000, 7000,
    '<proto name="switchboard" showname="Switchboard Protocol, Request TIME">'
    + HEADER.format(cls="Request (1)", type="TIME (0x0002)", rid=1) + "</proto>"
    '<proto name="switchboard" showname="Switchboard Protocol, Request NAME">'
    + HEADER.format(cls="Request (1)", type="NAME (0x0003)", rid=2) + "</proto>",
)  # fmt: skip
LIST_ANSWER = packet(
    9, "PSH, ACK", 60, 7000, 40000,
    '<proto name="switchboard" showname="Switchboard Protocol, Response OK (LIST)">'
    + HEADER.format(cls="Response (2)", type="OK (0x0040)", rid=3)
    + """
    <field name="switchboard.room" showname="Room: " show="">
      <field name="switchboard.string_length" showname="String length (bytes): 0" show="0"/>
    </field>
    <field name="switchboard.clients.count" showname="Client count: 1" show="1"/>
    <field name="switchboard.client" showname="Client 1: #1 127.0.0.1:40000 -" show="" >
      <field name="switchboard.client.id" showname="Client id: 1" show="1"/>
      <field name="switchboard.client.nick" showname="Nickname: ann" show="ann">
        <field name="switchboard.string_length" showname="String length (bytes): 3" show="3"/>
      </field>
    </field>
    </proto>""",
)  # fmt: skip
HANDSHAKE = packet(5, "SYN", 0, 40000, 7000, "")
UDP_PROBE = """
<packet>
  <proto name="frame"><field name="frame.number" show="6"/></proto>
  <proto name="ip"><field name="ip.src" show="127.0.0.1"/></proto>
  <proto name="udp"><field name="udp.srcport" show="5000"/></proto>
</packet>"""


def pdml(*packets: str) -> bytes:
    return ("<?xml version='1.0'?>\n<pdml>" + "".join(packets) + "</pdml>").encode()


def test_a_segment_with_two_frames_reads_as_wireshark_shows_it() -> None:
    (segment,) = parse_pdml(pdml(TWO_REQUESTS))
    assert (segment.number, segment.src_port, segment.dst_port) == (7, 40000, 7000)
    assert (segment.flags, segment.payload, segment.time) == ("PSH, ACK", 28, 0.25)
    assert segment.epoch == 1796594981.5
    assert segment.has("PSH") and segment.has("ACK") and not segment.has("SYN")
    assert segment.frames == (
        DecodedFrame("Request TIME", 1, ()),  # the header is the title, not repeated
        DecodedFrame("Request NAME", 2, ()),
    )


def test_a_record_keeps_its_fields_and_a_string_drops_its_length() -> None:
    (segment,) = parse_pdml(pdml(LIST_ANSWER))
    (frame,) = segment.frames
    assert frame.title == "Response OK (LIST)" and frame.request_id == 3
    assert frame.fields == (
        "Room: ",
        "Client count: 1",
        "Client 1: #1 127.0.0.1:40000 -",
        "  Client id: 1",
        "  Nickname: ann",
    )


def test_packets_without_tcp_are_left_out_and_bare_segments_have_no_frames() -> None:
    segments = parse_pdml(pdml(HANDSHAKE, UDP_PROBE, TWO_REQUESTS))
    assert [s.number for s in segments] == [5, 7]
    assert segments[0].flags == "SYN" and segments[0].frames == ()


def test_sockaddr_in_carries_the_port_bytes_exactly_as_given() -> None:
    right = sockaddr_in(struct.pack("!H", 7000))
    assert len(right) == 16  # sizeof(struct sockaddr_in)
    assert right[:2] == struct.pack("=H", socket.AF_INET)  # sa_family_t: host order
    assert right[2:4] == b"\x1b\x58" and right[4:8] == b"\x7f\x00\x00\x01"
    assert right[8:] == bytes(8)
    forgot = sockaddr_in(struct.pack("=H", 7000))
    assert forgot[2:4] == (b"\x58\x1b" if sys.byteorder == "little" else b"\x1b\x58")
    assert struct.unpack("!H", forgot[2:4])[0] == (
        swap16(7000) if sys.byteorder == "little" else 7000
    )
