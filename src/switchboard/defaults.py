"""Every default and limit in one place: the server, the CLI help and the docs read them here.

Each comment says why the value is what it is.
"""

from __future__ import annotations

from typing import Final

from switchboard.protocol import DEFAULT_MAX_FRAME as PROTOCOL_MAX_FRAME

#: Loopback unless told otherwise: a fresh server is not reachable from the network.
HOST: Final = "127.0.0.1"
#: The main server's TCP port (unassigned by IANA, easy to type).
PORT: Final = 7000
#: The string-reversal service and the UDP chat room stand beside it.
REVERSE_PORT: Final = 7001
UDPCHAT_PORT: Final = 7002

#: Environment variables the client commands read for their defaults.
ENV_HOST: Final = "SWITCHBOARD_HOST"
ENV_PORT: Final = "SWITCHBOARD_PORT"

#: Connected clients admitted at once; one more gets SERVER_FULL.  A 1024 default keeps
#: a fresh server inside the usual soft open-file limit (1024) with room for the listener.
MAX_CLIENTS: Final = 1024
#: Seconds of silence before the server PINGs a connection; three of them close it.
HEARTBEAT_S: Final = 10.0
#: Silent heartbeat intervals after which a connection is declared dead.
HEARTBEAT_MISSES: Final = 3
#: Largest frame, header included (see protocol.wire).
MAX_FRAME: Final = PROTOCOL_MAX_FRAME
#: Longest SEND/BROADCAST text, in bytes of UTF-8.  4 KiB is a long chat message
#: (IRC: 512 bytes per line; Slack: 40,000 characters) and keeps a room's history small.
MAX_TEXT: Final = 4096
#: Nicknames and room names: characters, not bytes.
MAX_NICK_CHARS: Final = 32
MAX_ROOM_CHARS: Final = 32
#: The room a chat client joins unless told otherwise.
DEFAULT_ROOM: Final = "lobby"
#: Messages each room keeps for replay on JOIN.
ROOM_HISTORY: Final = 50

#: Outbound bytes queued for one client above which a SEND to it gets RECIPIENT_BUSY
#: (the transport's high-water mark: we stop reading from that client too).
WRITE_HIGH_WATER: Final = 256 * 1024
#: Outbound bytes queued for one client at which it is disconnected as too slow.
WRITE_HARD_LIMIT: Final = 4 * 1024 * 1024

#: Client side: seconds to establish a connection, and to wait for each response.
CONNECT_TIMEOUT_S: Final = 5.0
REQUEST_TIMEOUT_S: Final = 10.0
#: Seconds the server gives clients to receive SHUTDOWN before it closes everything.
SHUTDOWN_GRACE_S: Final = 1.0
