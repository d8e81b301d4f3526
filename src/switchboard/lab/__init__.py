"""``switchboard lab``: the socket labs' experiments, each one command that does the thing on
loopback (or in network namespaces it makes and removes), observes what the kernel shows and
says why.  A layer beside ``cli``: it uses the protocol, the client library and the server's
public entry points; ``switchboard.cli.lab`` prints what an experiment writes.

One module per experiment (``switchboard.lab.<name>``, defining ``EXPERIMENT``), listed here
in the issue's order; ``notebook`` holds what they share, ``sockets`` reads the kernel's TCP
table.
"""

from __future__ import annotations

import importlib
from typing import Final

from .notebook import Experiment

#: The experiments, in the order ``switchboard lab`` lists them.
NAMES: Final[tuple[str, ...]] = (
    # the endpoints and the states of TCP on loopback
    "ports",
    "backlog",
    "demux",
    "close",
    # the network and the wire
    "cable",
    "burst",
    "byteorder",
    "capture",
)


def experiment(name: str) -> Experiment:
    """The experiment called ``name``; ``KeyError`` if there is none."""
    if name not in NAMES:
        raise KeyError(name)
    found: Experiment = importlib.import_module(f"{__name__}.{name}").EXPERIMENT
    return found


def experiments() -> list[Experiment]:
    """Every experiment, in ``NAMES``' order."""
    return [experiment(name) for name in NAMES]


__all__ = ["NAMES", "Experiment", "experiment", "experiments"]
