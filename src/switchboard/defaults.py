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
#: Where ``switchboard serve`` serves the web page, its WebSocket (/ws), /metrics and the
#: health checks (``--http``; "off" turns it off): loopback like HOST, and 8080, the usual
#: port of a development web server.  A reverse proxy in front of it gives it TLS and a
#: public name, or ``--tls-cert`` does.
HTTP: Final = "127.0.0.1:8080"
#: The word that turns the HTTP listener off.
HTTP_OFF: Final = "off"

#: Environment variables the client commands read for their defaults.
ENV_HOST: Final = "SWITCHBOARD_HOST"
ENV_PORT: Final = "SWITCHBOARD_PORT"
ENV_TOKEN: Final = "SWITCHBOARD_TOKEN"
#: The Redis URL of the cluster a server joins as a node (``serve --cluster``).
ENV_CLUSTER: Final = "SWITCHBOARD_CLUSTER"

#: Connected clients admitted at once; one more gets SERVER_FULL.  A 1024 default keeps
#: a fresh server inside the usual soft open-file limit (1024) with room for the listener.
MAX_CLIENTS: Final = 1024
#: The listen() backlog when ``--backlog`` is not given: ``--max-clients``, kept within
#: 128 (the classic SOMAXCONN, which a burst of reconnecting clients can fill) and 4096 (Linux's
#: net.core.somaxconn since 5.4, which caps whatever is asked).
MIN_AUTO_BACKLOG: Final = 128
MAX_AUTO_BACKLOG: Final = 4096
#: The largest ``--backlog``: listen() takes an int, the kernel caps it at net.core.somaxconn.
MAX_BACKLOG: Final = 65535
#: Seconds of silence before the server PINGs a connection; three of them close it.
HEARTBEAT_S: Final = 10.0
#: Silent heartbeat intervals after which a connection is declared dead.
HEARTBEAT_MISSES: Final = 3
#: A cluster node's lease (``--cluster-lease``): the node renews its key in Redis three times
#: per lease, and a node silent for a whole lease is dead: its clients leave LIST, their
#: nicknames are freed.  10 s rides out a Redis failover or a long GC pause on a busy node;
#: the issue asks that a dead node be gone within 15 s, the upper bound; under 1 s a
#: loaded Redis or event loop would expire live nodes.
CLUSTER_LEASE_S: Final = 10.0
MIN_CLUSTER_LEASE_S: Final = 1.0
MAX_CLUSTER_LEASE_S: Final = 15.0
#: How long a node waits for Redis to answer at start (and for each command after): past
#: it, ``serve --cluster`` says Redis cannot be reached and exits 2.
CLUSTER_CONNECT_TIMEOUT_S: Final = 5.0
#: Client ids a node takes from the cluster's counter at once (INCRBY): a connection gets
#: its id without a round trip to Redis, and a node asks again when half are used.
CLUSTER_ID_BLOCK: Final = 1024
#: Replies and receipts a cluster node keeps for other nodes while its Redis is away (sent
#: when it returns); past it they are dropped, and their senders time out (NOT_DELIVERED).
CLUSTER_UNSENT_MAX: Final = 100_000
#: SENDs one connection may have waiting for another node's answer at once; past it,
#: RATE_LIMITED (each holds the answers behind it and a place in the node's memory).
CLUSTER_MAX_WAITING_SENDS: Final = 4096
#: BROADCASTs one connection of a cluster node may have waiting for Redis to store and order
#: their line at once; past it, RATE_LIMITED (each holds the answers behind it, its line
#: and a place in the node's next pipeline to Redis).
CLUSTER_MAX_WAITING_LINES: Final = 4096
#: Entries of a room's stream a cluster node keeps while a JOIN of the room waits for Redis,
#: for the joiner: those read after its JOIN but before it was a member on the node (a
#: JOIN's answer and the node's reading of the stream race); past it, the oldest are
#: dropped, and the joiner finds them with HISTORY.
CLUSTER_JOIN_RECENT: Final = 1024
#: The most ``serve --workers`` starts: more processes than this on one machine cost memory
#: and context switches without adding cores.
MAX_WORKERS: Final = 64
#: A worker that dies sooner than this after its start is restarted only after a pause of
#: this long (a worker failing at once must not spin the supervisor).
WORKER_RESTART_PAUSE_S: Final = 1.0
#: The longest node name (``--node-name``): it is part of Redis keys and of log lines.
MAX_NODE_NAME_BYTES: Final = 128
#: Bounds of ``--heartbeat``: under 0.1 s a client on a slow link is dropped before its PONG
#: can arrive; over a day a dead peer holds its slot for days (WELCOME's u32 of ms would
#: carry 49 days).
MIN_HEARTBEAT_S: Final = 0.1
MAX_HEARTBEAT_S: Final = 86_400.0
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
#: Rooms one connection may be in at once; one more JOIN gets INVALID_ROOM.  Leaving them
#: all on disconnect is one LEFT fan-out per room, so this also bounds what a disconnect
#: costs the event loop.  (IRC networks advertise CHANLIMIT: Libera allows 250, many 20-50.)
MAX_ROOMS_PER_CLIENT: Final = 100
#: Rooms on the server at once; a JOIN that would create one more gets INVALID_ROOM
#: (existing rooms can still be joined).  An empty room costs about 1 KB before history.
MAX_ROOMS: Final = 10_000
#: Bytes of history all rooms keep together (each message: its text's size in memory plus
#: 400 bytes); past it the least recently active rooms lose their oldest messages first.
#: 64 MiB holds the full 50-message history of ~900 rooms of 1 KB messages; a room that
#: empties is deleted with its history, so the budget is given back when its members leave.
HISTORY_BYTES: Final = 64 * 1024 * 1024
#: Durable room history (server/history.py): the SQLite database file, in the data directory
#: (``--data-dir``; by default $XDG_STATE_HOME/switchboard, as the clients keep their state).
#: ``--data-dir none`` keeps history in memory only, as before the store existed.
HISTORY_DB_FILE: Final = "history.sqlite3"
#: The ``--data-dir`` value that turns the store off.
DATA_DIR_NONE: Final = "none"
#: When a stored line counts as committed (SQLite's synchronous mode, WAL journal): "normal",
#: in the WAL file (a killed or crashed server keeps it: the kernel has it), or "full", also
#: flushed to the disk (a power cut keeps it too).  Normal is SQLite's advice for WAL and
#: what Redis's default (appendfsync everysec) risks at most; full costs a disk flush per
#: group commit, which on a shared VM's disk held broadcasts to 69 % of the memory-only
#: server's throughput (docs/BENCHMARKS.md).
HISTORY_SYNC: Final = "normal"
#: Lines each room keeps in the store (once a room holds 1/16 more, the transaction that
#: passes that deletes its oldest down to the bound: one range delete, not one per line),
#: and their age in seconds (0: kept whatever their age).  10,000 lines is days of
#: a busy channel; 30 days is what Ergo's default history expiry keeps.  About 150 bytes of
#: database per line of 60 characters (docs/BENCHMARKS.md): 10,000 rooms at the bound take
#: about 15 GB, so a server with that many busy rooms should lower one of the two.
HISTORY_KEEP: Final = 10_000
HISTORY_MAX_AGE_S: Final = 30 * 86_400.0
#: Lines one HISTORY answer carries at most, and the bytes of text it stops at (it then says
#: more follow): 1,000 lines of chat in one answer (IRCv3 CHATHISTORY servers advertise
#: 100-1,000: Ergo's default is 1,000), and 1 MiB keeps one answer of 4 KiB texts within the
#: write limits (4 MiB) whatever the page size asked for.
MAX_HISTORY_PAGE: Final = 1000
#: HISTORY requests one connection may have under way at once (read off the loop); one more
#: is answered RATE_LIMITED.  Each answer may hold about 1.5 MB until it is written, so this
#: bounds what one connection's pipelined HISTORYs cost (a client pages one at a time).
MAX_HISTORY_READS: Final = 8
#: Seconds between two deletions of the lines past their age (one indexed range delete on
#: the writer thread): a line outlives its age by at most this.
HISTORY_PRUNE_INTERVAL_S: Final = 60.0
#: Lines one pruning transaction deletes at most; a backlog (a server started after weeks
#: off) goes a chunk at a time, the group commits between them: 10,000 lines are tens of
#: milliseconds of the writer thread, not seconds of broadcasts waiting.
HISTORY_PRUNE_CHUNK: Final = 10_000
HISTORY_PAGE_BYTES: Final = 1024 * 1024
#: Rooms one ROOMS answer lists at most (the client pages on by name).  256 records of the
#: longest room name (32 characters, at most 128 bytes) make about 35 KB: one answer stays
#: below the 64 KiB frame a client must accept, whatever the number of rooms.  (IRC servers
#: send /LIST whole, one line per channel, and throttle it instead.)
MAX_ROOMS_LISTED: Final = 256
#: Message ids in one ACKS or RECEIPTS frame (protocol version 2): 32 KiB of ids, half the
#: default frame limit, and as many as a client may leave unacknowledged by default
#: (MAX_UNACKED), so one frame settles all of them.  Longer batches are split.
MAX_IDS_PER_FRAME: Final = 4096

#: Outbound bytes queued for one client above which a SEND to it gets RECIPIENT_BUSY
#: (the transport's high-water mark: we stop reading from that client too).
WRITE_HIGH_WATER: Final = 256 * 1024
#: Outbound bytes queued for one client at which it is disconnected as too slow.
WRITE_HARD_LIMIT: Final = 4 * 1024 * 1024
#: Messages forwarded to one client that it has not acknowledged yet; a SEND or SEND_NICK to
#: it past this gets RECIPIENT_BUSY until it ACKs.  The server keeps each one (its sender,
#: for the RECEIPT) until the ACK, and settles them all NOT_DELIVERED when the client goes:
#: without a bound, a client that read but never acknowledged grew the server by 19 MiB per
#: 300,000 messages and its disconnect held the event loop 0.3 s.  A client that ACKs as it
#: reads has a handful outstanding; 4,096 is about what the high-water mark holds of small
#: messages, and costs at most ~260 KB and a few milliseconds at disconnect.
MAX_UNACKED: Final = 4096

#: Seconds of work the server does for one connection before it serves the others (the rest of
#: that connection's pipelined requests waits, reading paused, for the next loop pass).  A
#: client that reads as fast as it asks never reaches its high-water mark, and its pipelined
#: JOINs (a millisecond or more each with a full history) must not hold everyone else up for
#: seconds; 2 ms keeps a bystander's wait in milliseconds while a batch of ordinary requests
#: (about a microsecond each) still runs whole.
BATCH_TIME_SLICE_S: Final = 0.002

#: Client side: seconds to establish a connection (TCP connect, TLS handshake and WELCOME
#: together: one deadline), and to wait for each response; `--timeout` sets both.
CONNECT_TIMEOUT_S: Final = 5.0
REQUEST_TIMEOUT_S: Final = 10.0
#: ``chat`` and ``listen`` reconnect after a lost connection or a server shutdown (a restart is
#: when people want it most; irssi and weechat reconnect after both): the first try after
#: about RECONNECT_INITIAL_S, each next one after twice the delay up to RECONNECT_MAX_S,
#: each delay jittered down by up to half so that the clients of a restarted server do not
#: all come back at the same instant.  They give up, exit code 3, after RECONNECT_GIVE_UP_S
#: (a server restart or a network blip is over in well under five minutes; past that a
#: person should decide).  irssi waits 5 min between tries; weechat starts at 10 s, doubling.
RECONNECT_INITIAL_S: Final = 1.0
RECONNECT_MAX_S: Final = 30.0
RECONNECT_GIVE_UP_S: Final = 300.0
#: Seconds the server gives clients to receive SHUTDOWN before it closes everything.
SHUTDOWN_GRACE_S: Final = 1.0
#: Its bound (``--shutdown-grace``): past an hour a stopping server looks hung to whoever
#: stops it, and a service manager kills it anyway (systemd waits 90 s by default).
MAX_SHUTDOWN_GRACE_S: Final = 3600.0

#: Requests per second one connection may sustain (token bucket; 0 turns the limit off),
#: and the burst it may send at once.  A person issues a few per second and the lab's
#: "100 pipelined requests" is one burst; a flood of 10,000/s from one socket is not normal
#: use.  (Redis has no per-client limit; ngIRCd allows a handful of lines per second.)
#: Benchmarks pass --rate 0.
RATE: Final = 10_000.0
BURST: Final = 20_000
#: Seconds a client of a token-protected server has to authenticate with HELLO.
HANDSHAKE_TIMEOUT_S: Final = 10.0
#: Seconds a connection may keep a frame half-sent (the slowloris case) before it is closed.
FRAME_TIMEOUT_S: Final = 30.0
#: Seconds a WebSocket client has, once the server has sent its close frame, to answer with
#: its own before the TCP connection is dropped (RFC 6455 7.1.1 leaves it to the server;
#: aiohttp's default is 10 s): a gone browser must not hold its slot.
WEBSOCKET_CLOSE_TIMEOUT_S: Final = 5.0
#: Failed HELLOs from one address before its next attempts are delayed (doubling, capped),
#: and how long an address's failures are remembered.
AUTH_FAILURES_BEFORE_DELAY: Final = 3
AUTH_DELAY_MAX_S: Final = 10.0
AUTH_FAILURE_MEMORY_S: Final = 600.0
#: The delay's first step: a HELLO from a source over its free failures is held
#: AUTH_DELAY_BASE_S x 2^(failures - free + 1) before its token is even looked at, capped at
#: AUTH_DELAY_MAX_S (the exponent is clamped: no overflow however many failures).  The hold
#: is decided from past failures alone, so a right and a wrong token are answered after the
#: same delay: timing tells a guesser nothing.
AUTH_DELAY_BASE_S: Final = 0.25
#: The same back-off counted per network prefix (one /24 of IPv4, one /64 of IPv6: what one
#: host or one customer usually holds) and over the whole server, so that many addresses do
#: not multiply the guessing rate.  A class behind one NAT that mistypes a token now and
#: then stays under 10; a server-wide 100 failures in ten minutes is an attack, and then
#: every HELLO waits (up to AUTH_DELAY_MAX_S): with at most --max-unauthenticated
#: connections waiting at once, that caps guessing near 50 per second server-wide.
AUTH_PREFIX_FAILURES_BEFORE_DELAY: Final = 10
AUTH_SERVER_FAILURES_BEFORE_DELAY: Final = 100
#: Addresses (and, separately, prefixes) whose failures are remembered; beyond it the one
#: that failed longest ago is forgotten, so many addresses cannot grow the table (the prefix
#: and server-wide counts still hold them back).  About 100 bytes each.
AUTH_TRACKED_SOURCES: Final = 4096
#: Prefix lengths that group addresses into one source for the limits above and below.
PREFIX_IPV4: Final = 24
PREFIX_IPV6: Final = 64

#: Connections one address, and one prefix (PREFIX_IPV4/PREFIX_IPV6), may hold at once;
#: the next gets SERVER_FULL.  64 lets a class behind one NAT address in (ngIRCd allows 5
#: per address, InspIRCd 3: made for the open Internet, not for a lab); 256 per prefix
#: keeps one host or subnet to a quarter of the default --max-clients.
MAX_PER_ADDRESS: Final = 64
MAX_PER_PREFIX: Final = 256
#: Loopback peers are exempt from the two limits above unless --limit-loopback: they are
#: processes on the server's own machine, whose users can exhaust it in other ways anyway,
#: and a lab's tests and benchmarks open thousands of connections from 127.0.0.1
#: (`switchboard bench`, the connection-storm test).  --max-clients and
#: --max-unauthenticated still hold for them.
LIMIT_LOOPBACK: Final = False
#: On a token server, the share of --max-clients that may be connected without having
#: authenticated yet (handshaking, or held back after failed HELLOs); the next
#: unauthenticated connection gets SERVER_FULL.  Half keeps the other half for token
#: holders however many connections strangers open.
UNAUTHENTICATED_SHARE: Final = 0.5

#: Log lines of one kind from one client (or one source address, for connection refusals,
#: failed HELLOs and TLS handshakes): the first LOG_REPEAT_BURST in each interval are
#: logged in full, the rest counted and logged as one "N more" line per interval and at
#: disconnect.  A chat at human pace is logged line by line; a flood costs a few lines per
#: interval.  (Linux's printk_ratelimit: 10 per 5 s.)
LOG_REPEAT_BURST: Final = 5
LOG_REPEAT_INTERVAL_S: Final = 5.0
#: Their bounds (``--log-repeat-burst``, ``--log-repeat-interval``): a million lines per
#: interval is no summary any more; an interval under 0.1 s summarises nothing, and over a
#: day a count is logged too late to tell anyone anything.
MAX_LOG_REPEAT_BURST: Final = 1_000_000
MIN_LOG_REPEAT_INTERVAL_S: Final = 0.1
MAX_LOG_REPEAT_INTERVAL_S: Final = 86_400.0
#: Sources summarised at once in the server-wide table, and kinds of line per client (each
#: error code is a kind); past either, the oldest run's count is logged and it is dropped.
LOG_REPEAT_SOURCES: Final = 1024
LOG_REPEAT_KINDS_PER_CLIENT: Final = 64
#: Streams whose entries a cluster node cannot apply (a malformed entry in its Redis) are
#: summarised apart, per stream, up to this many at once.
LOG_REPEAT_CLUSTER_STREAMS: Final = 16

# --- the lab services (switchboard.services) ---------------------------------------------------

#: Reversal service: seconds a client may stay silent before it is closed.  Five minutes
#: outlasts a person thinking at the prompt while reclaiming sockets from abandoned sessions.
REVERSE_IDLE_TIMEOUT_S: Final = 300.0
#: Longest line the reversal service accepts, in bytes without the newline.  64 KiB holds any
#: sentence a person types many times over and bounds what one client makes us buffer (the
#: same bound as the main protocol's frames; IRC stops at 512 bytes, SMTP at 1,000).
REVERSE_MAX_LINE: Final = 64 * 1024
#: Concurrent reversal sessions; one more is told the server is full.  Same reasoning as
#: MAX_CLIENTS: stay inside the usual soft limit of 1,024 open files.
REVERSE_MAX_CLIENTS: Final = 1024
#: Seconds a closing session may take to flush its last line to a peer that does not read,
#: before the socket is aborted: a stuck peer must never pin a descriptor.
REVERSE_CLOSE_GRACE_S: Final = 5.0

#: UDP chat: largest chat text in one datagram, in bytes of UTF-8.  1,200 bytes plus our
#: headers (at most 272) make 1,472: one IPv4 packet on a 1,500-byte Ethernet MTU, so no
#: datagram is ever fragmented (QUIC also keeps to about 1,200 bytes of payload).
UDPCHAT_MAX_PAYLOAD: Final = 1200
#: Seconds between a member's keepalives (sent whatever else it sends, since chat lines are
#: not answered and the keepalive's ACK is how a member knows the server is there).
UDPCHAT_KEEPALIVE_S: Final = 5.0
#: A member keeps alive at least this many times per the expiry its server announces in
#: WELCOME, whatever ``--keepalive`` says: a server run with a short ``--member-expiry`` must
#: not expire members that keep to their own default.
UDPCHAT_KEEPALIVES_PER_EXPIRY: Final = 4
#: ...but never more often than this, whatever expiry a server announces.
UDPCHAT_MIN_KEEPALIVE_S: Final = 0.1
#: Seconds of silence after which the server expires a member: four keepalives lost in a
#: row is a departed client, not a lossy network.
UDPCHAT_MEMBER_EXPIRY_S: Final = 20.0
#: Seconds without any datagram from the server after which a client says it is not answering
#: (three keepalive intervals).
UDPCHAT_SERVER_SILENCE_S: Final = 15.0
#: JOIN and LEAVE retries: the first retry after the initial delay, each next one after twice
#: the previous delay up to the maximum, giving up after this many sends (0.25 + 0.5 + 1 + 2 +
#: 2 + 2 + 2 = 9.75 s: long enough to ride out a burst of loss, short enough to wait for).
UDPCHAT_RETRY_INITIAL_S: Final = 0.25
UDPCHAT_RETRY_MAX_S: Final = 2.0
UDPCHAT_RETRY_ATTEMPTS: Final = 7
#: Seconds a receiver holds messages that arrived after a gap, waiting for the missing ones
#: to arrive out of order, before it declares them lost.  Loopback and LAN reordering settles
#: well within this.
UDPCHAT_REORDER_WAIT_S: Final = 0.5
#: Members in one room; the next JOIN is refused as ROOM_FULL.
UDPCHAT_MAX_MEMBERS: Final = 256
#: Members from one IP address; the next JOIN from it is refused as ADDRESS_FULL.  Without it
#: one socket held 253 members alive with keepalives and locked everyone else out.  Enough
#: for a lab's several clients on one machine (or behind one NAT), far from the room's size.
UDPCHAT_MAX_MEMBERS_PER_ADDRESS: Final = 16
