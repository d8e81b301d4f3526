"""``safe``: what a peer chose, made harmless for a terminal.

Every command that prints a string a peer or a server chose (message texts, nicknames, room
names, reasons, zone names, server names) passes it through ``safe`` first: the TCP commands
(``listen``, ``chat``, ``client``, ``list``, ``send``, ``time``), the lab clients (``reverse
connect``, ``udpchat join``) and the server's log lines alike.  The policy (which code points,
written how) lives in ``switchboard.protocol.printable``, beside the ``--trace`` rendering
that escapes the same set, so that the protocol layer needs nothing from here.
"""

from __future__ import annotations

from switchboard.protocol.printable import UNSAFE, safe

__all__ = ["UNSAFE", "safe"]
