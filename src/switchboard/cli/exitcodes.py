"""The exit codes of every ``switchboard`` command: one table, read by the code, by every
command's ``--help`` epilog (``epilog()``) and by the README (a test compares them).

A command returns ``ExitCode.X`` (an ``int``) from its ``func`` or raises
``CliExit(ExitCode.X, message)``; ``main`` maps the client library's exceptions onto the
same codes, so a command that lets one escape still exits by the table.
"""

from __future__ import annotations

import enum
import textwrap
from typing import Final


class ExitCode(enum.IntEnum):
    """Why a command ended.  USAGE and NO_SESSION share 2: a script can tell success (0) and
    a refusal (1) from "it never worked" (2) and "it worked, then the other side ended it" (3).
    """

    #: success, or the user ended the session (quit, /quit, Ctrl-D, end of piped input)
    OK = 0
    #: the server refused the request (an ERROR answer), gave no answer within --timeout,
    #: or a message was not delivered
    REFUSED = 1
    #: usage error, or no session could be had: cannot connect, TLS failed, token refused,
    #: nickname refused, server full, timed out before WELCOME
    NO_SESSION = 2
    #: the session ended from the other side after it was established: server SHUTDOWN or
    #: connection lost (for clients that reconnect: only once they give up)
    SESSION_ENDED = 3
    #: interrupted by Ctrl-C where Ctrl-C ends the program
    INTERRUPTED = 130

    #: the same code as NO_SESSION, for argument errors (argparse exits 2 too)
    USAGE = 2


#: What each code means, in the words the epilog and the README print.
MEANINGS: Final[dict[ExitCode, str]] = {
    ExitCode.OK: "success, or you ended the session (quit, /quit, Ctrl-D, end of piped input)",
    ExitCode.REFUSED: "the server refused the request (an ERROR answer) or gave no answer "
    "within --timeout, or a message was not delivered",
    ExitCode.NO_SESSION: "usage error, or no session could be had: cannot connect, TLS "
    "failed, token or nickname refused, server full, timed out before WELCOME",
    ExitCode.SESSION_ENDED: "the session ended from the other side after it was established: "
    "server SHUTDOWN or connection lost (a client that reconnects: once it gives up)",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C where Ctrl-C ends the program",
}


def table_lines(width: int = 79) -> list[str]:
    """The table as plain lines, ``  0    success, ...``, each meaning wrapped at ``width``
    under its own column."""
    out: list[str] = []
    for code, meaning in MEANINGS.items():
        out += textwrap.wrap(
            meaning,
            width,
            initial_indent=f"  {int(code):<4} ",
            subsequent_indent=" " * 7,
            break_on_hyphens=False,
        )
    return out


def epilog() -> str:
    """The ``--help`` epilog of every command (printed verbatim: see ``main``)."""
    return "exit codes:\n" + "\n".join(table_lines())


__all__ = ["MEANINGS", "ExitCode", "epilog", "table_lines"]
