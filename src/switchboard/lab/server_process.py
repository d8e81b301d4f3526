"""``switchboard serve`` as its own process for an experiment: on a free port, waited for
until it listens, and stopped by its pid when the ``with`` block ends, whatever happened.

A process of its own (not a server on a thread of the experiment) so that what the kernel
counts for it is the server's alone: ``read_calls`` is the number of read() system calls it
has made (/proc/PID/io ``syscr``), which is how ``burst`` counts the server's recv()s.
"""

from __future__ import annotations

import ctypes
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from .notebook import LabUnavailable

#: Seconds the server may take to listen, and to stop after SIGTERM.
START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 5.0
#: ``listening on 127.0.0.1:7000`` or ``listening on [::1]:7000`` (the server's log line).
_LISTENING: Final = re.compile(r"listening on (?:\[([^\]\s]+)\]|([^\s:\[]+)):(\d+)")


#: prctl(2)'s option that sends the child a signal when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG: Final = 1


def die_with_parent() -> None:
    """``preexec_fn`` of an experiment's child processes: SIGTERM when the experiment dies,
    even by SIGKILL, so that no server or dumpcap outlives it.  Kept across exec (``ip
    netns exec`` included); a no-op where prctl is missing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class ServerProcess:
    """``python -m switchboard serve --host HOST --port 0 ARGS`` (inside ``namespace`` when
    given) for the length of a ``with`` block; ``host``, ``port`` and ``pid`` once started,
    ``log`` its stderr lines so far."""

    def __init__(self, *args: str, host: str = "127.0.0.1", namespace: str | None = None) -> None:
        argv = [sys.executable, "-m", "switchboard", "serve", "--host", host, "--port", "0"]
        # Nothing kept and no page served: an experiment's server must not take the web port
        # or the history database of a server the user runs beside it.
        argv += ["--name", "lab", "--http", "off", "--data-dir", "none", *args]
        self.argv = argv if namespace is None else ["ip", "netns", "exec", namespace, *argv]
        self.host = host
        self.port = 0
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        threading.Thread(target=self._pump, name="lab-server-log", daemon=True).start()
        try:
            line = self.wait_for_log(_LISTENING.pattern, START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        match = _LISTENING.search(line)
        assert match is not None
        self.port = int(match.group(3))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_log(self, pattern: str, timeout: float) -> str:
        """The first log line (seen already, or within ``timeout``) matching ``pattern``."""
        regex = re.compile(pattern)
        for line in self.log:
            if regex.search(line):
                return line
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if got is None:  # the server exited
                break
            self.log.append(got)
            if regex.search(got):
                return got
        last = self.log[-1].strip() if self.log else "no output"
        raise LabUnavailable(f"the server did not log {pattern!r} within {timeout:g}s: {last}")

    def read_calls(self) -> int:
        """read() system calls the server process has made so far (/proc/PID/io syscr)."""
        for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            if line.startswith("syscr:"):
                return int(line.split()[1])
        raise LabUnavailable(f"/proc/{self.pid}/io has no syscr line")

    def stop(self) -> None:
        """SIGTERM by pid (the server says SHUTDOWN to its clients), SIGKILL after a deadline."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)
