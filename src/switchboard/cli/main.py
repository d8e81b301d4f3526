"""``switchboard``: one console script, one subcommand per module in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from switchboard import __version__
from switchboard.client import AuthError, ConnectionLost, RequestTimeout, ServerError
from switchboard.display import safe

from .common import CliExit

#: Modules of switchboard.cli that each provide ``register(subparsers)``; the parser
#: they build sets ``func(args) -> int`` as its default.
COMMANDS: tuple[str, ...] = (
    "serve",
    "oneshot",
    "reverse",
    "udpchat",
    "interactive",
    "chat",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Switchboard: a small messaging server and toolkit with its own protocol.",
    )
    parser.add_argument("--version", action="version", version=f"switchboard {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"switchboard.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except CliExit as exc:
        if exc.message:
            print(f"switchboard: {safe(exc.message)}", file=sys.stderr)  # may quote the server
        return exc.code
    except (ConnectionLost, RequestTimeout) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except AuthError as exc:  # no token, or not this server's: the connection was refused
        print(f"switchboard: {safe(exc.name)}: {safe(exc.message)}", file=sys.stderr)
        return 2
    except ServerError as exc:
        print(f"switchboard: {safe(exc.name)}: {safe(exc.message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (``| head``): not an error worth a traceback.
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
