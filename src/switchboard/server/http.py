"""The HTTP listener (``--http``): the web chat page, /ws, /metrics, /healthz and /readyz on
one aiohttp app, on the server's own event loop.

/ws upgrades to a WebSocket carrying the protocol's frames (server/websocket.py) and serves
it with a ClientConnection like any TCP client's.  Before that, the upgrade is checked: the
subprotocol (``WEBSOCKET_SUBPROTOCOL``), the Origin (the page's own unless
--http-allow-origin widens it), and the client's address (its TCP peer's, or the
X-Forwarded-For of a --http-trusted-proxy).

What an HTTP connection may cost is bounded like a TLS handshake's: at most --max-clients of
them at once that are not WebSockets, each closed after --handshake-timeout unless it has
become one (a slowloris sending its upgrade request a byte at a time holds nothing longer),
with aiohttp's limits on the request line and headers (8 KiB each).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from importlib import resources
from pathlib import Path
from typing import Protocol, cast

from aiohttp import hdrs, web

from switchboard import defaults
from switchboard.protocol import WEBSOCKET_SUBPROTOCOL
from switchboard.protocol.trace import host_port

from .config import ServerConfig, allowed_origins, http_endpoint, trusted_proxies
from .connection import ClientConnection
from .logs import EventLog
from .transport import enable_keepalive
from .websocket import WebSocketTransport

log = logging.getLogger("switchboard.server")

#: The page's files, shipped in the package (no build step, nothing from outside).
STATIC_DIR = Path(str(resources.files("switchboard.web").joinpath("static")))

#: Sent with every response: the page loads only its own files and talks only to its own
#: server; no other site may frame it (clickjacking) or sniff its types.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class HttpListenError(OSError):
    """The --http address could not be listened on (``endpoint`` says which)."""

    def __init__(self, endpoint: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.endpoint = endpoint


class WebServer(Protocol):
    """What the HTTP listener uses of the server (server.app.SwitchboardServer)."""

    config: ServerConfig
    events: EventLog
    shutting_down: bool

    def new_connection(self) -> ClientConnection: ...
    def ready(self) -> bool: ...
    def metrics_text(self) -> tuple[bytes, str]: ...


class HttpListener:
    """The aiohttp app and its listening socket."""

    def __init__(self, server: WebServer, ssl_context: ssl.SSLContext | None) -> None:
        self.server = server
        config = server.config
        endpoint = http_endpoint(config.http)
        assert endpoint is not None, "HttpListener needs --http"
        self.host, self.port = endpoint
        self.ssl_context = ssl_context
        self.allowed_origins = allowed_origins(config.http_allow_origin)
        self.trusted_proxies = trusted_proxies(config.http_trusted_proxy)
        #: HTTP connections that are not (yet) WebSockets, and their deadlines.
        self.pending: dict[_GuardedConnection, asyncio.TimerHandle] = {}
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self._listener is None:
            return []
        return [sock.getsockname()[:2] for sock in self._listener.sockets]

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_static("/", STATIC_DIR, follow_symlinks=False, append_version=False)
        app.on_response_prepare.append(_add_security_headers)
        return app

    async def start(self) -> None:
        self._runner = runner = web.AppRunner(
            self.make_app(),
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self.server.config.handshake_timeout,
        )
        await runner.setup()
        loop = asyncio.get_running_loop()
        make_handler = runner.server
        assert make_handler is not None
        try:
            self._listener = await self._listen(loop, make_handler)
        except OSError as exc:
            await runner.cleanup()
            raise HttpListenError(self.server.config.http, exc) from exc
        # The WebSocket clients' TCP keepalive, inherited as on the server's own port.
        enable_keepalive(self._listener.sockets, self.server.config.heartbeat)

    async def _listen(
        self, loop: asyncio.AbstractEventLoop, make_handler: web.Server
    ) -> asyncio.Server:
        return await loop.create_server(
            lambda: _GuardedConnection(self, make_handler()),
            self.host or None,
            self.port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.server.config.handshake_timeout
            if self.ssl_context is not None
            else None,
            reuse_address=True,
            # --workers: every node process serves the page and /ws on the one HTTP port too.
            reuse_port=self.server.config.reuse_port or None,
            backlog=min(4096, max(128, self.server.config.max_clients)),
        )

    def stop_accepting(self) -> None:
        if self._listener is not None:
            self._listener.close()

    async def close(self) -> None:
        """Stop accepting, close what is left (the WebSockets have been closed by then)."""
        self.stop_accepting()
        for guarded, timer in list(self.pending.items()):
            timer.cancel()
            guarded.abort()
        self.pending.clear()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._listener is not None:
            await self._listener.wait_closed()

    # --- connections -------------------------------------------------------------------------

    def opened(self, guarded: _GuardedConnection) -> bool:
        """A new HTTP connection: False (refused) if --max-clients are pending already."""
        if len(self.pending) >= self.server.config.max_clients:
            return False
        loop = asyncio.get_running_loop()
        self.pending[guarded] = loop.call_later(
            self.server.config.handshake_timeout, self._expired, guarded
        )
        return True

    def settled(self, guarded: _GuardedConnection) -> None:
        """It became a WebSocket, or closed: no deadline any more."""
        timer = self.pending.pop(guarded, None)
        if timer is not None:
            timer.cancel()

    def _expired(self, guarded: _GuardedConnection) -> None:
        if self.pending.pop(guarded, None) is not None:
            guarded.abort()

    # --- the routes --------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.server.ready():
            return web.Response(text="ready\n")
        why = "shutting down" if self.server.shutting_down else "the cluster's Redis is unreachable"
        return web.Response(status=503, text=f"not ready: {why}\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.server.metrics_text()
        response = web.Response(body=body)
        response.headers[hdrs.CONTENT_TYPE] = content_type
        return response

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            status, reason = refusal
            log.info(
                "websocket refused %s: %s",
                host_port(*_peer(request)),
                reason,
                extra={"event": "websocket_refused", "reason": reason},
            )
            return web.Response(status=status, text=reason + "\n")
        tcp = request.transport
        assert tcp is not None
        peer = self.client_address(request)
        ws = web.WebSocketResponse(
            protocols=(WEBSOCKET_SUBPROTOCOL,),
            compress=False,  # per-message deflate: memory and CPU per client for short frames
            max_msg_size=self.server.config.max_frame + 1,  # aiohttp refuses >= this
            autoping=True,
            timeout=defaults.WEBSOCKET_CLOSE_TIMEOUT_S,
            writer_limit=0,  # each send waits while the socket is above its mark
        )
        await ws.prepare(request)
        transport = WebSocketTransport(ws, tcp, peer)
        guarded = tcp.get_protocol()
        if isinstance(guarded, _GuardedConnection):
            self.settled(guarded)
            guarded.websocket = transport  # the socket's buffer marks reach the connection
        await transport.run(self.server.new_connection())
        return ws

    def _refusal(self, request: web.Request) -> tuple[int, str] | None:
        """Why this upgrade is refused (HTTP status, reason), or None."""
        if self.server.shutting_down:
            return 503, "the server is shutting down"
        if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
            return 426, "/ws is a WebSocket endpoint (Upgrade: websocket)"
        offered = [
            p.strip()
            for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")
            if p.strip()
        ]
        if WEBSOCKET_SUBPROTOCOL not in offered:
            return 400, (
                f"the WebSocket subprotocol must be {WEBSOCKET_SUBPROTOCOL!r} "
                f"(offered: {', '.join(offered) or 'none'})"
            )
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not self.origin_allowed(origin, request.host):
            return 403, f"origin {origin[:200]!r} may not open this WebSocket"
        return None

    def origin_allowed(self, origin: str, host: str) -> bool:
        """The page's own origin (scheme and Host of this request), or one allowed."""
        origin = origin.strip().rstrip("/").lower()
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        return origin == f"{self.scheme}://{host.lower()}"

    def client_address(self, request: web.Request) -> tuple[str, int]:
        """The TCP peer, or, behind a trusted proxy, the nearest untrusted address of
        X-Forwarded-For (port 0: a proxy does not tell the client's)."""
        ip, port = _peer(request)
        if not self.trusted_proxies or not self._trusted(ip):
            return ip, port
        hops = [
            h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
        ]
        for hop in reversed([h for h in hops if h]):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:
                return ip, port  # a malformed header names nobody: the proxy it came from
            if not self._trusted(str(address)):
                return str(address), 0
        return ip, port

    def _trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)


def _peer(request: web.Request) -> tuple[str, int]:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return "", 0
    return str(peer[0]), int(peer[1])


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not isinstance(response, web.WebSocketResponse):  # a 101 has no page: and they would
        response.headers.update(SECURITY_HEADERS)  # be kept for the WebSocket's whole life


class _GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one HTTP connection, with the listener's deadline and count
    around it (aiohttp itself has no deadline for reading a request's headers)."""

    __slots__ = ("handler", "listener", "served", "transport", "websocket")

    def __init__(self, listener: HttpListener, handler: asyncio.Protocol) -> None:
        self.listener = listener
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.served = False
        #: Once upgraded: the WebSocket, told of the socket's marks and of its end.
        self.websocket: WebSocketTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.listener.opened(self):
            self.transport.abort()
            return
        self.served = True
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()
        if self.websocket is not None:
            self.websocket.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()
        if self.websocket is not None:
            self.websocket.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.settled(self)
        if self.served:
            self.handler.connection_lost(exc)
        if self.websocket is not None:
            self.websocket.connection_lost()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
