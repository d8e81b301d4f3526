"""``switchboard lab ports``: does a client need ``bind()``, and where does its source port
come from?

Several connects without ``bind()`` (the kernel picks each source port from the ephemeral
range), then a fixed source port twice in a row: the first connection, closed by the client,
leaves a TIME_WAIT entry on that port, and the second ``bind()`` fails with EADDRINUSE, with
SO_REUSEADDR on the new socket alone too; with SO_REUSEADDR on both sockets the bind succeeds
and the connect takes the TIME_WAIT entry's place.
"""

from __future__ import annotations

import argparse
import errno
import socket
from typing import Final

from switchboard.protocol.trace import host_port

from .notebook import Experiment, LabUnavailable, Notebook
from .sockets import (
    SOCKET_COLUMNS,
    TcpSocket,
    TcpState,
    close_with_reset,
    kernel_setting,
    of_connections,
    read_sockets,
    retire_time_waits,
    socket_row,
    wait_for_sockets,
)

HOST: Final = "127.0.0.1"
#: How many connects without bind() by default, and at most.
CONNECTS: Final = 5
MAX_CONNECTS: Final = 100
#: Seconds to wait for the kernel to show a state after we acted.
SETTLE_S: Final = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connects",
        type=int,
        default=CONNECTS,
        metavar="N",
        help=f"connects without bind() (1-{MAX_CONNECTS}, default {CONNECTS})",
    )
    parser.add_argument(
        "--bind-port",
        type=int,
        default=0,
        metavar="PORT",
        help="the fixed source port bound twice in a row (1-65535; default: a free one)",
    )


def ephemeral_range() -> tuple[int, int]:
    """net.ipv4.ip_local_port_range: where connect() takes a source port from."""
    low, high = kernel_setting("net/ipv4/ip_local_port_range").split()
    return int(low), int(high)


def try_bind(port: int, *, reuseaddr: bool) -> tuple[socket.socket | None, str]:
    """A socket bound to ``port`` (or None) and what bind() answered: "bound" or the errno's
    name (EADDRINUSE)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuseaddr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        return None, errno.errorcode.get(exc.errno or 0, str(exc))
    return sock, "bound"


class Lab:
    """The experiment's listener and every socket it opened, closed by ``close``."""

    def __init__(self, notebook: Notebook, backlog: int) -> None:
        self.nb = notebook
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((HOST, 0))
        self.listener.listen(backlog)
        self.listener.settimeout(SETTLE_S)
        self.port: int = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        #: Source ports whose TIME_WAIT entries the experiment made.
        self.bound_ports: list[int] = []

    def connect(self, sock: socket.socket | None = None) -> tuple[socket.socket, socket.socket]:
        """``sock`` (or a new socket) connected to the listener, and the accepted end."""
        sock = sock or socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.open.append(sock)
        sock.settimeout(SETTLE_S)
        sock.connect((HOST, self.port))
        accepted, _ = self.listener.accept()
        self.open.append(accepted)
        return sock, accepted

    def close_client_first(self, client: socket.socket, accepted: socket.socket) -> None:
        """An orderly close started by the client: its FIN, the server's read of end-of-file,
        the server's FIN; the client is the active closer."""
        client.close()
        accepted.settimeout(SETTLE_S)
        accepted.recv(1)  # b"": the client's FIN
        accepted.close()

    def close(self) -> None:
        for sock in self.open:
            if sock.fileno() != -1:
                close_with_reset(sock)
        self.listener.close()
        # The TIME_WAIT entries this experiment made end now, not in a minute.
        retire_time_waits(((HOST, port), (HOST, self.port)) for port in self.bound_ports)


def time_wait_on(port: int, server_port: int) -> list[TcpSocket]:
    """Wait until the connection between ``port`` and ``server_port`` is in TIME_WAIT on the
    client's side and gone on the server's; what the kernel shows then."""

    connection = [((HOST, port), (HOST, server_port))]

    def settled(seen: list[TcpSocket]) -> bool:
        mine = of_connections(seen, connection)
        return len(mine) == 1 and mine[0].state is TcpState.TIME_WAIT

    return of_connections(wait_for_sockets([port], settled, SETTLE_S), connection)


def run(args: argparse.Namespace, nb: Notebook) -> None:
    if not 1 <= args.connects <= MAX_CONNECTS:
        raise LabUnavailable(f"--connects must be 1-{MAX_CONNECTS}, not {args.connects}")
    if not 0 <= args.bind_port <= 65535:
        raise LabUnavailable(f"--bind-port must be 1-65535, not {args.bind_port}")
    low, high = ephemeral_range()
    nb.observe("ephemeral_range", [low, high])
    lab = Lab(nb, backlog=args.connects)
    try:
        where = host_port(HOST, lab.port)
        nb.step(f"a listener on {where}; the kernel's ephemeral range is {low}-{high}")
        nb.observe("server_port", lab.port)
        ports = []
        for _ in range(args.connects):
            client, accepted = lab.connect()
            ports.append(client.getsockname()[1])
            close_with_reset(client)  # no TIME_WAIT to hold the port: each connect is free
            close_with_reset(accepted)
        nb.step(
            f"{args.connects} connect() calls without bind(), each closed (with a reset) "
            "before the next"
        )
        nb.table(
            "source ports chosen by connect()",
            ("connect", "source port", "in the ephemeral range"),
            [(i + 1, p, "yes" if low <= p <= high else "no") for i, p in enumerate(ports)],
        )
        nb.observe("source_ports", ports)
        nb.observe("distinct_source_ports", len(set(ports)))
        nb.observe("all_in_ephemeral_range", all(low <= p <= high for p in ports))
        even = sum(1 for p in ports if p % 2 == 0)
        nb.observe("even_source_ports", even)

        fixed_port(args, nb, lab)
        reuse_both(nb, lab)
    finally:
        lab.close()
    nb.explain(
        "A client does not need bind(): connect() binds the socket to a free port of the "
        f"ephemeral range ({low}-{high}, net.ipv4.ip_local_port_range) and to the address of "
        "the interface that leads to the server.  Linux starts its search at a hash of the "
        "destination plus a counter, so successive connects get different ports; it tries "
        "even ports first for connect() and odd ones for bind() to port 0 (since Linux 4.6), "
        f"so the two rarely compete: here {even} of {len(ports)} were even."
    )
    nb.explain(
        "Binding a fixed source port makes the client an identifiable 4-tuple, and that is "
        "what TIME_WAIT protects: the side that closes first keeps its end of the connection "
        "for 2*MSL (60 s on Linux, fixed in the kernel as TCP_TIMEWAIT_LEN) so that a late "
        "segment of the old connection is not taken for one of a new one.  While it lasts, "
        "bind() on that port fails with EADDRINUSE.  SO_REUSEADDR lets the bind succeed only "
        "when the socket that left the TIME_WAIT had it set too; the connect() that follows "
        "then takes the TIME_WAIT entry's place (TCP timestamps tell the new segments from "
        "the old).  A client that lets connect() choose never meets this."
    )


def fixed_port(args: argparse.Namespace, nb: Notebook, lab: Lab) -> None:
    first, answer = try_bind(args.bind_port, reuseaddr=False)
    if first is None:
        raise LabUnavailable(f"cannot bind {HOST}:{args.bind_port}: {answer}")
    port = first.getsockname()[1]
    lab.bound_ports.append(port)
    client, accepted = lab.connect(first)
    nb.step(f"bind() to {host_port(HOST, port)}, connect(), then the client closes first")
    lab.close_client_first(client, accepted)
    entries = time_wait_on(port, lab.port)
    nb.table(
        f"sockets between port {port} and the server's port {lab.port}",
        SOCKET_COLUMNS,
        [socket_row(s) for s in entries],
    )
    waiting = [s for s in entries if s.state is TcpState.TIME_WAIT and s.local_port == port]
    nb.observe("bind_port", port)
    nb.observe("time_wait_on_bind_port", bool(waiting))
    nb.observe("time_wait_timer_s", round(waiting[0].timer_s, 1) if waiting else None)
    second, plain = try_bind(port, reuseaddr=False)
    third, reuse = (None, "") if second else try_bind(port, reuseaddr=True)
    for sock in (second, third):
        if sock is not None:
            sock.close()
    nb.step(f"bind() to port {port} again: {plain}; with SO_REUSEADDR on the new socket: {reuse}")
    nb.observe("rebind", plain)
    nb.observe("rebind_reuseaddr_new_socket_only", reuse or None)


def reuse_both(nb: Notebook, lab: Lab) -> None:
    first, _ = try_bind(0, reuseaddr=True)
    assert first is not None  # port 0: the kernel finds one
    port = first.getsockname()[1]
    lab.bound_ports.append(port)
    client, accepted = lab.connect(first)
    lab.close_client_first(client, accepted)
    time_wait_on(port, lab.port)
    nb.step(
        f"the same with SO_REUSEADDR on both sockets (port {port}): the first closed by the "
        "client, in TIME_WAIT"
    )
    second, answer = try_bind(port, reuseaddr=True)
    connected = "not tried"
    if second is not None:
        try:
            lab.connect(second)
            connected = "connected"
        except OSError as exc:
            connected = errno.errorcode.get(exc.errno or 0, str(exc))
    nb.step(f"bind() with SO_REUSEADDR: {answer}; connect() to the same server: {connected}")
    nb.observe("rebind_reuseaddr_both", answer)
    nb.observe("connect_over_time_wait", connected)
    ours = of_connections(read_sockets([port]), [((HOST, port), (HOST, lab.port))])
    left = [s for s in ours if s.state is TcpState.TIME_WAIT]
    nb.observe("time_wait_after_reconnect", len(left))


EXPERIMENT = Experiment(
    name="ports",
    question="Does a client need bind()? Where does its source port come from; is it the "
    "same on every connect()?",
    add_arguments=add_arguments,
    run=run,
)
