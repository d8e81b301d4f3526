"""``switchboard serve --workers N --cluster URL``: N node processes on this machine sharing
one listening port (SO_REUSEPORT: the kernel spreads new connections over them), supervised
by this process: a worker that dies is restarted (and logged), SIGINT and SIGTERM stop every
worker gracefully (each sends its clients SHUTDOWN), then this process exits 0.

Each worker is ``switchboard serve`` with the same settings, ``--workers 1 --reuse-port``, the
port this process has reserved, and the node name ``NAME-wI``; the cluster URL reaches it
through ``$SWITCHBOARD_CLUSTER``, never its command line (which ``ps`` shows to everyone).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from switchboard import defaults

from . import logs
from .cluster import ClusterNode
from .config import SETTINGS, ServerConfig

log = logs.log

#: How often the supervisor looks at its workers.
POLL_S = 0.1


def worker_argv(config: ServerConfig, *, port: int, node_name: str, extra: list[str]) -> list[str]:
    """The command line of one worker: every setting as this process has it (so that a
    --config file or the environment is read once, here), but the cluster URL."""
    argv = [sys.executable, "-m", "switchboard", "serve"]
    skip = {"workers", "port", "node_name", "reuse_port", "cluster"}
    for setting in SETTINGS:
        value = getattr(config, setting.name)
        if setting.name in skip or value is None:
            continue
        flag = setting.flags[-1]
        if setting.kind is bool:
            if value:
                argv.append(flag)
            continue
        argv += [flag, str(value)]
    return [
        *argv,
        "--port",
        str(port),
        "--reuse-port",
        "--workers",
        "1",
        "--node-name",
        node_name,
        *extra,
    ]


@dataclass
class Worker:
    index: int
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = field(default=0)


class WorkerSupervisor:
    """Start the workers, restart those that die, stop them all on a signal."""

    def __init__(self, config: ServerConfig, *, extra: list[str]) -> None:
        assert config.cluster is not None
        self.config = config
        self.extra = extra
        self.stopping = ""
        self.workers: list[Worker] = []

    def _reserve_port(self) -> socket.socket:
        """A socket bound (not listening) to the port with SO_REUSEPORT: it holds a port 0's
        choice for the workers, which bind the same port beside it."""
        host = self.config.host or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, self.config.port))
        return sock

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = f"received {signal.Signals(signum).name}"

    def run(self) -> int:
        """Supervise until a signal; the exit code (2 if the workers cannot start)."""
        config = self.config
        # Redis unreachable: one line and exit 2 here, not one per worker.
        asyncio.run(_check_cluster(config))
        reserved = self._reserve_port()
        port = reserved.getsockname()[1]
        base = config.node_name or f"{socket.gethostname()}:{port}:{os.getpid()}"
        env = dict(os.environ)
        env[defaults.ENV_CLUSTER] = config.cluster or ""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop)
        for index in range(config.workers):
            name = f"{base}-w{index}"
            worker = Worker(index, worker_argv(config, port=port, node_name=name, extra=self.extra))
            self.workers.append(worker)
            self._start(worker, env)
        log.info(
            "supervising %d workers on port %d (pid %d)",
            len(self.workers),
            port,
            os.getpid(),
            extra={"event": "workers", "workers": len(self.workers), "port": port},
        )
        try:
            while not self.stopping:
                time.sleep(POLL_S)
                for worker in self.workers:
                    code = worker.proc.poll() if worker.proc is not None else None
                    if code is None or self.stopping:
                        continue
                    lived = time.monotonic() - worker.started
                    if code == 2 and worker.restarts == 0 and lived < 10:
                        # It could not start (its own line says why): so would the others.
                        self.stopping = f"worker {worker.index} could not start (exit 2)"
                        return self._stop_all(2)
                    log.warning(
                        "worker %d (pid %d) exited with code %d after %.1fs; restarting it",
                        worker.index,
                        worker.proc.pid if worker.proc else 0,
                        code,
                        lived,
                        extra={"event": "worker_restart", "worker": worker.index, "code": code},
                    )
                    if lived < defaults.WORKER_RESTART_PAUSE_S:
                        time.sleep(defaults.WORKER_RESTART_PAUSE_S)
                    worker.restarts += 1
                    self._start(worker, env)
            return self._stop_all(0)
        finally:
            reserved.close()

    def _start(self, worker: Worker, env: dict[str, str]) -> None:
        worker.proc = subprocess.Popen(worker.argv, stdin=subprocess.DEVNULL, env=env)
        worker.started = time.monotonic()

    def _stop_all(self, code: int) -> int:
        log.info(
            "stopping %d workers: %s",
            len(self.workers),
            self.stopping,
            extra={"event": "workers_stop", "reason": self.stopping},
        )
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_grace + 5.0
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return code


async def _check_cluster(config: ServerConfig) -> None:
    node = ClusterNode(config, logs.EventLog())
    await node.connect()  # ClusterUnreachable: serve prints it, exit 2
    await node.redis.aclose()


def run_workers(config: ServerConfig, *, extra: list[str]) -> int:
    """``serve --workers N``: configure logging, supervise, return the exit code."""
    logs.configure(config.log_level, config.log_format)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    return WorkerSupervisor(config, extra=extra).run()
