"""``switchboard.lab.sockets``: /proc/net/tcp{,6} lines as the kernel prints them."""

from __future__ import annotations

import socket
import sys

import pytest

from switchboard.lab.sockets import CLOCK_TICKS, TcpState, TcpTimer, parse_line, parse_table

little_endian = pytest.mark.skipif(sys.byteorder != "little", reason="vectors of x86/arm64")

# Lines copied from a little-endian machine's /proc/net/tcp and /proc/net/tcp6.
LISTEN_V4 = (
    "   0: 0100007F:1B58 00000000:0000 0A 00000000:00000002 00:00000000 00000000  1000"
    "        0 4711 1 0000000000000000 100 0 0 10 0"
)
TIME_WAIT_V4 = (
    "   2: 0100007F:9F35 0100007F:E2AD 06 00000000:00000000 03:00001765 00000000     0"
    "        0 0 3 000000001be0235e"
)
ESTABLISHED_V6 = (
    "   1: 00000000000000000000000001000000:1B58 00000000000000000000000001000000:C350 01 "
    "00000010:00000020 02:00000BB8 00000000  1000        0 4712 1 0000000000000000 20 4 30 10 -1"
)
MAPPED_V6 = (
    "   3: 0000000000000000FFFF00000100007F:1B58 0000000000000000FFFF00000200007F:C351 08 "
    "00000000:00000000 00:00000000 00000000     0        0 4713 1 0000000000000000 20 4 30 10 -1"
)


@little_endian
def test_a_listener_and_its_accept_queue() -> None:
    s = parse_line(LISTEN_V4, socket.AF_INET)
    assert (s.state, s.local, s.remote) == (TcpState.LISTEN, ("127.0.0.1", 7000), ("0.0.0.0", 0))
    assert (s.rx_queue, s.tx_queue, s.uid, s.inode) == (2, 0, 1000, 4711)
    assert s.timer is TcpTimer.NONE and s.timer_s == 0


@little_endian
def test_time_wait_and_its_timer_in_clock_ticks() -> None:
    s = parse_line(TIME_WAIT_V4, socket.AF_INET)
    assert s.state is TcpState.TIME_WAIT and s.timer is TcpTimer.TIME_WAIT
    assert s.local == ("127.0.0.1", 0x9F35) and s.remote == ("127.0.0.1", 0xE2AD)
    assert s.timer_s == pytest.approx(0x1765 / CLOCK_TICKS)
    assert s.inode == 0 and s.on_port(0xE2AD) and not s.on_port(7000)


@little_endian
def test_ipv6_and_ipv4_mapped_addresses() -> None:
    s = parse_line(ESTABLISHED_V6, socket.AF_INET6)
    assert (s.state, s.local, s.remote) == (TcpState.ESTABLISHED, ("::1", 7000), ("::1", 50000))
    assert (s.tx_queue, s.rx_queue, s.timer) == (16, 32, TcpTimer.KEEPALIVE)
    mapped = parse_line(MAPPED_V6, socket.AF_INET6)
    assert mapped.state is TcpState.CLOSE_WAIT
    assert mapped.local == ("127.0.0.1", 7000) and mapped.remote == ("127.0.0.2", 50001)


def test_the_header_line_is_skipped_and_garbage_refused() -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
    assert parse_table(header + "\n", socket.AF_INET) == []
    with pytest.raises(ValueError):
        parse_line("not a socket", socket.AF_INET)
