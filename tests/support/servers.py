"""A Switchboard server in-process (``ServerThread``) or as a subprocess (``ServerProcess``),
the commands run against it (``run_cli``), and probes of a running server's state.

Both servers pick a free port (port 0) and the fixtures always stop them, even when the test
fails.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from support.waiting import wait_until
from switchboard.server import ServerConfig, SwitchboardServer

T = TypeVar("T")

#: How long any fixture waits for a server to come up or go down.  A ``serve`` subprocess
#: takes 4-5 s to say it listens when both CPUs are busy with other work, and ``serve
#: --workers 2`` (the supervisor, then two workers starting side by side) more than 10 s.
STARTUP_TIMEOUT = 30.0


@pytest.fixture(autouse=True, scope="session")
def private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """$XDG_STATE_HOME of the whole session (and of every subprocess: ``cli_env`` copies the
    environment) in a temporary directory: no test writes into the user's state directory,
    whatever server or client it starts."""
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if saved is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = saved


def fresh_data_dir() -> str:
    """A new empty data directory for one server (its history database), under the
    session's temporary state directory."""
    base = os.environ.get("XDG_STATE_HOME") or tempfile.gettempdir()
    return tempfile.mkdtemp(prefix="data-", dir=base)


class ServerThread:
    """A SwitchboardServer running on its own event loop in a background thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.server = SwitchboardServer(config)
        self._thread = threading.Thread(
            target=self._run, name="switchboard-test-server", daemon=True
        )
        self._started: Future[None] = Future()
        self.host = config.host
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # report bind errors to the test
            self._started.set_exception(exc)
            return
        self._started.set_result(None)
        self.loop.run_until_complete(self.server.wait_stopped())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.result(STARTUP_TIMEOUT)
        self.port = self.server.port
        return self

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (the only safe place to read its state)."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(STARTUP_TIMEOUT)

    def on_history_writer(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the server's history writer thread, between its transactions (the
        only safe place to touch the store's writing connection), and wait for it."""
        commits = self.server.commits
        assert commits is not None, "a memory-only server has no writer"

        async def run() -> None:
            await commits.run(job)

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(STARTUP_TIMEOUT)

    def client_ids(self) -> list[int]:
        return self.call(lambda: list(self.server.directory.client_by_id))

    def wait_for(
        self, predicate: Callable[[SwitchboardServer], bool], timeout: float = 5.0
    ) -> None:
        """Poll ``predicate(server)`` on the server's loop until true, or fail after ``timeout``."""
        if not wait_until(lambda: self.call(lambda: predicate(self.server)), timeout):
            raise AssertionError(f"server condition not met within {timeout}s")

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.shutdown("test finished"), self.loop)
        future.result(STARTUP_TIMEOUT)
        self._thread.join(STARTUP_TIMEOUT)


# --- probes of an in-process server's state (read on its loop) --------------------------------


def connected_count(st: ServerThread) -> int:
    return st.call(lambda: st.server.directory.client_count())


def queued_bytes(st: ServerThread, client_id: int) -> int:
    """Bytes the server holds for one client: its transport's write buffer plus the frames
    still queued on the connection (``conn.out``); 0 once the client is gone."""

    def size() -> int:
        conn = st.server.directory.client_by_id.get(client_id)
        if conn is None or conn.transport is None:
            return 0
        return int(conn.transport.get_write_buffer_size()) + sum(map(len, conn.out))

    return st.call(size)


def shrink_send_buffer(st: ServerThread, client_id: int) -> None:
    """Give the server's socket to ``client_id`` a small fixed send buffer.

    On loopback Linux autotunes it to megabytes (the MSS is 64 KB), so a peer that does not
    read would take megabytes before the server's own transport buffer fills; with 4 KB
    (which also turns autotuning off) nearly everything sent to it stays in that buffer.
    """

    def shrink() -> None:
        transport = st.server.directory.client_by_id[client_id].transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    st.call(shrink)


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ServerThread]]:
    """``server_factory(**settings)`` starts an in-process server on a free port."""
    started: list[ServerThread] = []

    def factory(**settings: Any) -> ServerThread:
        settings.setdefault("port", 0)
        settings.setdefault("name", "test-server")
        settings.setdefault("http", "off")  # never the standard 8080; a test asks for 127.0.0.1:0

        # The default store (SQLite), each server in a directory of its own.
        settings.setdefault("data_dir", fresh_data_dir())
        st = ServerThread(ServerConfig(**settings)).start()
        started.append(st)
        return st

    yield factory
    for st in started:
        st.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerThread]) -> ServerThread:
    """An in-process server with the default settings on a free port."""
    return server_factory()


#: ``listening on 127.0.0.1:7000`` or, IPv6 in brackets, ``listening on [::1]:7000``.
_LISTENING = re.compile(r"listening on (?:\[([^\]\s]+)\]|([^\s:\[]+)):(\d+)")


@dataclass
class ServerProcess:
    """``switchboard serve`` (or another server) in a subprocess; ``lines`` collects its
    stderr log."""

    proc: subprocess.Popen[str]
    host: str
    port: int
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    log: list[str] = field(default_factory=list)

    def wait_for_log(self, pattern: str, timeout: float = 5.0, *, count: int = 1) -> str:
        """The ``count``-th log line so far matching ``pattern`` (the log seen already
        included), waiting up to ``timeout`` for it."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        seen = 0
        for line in self.log:
            if regex.search(line):
                seen += 1
                if seen == count:
                    return line
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{seen} of {count} log line(s) matching {pattern!r}; log:\n"
                    + "".join(self.log)
                )
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.log.append(line)
            if regex.search(line):
                seen += 1
                if seen == count:
                    return line

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


def switchboard_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "switchboard", *args]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``switchboard`` subprocess: each gets a state directory of its
    own (a server's history database, a chat's last-seen ids) unless ``extra`` names one, so
    that two servers never share a database and no test sees another's history."""
    env = dict(os.environ)
    env.pop("SWITCHBOARD_HOST", None)
    env.pop("SWITCHBOARD_PORT", None)
    env.pop("SWITCHBOARD_CLUSTER", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_STATE_HOME"] = fresh_data_dir()
    env.update(extra)
    return env


def start_server_process(*args: str, file_limit: tuple[int, int] | None = None) -> ServerProcess:
    """``switchboard serve`` on a free port (its HTTP listener off unless ``args`` give
    ``--http``, its history in a fresh data dir unless they give ``--data-dir``);
    ``file_limit``: its RLIMIT_NOFILE (soft, hard) at start, as a shell's ``ulimit -n`` would
    set it."""
    http = () if "--http" in args else ("--http", "off")
    if not any(a == "--data-dir" or a.startswith("--data-dir=") for a in args):
        args = ("--data-dir", fresh_data_dir(), *args)
    return spawn_logged(
        switchboard_command("serve", "--port", "0", "--name", "test-server", *http, *args),
        file_limit=file_limit,
    )


def spawn_logged(
    argv: list[str],
    *,
    file_limit: tuple[int, int] | None = None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Any server command that logs ``listening on HOST:PORT`` to stderr once it listens:
    started, and waited for (stopped again if the line does not come); ``env``: its
    environment (default ``cli_env()``)."""

    def limit_files() -> None:
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, file_limit)

    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else cli_env(),
        preexec_fn=limit_files if file_limit is not None else None,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    sp = ServerProcess(proc, "127.0.0.1", 0, lines)
    try:
        match = _LISTENING.search(sp.wait_for_log(_LISTENING.pattern, STARTUP_TIMEOUT))
    except AssertionError:
        sp.stop(signal.SIGKILL)
        raise
    assert match is not None
    sp.host, sp.port = match.group(1) or match.group(2), int(match.group(3))
    return sp


@pytest.fixture
def server_process_factory() -> Iterator[Callable[..., ServerProcess]]:
    """``server_process_factory(*cli_args)`` runs ``switchboard serve`` on a free port."""
    started: list[ServerProcess] = []

    def factory(*args: str) -> ServerProcess:
        sp = start_server_process(*args)
        started.append(sp)
        return sp

    yield factory
    for sp in started:
        sp.stop()


@pytest.fixture
def server_process(server_process_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process_factory()


def run_cli(
    *args: str, port: int | None = None, timeout: float = 20.0, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a ``switchboard`` command to completion (``--port`` added when given)."""
    argv = list(args)
    if port is not None:
        argv += ["--port", str(port)]
    return subprocess.run(
        switchboard_command(*argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kw.pop("env", None) or cli_env(),
        **kw,
    )
