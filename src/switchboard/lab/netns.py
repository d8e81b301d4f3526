"""Network namespaces and veth links that an experiment makes for itself and always removes.

``NetworkSandbox`` is a context manager: inside it, ``namespace()`` adds a namespace,
``veth(a, b)`` joins two of them (or one and the host, ``None``) with a veth pair and a /30
from 10.231.0.0/16 that no host interface uses; on leaving, for whatever reason (an error,
Ctrl-C, SIGTERM), every namespace and host-side link it made is deleted.  Deleting a
namespace deletes the veth ends inside it, and a veth pair dies with either end.

Names carry the creating process's id (``sblab-PID-N``, links ``sbPID-Nh``/``sbPID-Nn``), so
that what a killed run (SIGKILL, a power cut) left behind is recognised and removed by the
next run: ``sweep_orphans`` deletes every such object whose process is gone.

Needs root and iproute2's ``ip`` (Linux only); ``why_unavailable`` says in one line what is
missing.  Nothing here changes the host's own settings: sysctls are only ever set inside a
namespace made here.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from .notebook import LabUnavailable, MissingTool

#: The private block every link's /30 comes from; only ever assigned inside a sandbox.
LINK_BLOCK = ipaddress.IPv4Network("10.231.0.0/16")
#: Seconds any one ``ip`` command may take.
IP_TIMEOUT_S = 10.0
#: setns(2)'s flag for a network namespace (linux/sched.h).
CLONE_NEWNET = 0x40000000
#: The calling thread's TCP tables, wherever it is (/proc/net is the main thread's view).
THREAD_TCP_TABLES = (
    (Path("/proc/thread-self/net/tcp"), socket.AF_INET),
    (Path("/proc/thread-self/net/tcp6"), socket.AF_INET6),
)

_NAMESPACE = re.compile(r"^sblab-(\d+)-\d+$")
_LINK = re.compile(r"^sb(\d+)-\d+[hn]$")


class NetnsError(LabUnavailable):
    """An ``ip`` command failed; the message is its command line and its error output."""


def why_unavailable() -> LabUnavailable | None:
    """Why namespaces cannot be made here (one line: not Linux, not root, no ``ip``, naming
    its Debian package), or None when they can."""
    if not sys.platform.startswith("linux"):
        return LabUnavailable("network namespaces are Linux-only")
    if os.geteuid() != 0:
        return LabUnavailable("making network namespaces needs root (run it with sudo)")
    if shutil.which("ip") is None:
        return MissingTool("ip", "iproute2")
    return None


def ip(*args: str, namespace: str | None = None) -> str:
    """Run ``ip ARGS`` (inside ``namespace`` when given); its output, or NetnsError."""
    argv = ["ip", *args] if namespace is None else ["ip", "-n", namespace, *args]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(argv)}: no answer within {IP_TIMEOUT_S:g}s") from exc
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def in_namespace(namespace: str, argv: list[str]) -> list[str]:
    """``argv`` as a command that runs inside ``namespace``."""
    return ["ip", "netns", "exec", namespace, *argv]


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(code)}")


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the calling thread in ``namespace`` for the block, then back where it was.

    Sockets opened in the block belong to ``namespace`` for good (a socket's namespace is
    fixed when it is made), so one process can hold both ends of a pulled cable; threads
    started in the block start there too.  /proc/thread-self/net shows the namespace's
    tables (``THREAD_TCP_TABLES``).  setns(2) on a network namespace concerns only the
    calling thread.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    except OSError as exc:
        os.close(home)
        raise NetnsError(f"no namespace {namespace}: {exc.strerror}") from exc
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def existing_namespaces() -> list[str]:
    """The names ``ip netns list`` shows."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _host_links() -> list[str]:
    names = []
    for line in ip("-o", "link", "show").splitlines():
        # "7: sb123-0h@if6: <BROADCAST,...": the name ends at "@" or ":".
        parts = line.split(":", 2)
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return names


def sweep_orphans() -> list[str]:
    """Delete the namespaces and host links a dead sandbox left behind; their names."""
    removed = []
    for name in existing_namespaces():
        match = _NAMESPACE.match(name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(NetnsError):
                ip("netns", "del", name)
                removed.append(name)
    for name in _host_links():
        match = _LINK.match(name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(NetnsError):  # gone with its peer meanwhile
                ip("link", "del", name)
                removed.append(name)
    return removed


def _destroy_sockets(namespace: str) -> None:
    """Abort every TCP socket left in ``namespace`` (``ss -K``), orphans included: a socket
    still retransmitting a FIN over a pulled cable would otherwise keep the deleted namespace
    (and its veth end) alive, unseen, for minutes.  Best effort: without ss, or without the
    kernel's socket-destroy support, the namespace goes when its last socket does."""
    if shutil.which("ss") is None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run(
            in_namespace(namespace, ["ss", "-K", "-tan", "state", "all"]),
            capture_output=True,
            timeout=IP_TIMEOUT_S,
            check=False,
        )


def _addresses_in_use() -> list[ipaddress.IPv4Network]:
    used = []
    for line in ip("-o", "-4", "addr", "show").splitlines():
        fields = line.split()
        if "inet" in fields:
            used.append(ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).network)
    return used


@dataclass(frozen=True)
class VethLink:
    """A veth pair: end ``a`` in namespace ``a_namespace`` (None: the host), end ``b`` in
    ``b_namespace``, with the two usable addresses of one /30."""

    a_namespace: str | None
    a_if: str
    a_ip: str
    b_namespace: str | None
    b_if: str
    b_ip: str


class NetworkSandbox:
    """Namespaces and veth links made on demand and all removed on exit (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self.namespaces: list[str] = []
        self._host_links: list[str] = []
        self._sigterm_installed = False

    def __enter__(self) -> NetworkSandbox:
        reason = why_unavailable()
        if reason is not None:
            raise reason
        sweep_orphans()
        # SIGTERM's default ends the process without running ``finally``: while the sandbox
        # exists it raises SystemExit instead, so the namespaces still go.
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
            self._sigterm_installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Delete everything made here (host links first, then the namespaces).  A second
        Ctrl-C (or a SIGTERM) meanwhile waits until the deletion is done."""
        with _signals_held(after=self._restore_sigterm):
            self._delete_all()

    def _restore_sigterm(self) -> None:
        if self._sigterm_installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._sigterm_installed = False

    def _delete_all(self) -> None:
        for name in reversed(self._host_links):
            with contextlib.suppress(NetnsError):  # already gone with its peer
                ip("link", "del", name)
        for name in reversed(self.namespaces):
            _destroy_sockets(name)
            with contextlib.suppress(NetnsError):
                ip("netns", "del", name)
        self._host_links.clear()
        self.namespaces.clear()

    def _next(self) -> int:
        with self._lock:
            self._count += 1
            return self._count

    def namespace(self) -> str:
        """A new namespace with its loopback up; its name."""
        name = f"sblab-{os.getpid()}-{self._next()}"
        if name in existing_namespaces():  # a dead process with our pid left it
            ip("netns", "del", name)
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("link", "set", "lo", "up", namespace=name)
        return name

    def veth(self, a: str | None, b: str) -> VethLink:
        """A veth pair between ``a`` (a namespace made here, or None for the host) and
        namespace ``b``, both ends up, addressed from a free /30 of LINK_BLOCK."""
        tag = f"sb{os.getpid()}-{self._next()}"
        a_if, b_if = f"{tag}h", f"{tag}n"
        subnet = self._free_subnet()
        a_ip, b_ip = (str(host) for host in subnet.hosts())
        ip("link", "add", a_if, "type", "veth", "peer", "name", b_if)
        self._host_links.append(a_if)
        ip("link", "set", b_if, "netns", b)
        if a is not None:
            ip("link", "set", a_if, "netns", a)
            self._host_links.remove(a_if)  # it now dies with namespace a
        for namespace, name, address in ((a, a_if, a_ip), (b, b_if, b_ip)):
            ip("addr", "add", f"{address}/{subnet.prefixlen}", "dev", name, namespace=namespace)
            ip("link", "set", name, "up", namespace=namespace)
        return VethLink(a, a_if, a_ip, b, b_if, b_ip)

    def _free_subnet(self) -> ipaddress.IPv4Network:
        used = _addresses_in_use()
        for namespace in self.namespaces:
            for line in ip("-o", "-4", "addr", "show", namespace=namespace).splitlines():
                fields = line.split()
                if "inet" in fields:
                    interface = fields[fields.index("inet") + 1]
                    used.append(ipaddress.IPv4Interface(interface).network)
        blocks = list(LINK_BLOCK.subnets(new_prefix=30))
        for _ in range(100):
            candidate = random.choice(blocks)
            if not any(candidate.overlaps(net) for net in used):
                return candidate
        raise NetnsError(f"no free /30 left in {LINK_BLOCK} on this host")

    def set_link(self, namespace: str | None, name: str, state: str) -> None:
        """``ip link set NAME up|down`` in ``namespace`` (None: the host)."""
        ip("link", "set", name, state, namespace=namespace)


@contextlib.contextmanager
def _signals_held(after: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block: they are noted, and delivered once it has
    ended (after ``after``, which runs in any case).

    The Python-level handlers are swapped rather than the signals masked: a signal sent to
    the process goes to any thread that does not block it (a resolver or executor thread),
    and Python runs its handler in the main thread whichever thread received it.  Python
    handlers can only be set from the main thread; elsewhere there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        try:
            yield
        finally:
            if after is not None:
                after()
        return
    caught: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, note) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if after is not None:
            after()
        for number in dict.fromkeys(caught):
            signal.raise_signal(number)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
