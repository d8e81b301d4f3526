"""What an experiment is (``Experiment``) and what it writes to (``Notebook``).

An experiment does things with real sockets and writes, as it goes, the steps it took, the
values it observed (JSON-able, each under a plain name), tables of what the kernel showed and,
at the end, the plain-words why.  It prints nothing itself: ``switchboard.cli.lab`` renders the
notebook for people (rich) or programs (``--json``), so an experiment reads the same in both.

Why an experiment could not run at all (not root where it makes network namespaces, a tool
missing) is a ``LabUnavailable``: one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias


class LabUnavailable(Exception):
    """The experiment cannot run here; the message says why and what to do, in one line."""


class MissingTool(LabUnavailable):
    """An external program the experiment needs is not installed."""

    def __init__(self, program: str, debian_package: str) -> None:
        super().__init__(
            f"{program} is not installed: install the Debian package {debian_package} "
            f"(apt-get install {debian_package})"
        )
        self.program = program
        self.debian_package = debian_package


def require_tool(program: str, debian_package: str) -> str:
    """The full path of ``program``, or ``MissingTool`` naming the package that has it."""
    path = shutil.which(program)
    if path is None:
        raise MissingTool(program, debian_package)
    return path


@dataclass(frozen=True)
class Step:
    """What the experiment did, printed as it happens."""

    text: str


@dataclass(frozen=True)
class Table:
    """Rows of what was observed, under a title; cells are printed with ``str``."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]


@dataclass(frozen=True)
class Explanation:
    """The plain-words why, printed at the end."""

    text: str


Entry: TypeAlias = Step | Table | Explanation


class Notebook:
    """What an experiment writes to.  ``listener`` (the CLI's renderer) sees each entry as
    it is written; ``observations`` and ``entries`` keep everything for the end."""

    def __init__(
        self, *, pcap: str | None = None, listener: Callable[[Entry], None] | None = None
    ) -> None:
        #: ``--pcap FILE``: where an experiment that captures keeps its capture.
        self.pcap = pcap
        self.observations: dict[str, Any] = {}
        self.entries: list[Entry] = []
        self._listener = listener

    def _write(self, entry: Entry) -> None:
        self.entries.append(entry)
        if self._listener is not None:
            self._listener(entry)

    def step(self, text: str) -> None:
        """What the experiment did, printed as it happens."""
        self._write(Step(text))

    def observe(self, name: str, value: object) -> None:
        """A value for ``--json``, under a plain name (``accept_queue``).  It must be JSON-able
        (checked now, not when printing at the end); a name is observed once."""
        if name in self.observations:
            raise ValueError(f"observation {name!r} was already recorded")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"observation {name!r} is not JSON-able: {exc}") from exc
        self.observations[name] = value

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table of what was observed; every row has one cell per column."""
        cols = tuple(columns)
        body = tuple(tuple(row) for row in rows)
        for row in body:
            if len(row) != len(cols):
                raise ValueError(f"table {title!r}: a row of {len(row)} cells, {len(cols)} columns")
        self._write(Table(title, cols, body))

    def explain(self, text: str) -> None:
        """The plain-words why, printed at the end."""
        self._write(Explanation(text))


@dataclass(frozen=True)
class Experiment:
    """One lab experiment: its name (``switchboard lab NAME``), the lab question it answers
    (one line, listed by ``switchboard lab``), its own options, and how it runs."""

    name: str
    question: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Notebook], None]
    #: True only where the experiment makes network namespaces.
    needs_root: bool = False


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """``add_arguments`` of an experiment with no options of its own."""


__all__ = [
    "Entry",
    "Experiment",
    "Explanation",
    "LabUnavailable",
    "MissingTool",
    "Notebook",
    "Step",
    "Table",
    "no_arguments",
    "require_tool",
]
