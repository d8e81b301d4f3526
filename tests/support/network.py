"""Loopback ports and addresses for tests: a free port, a port that never answers, IPv6."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

HOST = "127.0.0.1"


def free_port(host: str = HOST, kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port where nothing listens (bound, then released): TCP, or UDP with
    ``kind=socket.SOCK_DGRAM``; on ``host``, an IPv4 or IPv6 address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listener never accepts and whose accept queue is full: SYNs go unanswered."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(10):
            s = socket.socket()
            fillers.append(s)
            s.settimeout(0.3)
            try:
                s.connect((HOST, port))
            except TimeoutError:
                break  # this one was not answered: the queue is full
        else:
            pytest.skip("could not fill the accept queue here")
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


def ipv6_loopback() -> bool:
    """Whether this machine can bind ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) here")


class CuttableProxy:
    """A TCP forwarder on a free port to the server's: ``cut()`` breaks every connection
    through it (both ends see a reset or EOF, as when a network path fails) and refuses new
    ones until ``mend()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._refusing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._refusing:
                    near.close()
                    continue
                far = socket.create_connection(("127.0.0.1", self.target_port))
                self._open += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._refusing = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def mend(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self.cut()
        self.listener.close()
