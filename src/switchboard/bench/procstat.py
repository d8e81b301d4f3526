"""What the benchmark reads about the server process from Linux's /proc (no psutil needed)."""

from __future__ import annotations

import os


class ProcError(Exception):
    """The process is gone, or /proc is not there (not Linux)."""


def parse_cpu_ticks(stat_line: str) -> int:
    """utime + stime, in clock ticks, from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may hold spaces and parentheses itself,
    so the fields are counted from the last ``)``: utime and stime are fields 14 and 15.
    """
    try:
        rest = stat_line[stat_line.rindex(")") + 2 :].split()
        return int(rest[11]) + int(rest[12])
    except (ValueError, IndexError):
        raise ProcError(f"unexpected /proc stat line: {stat_line[:80]!r}") from None


def parse_rss_kib(status_text: str) -> int:
    """VmRSS in KiB from the text of ``/proc/<pid>/status``."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1])
    raise ProcError("no VmRSS line in /proc status (a zombie or a kernel thread?)")


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError as exc:
        raise ProcError(f"cannot read {path}: {exc.strerror}") from None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    ticks = parse_cpu_ticks(_read(f"/proc/{pid}/stat"))
    return ticks / os.sysconf("SC_CLK_TCK")


def parse_steal(stat_text: str) -> tuple[int, int]:
    """(steal, total) clock ticks over all CPUs from the text of ``/proc/stat``: the time the
    hypervisor ran something else while one of this machine's vCPUs was ready to run, and all
    the time accounted (user, nice, system, idle, iowait, irq, softirq, steal)."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                ticks = [int(f) for f in fields[1:9]]
            except ValueError:
                break
            if len(ticks) < 8:  # kernels before 2.6.11 have no steal column
                ticks += [0] * (8 - len(ticks))
            return ticks[7], sum(ticks)
    raise ProcError("no readable 'cpu' line in /proc/stat")


def steal_ticks() -> tuple[int, int]:
    """This machine's (steal, total) CPU clock ticks so far: see ``parse_steal``."""
    return parse_steal(_read("/proc/stat"))


def rss_kib(pid: int) -> int:
    """The process's resident set size in KiB."""
    return parse_rss_kib(_read(f"/proc/{pid}/status"))
