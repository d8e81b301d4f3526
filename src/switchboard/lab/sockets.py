"""The kernel's TCP sockets as /proc/net/tcp and /proc/net/tcp6 show them (what ``ss -tan``
and ``netstat -tan`` read): state, local and remote address and port, send and receive
queues, the pending timer.  /proc is always there; ``ss`` (iproute2) may not be.

The files' format (``tcp4_seq_show``/``tcp6_seq_show`` in net/ipv4/tcp_ipv4.c and
net/ipv6/tcp_ipv6.c)::

    sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt  uid timeout inode
    0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000 1000       0 4711

Addresses are the kernel's 32-bit words printed in hex as loaded from memory (so an IPv4
address reads byte-reversed on a little-endian machine); ports are plain hex numbers.  For a
listening socket ``rx_queue`` is the accept queue's length (``ss``'s Recv-Q), otherwise the
bytes received and not yet read; ``tm->when`` is in clock ticks (``SC_CLK_TCK``).
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: The two tables: (path, address family).
PROC_TABLES: Final = (
    (Path("/proc/net/tcp"), socket.AF_INET),
    (Path("/proc/net/tcp6"), socket.AF_INET6),
)


class TcpState(enum.IntEnum):
    """The ``st`` column: include/net/tcp_states.h."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    NEW_SYN_RECV = 12


class TcpTimer(enum.IntEnum):
    """The ``tr`` column: which timer is pending."""

    NONE = 0
    RETRANSMIT = 1
    KEEPALIVE = 2
    TIME_WAIT = 3
    ZERO_WINDOW_PROBE = 4


@dataclass(frozen=True)
class TcpSocket:
    """One line of /proc/net/tcp{,6}."""

    state: TcpState
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    #: Bytes sent and not acknowledged.
    tx_queue: int
    #: LISTEN: connections waiting in the accept queue; otherwise bytes not yet read.
    rx_queue: int
    timer: TcpTimer
    #: Seconds until the pending timer fires (0 without one).
    timer_s: float
    uid: int
    #: The socket's inode (0 once no file refers to it: TIME_WAIT, orphans); ``inode_of``.
    inode: int

    @property
    def local(self) -> tuple[str, int]:
        return self.local_ip, self.local_port

    @property
    def remote(self) -> tuple[str, int]:
        return self.remote_ip, self.remote_port

    def on_port(self, port: int) -> bool:
        """Whether either end of this socket is ``port``."""
        return port in (self.local_port, self.remote_port)


#: Clock ticks per second, the unit of ``tm->when``.
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _address(text: str, family: int) -> tuple[str, int]:
    hex_ip, hex_port = text.split(":")
    words = [int(hex_ip[i : i + 8], 16) for i in range(0, len(hex_ip), 8)]
    raw = struct.pack(f"={len(words)}I", *words)  # the words as the kernel had them in memory
    if family == socket.AF_INET6 and raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:]), int(hex_port, 16)  # IPv4-mapped
    return socket.inet_ntop(family, raw), int(hex_port, 16)


def parse_line(line: str, family: int) -> TcpSocket:
    """One data line of /proc/net/tcp (``family`` AF_INET) or /proc/net/tcp6 (AF_INET6);
    ``ValueError`` for anything else."""
    fields = line.split()
    if len(fields) < 10 or not fields[0].endswith(":"):
        raise ValueError(f"not a /proc/net/tcp line: {line!r}")
    local_ip, local_port = _address(fields[1], family)
    remote_ip, remote_port = _address(fields[2], family)
    tx, rx = (int(part, 16) for part in fields[4].split(":"))
    timer, when = fields[5].split(":")
    return TcpSocket(
        state=TcpState(int(fields[3], 16)),
        local_ip=local_ip,
        local_port=local_port,
        remote_ip=remote_ip,
        remote_port=remote_port,
        tx_queue=tx,
        rx_queue=rx,
        timer=TcpTimer(int(timer, 16)),
        timer_s=int(when, 16) / CLOCK_TICKS,
        uid=int(fields[7]),
        inode=int(fields[9]),
    )


def parse_table(text: str, family: int) -> list[TcpSocket]:
    """Every socket of one table's text (its header line skipped)."""
    return [parse_line(line, family) for line in text.splitlines()[1:] if line.strip()]


def read_sockets(
    ports: Iterable[int] | None = None, tables: Sequence[tuple[Path, int]] = PROC_TABLES
) -> list[TcpSocket]:
    """This network namespace's TCP sockets, IPv4 then IPv6; only those with an end on one
    of ``ports`` when given.  A table that is missing (no IPv6 here) holds nothing."""
    wanted = None if ports is None else frozenset(ports)
    found: list[TcpSocket] = []
    for path, family in tables:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        for sock in parse_table(text, family):
            if wanted is None or sock.local_port in wanted or sock.remote_port in wanted:
                found.append(sock)
    return found


def close_with_reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN (SO_LINGER on, 0 s): no TIME_WAIT follows,
    on either side.  For the connections an experiment only needs while it looks."""
    with contextlib.suppress(OSError):  # already closed under us: nothing to reset
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


#: The columns of ``socket_row``: what ``ss -tan`` shows, and the timer.
SOCKET_COLUMNS: Final = ("state", "local", "remote", "recv-q", "send-q", "timer")


def socket_row(entry: TcpSocket) -> tuple[str, str, str, int, int, str]:
    """One socket as a table row (``SOCKET_COLUMNS``)."""
    from switchboard.protocol.trace import host_port

    timer = ""
    if entry.timer is not TcpTimer.NONE:
        timer = f"{entry.timer.name.lower()} {entry.timer_s:.1f}s"
    return (
        entry.state.name,
        host_port(entry.local_ip, entry.local_port),
        host_port(entry.remote_ip, entry.remote_port),
        entry.rx_queue,
        entry.tx_queue,
        timer,
    )


def inode_of(sock: socket.socket) -> int:
    """The inode /proc/net/tcp lists for this open socket (its file's inode)."""
    return os.fstat(sock.fileno()).st_ino


def wait_for_sockets(
    ports: Iterable[int],
    predicate: Callable[[list[TcpSocket]], bool],
    timeout: float,
    step: float = 0.01,
) -> list[TcpSocket]:
    """Poll the sockets on ``ports`` until ``predicate`` holds of them or ``timeout`` passes;
    the last reading either way (the caller checks, and says what it saw)."""
    wanted = tuple(ports)
    deadline = time.monotonic() + timeout
    while True:
        seen = read_sockets(wanted)
        if predicate(seen) or time.monotonic() >= deadline:
            return seen
        time.sleep(step)


def kernel_setting(name: str) -> str:
    """A sysctl's value as /proc/sys shows it (``net/ipv4/tcp_fin_timeout``), read, never
    written: the labs observe the host, they do not tune it."""
    return Path("/proc/sys", name).read_text().strip()


__all__ = [
    "PROC_TABLES",
    "SOCKET_COLUMNS",
    "Connection",
    "TcpSocket",
    "TcpState",
    "TcpTimer",
    "close_with_reset",
    "inode_of",
    "kernel_setting",
    "of_connections",
    "parse_line",
    "parse_table",
    "read_sockets",
    "retire_time_wait",
    "retire_time_waits",
    "socket_row",
    "wait_for_sockets",
]


def retire_time_wait(entry: TcpSocket, timeout: float = 2.0) -> bool:
    """End a TIME_WAIT entry now instead of in 60 s, so that an experiment leaves nothing
    behind; whether it is gone.

    A SYN from the entry's remote end to its local end finds the TIME_WAIT socket, which
    answers with an ACK for the old connection; the connecting socket answers that with an
    in-window RST, and a TIME_WAIT socket that receives one is freed (RFC 1337's "TIME-WAIT
    assassination", which Linux allows while net.ipv4.tcp_rfc1337 is 0, its default).  The
    remote end's port must be free to bind: the experiment has closed its listener first.
    When it is not (another connection holds the port), ``destroy_time_wait`` ends it.
    """
    family = socket.AF_INET6 if ":" in entry.local_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.settimeout(timeout)
        try:
            probe.bind(entry.remote)
        except OSError:
            # The remote end's port is taken again: connect() shares an ephemeral port
            # between connections to different peers, so another program's connection may
            # hold it.  Only the kernel's socket-destroy call can end the entry then.
            destroy_time_wait(entry)
        else:
            try:
                probe.connect(entry.local)
            except OSError:
                pass  # refused, as expected: nothing listens on the entry's local port
            else:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def gone(seen: list[TcpSocket]) -> bool:
        return not any(s.local == entry.local and s.remote == entry.remote for s in seen)

    return gone(wait_for_sockets([entry.local_port], gone, timeout))


#: Seconds ``destroy_time_wait`` gives ``ss``.
SS_TIMEOUT_S: Final = 5.0


def destroy_time_wait(entry: TcpSocket) -> None:
    """``ss -K`` for exactly this TIME_WAIT entry (the kernel's SOCK_DESTROY, which needs
    CAP_NET_ADMIN): best effort, nothing happens without root or without ss."""
    ss = shutil.which("ss")
    if ss is None or os.geteuid() != 0:
        return

    def where(ip: str, port: int) -> str:
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    command = [ss, "-K", "-tan", "state", "time-wait"]
    command += ["src", where(*entry.local), "dst", where(*entry.remote)]
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run(command, capture_output=True, timeout=SS_TIMEOUT_S, check=False)


#: A connection as its two ends, (address, port) each, in either order.
Connection = tuple[tuple[str, int], tuple[str, int]]


def of_connections(
    entries: Iterable[TcpSocket], connections: Iterable[Connection]
) -> list[TcpSocket]:
    """The entries that are an end of one of ``connections`` (the same port numbers may
    appear in other programs' old TIME_WAIT entries: those are not ours)."""
    ends = {pair for a, b in connections for pair in ((a, b), (b, a))}
    return [e for e in entries if (e.local, e.remote) in ends]


#: The states a connection passes through while it closes, before TIME_WAIT or nothing.
_CLOSING_STATES = frozenset(
    {TcpState.FIN_WAIT1, TcpState.FIN_WAIT2, TcpState.CLOSING, TcpState.LAST_ACK}
)
#: Seconds ``retire_time_waits`` waits for the closes under way to finish.
SETTLE_CLOSES_S = 3.0


def retire_time_waits(connections: Iterable[Connection]) -> list[TcpSocket]:
    """``retire_time_wait`` for every TIME_WAIT entry of ``connections`` (the experiment's
    own, and no one else's); those still there (where net.ipv4.tcp_rfc1337 is 1, or, without
    root, where an end's port is in use again)."""
    mine = list(connections)
    ports = {end[1] for connection in mine for end in connection}

    def waiting() -> list[TcpSocket]:
        entries = of_connections(read_sockets(ports), mine)
        return [e for e in entries if e.state is TcpState.TIME_WAIT]

    def settled(seen: list[TcpSocket]) -> bool:
        return not any(e.state in _CLOSING_STATES for e in of_connections(seen, mine))

    # A close still under way (FIN_WAIT1/2, CLOSING, LAST_ACK) becomes a TIME_WAIT only once
    # the peer's FIN or ACK arrives: wait for that first, or the entry is missed and stays.
    wait_for_sockets(ports, settled, SETTLE_CLOSES_S)

    # Three rounds: on a busy machine a probe's SYN can meet the entry before its own port is
    # free again, or its RST arrive after the wait; another round then finishes the job.
    for _ in range(3):
        left = waiting()
        if not left:
            return []
        for entry in left:
            retire_time_wait(entry)
    return waiting()
