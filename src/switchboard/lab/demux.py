"""``switchboard lab demux``: how does one server port tell its clients apart?

A real Switchboard server on one port, and several clients: each accept() gave the server a
socket of its own, named by its 4-tuple (server address and port, client address and port),
which the kernel shows in /proc/net/tcp; the server's LIST names each client by id and by
the address and port it sees.  Two of the clients connect from the same source port on two
loopback addresses (127.0.0.1 and 127.0.0.2): one differing field of the 4-tuple is enough.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence
from typing import Final

from switchboard.client import Client
from switchboard.protocol import ClientInfo
from switchboard.protocol.trace import host_port

from .notebook import Experiment, LabUnavailable, Notebook
from .server import switchboard_server
from .sockets import Connection, TcpSocket, TcpState, retire_time_waits, wait_for_sockets

HOST: Final = "127.0.0.1"
#: A second loopback address (all of 127.0.0.0/8 is loopback on Linux).
OTHER_HOST: Final = "127.0.0.2"
CLIENTS: Final = 3
MAX_CLIENTS: Final = 32
SETTLE_S: Final = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clients",
        type=int,
        default=CLIENTS,
        metavar="N",
        help=f"clients with ports of the kernel's choosing (1-{MAX_CLIENTS}, default {CLIENTS}); "
        "two more share one source port on two addresses",
    )


def shared_source_port() -> int:
    """A port free on both loopback addresses."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def run(args: argparse.Namespace, nb: Notebook) -> None:
    if not 1 <= args.clients <= MAX_CLIENTS:
        raise LabUnavailable(f"--clients must be 1-{MAX_CLIENTS}, not {args.clients}")
    connections: list[Connection] = []
    try:
        observe(args, nb, connections)
    finally:
        # The clients closed first: their ends wait in TIME_WAIT; the server's port is free
        # now, so those entries can be retired and the experiment leaves nothing behind.
        retire_time_waits(connections)
    nb.explain(
        "A listening socket only takes new connections: for each one, accept() returns a new "
        "socket, and every one of them has the server's address and port as its local end. "
        "What tells them apart is the whole 4-tuple (client address, client port, server "
        "address, server port): the kernel looks an arriving segment up by all four in its "
        "table of established sockets first, and only a SYN that matches none goes to the "
        "listener.  So one port serves any number of clients, and two clients may even share "
        "a source port when their addresses differ."
    )
    nb.explain(
        "The server's LIST shows each client's address and port as the server's accepted "
        "socket sees them (getpeername): the remote half of that socket's 4-tuple, the same "
        "pair the client's own getsockname() returns."
    )


def observe(args: argparse.Namespace, nb: Notebook, connections: list[Connection]) -> None:
    """The server, the clients, LIST and the kernel's table; ``connections`` gets every
    connection made."""
    clients: list[Client] = []
    with switchboard_server(name="lab-demux", max_clients=args.clients + 8) as server:
        host = server.config.host
        where = host_port(host, server.port)
        try:
            nb.step(f"a Switchboard server listening on {where}")
            for _ in range(args.clients):
                clients.append(Client(host, server.port))
            nb.step(f"{args.clients} clients connect; the kernel picks each one's source port")
            shared = shared_source_port()
            for local in (HOST, OTHER_HOST):
                clients.append(Client(host, server.port, local_address=(local, shared)))
            nb.step(
                f"two more bind the same source port {shared}, one on {HOST}, one on "
                f"{OTHER_HOST}, then connect"
            )
            listed = clients[0].list_clients()
            nb.step(f"LIST from client #{clients[0].client_id}: {len(listed)} clients")
            expected = len(clients)
            kernel = wait_for_sockets(
                [server.port],
                lambda seen: len(accepted(seen, server.port)) >= expected,
                SETTLE_S,
            )
            report(nb, server.port, listed, kernel, shared)
        finally:
            for client in clients:
                client.close()
                # WELCOME says the address and port the server sees: this end's.
                me = (client.welcome.ip, client.welcome.port)
                connections.append((me, (host, server.port)))


def accepted(seen: list[TcpSocket], port: int) -> list[TcpSocket]:
    """The server's accepted sockets on ``port`` (its listener left out)."""
    return [s for s in seen if s.local_port == port and s.state is TcpState.ESTABLISHED]


def report(
    nb: Notebook, port: int, listed: Sequence[ClientInfo], kernel: list[TcpSocket], shared: int
) -> None:
    by_peer = {s.remote: s for s in accepted(kernel, port)}
    listener = [s for s in kernel if s.state is TcpState.LISTEN and s.local_port == port]
    rows: list[tuple[object, ...]] = []
    matched = []
    for info in listed:
        sock = by_peer.get((info.ip, info.port))
        rows.append(
            (
                info.client_id,
                host_port(info.ip, info.port),
                host_port(*sock.local) if sock else "-",
                host_port(*sock.remote) if sock else "-",
                sock.state.name if sock else "not in /proc/net/tcp",
            )
        )
        matched.append(
            {
                "id": info.client_id,
                "ip": info.ip,
                "port": info.port,
                "local": host_port(*sock.local) if sock else None,
                "remote": host_port(*sock.remote) if sock else None,
                "state": sock.state.name if sock else None,
            }
        )
    if listener:
        rows.append(("(listener)", "", host_port(*listener[0].local), "*", "LISTEN"))
    nb.table(
        f"one server port, {len(listed)} connections: LIST beside the server's sockets",
        ("client id", "LIST ip:port", "server socket local", "server socket remote", "state"),
        rows,
    )
    four_tuples = {(s.local, s.remote) for s in accepted(kernel, port)}
    nb.observe("server_port", port)
    nb.observe("clients", matched)
    nb.observe("accepted_sockets", len(accepted(kernel, port)))
    nb.observe("distinct_four_tuples", len(four_tuples))
    nb.observe("local_ends", sorted({host_port(*s.local) for s in accepted(kernel, port)}))
    nb.observe("shared_source_port", shared)
    nb.observe(
        "connections_from_shared_port",
        sorted(host_port(*s.remote) for s in accepted(kernel, port) if s.remote_port == shared),
    )


EXPERIMENT = Experiment(
    name="demux",
    question="How does one server port tell its clients apart?",
    add_arguments=add_arguments,
    run=run,
)
