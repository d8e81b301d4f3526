"""``switchboard lab cable``: pull the cable, then quit the client: does the client's FIN
reach the server, and what does the server's socket do over time?

Two network namespaces made for the run, a server's and a client's, joined by a veth pair
(the cable).  In the server's namespace: a plain TCP server that only waits (no heartbeat), a
plain TCP server with TCP keepalive on the accepted socket, and a real ``switchboard serve``
with its heartbeat; a bystander there asks it for LIST throughout.  In the client's
namespace one client holds a connection to each.  Then the client's end of the cable goes
down and the client quits (closes its three sockets), and the experiment reads both
namespaces' TCP tables every few hundredths of a second: the client's FINs never leave, the
server's sockets stay ESTABLISHED until something notices.

Timers are scaled down, and the output says so: TCP keepalive is set per socket (TCP_KEEPIDLE,
TCP_KEEPINTVL, TCP_KEEPCNT; the host's defaults, read from /proc/sys, are 2 hours and more),
and the Switchboard heartbeat is ``--heartbeat`` 0.5 s (default 10 s).  No host setting is
changed; everything is made inside the namespaces, which are removed at the end (also on
Ctrl-C), sockets and all.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from switchboard import defaults
from switchboard.client import Client

from .netns import THREAD_TCP_TABLES, NetworkSandbox, VethLink, inside
from .notebook import Experiment, LabUnavailable, Notebook
from .server_process import ServerProcess
from .sockets import TcpSocket, TcpState, close_with_reset, kernel_setting, read_sockets

#: The scaled-down timers (seconds) and how long to watch after the pull.
HEARTBEAT_S: Final = 0.5
KEEPALIVE_S: Final = 1.0
KEEPALIVE_PROBES: Final = 3
WATCH_S: Final = 6.0
MAX_WATCH_S: Final = 60.0
#: Seconds between two readings of the kernel's tables (and LIST).
SAMPLE_S: Final = 0.05
#: Seconds to wait for a connection or an answer before the pull.
SETUP_TIMEOUT_S: Final = 5.0

#: The three connections, by the key their observations use.
NO_HEARTBEAT: Final = "no_heartbeat"
KEEPALIVE: Final = "tcp_keepalive"
HEARTBEAT: Final = "switchboard_heartbeat"
LABELS: Final = {
    NO_HEARTBEAT: "plain server, no heartbeat",
    KEEPALIVE: "plain server, TCP keepalive",
    HEARTBEAT: "switchboard serve, heartbeat",
}


def positive(limit: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not 0.1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be 0.1-{limit:g} seconds, not {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--heartbeat",
        type=positive(10.0),
        default=HEARTBEAT_S,
        metavar="SECONDS",
        help=f"the Switchboard server's --heartbeat (default {HEARTBEAT_S:g}; the server's "
        f"own default is {defaults.HEARTBEAT_S:g})",
    )
    parser.add_argument(
        "--keepalive",
        type=positive(10.0),
        default=KEEPALIVE_S,
        metavar="SECONDS",
        help=f"TCP keepalive idle time and probe interval, {KEEPALIVE_PROBES} probes "
        f"(default {KEEPALIVE_S:g}; Linux's default idle time is 2 hours)",
    )
    parser.add_argument(
        "--watch",
        type=positive(MAX_WATCH_S),
        default=WATCH_S,
        metavar="SECONDS",
        help=f"how long to watch after the pull at most (default {WATCH_S:g})",
    )


@dataclass
class Connection:
    """One of the client's three connections: both ends' ports and what each side showed."""

    key: str
    server_port: int
    client_port: int = 0
    server_states: list[tuple[float, str]] = field(default_factory=list)
    client_states: list[tuple[float, str]] = field(default_factory=list)

    def record(self, side: str, at: float, state: str) -> bool:
        """Note ``state`` at ``at`` if it differs from the last one; whether it did."""
        states = self.server_states if side == "server" else self.client_states
        if states and states[-1][1] == state:
            return False
        states.append((round(at, 2), state))
        return True

    def left_established(self) -> float | None:
        """When the server's socket stopped being ESTABLISHED, after the pull."""
        for at, state in self.server_states:
            if at > 0 and state != TcpState.ESTABLISHED.name:
                return at
        return None


def state_of(sockets: list[TcpSocket], local_port: int, remote_port: int) -> str:
    """The state of the socket ``local_port`` -> ``remote_port``, or "gone"."""
    for s in sockets:
        if s.local_port == local_port and s.remote_port == remote_port:
            return s.state.name
    return "gone"


def listener(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(1)
    sock.settimeout(SETUP_TIMEOUT_S)
    return sock


def keep_alive(sock: socket.socket, seconds: float) -> None:
    """TCP keepalive on ``sock``: first probe after ``seconds`` idle, then every ``seconds``,
    and the connection is dropped after KEEPALIVE_PROBES unanswered probes."""
    whole = max(1, round(seconds))  # the options take whole seconds
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, whole)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, whole)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


def what_recv_says(sock: socket.socket) -> str:
    """What a program blocked in recv() on ``sock`` would learn now."""
    sock.setblocking(False)
    try:
        data = sock.recv(1)
    except BlockingIOError:
        return "nothing yet (it would still be waiting)"
    except OSError as exc:
        return f"error {errno.errorcode.get(exc.errno or 0, exc.errno)} ({exc.strerror})"
    return "end of file (the peer's FIN)" if not data else f"{len(data)} byte(s)"


def run(args: argparse.Namespace, nb: Notebook) -> None:
    keepalive = float(max(1, round(args.keepalive)))
    kernel = {
        "time_s": int(kernel_setting("net/ipv4/tcp_keepalive_time")),
        "interval_s": int(kernel_setting("net/ipv4/tcp_keepalive_intvl")),
        "probes": int(kernel_setting("net/ipv4/tcp_keepalive_probes")),
    }
    nb.step(
        f"scaled-down timers: TCP keepalive {keepalive:g} s idle, {keepalive:g} s between "
        f"{KEEPALIVE_PROBES} probes (this host's defaults: {kernel['time_s']} s, "
        f"{kernel['interval_s']} s, {kernel['probes']} probes, set per socket here); "
        f"Switchboard heartbeat {args.heartbeat:g} s (default {defaults.HEARTBEAT_S:g} s)"
    )
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(NetworkSandbox())
        server_ns, client_ns = net.namespace(), net.namespace()
        cable = net.veth(server_ns, client_ns)
        nb.step(
            f"namespaces {server_ns} (server, {cable.a_ip} on {cable.a_if}) and {client_ns} "
            f"(client, {cable.b_ip} on {cable.b_if}), joined by a veth pair: the cable"
        )
        observed = watch_pulled_cable(nb, net, stack, cable, args, keepalive)
    report(nb, observed, args, keepalive, kernel)


@dataclass
class Observed:
    connections: dict[str, Connection]
    client_id: int
    listed: list[tuple[float, bool]]
    recv: dict[str, str]
    timeline: list[tuple[float, str, str, str]]
    watched_s: float
    server: dict[str, int]


def watch_pulled_cable(
    nb: Notebook,
    net: NetworkSandbox,
    stack: contextlib.ExitStack,
    cable: VethLink,
    args: argparse.Namespace,
    keepalive: float,
) -> Observed:
    server_ns, client_ns = cable.a_namespace, cable.b_namespace
    assert server_ns is not None and client_ns is not None
    host = cable.a_ip
    server = stack.enter_context(
        ServerProcess("--heartbeat", str(args.heartbeat), host=host, namespace=server_ns)
    )
    with inside(server_ns):
        plain, keeping = listener(host), listener(host)
    stack.callback(plain.close)
    stack.callback(keeping.close)
    connections = {
        NO_HEARTBEAT: Connection(NO_HEARTBEAT, plain.getsockname()[1]),
        KEEPALIVE: Connection(KEEPALIVE, keeping.getsockname()[1]),
        HEARTBEAT: Connection(HEARTBEAT, server.port),
    }
    with inside(client_ns):
        clients = [
            socket.create_connection((host, port), timeout=SETUP_TIMEOUT_S)
            for port in (plain.getsockname()[1], keeping.getsockname()[1])
        ]
        switchboard_client = Client(host, server.port, timeout=SETUP_TIMEOUT_S)
    for sock in clients:
        stack.callback(close_with_reset, sock)
    stack.callback(switchboard_client.close)
    accepted = [plain.accept()[0], keeping.accept()[0]]
    for sock in accepted:
        stack.callback(close_with_reset, sock)
    keep_alive(accepted[1], keepalive)
    connections[NO_HEARTBEAT].client_port = clients[0].getsockname()[1]
    connections[KEEPALIVE].client_port = clients[1].getsockname()[1]
    with inside(server_ns):
        bystander = Client(host, server.port, timeout=SETUP_TIMEOUT_S)
    stack.callback(bystander.close)
    me = switchboard_client.client_id
    listed = [c for c in bystander.list_clients() if c.client_id == me]
    if not listed:
        raise LabUnavailable("the server's LIST does not show the client before the pull")
    connections[HEARTBEAT].client_port = listed[0].port
    nb.step(
        f"client {cable.b_ip} connected to the plain server (port "
        f"{connections[NO_HEARTBEAT].server_port}), the keepalive server (port "
        f"{connections[KEEPALIVE].server_port}) and switchboard serve (port {server.port}, "
        f"client #{me}); a bystander in the server's namespace sees #{me} in LIST"
    )

    timeline: list[tuple[float, str, str, str]] = []
    listed_over_time: list[tuple[float, bool]] = []

    def sample(at: float) -> None:
        with inside(server_ns):
            server_side = read_sockets(None, THREAD_TCP_TABLES)
        with inside(client_ns):
            client_side = read_sockets(None, THREAD_TCP_TABLES)
        for conn in connections.values():
            state = state_of(server_side, conn.server_port, conn.client_port)
            if conn.record("server", at, state):
                timeline.append((at, "server", LABELS[conn.key], state))
            state = state_of(client_side, conn.client_port, conn.server_port)
            if conn.record("client", at, state):
                timeline.append((at, "client", LABELS[conn.key], state))
        shown = any(c.client_id == me for c in bystander.list_clients())
        if not listed_over_time or listed_over_time[-1][1] != shown:
            listed_over_time.append((round(at, 2), shown))
            timeline.append(
                (round(at, 2), "server", "LIST (bystander)",
                 f"#{me} {'listed' if shown else 'no longer listed'}")
            )  # fmt: skip

    sample(0.0)  # the states at the moment of the pull
    pulled = time.monotonic()
    net.set_link(client_ns, cable.b_if, "down")
    timeline.append((0.0, "client", "cable", f"{cable.b_if} down: the cable is pulled"))
    nb.step(f"pulled the cable: ip link set {cable.b_if} down in {client_ns}")
    for sock in clients:
        sock.close()
    switchboard_client.close()
    timeline.append((round(time.monotonic() - pulled, 2), "client", "all", "the client quits"))
    nb.step("the client quits: close() on its three sockets")
    deadline = pulled + args.watch
    while (now := time.monotonic()) < deadline:
        sample(now - pulled)
        settled = (
            connections[KEEPALIVE].left_established() is not None
            and connections[HEARTBEAT].left_established() is not None
        )
        if settled and now - pulled > 3 * args.heartbeat:
            sample(time.monotonic() - pulled)
            break
        time.sleep(SAMPLE_S)  # the sampling cadence; the deadline bounds the loop
    watched = time.monotonic() - pulled
    nb.step(f"watched both namespaces' TCP tables for {watched:.1f} s")
    recv = {
        NO_HEARTBEAT: what_recv_says(accepted[0]),
        KEEPALIVE: what_recv_says(accepted[1]),
    }
    try:
        line = server.wait_for_log(rf"disconnect #{me} .*heartbeat timeout", SETUP_TIMEOUT_S)
    except LabUnavailable:
        recv[HEARTBEAT] = "nothing in its log"
    else:
        recv[HEARTBEAT] = "its log: " + line.split("disconnect", 1)[1].strip()
    return Observed(
        connections, me, listed_over_time, recv, timeline, round(watched, 2),
        {"port": server.port, "pid": server.pid},
    )  # fmt: skip


def report(
    nb: Notebook,
    seen: Observed,
    args: argparse.Namespace,
    keepalive: float,
    kernel: dict[str, int],
) -> None:
    conns = seen.connections
    fin_arrived = any(
        state in (TcpState.CLOSE_WAIT.name, TcpState.LAST_ACK.name)
        for conn in conns.values()
        for _, state in conn.server_states
    )
    unlisted = [at for at, shown in seen.listed if not shown]
    nb.table(
        "timeline (seconds after the pull; states read from each namespace's /proc/net/tcp)",
        ["t (s)", "side", "connection", "what the kernel showed"],
        [[f"{at:+.2f}", side, what, state] for at, side, what, state in seen.timeline],
    )
    nb.table(
        "the server's side of each connection",
        ["connection", "states after the pull", "left ESTABLISHED after", "the program learns"],
        [
            [LABELS[key], " -> ".join(s for _, s in conn.server_states) or "-",
             f"{conn.left_established():.2f} s" if conn.left_established() is not None
             else f"no (still ESTABLISHED after {seen.watched_s:.1f} s)",
             seen.recv[key]]
            for key, conn in conns.items()
        ],
    )  # fmt: skip
    nb.observe("client_fin_reached_server", fin_arrived)
    nb.observe(
        "server_states",
        {key: [[at, state] for at, state in conn.server_states] for key, conn in conns.items()},
    )
    nb.observe(
        "client_states",
        {key: [[at, state] for at, state in conn.client_states] for key, conn in conns.items()},
    )
    nb.observe("dropped_after_s", {key: conn.left_established() for key, conn in conns.items()})
    nb.observe("listed_until_s", unlisted[0] if unlisted else None)
    nb.observe("heartbeat_s", args.heartbeat)
    nb.observe("heartbeat_misses", defaults.HEARTBEAT_MISSES)
    nb.observe(
        "keepalive", {"idle_s": keepalive, "interval_s": keepalive, "probes": KEEPALIVE_PROBES}
    )
    nb.observe("kernel_keepalive_defaults", kernel)
    nb.observe("recv_on_server", seen.recv)
    nb.observe("timeline", [list(entry) for entry in seen.timeline])
    nb.observe("watched_s", seen.watched_s)
    nb.observe("server", seen.server)
    limit = defaults.HEARTBEAT_MISSES * args.heartbeat
    nb.explain(
        "A pulled cable sends nothing: no FIN, no RST.  The client's close() queued a FIN that "
        "can never leave its end (its socket waits in FIN_WAIT1, retransmitting), so the "
        "server's kernel never hears of it: its socket stays ESTABLISHED, and a server that "
        "only waits in recv() waits forever; TCP itself has no timer on an idle connection."
    )
    nb.explain(
        f"TCP keepalive gives the kernel one: after {keepalive:g} s of silence it sends a "
        f"probe, and after {KEEPALIVE_PROBES} unanswered probes it drops the connection; the "
        "program learns it as ETIMEDOUT from its next recv().  The host's defaults are "
        f"{kernel['time_s']} s idle and {kernel['probes']} probes {kernel['interval_s']} s "
        "apart (over two hours), which is why applications do not rely on them."
    )
    nb.explain(
        f"Switchboard's heartbeat is the application's own: after {args.heartbeat:g} s of "
        f"silence the server sends PING, and a client silent for {defaults.HEARTBEAT_MISSES} "
        f"intervals ({limit:g} s) is dropped and leaves LIST; until then LIST shows a client "
        "that is no longer there.  The server then closes its end: its FIN cannot be "
        "delivered either, so that socket waits in FIN_WAIT1 until TCP gives up."
    )


EXPERIMENT: Final = Experiment(
    name="cable",
    question=(
        "Pull the cable, then quit the client: does its FIN reach the server, and how long "
        "until the server notices, without and with keepalive or a heartbeat?"
    ),
    add_arguments=add_arguments,
    run=run,
    needs_root=True,
)
