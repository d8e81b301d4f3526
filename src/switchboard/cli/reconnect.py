"""What ``chat`` and ``listen`` share to reconnect: the flags, the back-off, one attempt."""

from __future__ import annotations

import argparse
from typing import Any

from switchboard import defaults
from switchboard.client import AuthError, Client, ConnectionFailed
from switchboard.client.reconnect import Backoff

from .common import CliExit, connect


def add_reconnect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-reconnect",
        action="store_true",
        help="end (exit code 3) when the connection is lost or the server shuts down, "
        "instead of reconnecting",
    )
    p.add_argument(
        "--reconnect-for",
        type=float,
        default=defaults.RECONNECT_GIVE_UP_S,
        metavar="SECONDS",
        help="keep trying to reconnect for this long, then give up with exit code 3 (default "
        f"{defaults.RECONNECT_GIVE_UP_S:g}; the first try within "
        f"{defaults.RECONNECT_INITIAL_S:g} s, then waits doubling up to "
        f"{defaults.RECONNECT_MAX_S:g} s, jittered)",
    )


def check_reconnect_args(args: argparse.Namespace) -> None:
    if not args.reconnect_for > 0:
        raise CliExit(2, "--reconnect-for must be positive")


def backoff(args: argparse.Namespace) -> Backoff:
    return Backoff(give_up_s=args.reconnect_for)


def connect_again(args: argparse.Namespace, **kwargs: Any) -> Client:
    """``connect`` for a retry: its one-line failure becomes ConnectionFailed, which the
    retry loop reports and retries (a server restarting refuses, then is full of returning
    clients, then admits us)."""
    try:
        return connect(args, **kwargs)
    except CliExit as exc:
        # A refused token is not retried: ``connect`` keeps the AuthError as the context
        # of its one-line exit, and the retry loop gives up on it at once.
        if isinstance(exc.__context__, AuthError):
            raise exc.__context__ from None
        raise ConnectionFailed(exc.message) from None


def seconds(delay: float) -> str:
    """A wait as people say it: ``0.6 s``, ``2 s``, ``17 s``."""
    return f"{delay:.1f} s" if delay < 1.95 else f"{delay:.0f} s"
