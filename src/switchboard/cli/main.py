"""``switchboard``: one console script, one subcommand per module in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from switchboard import __version__
from switchboard.client import AuthError, ConnectionLost, RequestTimeout, ServerError
from switchboard.display import safe

from .common import CliExit, auth_hint, token
from .exitcodes import ExitCode, epilog

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
    "lab",
    "completion",
)


class SwitchboardParser(argparse.ArgumentParser):
    """Every command's parser (subcommands inherit the class): ``--help`` ends with the
    exit-code table, verbatim, whatever formatter the command chose for the rest."""

    def format_help(self) -> str:
        return f"{super().format_help().rstrip()}\n\n{epilog()}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = SwitchboardParser(
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
        return ExitCode.USAGE
    try:
        return int(func(args))
    except CliExit as exc:
        if exc.message:
            print(f"switchboard: {safe(exc.message)}", file=sys.stderr)  # may quote the server
        return exc.code
    except ConnectionLost as exc:  # after the session was had (connect() maps the rest)
        print(f"switchboard: {safe(str(exc))}", file=sys.stderr)  # may quote the server
        return ExitCode.SESSION_ENDED
    except RequestTimeout as exc:
        print(f"switchboard: {safe(str(exc))}", file=sys.stderr)
        return ExitCode.REFUSED
    except AuthError as exc:  # no token, or not this server's: no session to be had
        hint = auth_hint(exc, token_given=token(args) is not None)
        print(f"switchboard: {hint}", file=sys.stderr)
        return ExitCode.NO_SESSION
    except ServerError as exc:
        print(f"switchboard: {safe(exc.name)}: {safe(exc.message)}", file=sys.stderr)
        return ExitCode.REFUSED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (``| head``): not an error worth a traceback.
        sys.stderr.close()
        return ExitCode.REFUSED


if __name__ == "__main__":
    raise SystemExit(main())
