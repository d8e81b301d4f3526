"""The lab's experiments run in-process, with the options the CLI would parse, and the checks
every experiment's test makes: nothing of it left in the kernel's TCP table, no child process
left running.

"Of it": the ports an experiment picks are free when it picks them, yet other programs' old
TIME_WAIT entries may carry the same numbers (a TIME_WAIT does not hold a port against a
listener that asks SO_REUSEADDR), so what was in the table before the run is left out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from switchboard.cli.main import build_parser
from switchboard.lab import experiment
from switchboard.lab.notebook import Notebook
from switchboard.lab.sockets import TcpSocket, read_sockets

Ends = frozenset[tuple[tuple[str, int], tuple[str, int]]]


def tcp_table() -> Ends:
    """Every TCP socket's (local, remote) now: what a run's leftovers are compared with."""
    return frozenset((s.local, s.remote) for s in read_sockets())


def left_on(ports: Iterable[int], before: Ends = frozenset()) -> list[TcpSocket]:
    """What the kernel holds on ``ports`` that was not there ``before``."""
    return [s for s in read_sockets(ports) if (s.local, s.remote) not in before]


@dataclass(frozen=True)
class LabRun:
    """An experiment's notebook, and the TCP table from before it ran."""

    notebook: Notebook
    before: Ends

    @property
    def observations(self) -> dict[str, Any]:
        return self.notebook.observations

    def left_on(self, ports: Iterable[int]) -> list[TcpSocket]:
        """What the run left on ``ports``: an experiment must leave nothing."""
        return left_on(ports, self.before)


def run_experiment(name: str, *argv: str) -> LabRun:
    """``switchboard lab NAME ARGV...`` in this process."""
    args = build_parser().parse_args(["lab", name, *argv])
    notebook = Notebook(pcap=args.pcap)
    before = tcp_table()
    experiment(name).run(args, notebook)
    return LabRun(notebook, before)


def children() -> list[psutil.Process]:
    """This process's live child processes (an experiment must leave none)."""
    return [p for p in psutil.Process().children(recursive=True) if p.status() != "zombie"]
