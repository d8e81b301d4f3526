"""``switchboard lab close``: who closes first decides who waits.

Against Switchboard's reversal service: the client closes first (TIME_WAIT on the client's
side only), then the server closes first after ``bye`` (FIN_WAIT_2 on the server while the
client has not closed, then TIME_WAIT on the server's side only), then a half-close (the
client's shutdown(SHUT_WR) after an unterminated line, the answer still arriving after our
FIN).  Against a deliberately leaky server of the experiment's own, which reads the client's
end-of-file and never closes: CLOSE_WAIT on its side for as long as it does not, FIN_WAIT_2 on
the client's; the reversal service, which always answers an end-of-file with its close,
leaves no CLOSE_WAIT.

TIME_WAIT lasts 60 s on Linux (TCP_TIMEWAIT_LEN, fixed in the kernel, not a sysctl) and an
orphaned FIN_WAIT_2 net.ipv4.tcp_fin_timeout: the experiment reads the timers the kernel
shows instead of waiting them out, and retires the TIME_WAIT entries it made at the end.
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Final

from switchboard.protocol.trace import host_port

from .notebook import Experiment, LabUnavailable, Notebook
from .server import reversal_service
from .sockets import (
    Connection,
    TcpSocket,
    TcpState,
    close_with_reset,
    kernel_setting,
    read_sockets,
    retire_time_waits,
    wait_for_sockets,
)

HOST: Final = "127.0.0.1"
#: Seconds the leaky server's CLOSE_WAIT is watched (it would last as long as the program).
LEAK_S: Final = 1.0
MAX_LEAK_S: Final = 30.0
SETTLE_S: Final = 5.0
Address = tuple[str, int]
#: No socket at all for that end of the connection.
GONE: Final = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--leak-seconds",
        type=float,
        default=LEAK_S,
        metavar="SECONDS",
        help=f"how long the leaky server's CLOSE_WAIT is watched (default {LEAK_S:g}, at "
        f"most {MAX_LEAK_S:g}): it has no timer, it lasts until the program closes",
    )


def ends(client: Address, server: Address) -> tuple[TcpSocket | None, TcpSocket | None]:
    """The client's and the server's socket of the connection client <-> server, if any."""
    mine = theirs = None
    for s in read_sockets([client[1], server[1]]):
        if s.local == client and s.remote == server:
            mine = s
        elif s.local == server and s.remote == client:
            theirs = s
    return mine, theirs


def state(entry: TcpSocket | None) -> str | None:
    return None if entry is None else entry.state.name


def wait_ends(
    client: Address,
    server: Address,
    client_state: TcpState | None,
    server_state: TcpState | None,
) -> tuple[TcpSocket | None, TcpSocket | None]:
    """Wait until the client's end is in ``client_state`` and the server's in
    ``server_state`` (None: gone); the ends as the kernel shows them then."""

    def reached(_: list[TcpSocket]) -> bool:
        mine, theirs = ends(client, server)
        return (mine.state if mine else None) == client_state and (
            theirs.state if theirs else None
        ) == server_state

    wait_for_sockets([client[1], server[1]], reached, SETTLE_S)
    return ends(client, server)


def read_until_eof(sock: socket.socket) -> bytes:
    sock.settimeout(SETTLE_S)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def read_line(sock: socket.socket) -> bytes:
    sock.settimeout(SETTLE_S)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class Journal:
    """The table's rows and the observations, scenario by scenario."""

    def __init__(self, nb: Notebook) -> None:
        self.nb = nb
        self.rows: list[tuple[object, ...]] = []
        #: Every connection made, so that its TIME_WAIT (and only its) is retired at the end.
        self.connections: list[Connection] = []

    def connect(self, port: int) -> tuple[socket.socket, Address, Address]:
        """A client connected to ``port``; its address and the server's."""
        sock = socket.create_connection((HOST, port), timeout=SETTLE_S)
        local = sock.getsockname()
        me, server = (local[0], local[1]), (HOST, port)
        self.connections.append((me, server))
        return sock, me, server

    def row(self, scenario: str, moment: str, ends_: tuple[TcpSocket | None, ...]) -> None:
        mine, theirs = ends_
        timers = [
            f"{who} {e.timer_s:.1f} s"
            for who, e in (("client", mine), ("server", theirs))
            if e is not None and e.timer_s > 0
        ]
        self.rows.append(
            (scenario, moment, state(mine) or "-", state(theirs) or "-", "; ".join(timers))
        )


def client_closes_first(nb: Notebook, j: Journal, port: int) -> None:
    sock, me, server = j.connect(port)
    with sock:
        sock.sendall(b"stressed\n")
        answer = read_line(sock)
    nb.step(
        f"reversal service: a client sends 'stressed', reads {answer.decode().strip()!r}, and "
        "closes first"
    )
    mine, theirs = wait_ends(me, server, TcpState.TIME_WAIT, GONE)
    j.row("client closes first", "after both FINs", (mine, theirs))
    nb.observe(
        "client_closes_first",
        {
            "client": state(mine),
            "server": state(theirs),
            "time_wait_timer_s": round(mine.timer_s, 1) if mine else None,
        },
    )


def server_closes_first(nb: Notebook, j: Journal, port: int) -> None:
    sock, me, server = j.connect(port)
    try:
        sock.sendall(b"bye\n")
        said = read_until_eof(sock)  # Goodbye!, then the server's FIN
        nb.step(
            f"reversal service: a client sends 'bye'; the server answers "
            f"{said.decode().strip()!r} and closes first; the client has read the end of file "
            "and not closed yet"
        )
        before = wait_ends(me, server, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT2)
        j.row("server closes first", "server's FIN, client not closed", before)
    finally:
        sock.close()
    after = wait_ends(me, server, GONE, TcpState.TIME_WAIT)
    j.row("server closes first", "then the client closes", after)
    nb.observe(
        "server_closes_first",
        {
            "before_client_close": {"client": state(before[0]), "server": state(before[1])},
            "after_client_close": {"client": state(after[0]), "server": state(after[1])},
        },
    )


def half_close(nb: Notebook, j: Journal, port: int) -> None:
    sock, me, server = j.connect(port)
    with sock:
        sock.sendall(b"stressed")  # no newline: the line ends with our FIN
        sock.shutdown(socket.SHUT_WR)
        received = read_until_eof(sock)
    text = received.decode().strip()
    nb.step(
        "reversal service: a client sends 'stressed' without a newline and shutdown(SHUT_WR): "
        f"its FIN ends the line; it still reads {text!r}, then the server's FIN"
    )
    after = wait_ends(me, server, TcpState.TIME_WAIT, GONE)
    j.row("half-close by the client", "after the answer and both FINs", after)
    nb.observe(
        "half_close",
        {"received_after_shutdown": text, "client": state(after[0]), "server": state(after[1])},
    )


def leaky_server(nb: Notebook, j: Journal, leak_s: float) -> int:
    """The leaky server's scenario; its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    opened = [listener]
    try:
        listener.bind((HOST, 0))
        listener.listen(1)
        port: int = listener.getsockname()[1]
        sock, me, server = j.connect(port)
        opened.append(sock)
        listener.settimeout(SETTLE_S)
        leaked, _ = listener.accept()
        opened.append(leaked)
        sock.sendall(b"hello\n")
        sock.close()
        got = read_until_eof(leaked)  # the client's line, then its end of file ...
        nb.step(
            f"a leaky server on {host_port(HOST, port)} reads {got.decode().strip()!r} and the "
            "client's end of file, and does not close its socket"
        )
        first = wait_ends(me, server, TcpState.FIN_WAIT2, TcpState.CLOSE_WAIT)
        j.row("leaky server", "client closed, server did not", first)
        time.sleep(leak_s)  # watching: CLOSE_WAIT has no timer, nothing will change it
        later = ends(me, server)
        j.row("leaky server", f"{leak_s:g} s later", later)
        leaked.close()
        nb.step(f"{leak_s:g} s later the leaky server finally closes")
        last = wait_ends(me, server, TcpState.TIME_WAIT, GONE)
        j.row("leaky server", "the server closes at last", last)
        nb.observe(
            "leaky_server",
            {
                "client": state(first[0]),
                "server": state(first[1]),
                "client_fin_wait2_timer_s": round(first[0].timer_s, 1) if first[0] else None,
                "watched_s": leak_s,
                "server_after_watch": state(later[1]),
                "after_server_close": {"client": state(last[0]), "server": state(last[1])},
            },
        )
        return port
    finally:
        for s in opened:
            if s.fileno() != -1:
                close_with_reset(s)


def run(args: argparse.Namespace, nb: Notebook) -> None:
    if not 0 <= args.leak_seconds <= MAX_LEAK_S:
        raise LabUnavailable(f"--leak-seconds must be 0-{MAX_LEAK_S:g}, not {args.leak_seconds}")
    fin_timeout = int(kernel_setting("net/ipv4/tcp_fin_timeout"))
    nb.observe("tcp_fin_timeout_s", fin_timeout)
    nb.step(
        "TIME_WAIT lasts 60 s on Linux (TCP_TIMEWAIT_LEN, fixed in the kernel); an orphaned "
        f"FIN_WAIT_2 lasts net.ipv4.tcp_fin_timeout = {fin_timeout} s here.  The experiment "
        "reads the timers rather than waiting them out."
    )
    j = Journal(nb)
    ports = []
    try:
        with reversal_service() as service:
            ports.append(service.port)
            nb.step(f"Switchboard's reversal service on {host_port(HOST, service.port)}")
            client_closes_first(nb, j, service.port)
            server_closes_first(nb, j, service.port)
            half_close(nb, j, service.port)
        ports.append(leaky_server(nb, j, args.leak_seconds))
    finally:
        if j.rows:
            nb.table(
                "who closes first decides who waits",
                ("scenario", "moment", "client's socket", "server's socket", "timers"),
                j.rows,
            )
        # The servers are gone: their ports can be bound to retire the TIME_WAITs we made.
        left = retire_time_waits(j.connections)
    nb.observe("server_ports", ports)
    nb.observe("time_wait_left_behind", len(left))
    nb.explain(
        "The side that sends the first FIN (close(), or shutdown(SHUT_WR)) is the active "
        "closer: once the other side's FIN has arrived and been acknowledged it waits in "
        "TIME_WAIT for 2*MSL (60 s on Linux) so that a late segment of this connection cannot "
        "be taken for part of a new one with the same 4-tuple, and so that it can acknowledge "
        "the peer's FIN again if its last ACK was lost.  The passive side waits for nothing: "
        "after its own FIN is acknowledged its socket is gone.  That is why servers prefer "
        "their clients to close first."
    )
    nb.explain(
        "Between the two FINs, the active closer is in FIN_WAIT_2 and the passive side in "
        "CLOSE_WAIT: the kernel has told the program that the peer is done (read() returns 0), "
        "and only the program's close() ends it.  CLOSE_WAIT has no timer, so a server that "
        "forgets to close leaks one socket and one descriptor per client, for as long as it "
        "runs.  Switchboard's reversal service answers every end of file with its own close."
    )
    nb.explain(
        "shutdown(SHUT_WR) is a half-close: it sends our FIN but keeps the socket open for "
        "reading, so the answer to what we sent still arrives; the reversal service uses our "
        "FIN as the end of an unterminated last line, answers it, then closes its side."
    )


EXPERIMENT = Experiment(
    name="close",
    question="Who closes first decides who waits: where do TIME_WAIT, FIN_WAIT_2 and "
    "CLOSE_WAIT appear, and for how long?",
    add_arguments=add_arguments,
    run=run,
)
