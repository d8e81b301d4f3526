"""``switchboard lab``: list the socket labs' experiments; ``switchboard lab NAME`` runs one
and prints its notebook: the steps as they happen, tables of what the kernel showed, then the
explanation (rich), or, with ``--json``, ``{"experiment": NAME, "observations": {...}}`` on
stdout and the steps on stderr."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from switchboard.display import safe

from .common import CliExit, emit
from .exitcodes import ExitCode


class _AnyName(dict[str, argparse.ArgumentParser]):
    """The experiments' parsers by name, claiming to hold every name, so that argparse's
    choice check leaves an unknown one to ``ExperimentChoice`` instead of printing its usage
    block.  A dict: shtab completes the subcommands of a dict of parsers."""

    def __contains__(self, key: object) -> bool:
        return True


class ExperimentChoice(argparse._SubParsersAction):  # type: ignore[type-arg]
    """The experiments' subparsers, with an unknown name said in one line (exit 2) rather
    than argparse's usage block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = _AnyName()

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        self.choices[name] = parser
        return parser

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        assert isinstance(values, list)
        name = values[0]
        if name not in self._name_parser_map:
            known = ", ".join(self._name_parser_map)
            parser.exit(
                ExitCode.USAGE,
                f"switchboard lab: no experiment called {name!r} (the experiments: {known})\n",
            )
        super().__call__(parser, namespace, values, option_string)


def register(sub: Any) -> None:
    from switchboard.lab import experiments

    p = sub.add_parser(
        "lab",
        help="the socket labs' experiments: list them, or run one",
        description="Without a name, list the experiments and the lab question each answers; "
        "with one, run it on loopback: the steps it takes, what the kernel showed (socket "
        "states from /proc/net/tcp), and why.",
    )
    p.add_argument("--json", action="store_true", help="list the experiments as JSON")
    p.set_defaults(func=cmd_list)
    inner = p.add_subparsers(
        title="experiments", metavar="EXPERIMENT", action=ExperimentChoice, dest="experiment"
    )
    for exp in experiments():
        e = inner.add_parser(exp.name, help=exp.question, description=exp.question)
        e.add_argument(
            "--json",
            action="store_true",
            help="print the observations as one JSON object (the steps go to stderr)",
        )
        e.add_argument(
            "--pcap", metavar="FILE", help="keep the experiment's packet capture in FILE"
        )
        exp.add_arguments(e)
        e.set_defaults(func=cmd_run)


#: Columns of the output when it is not a terminal (a file, a pipe, the docs).
PLAIN_WIDTH = 100


def console(*, stderr: bool = False) -> Console:
    """A console that reads no markup; 100 columns wide into a pipe or a file."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PLAIN_WIDTH
    return Console(
        stderr=stderr, highlight=False, markup=False, emoji=False, soft_wrap=False, width=width
    )


def cmd_list(args: argparse.Namespace) -> int:
    from switchboard.lab import experiments

    found = experiments()
    if args.json:
        emit(
            {
                "experiments": [
                    {"name": e.name, "question": e.question, "needs_root": e.needs_root}
                    for e in found
                ]
            }
        )
        return ExitCode.OK
    table = RichTable(title=Text("switchboard lab NAME runs one"), title_justify="left")
    table.add_column("experiment", no_wrap=True)
    table.add_column("the lab question it answers")
    for e in found:
        question = e.question + (" (root: network namespaces)" if e.needs_root else "")
        table.add_row(Text(e.name, style="bold"), Text(question))
    console().print(table)
    return ExitCode.OK


class NotebookPrinter:
    """Prints a notebook's entries as they are written: steps at once (on stderr with
    ``--json``), tables at once (not with ``--json``), explanations at the end."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.out = console(stderr=json_mode)
        self.why: list[str] = []

    def __call__(self, entry: object) -> None:
        from switchboard.lab.notebook import Explanation, Step, Table

        if isinstance(entry, Step):
            self.out.print(Text("• ", style="dim") + Text(entry.text))
        elif isinstance(entry, Table) and not self.json_mode:
            table = RichTable(title=Text(entry.title), title_justify="left")
            for column in entry.columns:
                table.add_column(column, overflow="fold")  # an address is never cut
            for row in entry.rows:
                table.add_row(*(Text(str(cell)) for cell in row))
            self.out.print(table)
        elif isinstance(entry, Explanation):
            self.why.append(entry.text)

    def finish(self) -> None:
        if self.json_mode or not self.why:
            return
        self.out.print(Text("Why", style="bold"))
        for paragraph in self.why:
            self.out.print(Text(paragraph))
            self.out.print()


def cmd_run(args: argparse.Namespace) -> int:
    from switchboard.client import SwitchboardError
    from switchboard.lab import experiment
    from switchboard.lab.notebook import LabUnavailable, Notebook

    exp = experiment(args.experiment)
    if exp.needs_root and os.geteuid() != 0:
        raise CliExit(
            ExitCode.USAGE,
            f"lab {exp.name} makes network namespaces and needs root: run it as root (sudo)",
        )
    printer = NotebookPrinter(json_mode=args.json)
    notebook = Notebook(pcap=args.pcap, listener=printer)
    try:
        exp.run(args, notebook)
    except LabUnavailable as exc:
        raise CliExit(ExitCode.USAGE, f"lab {exp.name}: {exc}") from None
    except OSError as exc:
        raise CliExit(ExitCode.NO_SESSION, f"lab {exp.name}: {exc.strerror or exc}") from None
    except SwitchboardError as exc:  # the experiment's own server or client failed
        raise CliExit(ExitCode.NO_SESSION, f"lab {exp.name}: {safe(str(exc))}") from None
    printer.finish()
    if args.json:
        emit({"experiment": exp.name, "observations": notebook.observations})
    if args.pcap and not Path(args.pcap).exists():
        print(
            f"switchboard lab {exp.name}: this experiment makes no capture; "
            f"{args.pcap} was not written",
            file=sys.stderr,
        )
    return ExitCode.OK
