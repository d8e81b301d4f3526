"""``switchboard lab backlog``: with the server paused between listen() and accept(), does
connect() succeed?

For each backlog value, a listener of our own that never accepts, and N clients connecting
at once (non-blocking): the kernel completes the handshake of backlog + 1 of them and queues
them (ESTABLISHED on both sides, the listener's Recv-Q counting them); the SYNs of the others
are dropped while the queue is full (SYN_SENT, retried after 1 s, 3 s, 7 s ...).  Then, for
one backlog, the listener accepts one connection at a time and the waiting clients get in at
their next retry; a client whose handshake completed while the queue was full stays
ESTABLISHED on its side while the server holds it in SYN_RECV.
"""

from __future__ import annotations

import argparse
import socket
import time
from dataclasses import dataclass, field
from typing import Final

from switchboard.protocol.trace import host_port

from .notebook import Experiment, LabUnavailable, Notebook
from .sockets import (
    TcpSocket,
    TcpState,
    close_with_reset,
    kernel_setting,
    read_sockets,
    wait_for_sockets,
)

HOST: Final = "127.0.0.1"
BACKLOGS: Final = (0, 1, 2, 3)
CLIENTS: Final = 4
MAX_CLIENTS: Final = 64
#: The backlog whose queue is then accepted one connection at a time (the issue's example).
ACCEPT_BACKLOG: Final = 1
#: Seconds to wait for the kernel to show a settled state after the connects.
SETTLE_S: Final = 5.0
#: Seconds an accept() waits for a waiting client's retry: past the third SYN (1 + 2 + 4 s).
ACCEPT_WAIT_S: Final = 8.0


def backlog_list(text: str) -> list[int]:
    """``0,1,2,3``: backlog values, each 0-128."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or not all(0 <= v <= 128 for v in values):
        raise argparse.ArgumentTypeError(f"backlogs must be 0-128: {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backlogs",
        type=backlog_list,
        default=list(BACKLOGS),
        metavar="B,B,...",
        help="the backlog values tried, one listener each (default 0,1,2,3)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=CLIENTS,
        metavar="N",
        help=f"clients connecting to each listener (1-{MAX_CLIENTS}, default {CLIENTS})",
    )
    parser.add_argument(
        "--accept-backlog",
        type=int,
        default=ACCEPT_BACKLOG,
        metavar="B",
        help="the backlog (one of --backlogs) whose queue is then accepted one connection "
        f"at a time (default {ACCEPT_BACKLOG})",
    )


@dataclass
class Round:
    """One listener that does not accept, and the clients that connected to it."""

    backlog: int
    listener: socket.socket
    port: int
    clients: list[socket.socket] = field(default_factory=list)
    client_ports: set[int] = field(default_factory=set)
    accepted: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in (*self.clients, *self.accepted):
            close_with_reset(sock)  # no TIME_WAIT: the experiment leaves nothing behind
        self.listener.close()


@dataclass(frozen=True)
class Snapshot:
    """What the kernel shows of one round: the clients' side, the server's side, the queue."""

    client_states: dict[int, TcpState]
    accept_queue: int
    server_established: int
    server_syn_recv: int
    #: Clients ESTABLISHED on their side of which the server keeps nothing: answered with a
    #: SYN cookie, their ACK dropped while the accept queue was full.
    clients_unknown_to_server: int

    def clients_in(self, state: TcpState) -> int:
        return sum(1 for s in self.client_states.values() if s is state)


def snapshot(rnd: Round, seen: list[TcpSocket]) -> Snapshot:
    ports = rnd.client_ports
    listener = [s for s in seen if s.state is TcpState.LISTEN and s.local_port == rnd.port]
    server = [s for s in seen if s.local_port == rnd.port and s.state is not TcpState.LISTEN]
    known = {s.remote_port for s in server}
    clients = {s.local_port: s.state for s in seen if s.local_port in ports}
    return Snapshot(
        client_states=clients,
        clients_unknown_to_server=sum(
            1 for port, st in clients.items() if st is TcpState.ESTABLISHED and port not in known
        ),
        accept_queue=listener[0].rx_queue if listener else 0,
        server_established=sum(1 for s in server if s.state is TcpState.ESTABLISHED),
        server_syn_recv=sum(
            1 for s in server if s.state in (TcpState.SYN_RECV, TcpState.NEW_SYN_RECV)
        ),
    )


def settled(rnd: Round) -> Snapshot:
    """Wait until every client is ESTABLISHED (queued) or SYN_SENT (dropped), the queue holds
    what the server side shows, and no client waits in SYN_SENT while the queue has room (its
    SYN would be let in: it is still on its way, in a busy machine's softirq backlog); that
    snapshot, or the last one seen after ``SETTLE_S``."""

    def done(seen: list[TcpSocket]) -> bool:
        snap = snapshot(rnd, seen)
        states = set(snap.client_states.values())
        return (
            len(snap.client_states) == len(rnd.clients)
            and states <= {TcpState.ESTABLISHED, TcpState.SYN_SENT}
            and snap.accept_queue == snap.server_established - len(rnd.accepted)
            and (TcpState.SYN_SENT not in states or snap.accept_queue > rnd.backlog)
        )

    return snapshot(rnd, wait_for_sockets([rnd.port], done, SETTLE_S))


def start_round(backlog: int, clients: int) -> Round:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(backlog)  # ... and no accept() yet: the server is "paused"
    rnd = Round(backlog, listener, listener.getsockname()[1])
    for _ in range(clients):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        rnd.clients.append(client)
        client.setblocking(False)
        client.connect_ex((HOST, rnd.port))  # EINPROGRESS: the handshake is the kernel's
        rnd.client_ports.add(client.getsockname()[1])
    return rnd


def run(args: argparse.Namespace, nb: Notebook) -> None:
    if not 1 <= args.clients <= MAX_CLIENTS:
        raise LabUnavailable(f"--clients must be 1-{MAX_CLIENTS}, not {args.clients}")
    if args.accept_backlog not in args.backlogs:
        raise LabUnavailable(f"--accept-backlog {args.accept_backlog} is not one of --backlogs")
    somaxconn = int(kernel_setting("net/core/somaxconn"))
    syn_retries = int(kernel_setting("net/ipv4/tcp_syn_retries"))
    synack_retries = int(kernel_setting("net/ipv4/tcp_synack_retries"))
    nb.observe("somaxconn", somaxconn)
    nb.observe("syn_retries", syn_retries)
    nb.step(
        f"net.core.somaxconn is {somaxconn} (the cap on any backlog); a SYN is retried "
        f"{syn_retries} times (net.ipv4.tcp_syn_retries), a SYN-ACK {synack_retries} times"
    )
    rows = []
    queues: dict[str, int] = {}
    per_backlog: dict[str, dict[str, int]] = {}
    rounds: list[Round] = []
    try:
        for backlog in args.backlogs:
            rnd = start_round(backlog, args.clients)
            rounds.append(rnd)
            snap = settled(rnd)
            nb.step(
                f"backlog {backlog}: listen() on {host_port(HOST, rnd.port)}, no accept(); "
                f"{args.clients} clients connect()"
            )
            queues[str(backlog)] = snap.accept_queue
            per_backlog[str(backlog)] = {
                "accept_queue": snap.accept_queue,
                "clients_established": snap.clients_in(TcpState.ESTABLISHED),
                "clients_syn_sent": snap.clients_in(TcpState.SYN_SENT),
                "server_syn_recv": snap.server_syn_recv,
                "clients_unknown_to_server": snap.clients_unknown_to_server,
            }
            rows.append(
                (
                    backlog,
                    backlog + 1,
                    snap.accept_queue,
                    snap.clients_in(TcpState.ESTABLISHED),
                    snap.clients_in(TcpState.SYN_SENT),
                    snap.server_syn_recv,
                    snap.clients_unknown_to_server,
                )
            )
            if backlog != args.accept_backlog:
                rnd.close()
        nb.table(
            f"{args.clients} clients, the server paused before accept()",
            (
                "backlog",
                "backlog + 1",
                "accept queue (Recv-Q)",
                "clients ESTABLISHED",
                "clients SYN_SENT",
                "server SYN_RECV",
                "clients the server does not know",
            ),
            rows,
        )
        nb.observe("accept_queue", queues)
        nb.observe("listener_ports", [r.port for r in rounds])
        nb.observe("backlogs", per_backlog)
        accept_round = next(r for r in rounds if r.backlog == args.accept_backlog)
        accept_one_by_one(nb, accept_round)
    finally:
        for rnd in rounds:
            rnd.close()
    nb.explain(
        "listen(fd, backlog) makes the socket a listener; from then on the kernel answers "
        "SYNs and completes handshakes by itself, and puts each finished connection in the "
        "accept queue, whether the program calls accept() or not.  So connect() succeeds "
        "before the server has accepted anything: the listener's Recv-Q (ss -ltn) is how many "
        "wait there.  Linux queues backlog + 1 connections (the queue counts as full only "
        "when it holds more than backlog) and caps the backlog at net.core.somaxconn."
    )
    nb.explain(
        "While the queue is full, Linux drops incoming SYNs instead of refusing them: the "
        "client stays in SYN_SENT and retries after 1 s, then 3 s, 7 s ... "
        f"({syn_retries} retries, about two minutes, before connect() fails with ETIMEDOUT). "
        "A client whose SYN got in while there was room, but whose final ACK arrived when "
        "the queue was full again, is ESTABLISHED on its side and SYN_RECV on the server's "
        "until a SYN-ACK retransmission finds room.  Each accept() makes room for one more."
    )
    nb.explain(
        "With backlog 0 Linux also counts its SYN queue as full from the start and answers "
        'SYNs with SYN cookies (net.ipv4.tcp_syncookies; the kernel log says "Possible SYN '
        'flooding"): it keeps no state for a half-open connection, so a client whose ACK '
        "was dropped while the accept queue was full is ESTABLISHED on its side and unknown "
        "to the server, and gets in only when it sends data (its ACK carries the cookie)."
    )
    nb.explain(
        "switchboard serve --backlog N sets the same listen() backlog for the server (by "
        "default --max-clients, within 128-4096)."
    )


def accept_one_by_one(nb: Notebook, rnd: Round) -> None:
    """Accept the clients of ``rnd`` one at a time, each time once the queue is full again
    (or holds every client not accepted yet): the waiting clients get in at their retries."""
    nb.step(
        f"backlog {rnd.backlog}: the server accepts one connection, waits until the queue is "
        "full again (or holds every client left), accepts the next ..."
    )
    start = time.monotonic()
    rnd.listener.settimeout(ACCEPT_WAIT_S)
    timeline = []
    rows = []
    while len(rnd.accepted) < len(rnd.clients):
        left = len(rnd.clients) - len(rnd.accepted)
        wanted = min(rnd.backlog + 1, left)

        def refilled(seen: list[TcpSocket], wanted: int = wanted) -> bool:
            snap = snapshot(rnd, seen)
            retrying = snap.clients_in(TcpState.SYN_SENT) + snap.server_syn_recv
            return snap.accept_queue >= wanted or not retrying

        snap = snapshot(rnd, wait_for_sockets([rnd.port], refilled, ACCEPT_WAIT_S))
        at = round(time.monotonic() - start, 2)
        if snap.accept_queue == 0 and not snap.clients_in(TcpState.SYN_SENT) + snap.server_syn_recv:
            break  # nobody is retrying: nothing more will arrive
        try:
            conn, peer = rnd.listener.accept()
        except TimeoutError:
            nb.step(f"no further client within {ACCEPT_WAIT_S:g} s")
            break
        rnd.accepted.append(conn)
        waiting = snap.clients_in(TcpState.SYN_SENT)
        timeline.append(
            {"t_s": at, "accept_queue": snap.accept_queue, "clients_syn_sent": waiting,
             "server_syn_recv": snap.server_syn_recv, "accepted_port": peer[1]}
        )  # fmt: skip
        rows.append((f"{at:.2f}", snap.accept_queue, waiting, snap.server_syn_recv, peer[1]))
    nb.table(
        f"accept() one by one, backlog {rnd.backlog}",
        (
            "t (s)",
            "accept queue",
            "clients SYN_SENT",
            "server SYN_RECV",
            "accept() returns client port",
        ),
        rows,
    )
    nb.observe("accepted", len(rnd.accepted))
    nb.observe("accept_timeline", timeline)
    ghosts = snapshot(rnd, read_sockets([rnd.port])).clients_unknown_to_server
    nb.observe("clients_unknown_to_server", ghosts)
    if ghosts:
        nb.step(
            f"{ghosts} client(s) ESTABLISHED on their side that the server knows nothing of: "
            "answered with SYN cookies, their ACK dropped while the queue was full; they "
            "would get in only by sending data"
        )


EXPERIMENT = Experiment(
    name="backlog",
    question="With the server paused between listen() and accept(), does connect() succeed? "
    "How many wait in the accept queue?",
    add_arguments=add_arguments,
    run=run,
)
