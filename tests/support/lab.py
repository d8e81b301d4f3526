"""The lab's experiments run in-process, with the options the CLI would parse, and the checks
every experiment's test makes: nothing left in the kernel's TCP table on its ports, no child
process left running."""

from __future__ import annotations

import psutil

from switchboard.cli.main import build_parser
from switchboard.lab import experiment
from switchboard.lab.notebook import Notebook
from switchboard.lab.sockets import TcpSocket, read_sockets


def run_experiment(name: str, *argv: str) -> Notebook:
    """``switchboard lab NAME ARGV...`` in this process: the notebook it wrote."""
    args = build_parser().parse_args(["lab", name, *argv])
    notebook = Notebook(pcap=args.pcap)
    experiment(name).run(args, notebook)
    return notebook


def left_on(ports: list[int]) -> list[TcpSocket]:
    """What the kernel still holds on ``ports``: an experiment must leave nothing."""
    return read_sockets(ports)


def children() -> list[psutil.Process]:
    """This process's live child processes (an experiment must leave none)."""
    return [p for p in psutil.Process().children(recursive=True) if p.status() != "zombie"]
