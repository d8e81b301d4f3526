"""The listener and the server's lifecycle: admit, dispatch, heartbeat, shut down.

The top of server/: the only module that knows ``SwitchboardServer``; the others know it
through the Protocols they declare (handlers.Server, connection.ConnectionServer,
tls.HandshakeServer), so that their imports point one way (connection -> handlers ->
registry; tests/unit/test_server_layers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from switchboard import defaults, eventloop
from switchboard.protocol import (
    CLOSING_CODES,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    ErrorCode,
    ErrorResponse,
    Frame,
    FrameDecoder,
    HelloRequest,
    InvalidFrame,
    Left,
    LeftReason,
    MessageClass,
    Ping,
    ReceiptStatus,
    Shutdown,
    Welcome,
    encode,
)
from switchboard.protocol.codec import decode_payload
from switchboard.protocol.fastpath import ServerClock, encode_receipt
from switchboard.protocol.trace import host_port
from switchboard.wording import plural

from . import logs
from .admission import AuthThrottle, ConnectionCounts, source_of
from .config import ConfigError, ServerConfig, load_tokens
from .connection import ClientConnection, Tracer
from .directory import Directory, LocalDirectory
from .errors import AnswerLater, RequestFailed
from .handlers import HANDLERS, line_ordered, lines_committed, send_receipts, tables
from .history import (
    GroupCommit,
    HistoryReads,
    HistoryStore,
    HistoryUnavailable,
    SharedHistory,
    now_ms,
    open_store,
)
from .http import HttpListener
from .metrics import ServerMetrics, disconnect_reason, make_registry, render
from .registry import Peer, Room
from .tls import TlsHandshake
from .transport import enable_keepalive
from .websocket import WebSocketTransport

#: Where a cluster node's number starts in its message ids (2^40 messages per node).
MESSAGE_ID_NODE_SHIFT = 40

if TYPE_CHECKING:
    from .cluster import ClusterNode, RedisDirectory

log = logs.log


class SwitchboardServer:
    """A running Switchboard server (one asyncio event loop)."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        trace: Tracer | None = None,
        history: HistoryStore | None = None,
    ) -> None:
        self.config = config
        self.trace = trace
        #: Valid HELLO tokens; empty when the server needs none.
        self.tokens: frozenset[bytes] = (
            load_tokens(config.auth_token_file) if config.auth_token_file else frozenset()
        )
        self.ssl_context = make_ssl_context(config)
        #: Failed HELLOs per address, prefix and in total, and the hold they earn.
        self.auth = AuthThrottle()
        #: Connections admitted per address and per prefix, and their limits.
        self.connection_counts = ConnectionCounts(
            per_address=config.max_per_address,
            per_prefix=config.max_per_prefix,
            limit_loopback=config.limit_loopback,
        )
        self.handlers = HANDLERS
        #: The rate limit (requests/s per connection, 0 = off) and burst, read by the rate
        #: limit's table (handlers._rate_limited).
        self.rate = config.rate
        self.burst = float(config.burst)
        self.rate_step = 1.0 / self.rate if self.rate > 0 else 0.0
        #: The handler table of each connection state, keyed by header word
        #: (codec.HEADER_WORDS) as the split loop reads them (handlers.tables), wrapped by
        #: the rate limit and tracing when they are on, swapped for the shutdown's at shutdown.
        self.tables = tables(rate_limited=self.rate > 0, traced=trace is not None)
        self.clock = ServerClock()
        #: Who is connected, in which rooms, and how frames reach them (server/directory.py):
        #: this process's dicts.  Handlers and this class reach clients and rooms only
        #: through it.
        self.directory: Directory = LocalDirectory(
            config.history,
            max_rooms=config.max_rooms,
            max_rooms_per_client=config.max_rooms_per_client,
            history_bytes=config.history_bytes,
        )
        #: The directory's local fast map (the same dict), read once per run of SENDs by
        #: handlers.send to look each target up in one dict lookup.
        self.client_by_id: dict[int, Peer] = self.directory.client_by_id
        self.max_text = config.max_text
        self.max_unacked = config.max_unacked
        #: Bytes queued for a client before they are written to its transport mid-batch:
        #: a quarter of the high-water mark, so that the mark is seen within the batch that
        #: passes it (a batch may bring megabytes) and a queue stays within it plus this.
        self.flush_at = max(1, config.write_high_water // 4)
        #: The largest payload a frame's header may announce, read by every split loop.
        self.max_payload = config.max_frame - HEADER_SIZE
        #: A monotonic time's wall clock time is that plus this (ClientConnection.connected_ms).
        self.wall_offset = time.time() - time.monotonic()
        self.events = logs.EventLog()
        #: The counters /metrics exports (server/metrics.py), and their registry.
        self.metrics = ServerMetrics()
        self.metrics_registry = make_registry(self)
        #: Repeated events per source prefix (refusals, failed HELLOs, TLS handshakes); the
        #: per-client ones live on each connection (``client_event``).
        self.source_log = logs.RepeatedEvents(
            self.events,
            "",
            interval=config.log_repeat_interval,
            burst=config.log_repeat_burst,
            max_runs=defaults.LOG_REPEAT_SOURCES,
        )
        #: Connections with log lines being summarised (their counts flushed by the heartbeat).
        self._summarising: set[Peer] = set()
        self.shutting_down = False
        #: Where room lines are remembered (ConfigError, before anything listens, when the
        #: store cannot be used: a damaged or unwritable database).
        self.history: HistoryStore = history if history is not None else open_config_store(config)
        #: The group commits of a store written off the loop, and its reads (made by
        #: ``start``); HISTORY reads under way per connection id.
        self.commits: GroupCommit | None = None
        self.history_reads: HistoryReads | None = None
        self.reads_in_flight: dict[int, int] = {}
        #: The last message id given out (ids count up and are never reused: with a durable
        #: store, from the highest id it holds).
        self.message_ids = self.history.last_id
        #: The highest room-line id committed and delivered (handlers.lines_committed).
        self.delivered_id = self.history.last_id
        #: monotonic time of the last pruning of lines past --history-max-age.
        self._pruned_at = 0.0
        #: Every connection, admitted or not, until closed (a dict as an ordered set: an
        #: entry costs a third of a set's at 10,000 connections).
        self._connections: dict[Peer, None] = {}
        #: Connections with frames queued outside their own batch, written once per loop
        #: pass (or sooner: flush_pending).
        self.dirty: list[Peer] = []
        #: TLS handshakes under way (not yet in _connections), cancelled at shutdown.
        self._handshakes: dict[TlsHandshake, asyncio.Task[None]] = {}
        #: Admitted connections that have not authenticated yet, oldest first (token servers).
        self._unauthenticated: dict[Peer, None] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._listeners: list[asyncio.Server] = []
        #: The web page, /ws, /metrics and the health checks (--http), when on.
        self.http: HttpListener | None = None
        self._heartbeat_handle: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: This process as a node of a cluster (``--cluster``; server/cluster.py), or None.
        self.cluster: ClusterNode | None = None
        #: Requests being answered later (``answer_later``), kept until answered.
        self._answering: set[asyncio.Task[None]] = set()
        #: The cluster's directory (the same object as ``directory``) on a node, or None.
        self.shared_directory: RedisDirectory | None = None
        #: On a node, the same object again as the store that orders and keeps room lines
        #: (its Redis streams: server/cluster_history.py); None on a single server.
        self.shared_history: SharedHistory | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every (host, port) the server listens on."""
        out = []
        for listener in self._listeners:
            for sock in listener.sockets:
                host, port = sock.getsockname()[:2]
                out.append((host, port))
        return out

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    async def start(self) -> None:
        """Bind and start accepting."""
        self._loop = asyncio.get_running_loop()
        if self.history.deferred and self.commits is None:
            self.commits = GroupCommit(
                self.history, self._loop, lambda batch, error: lines_committed(self, batch, error)
            )
            self.history_reads = HistoryReads(self._loop)
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._stopped = asyncio.Event()
        self.events.refresh()
        host: str | None = self.config.host or None
        factory: Callable[[], asyncio.Protocol] = (
            (lambda: ClientConnection(self))
            if self.ssl_context is None
            else (lambda: TlsHandshake(self, ClientConnection(self)))
        )
        if self.config.cluster is not None:
            # Imported here: a single server does not load the Redis client at all.
            from .cluster import ClusterNode

            self.cluster = ClusterNode(self.config, self.events)
            await self.cluster.connect()  # before listening: Redis away is exit 2
            await self._share_directory(self.cluster)
        listener = await self._loop.create_server(
            factory,
            host,
            self.config.port,
            reuse_address=True,
            reuse_port=self.config.reuse_port or None,
            backlog=self.config.listen_backlog,
            # TLS is started per connection (start_tls) so that failed handshakes can be
            # logged: with ssl= here, asyncio and uvloop drop them without a word.
        )
        enable_keepalive(listener.sockets, self.config.heartbeat)
        self._listeners.append(listener)
        if self.config.http != defaults.HTTP_OFF:
            self.http = HttpListener(self, self.ssl_context)
            try:
                await self.http.start()
            except BaseException:
                listener.close()
                raise
        if self.cluster is not None:
            await self._join_cluster(self.cluster)
        self._schedule_heartbeat()
        self._warn_if_exposed()
        self._warn_if_token_file_open()
        tls = "on" if self.ssl_context is not None else "off"
        tokens = f"{len(self.tokens)} token(s)" if self.tokens else "off"
        for host_, port in self.addresses:
            self.events.event(
                logging.INFO,
                "listening",
                "listening on %s as %r (max %s, heartbeat %gs, TLS %s, auth %s)",
                host_port(host_, port),
                self.config.name,
                plural(self.config.max_clients, "client"),
                self.config.heartbeat,
                tls,
                tokens,
                host=host_,
                port=port,
                tls=self.ssl_context is not None,
                auth=bool(self.tokens),
            )
        if self.http is not None:
            for host_, port in self.http.addresses:
                url = f"{self.http.scheme}://{host_port(host_, port)}"
                # Not "listening on": that line names the protocol's own port.
                self.events.event(
                    logging.INFO,
                    "http",
                    "web page on %s/ (WebSocket %s/ws, metrics %s/metrics)",
                    url,
                    url.replace("http", "ws", 1),
                    url,
                    host=host_,
                    port=port,
                    url=url + "/",
                )
        where = self.history.where
        if self.shared_history is None:  # a cluster's line ids come from its Redis: no start
            where = f"{where} (ids from {self.history.last_id + 1})"
        self.events.event(
            logging.INFO,
            "history",
            "room history: %s",
            where,
            store=self.history.where,
            last_id=self.history.last_id,
            epoch=self.history.epoch,
        )

    async def _share_directory(self, cluster: ClusterNode) -> None:
        """Swap the local directory for the cluster's (before any client is admitted)."""
        from .cluster import RedisDirectory
        from .cluster_history import StreamHistory

        cfg = self.config
        store = self.history
        directory = RedisDirectory(
            cluster,
            cfg.history,
            max_unacked=cfg.max_unacked,
            max_rooms=cfg.max_rooms,
            max_rooms_per_client=cfg.max_rooms_per_client,
            history_bytes=cfg.history_bytes,
            store=store if isinstance(store, StreamHistory) else None,
        )
        await directory.prepare()
        directory.on_line = lambda pending, line_id, error: line_ordered(
            self, pending, line_id, error
        )
        self.directory = self.shared_directory = self.shared_history = directory
        self.client_by_id = directory.client_by_id

    async def _join_cluster(self, cluster: ClusterNode) -> None:
        """Join as a node named after the port now bound (unless --node-name names it);
        stop listening again if the cluster will not have it."""
        from .cluster import default_node_name

        try:
            await cluster.join(self.config.node_name or default_node_name(self.port))
            # Message ids unique across the cluster: this node's number in the top bits
            # (a receipt is found by its message id in the recipient's awaiting_ack).
            self.message_ids = max(self.message_ids, cluster.number << MESSAGE_ID_NODE_SHIFT)
            if self.shared_directory is not None:
                self.shared_directory.start()  # writing this node's clients, following others
        except BaseException:
            for listener in self._listeners:
                listener.close()
            raise

    def _warn_if_exposed(self) -> None:
        http = self.http
        if http is not None and self.ssl_context is None and not _is_loopback(http.host):
            log.warning(
                "serving the web page and /ws on %r without TLS: browsers' messages (and "
                "tokens) cross the network in clear text; use --tls-cert/--tls-key or a TLS "
                'proxy (docs/SECURITY.md, "The web listener")',
                http.host or "*",
                extra={"event": "exposed", "risk": "http-no-tls"},
            )
        host = self.config.host
        if _is_loopback(host):
            return
        if self.ssl_context is None:
            log.warning(
                "listening on %r without TLS: messages (and tokens) cross the network in "
                "clear text; use --tls-cert/--tls-key",
                host or "*",
                extra={"event": "exposed", "risk": "no-tls"},
            )
        if not self.tokens:
            log.warning(
                "listening on %r without --auth-token-file: anyone who can reach this port "
                "can connect, list clients and send them messages",
                host or "*",
                extra={"event": "exposed", "risk": "no-auth"},
            )

    def _warn_if_token_file_open(self) -> None:
        # As ssh does for a private key: tokens others can read are everyone's tokens.
        path = self.config.auth_token_file
        if not path:
            return
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return  # it was read a moment ago; a vanished file is not this check's business
        if mode & 0o077:
            log.warning(
                "the token file %s is accessible by others (mode %04o): anyone on this "
                "machine can read the tokens; chmod 600 it",
                path,
                mode & 0o7777,
                extra={"event": "token_file_mode", "path": path, "mode": f"{mode & 0o7777:04o}"},
            )

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    async def shutdown(self, reason: str = "server shutting down") -> None:
        """Stop accepting, tell every client, flush, close everything."""
        if self.shutting_down:
            await self.wait_stopped()
            return
        self.shutting_down = True
        self.events.event(logging.INFO, "shutdown", "shutting down: %s", reason, reason=reason)
        # From now on every request is refused (SHUTTING_DOWN): new tables, in every state.
        self.tables = tables(closing=True, traced=self.trace is not None)
        for conn in self._connections:
            conn.take_table()
        for listener in self._listeners:
            listener.close()
        if self.http is not None:
            self.http.stop_accepting()
        handshakes = list(self._handshakes.values())
        for handshake in handshakes:
            handshake.cancel()
        if self._heartbeat_handle is not None:
            self._heartbeat_handle.cancel()
        if self.commits is not None:
            # Every BROADCAST taken is committed and answered before the clients are told.
            await self.commits.drain()
        notice = Shutdown(reason)
        for conn in list(self._connections):
            conn.send(notice)  # a held HELLO's connection (HELD) hears it too
            conn.close("shutdown")
        if handshakes:
            await asyncio.wait(handshakes, timeout=1.0)
        assert self._all_closed is not None and self._stopped is not None
        try:
            await asyncio.wait_for(self._all_closed.wait(), self.config.shutdown_grace)
        except TimeoutError:
            for conn in list(self._connections):
                conn.abort("shutdown (peer did not close in time)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), 1.0)
        for listener in self._listeners:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), 1.0)
        if self.http is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.http.close(), 2.0)
        if self.cluster is not None:
            # Bounded: a Redis that stopped answering must not keep the process alive.
            try:
                await asyncio.wait_for(self.cluster.leave(), self.cluster.timeout * 3 + 1.0)
            except TimeoutError:
                log.warning(
                    "could not leave the cluster within %.1fs: its lease ends on its own",
                    self.cluster.timeout * 3 + 1.0,
                    extra={"event": "cluster_leave_failed"},
                )
        self.flush_log_counts()
        self.close_history()
        self._stopped.set()

    def close_history(self) -> None:
        """Wait for the writer thread and close the store (at the end of shutdown)."""
        if self.commits is not None:
            self.commits.close()
        if self.history_reads is not None:
            self.history_reads.close()
        self.history.close()

    def history_failed(self, reason: str) -> None:
        """The store failed (disk full, I/O error): one WARNING per interval, the rest
        counted, however many requests it fails."""
        self.source_log.event(
            "history",
            logging.WARNING,
            "history_unavailable",
            "history store: %s",
            reason,
            reason=reason,
        )

    def _prune_history(self) -> None:
        """Delete the lines past --history-max-age, on the writer thread after the commits
        queued before (from the heartbeat, at most once per HISTORY_PRUNE_INTERVAL_S or half
        the age)."""
        now = time.monotonic()
        # A line outlives its age by at most the interval, or half its age when shorter.
        interval = min(defaults.HISTORY_PRUNE_INTERVAL_S, self.config.history_max_age / 2)
        if self.commits is None or not interval or now - self._pruned_at < interval:
            return
        self._pruned_at = now
        self._prune_chunk(now_ms())

    def _prune_chunk(self, at_ms: int) -> None:
        """One chunk of the pruning at ``at_ms``; the next, if it was full, once it is done
        (the commits queued meanwhile go first)."""
        if self.commits is None or self.shutting_down:
            return
        history = self.history
        chunk = defaults.HISTORY_PRUNE_CHUNK
        future = self.commits.run(lambda: history.prune(at_ms, chunk))

        def pruned(f: asyncio.Future[Any]) -> None:
            error = None if f.cancelled() else f.exception()
            if isinstance(error, HistoryUnavailable):
                self.history_failed(f"cannot delete old lines: {error}")
            elif error is not None:
                log.error("pruning the history failed: %r", error)
            elif f.result() >= chunk:
                self._prune_chunk(at_ms)

        future.add_done_callback(pruned)

    # --- connections -------------------------------------------------------------------------

    def new_connection(self) -> ClientConnection:
        """A connection for a carrier other than the TCP listener's (a WebSocket)."""
        return ClientConnection(self)

    def ready(self) -> bool:
        """Listening, not shutting down, and, on a cluster node, in touch with the cluster's
        Redis (/readyz)."""
        if self.cluster is not None and not self.cluster.available:
            return False
        return bool(self._listeners) and not self.shutting_down

    def connections(self) -> list[Peer]:
        """Every open connection, admitted or not."""
        return list(self._connections)

    def transport_kind(self, conn: Peer) -> str:
        """ "websocket", "tls" or "tcp": what carries ``conn`` (a /metrics label)."""
        if isinstance(conn.transport, WebSocketTransport):
            return "websocket"
        return "tcp" if self.ssl_context is None else "tls"

    def metrics_text(self) -> tuple[bytes, str]:
        """/metrics: the Prometheus text format and its content type."""
        return render(self.metrics_registry)

    def start_tls(self, handshake: TlsHandshake) -> None:
        """Called by a new connection to a TLS server: handshake (logging a failure), then
        the ClientConnection gets the TLS transport."""
        assert self._loop is not None
        if len(self._handshakes) >= self.config.max_clients or self.shutting_down:
            # Handshakes are not clients yet, but each holds a descriptor: no more of them at
            # once than clients.  No protocol frame can be sent before TLS: close at once.
            handshake.refuse(f"{len(self._handshakes)} TLS handshakes in progress")
            return
        self._handshakes[handshake] = self._loop.create_task(self._tls_handshake(handshake))

    async def _tls_handshake(self, handshake: TlsHandshake) -> None:
        assert self.ssl_context is not None
        try:
            tls = await handshake.run(self.ssl_context, self.config.handshake_timeout)
        finally:
            self._handshakes.pop(handshake, None)
        if tls is None:
            return
        if self.shutting_down:
            tls.abort()
            return
        handshake.conn.connection_made(tls)

    def admit(self, conn: Peer) -> None:
        """Called by a new connection: welcome it, or refuse it (full, shutting down)."""
        self._connections[conn] = None
        assert self._all_closed is not None
        self._all_closed.clear()
        kind = self.transport_kind(conn)
        accepted = self.metrics.connections
        accepted[kind] = accepted.get(kind, 0) + 1
        if self.shutting_down:
            conn.fail(ErrorCode.SHUTTING_DOWN, "the server is shutting down")
            return
        refusal = self._refusal(conn)
        if refusal is not None:
            conn.fail(ErrorCode.SERVER_FULL, f"{refusal}; try again later")
            if refusal.startswith("the server is full"):
                refusal = f"server full ({plural(self.directory.client_count(), 'client')})"
            self.source_log.event(
                "refused",
                logging.WARNING,
                "refused",
                "refused %s: %s",
                host_port(conn.ip, conn.port),
                refusal,
                source=source_of(conn.ip)[0],
                ip=conn.ip,
                port=conn.port,
                code="SERVER_FULL",
            )
            return
        try:
            conn.client_id = self.directory.register(conn)
        except RequestFailed as failure:  # a cluster node with no client ids left
            conn.fail(failure.code, failure.message)
            return
        self.connection_counts.add(conn.ip)
        if not conn.authenticated:
            self._make_room_for(conn)
        cfg = self.config
        conn.send(
            Welcome(
                conn.client_id,
                cfg.name,
                PROTOCOL_VERSION,
                int(cfg.heartbeat * 1000),
                cfg.max_frame,
                cfg.max_text,
                cfg.max_clients,
                conn.ip,
                conn.port,
            )
        )
        self.events.event(
            logging.INFO,
            "connect",
            "connect #%d %s (%d connected)",
            conn.client_id,
            host_port(conn.ip, conn.port),
            self.directory.client_count(),
            client_id=conn.client_id,
            ip=conn.ip,
            port=conn.port,
        )

    def _refusal(self, conn: Peer) -> str | None:
        """Why ``conn`` may not be admitted now (a limit it would pass), or None."""
        cfg = self.config
        if self.directory.client_count() >= cfg.max_clients:
            return f"the server is full ({plural(cfg.max_clients, 'client')})"
        refusal = self.connection_counts.refusal(conn.ip)
        if refusal is not None:
            return refusal
        return None

    def _make_room_for(self, conn: Peer) -> None:
        """Admit an unauthenticated ``conn``: when --max-unauthenticated are waiting already,
        the oldest of them is closed with SERVER_FULL.  A client with a token says HELLO
        within a round trip of connecting, so it gets in however many strangers squat;
        they only push one another out."""
        waiting = self._unauthenticated
        limit = self.config.unauthenticated_limit
        while len(waiting) >= limit:
            oldest = next(iter(waiting))
            del waiting[oldest]
            if oldest.transport is None or oldest.transport.is_closing():
                continue  # on its way out already: its slot is as good as free
            oldest.fail(
                ErrorCode.SERVER_FULL,
                f"too many connections waiting to authenticate (max {limit}); "
                "closed the oldest: say HELLO sooner",
            )
            self.source_log.event(
                "evicted",
                logging.WARNING,
                "evicted",
                "evicted #%d %s: unauthenticated for %.1fs, made room for a newer one",
                oldest.client_id,
                host_port(oldest.ip, oldest.port),
                time.monotonic() - oldest.opened_at,
                source=source_of(oldest.ip)[0],
                client_id=oldest.client_id,
                ip=oldest.ip,
                code="SERVER_FULL",
            )
        waiting[conn] = None

    def release(self, conn: Peer) -> None:
        """Called once a connection is gone: forget it and settle what it left behind."""
        self._connections.pop(conn, None)
        reason = disconnect_reason(conn.close_reason)
        disconnects = self.metrics.disconnects
        disconnects[reason] = disconnects.get(reason, 0) + 1
        if conn.log_runs is not None:
            conn.log_runs.flush()  # the final counts of what was summarised
            conn.log_runs = None
            self._summarising.discard(conn)
        if self.directory.release(conn):
            self.connection_counts.remove(conn.ip)
            self._unauthenticated.pop(conn, None)
            for room_name in list(conn.rooms):
                room = self.directory.room(room_name)
                if room is not None:
                    self.leave_room(room, conn, conn.left_reason)
            # What it never acknowledged is settled: each sender hears NOT_DELIVERED (in
            # one RECEIPTS per sender, for those that negotiated version 2).
            batches: dict[Peer, list[int]] = {}
            for message_id, sender in conn.awaiting_ack.items():
                if sender.receipts_batched:
                    batches.setdefault(sender, []).append(message_id)
                    continue
                self.directory.deliver(
                    sender.client_id,
                    encode_receipt(message_id, conn.client_id, ReceiptStatus.NOT_DELIVERED),
                )
            for sender, ids in batches.items():
                send_receipts(
                    self, sender.client_id, conn.client_id, ReceiptStatus.NOT_DELIVERED, ids
                )
            conn.awaiting_ack.clear()
            self.events.event(
                logging.INFO,
                "disconnect",
                "disconnect #%d %s: %s (%d connected)",
                conn.client_id,
                host_port(conn.ip, conn.port),
                conn.close_reason,
                self.directory.client_count(),
                client_id=conn.client_id,
                ip=conn.ip,
                port=conn.port,
                reason=conn.close_reason,
            )
        if not self._connections and self._all_closed is not None:
            self._all_closed.set()

    def leave_room(self, room: Room, conn: Peer, reason: LeftReason) -> None:
        self.directory.leave(room, conn)
        notice = encode(Left(room.name, conn.client_id, conn.nick, reason))  # once per room
        self.directory.deliver_room(room, notice)
        self.client_event(
            conn,
            "leave",
            logging.INFO,
            "leave",
            "leave #%d %s (%s)",
            conn.client_id,
            room.name,
            reason.name.lower(),
            client_id=conn.client_id,
            room=room.name,
            reason=reason.name.lower(),
        )

    # --- requests ----------------------------------------------------------------------------

    def handle_request(self, conn: Peer, req: Any, *, held: bool = False) -> None:
        if (
            req.__class__ is HelloRequest
            and self.tokens
            and not held
            and self._hold_hello(conn, req)
        ):
            return
        try:
            reply = self.handlers[req.__class__](self, conn, req)
        except RequestFailed as failure:
            if failure.code in CLOSING_CODES:
                conn.fail(failure.code, failure.message, request_id=req.request_id)
                return
            self.reply_error(conn, req.request_id, failure.code, failure.message)
            return
        except AnswerLater as later:
            self.answer_later(conn, req, later)
            return
        if isinstance(reply, tuple):
            for frame in reply:
                conn.send(frame)
        else:
            conn.send(reply)

    def answer_later(self, conn: Peer, req: Any, later: AnswerLater) -> None:
        """Keep the request's place among ``conn``'s answers, await ``later.work``, then
        answer the request again (the work done) into that place: its answer, or ERROR."""
        assert self._loop is not None
        slot = conn.reserve_answer()
        # Nothing more is read from it until this is answered (handlers._decoded stops the
        # batch; ``done`` reads on): later requests act after this one, as on one server.
        conn.answering_later = True

        def done() -> None:
            conn.answering_later = False
            conn.go_on_reading()

        async def answer() -> None:
            try:
                await later.work
                if conn.transport is None or conn.transport.is_closing():
                    return  # gone meanwhile: nobody to answer
                reply = self.handlers[req.__class__](self, conn, req)
            except RequestFailed as failure:
                refusal = ErrorResponse.of(failure.code, failure.message, request_id=req.request_id)
                conn.fill_answer(slot, encode(refusal))
                done()
                return
            except Exception:  # a bug (or work that asks for later again) answers, not hangs
                log.exception("internal error answering #%d later", conn.client_id)
                refusal = ErrorResponse.of(
                    ErrorCode.INTERNAL_ERROR, "internal server error", request_id=req.request_id
                )
                conn.fill_answer(slot, encode(refusal))
                done()
                return
            frames = reply if isinstance(reply, tuple) else (reply,)
            conn.fill_answer(slot, b"".join(encode(frame) for frame in frames))
            done()

        task = self._loop.create_task(answer())
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def _hold_hello(self, conn: Peer, req: HelloRequest) -> bool:
        """Count a HELLO as a guess and hold it if its source has failed too often; True if
        held.  The hold is chosen before the token is looked at, so a right and a wrong
        token are answered after the same delay."""
        hold = self.auth.begin(conn.ip)
        conn.auth_hold = hold
        if not hold or conn.authenticated or conn.transport is None or self._loop is None:
            return False
        # HELD: nothing else from this connection is read until the HELLO is answered (the
        # rest of this batch stops at once); the frames pipelined behind the HELLO stay in
        # the decoder and are handled after it (``_end_hold``).
        conn.hold()
        self._loop.call_later(hold, self._end_hold, conn, req)
        self.source_log.event(
            "auth held",
            logging.INFO,
            "auth_held",
            "auth held #%d %s for %.2fs (%d/%d/%d recent failures: address/prefix/server)",
            conn.client_id,
            host_port(conn.ip, conn.port),
            hold,
            *self.auth.failures(conn.ip),
            source=source_of(conn.ip)[0],
            client_id=conn.client_id,
            ip=conn.ip,
            delay=hold,
        )
        return True

    def _end_hold(self, conn: Peer, req: HelloRequest) -> None:
        """Answer a held HELLO (unless the peer has gone meanwhile), then go on reading."""
        if conn.end_hold():
            self.handle_request(conn, req, held=True)
            conn.go_on_reading()  # the frames pipelined behind the HELLO, kept by the decoder

    def refuse(self, conn: Peer, code: ErrorCode, request_id: int) -> None:
        """Answer a request that may not be handled now (auth, rate, shutdown)."""
        if code == ErrorCode.AUTH_REQUIRED:
            conn.fail(code, "authenticate with HELLO first", request_id=request_id)
        elif code == ErrorCode.RATE_LIMITED:
            self.reply_error(
                conn, request_id, code, f"more than {self.rate:g} requests/s; slow down"
            )
        else:
            self.reply_error(conn, request_id, code, "the server is shutting down")

    def reply_error(self, conn: Peer, request_id: int, code: ErrorCode, message: str) -> None:
        """Answer one request with ERROR (the connection goes on) and log it."""
        conn.send(ErrorResponse.of(code, message, request_id=request_id))
        self.metrics.count_error(code)
        if self.events.info_on:
            self.client_event(
                conn,
                "error " + code.name,
                logging.INFO,
                "error",
                "error #%d %s: %s",
                conn.client_id,
                code.name,
                message,
                client_id=conn.client_id,
                code=code.name,
            )

    def dispatch(self, conn: Peer, event: Frame | InvalidFrame) -> None:
        """A decoded frame: requests by class (handlers.HANDLERS, reached through the tables),
        invalid frames (ERROR for requests), indications no table holds (ignored)."""
        if isinstance(event, Frame) and event.__class__ in self.handlers:
            self.handle_request(conn, event)
        elif isinstance(event, InvalidFrame):
            if event.message_class == MessageClass.REQUEST:
                self.reply_error(conn, event.request_id, event.error.code, event.error.message)
        elif self.events.debug_on:
            self.events.event(
                logging.DEBUG,
                "ignored",
                "ignored %s from #%d",
                type(event).__name__,
                conn.client_id,
                client_id=conn.client_id,
            )

    def client_event(
        self,
        conn: Peer,
        kind: str,
        level: int,
        event: str,
        msg: str,
        *args: Any,
        **fields: Any,
    ) -> None:
        """Log a per-client event, summarised when one ``kind`` repeats (logs.RepeatedEvents):
        every line a client can cause again and again goes through here."""
        if not log.isEnabledFor(level):
            return  # nothing to log, nor to count
        runs = conn.log_runs
        if runs is None:
            runs = conn.log_runs = logs.RepeatedEvents(
                self.events,
                f"#{conn.client_id} {host_port(conn.ip, conn.port)}",
                interval=self.config.log_repeat_interval,
                burst=self.config.log_repeat_burst,
                max_runs=defaults.LOG_REPEAT_KINDS_PER_CLIENT,
            )
            self._summarising.add(conn)
        runs.event(kind, level, event, msg, *args, **fields)

    def flush_log_counts(self) -> None:
        """Log every count of summarised lines now (at shutdown; tests that count lines)."""
        for conn in list(self._summarising):
            if conn.log_runs is not None:
                conn.log_runs.flush()
        self.source_log.flush()

    def trace_bytes(self, direction: str, conn: Peer, data: bytes) -> None:
        """Trace pre-encoded frames by decoding them again (only when tracing is on)."""
        if self.trace is None:
            return
        decoder = FrameDecoder(max_frame=len(data) + HEADER_SIZE)
        decoder.feed(data)
        buf = decoder.buffer
        for key, request_id, start, end in decoder.frames():
            event = decode_payload(key, request_id, buf, start, end)
            self.trace(direction, conn, event, bytes(buf[start - HEADER_SIZE : end]))

    def authenticate(self, conn: Peer, token: str) -> None:
        """Check a HELLO token in constant time; never logs the token."""
        presented = token.encode("utf-8")
        valid = False
        for candidate in self.tokens:  # compare with every token: no early exit to time
            valid |= hmac.compare_digest(presented, candidate)
        if valid:
            conn.authenticate()
            self.directory.update(conn)  # a cluster's other nodes list it from now on
            self._unauthenticated.pop(conn, None)
            self.auth.succeeded(conn.ip)
            return
        count = self.auth.failures(conn.ip)[0]  # this attempt included (AuthThrottle.begin)
        self.source_log.event(
            "auth failed",
            logging.WARNING,
            "auth_failed",
            "auth failed #%d %s (%d recent failure(s) from this address, held %.2fs)",
            conn.client_id,
            host_port(conn.ip, conn.port),
            count,
            conn.auth_hold,
            source=source_of(conn.ip)[0],
            client_id=conn.client_id,
            ip=conn.ip,
            failures=count,
            delay=conn.auth_hold,
        )
        raise RequestFailed(ErrorCode.AUTH_FAILED, "invalid token")

    # --- writing -----------------------------------------------------------------------------

    def schedule_flush(self, conn: Peer) -> None:
        self.dirty.append(conn)
        if self._flush_handle is None:
            assert self._loop is not None
            self._flush_handle = self._loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._flush_handle = None
        self.flush_pending()

    def flush_pending(self) -> None:
        """Write what is queued for every connection now (a big batch does, as it goes)."""
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()

    # --- heartbeat ---------------------------------------------------------------------------

    def _schedule_heartbeat(self) -> None:
        # One shared timer for every connection (no per-connection timers or tasks): each
        # tick PINGs those silent for an interval and drops those silent for three.
        assert self._loop is not None
        tick = self.config.heartbeat / 8
        self._heartbeat_handle = self._loop.call_later(tick, self._heartbeat)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        interval = self.config.heartbeat
        dead_after = interval * 3
        ping = encode(Ping())
        cfg = self.config
        for conn in list(self.directory.clients()):  # this process's connections
            silent = now - conn.last_seen
            if conn.partial_since and now - conn.partial_since >= cfg.frame_timeout:
                conn.fail(
                    ErrorCode.IDLE_TIMEOUT,
                    f"a frame stayed incomplete for {cfg.frame_timeout:g}s",
                )
            elif not conn.authenticated and now - conn.opened_at >= cfg.handshake_timeout:
                conn.fail(ErrorCode.IDLE_TIMEOUT, f"no HELLO within {cfg.handshake_timeout:g}s")
            elif silent >= dead_after:
                conn.abort(
                    f"heartbeat timeout ({silent:.1f}s silent)", left_reason=LeftReason.TIMED_OUT
                )
            elif silent >= interval and not conn.pinged:
                conn.pinged = True
                conn.shed()  # silent for an interval: its empty buffers go until needed
                if self.trace is not None:
                    self.trace("->>", conn, Ping(), ping)
                conn.send_raw(ping)
        self.auth.sweep()
        self.metrics.forget_samples()
        for conn in list(self._summarising):  # counts whose interval has passed
            runs = conn.log_runs
            if runs is not None:
                runs.flush(expired_only=True)
                if runs.pending:
                    continue
            conn.log_runs = None
            self._summarising.discard(conn)
        self.source_log.flush(expired_only=True)
        self._prune_history()
        if not self.shutting_down:
            self._schedule_heartbeat()


def _is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this machine only ("" is every
    address)."""
    try:
        return bool(host) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def make_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None without --tls-cert/--tls-key."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate/key: {exc}") from exc
    return context


def raise_open_file_limit(wanted: int) -> None:
    """Lift the soft open-file limit to the hard one; say so if that is not enough."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info(
                "raised the open-file limit from %d to %d",
                soft,
                target,
                extra={"event": "fd_limit", "limit": target, "wanted": wanted},
            )
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    if soft < wanted:
        log.warning(
            "the open-file limit is %d, below the %d that --max-clients needs; raise it "
            "(ulimit -n) or expect failed accepts",
            soft,
            wanted,
            extra={"event": "fd_limit", "limit": soft, "wanted": wanted},
        )
    else:
        log.debug("open-file limit: %d", soft)


def open_config_store(config: ServerConfig) -> HistoryStore:
    """The history store ``config`` names (ConfigError when it cannot be used).  A cluster
    node keeps room history in the cluster's Redis (a stream per room, shared by the nodes:
    server/cluster_history.py); a database directory would be this node's alone, so
    ``--data-dir`` is refused with ``--cluster`` (``none`` is accepted: it asks for no
    database, and a node has none)."""
    if config.cluster is not None:
        if config.data_dir is not None and config.data_dir.lower() != defaults.DATA_DIR_NONE:
            raise ConfigError(
                "--data-dir cannot be used with --cluster: a cluster node keeps room history "
                "in the cluster's Redis (switchboard:lines:ROOM streams), shared by every node; "
                "drop --data-dir"
            )
        from .cluster_history import StreamHistory
        from .cluster_url import parse_cluster_url

        try:
            url = parse_cluster_url(config.cluster)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return StreamHistory(
            url,
            keep=config.history_keep,
            max_age_s=config.history_max_age,
        )
    return open_store(
        config.data_dir,
        keep=config.history_keep,
        max_age_s=config.history_max_age,
        sync=config.history_sync,
    )


async def serve(
    config: ServerConfig, *, trace: Tracer | None = None, history: HistoryStore | None = None
) -> int:
    """Run until SIGINT, SIGTERM or ``quit`` on a terminal's stdin; then shut down."""
    server = SwitchboardServer(config, trace=trace, history=history)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason = {"text": "server shutting down"}

    def request_stop(why: str) -> None:
        reason["text"] = why
        stop.set()

    # Handlers first: a SIGTERM that arrives just after the listening line (a supervisor,
    # a test) must still get the graceful shutdown, not the default instant death.
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, request_stop, f"received {signal.Signals(signum).name}")
    await server.start()
    console = sys.stdin.isatty() if sys.stdin is not None else False
    if console:
        loop.add_reader(sys.stdin.fileno(), _console_line, request_stop)
        print("Type 'quit' and Enter to stop the server.", file=sys.stderr, flush=True)
    await stop.wait()
    if console:
        loop.remove_reader(sys.stdin.fileno())
    await server.shutdown(reason["text"])
    return 0


def _console_line(request_stop: Callable[[str], None]) -> None:
    line = sys.stdin.readline()
    if line == "":  # EOF on the terminal (Ctrl-D)
        request_stop("console closed")
    elif line.strip().lower() in ("quit", "exit", "stop"):
        request_stop("quit typed at the console")
    elif line.strip():
        print("Unknown command; type 'quit' to stop the server.", file=sys.stderr, flush=True)


def run(config: ServerConfig, *, trace: Tracer | None = None) -> int:
    """Configure logging and the event loop, serve, and return the exit code."""
    # First: a store that cannot be used (damaged, unwritable, in use) is one line and exit 2
    # (ConfigError), before any log line.
    history = open_config_store(config)
    try:
        logs.configure(config.log_level, config.log_format)
        raise_open_file_limit(config.max_clients + 64)
        log.debug("event loop: %s, pid %d", eventloop.loop_name(), os.getpid())
        return eventloop.run(serve(config, trace=trace, history=history))
    finally:
        history.close()
