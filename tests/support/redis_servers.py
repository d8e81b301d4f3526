"""A Redis server of the test's own (Debian's ``redis-server``) for the cluster tests: a free
port on loopback, nothing saved to disk, stopped by its pid.  Tests never assume a Redis
already running.

``RedisServer.stop`` and ``start`` again on the same port restart it (the tests that lose Redis
under traffic); ``kill`` is ``kill -9``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.network import HOST, free_port
from support.servers import ServerProcess, ServerThread, spawn_logged, switchboard_command
from switchboard.server import ServerConfig

#: How long the fixture waits for redis-server to answer PING, or to exit.
REDIS_TIMEOUT = 10.0
#: The lease of nodes in tests that wait for one to end (a dead node, a cut cable): short, so
#: that they end in seconds, but not shorter.  A node bounds each Redis command by a third of
#: its lease and counts Redis lost when one takes longer; at 1.5 s (0.5 s per command) a
#: loaded machine stalled a node's NICK past it once in CI (CLUSTER_UNAVAILABLE), at 3 s a
#: command has a whole second.
SHORT_LEASE_S = 3.0


def redis_binary() -> str:
    """The path of ``redis-server``; the test is skipped (failed in CI) without it."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    return path


class RedisServer:
    """One ``redis-server`` process on ``HOST:port``, with ``--save ''`` and no AOF."""

    def __init__(self, port: int | None = None, *, password: str | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="switchboard-redis-")

    @property
    def url(self) -> str:
        """The URL a node is given with ``--cluster`` (database 0)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        argv = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + REDIS_TIMEOUT
        while not self.ping():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise AssertionError(f"redis-server exited with {self.proc.returncode}: {err}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)
        return self

    def command(self, *words: str) -> bytes:
        """One command in RESP over a fresh socket; the raw reply (a test's probe of the
        server's state, independent of the library the server uses)."""
        parts = ([] if not self.password else [["AUTH", self.password]]) + [list(words)]
        payload = b"".join(
            b"*%d\r\n" % len(cmd)
            + b"".join(b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in cmd)
            for cmd in parts
        )
        with socket.create_connection((HOST, self.port), timeout=2.0) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        reply = b"".join(chunks)
        return reply.split(b"\r\n", 1)[1] if self.password else reply

    def ping(self) -> bool:
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (by its pid) and wait for it; the port is free again after."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(REDIS_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(REDIS_TIMEOUT)
        if proc.stderr is not None:
            proc.stderr.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def close(self) -> None:
        self.kill()
        self._dir.cleanup()


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """``redis_factory(password=None)`` starts a redis-server of the test's own."""
    started: list[RedisServer] = []

    def factory(*, password: str | None = None) -> RedisServer:
        server = RedisServer(password=password)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.close()


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """A redis-server on a free loopback port, stopped after the test."""
    return redis_factory()


#: ``node(name, *args)``: a cluster node process (fixture ``node``).
Node = Callable[..., "ServerProcess"]


@pytest.fixture
def node(redis_server: RedisServer) -> Iterator[Node]:
    """``node(name, *args)``: ``switchboard serve --cluster`` on a free port (no web listener),
    as node ``name`` of the test's Redis; killed after the test if it is still running."""
    started: list[ServerProcess] = []

    def start(name: str, *args: str) -> ServerProcess:
        argv = switchboard_command(
            "serve", "--port", "0", "--http", "off", "--name", "test-server",
            "--cluster", redis_server.url,
            "--node-name", name, *args,
        )  # fmt: skip
        process = spawn_logged(argv)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL if process.proc.poll() is None else signal.SIGTERM)


def start_inproc_node(redis_server: RedisServer, **settings: Any) -> ServerThread:
    """A node of ``redis_server``'s cluster in this process, started (no web listener, no
    rate limit, warnings only; ``settings`` override): its directory is reachable as
    ``server.shared_directory``, for tests that hold or inspect it.  The caller stops it."""
    config = {
        "port": 0, "http": "off", "name": "inproc", "node_name": "inproc", "rate": 0,
        "log_level": "warning", **settings,
    }  # fmt: skip
    return ServerThread(ServerConfig(cluster=redis_server.url, **config)).start()
