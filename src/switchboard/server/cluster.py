"""A server process as a node of a cluster whose shared state lives in Redis
(``serve --cluster URL``; docs/CLUSTER.md has the design, the keys and the failure table).

``ClusterNode`` is the node's tie to Redis: it connects at start (Redis unreachable: a
``ClusterUnreachable``, which ``serve`` turns into one line and exit 2), registers the node
under its name with a lease (``switchboard:node:NAME``, a key whose TTL is the lease), renews
the lease three times per lease, notices when Redis goes away and comes back (one log line
each), and leaves the cluster at shutdown.  Nothing here is on a request's path: the handlers
never await Redis.

Every key starts with ``switchboard:`` so that the cluster can share a Redis database with
others; the URL's password is never logged (``ClusterUrl.shown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from switchboard import defaults, names
from switchboard.protocol import (
    HEADER_SIZE,
    ErrorCode,
    ErrorResponse,
    FrameDecoder,
    Joined,
    Left,
    LeftReason,
    Message,
    NickChanged,
    Receipt,
    Receipts,
    ReceiptStatus,
    SendNickOk,
    encode,
)
from switchboard.protocol.codec import decode_payload
from switchboard.protocol.fastpath import (
    client_record,
    encode_list_ok,
    encode_message_fields,
    encode_receipt,
    encode_receipts,
    encode_send_ok,
    sender_block,
)

from .cluster_history import (
    LINE_SCRIPT,
    LINE_SHA,
    StreamHistory,
    decode_lines,
    line_id,
    lines_key,
    read_page,
)
from .cluster_ops import (
    RECEIPTS_BATCHED,
    BadOps,
    OksOp,
    ReplyOp,
    SendOp,
    pack_frame,
    pack_oks,
    pack_reply,
    pack_send,
    unpack_ops,
)
from .cluster_url import ClusterUrl, parse_cluster_url
from .config import ConfigError, ServerConfig
from .directory import Buffer, Listed, LocalDirectory
from .errors import AnswerLater, RequestFailed
from .history import HistoryPage, HistoryQuery, room_key
from .logs import EventLog, RepeatedEvents
from .registry import Peer, ReservedSlot, Room, awaiting_of, check_name
from .states import ConnectionState

#: Where a defect met in the cluster's background work is logged, with its traceback (the
#: server's logger, as ``ClientConnection`` logs one met while answering).
_log = logging.getLogger("switchboard.server")

#: The prefix of every key the cluster keeps.
PREFIX = "switchboard:"
#: The set of the names of the nodes that have joined and not left (a dead one stays
#: until its lease is seen to have expired).
NODES_KEY = PREFIX + "nodes"
#: The counter each node takes its node number from (one per join).
NODE_NUMBERS_KEY = PREFIX + "node-numbers"


#: Raise a counter to at least ARGV[1].  KEYS: the counter.
RAISE_COUNTER_SCRIPT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""

#: Every client of every node: id -> the node's name, NUL, and the client's LIST record
#: (``RemoteClient.pack``).
CLIENTS_KEY = PREFIX + "clients"
#: The counter client ids are taken from, a block at a time (``defaults.CLUSTER_ID_BLOCK``).
CLIENT_IDS_KEY = PREFIX + "client-ids"
#: The stream of changes to CLIENTS_KEY that every node follows to keep its copy: entries
#: ``node``, ``up`` (records added or changed), ``down`` (ids gone), ``reset`` (drop every
#: client of ``node`` first).
EVENTS_KEY = PREFIX + "events"
#: About how many entries the stream keeps (XADD MAXLEN ~): a node that falls further
#: behind reads the whole state again.
EVENTS_MAXLEN = 100_000


#: Nicknames across the cluster: each key of ``names.name_keys`` (look-alikes share one)
#: -> the id of the client holding it.
NICKS_KEY = PREFIX + "nicks"
#: Client id -> the keys of its nickname in NICKS_KEY, joined by newlines (no nickname
#: holds one), so that they can be freed with the client or its node.
CLIENT_NICKS_KEY = PREFIX + "client-nicks"

#: Lua: free the nickname keys of client ``id`` (those it still holds).
_FREE_NICK = """
local function free_nick(nicks, client_nicks, id)
  local old = redis.call('HGET', client_nicks, id)
  if old then
    for key in string.gmatch(old, '[^\\n]+') do
      if redis.call('HGET', nicks, key) == id then redis.call('HDEL', nicks, key) end
    end
    redis.call('HDEL', client_nicks, id)
  end
end
"""

#: Claim a nickname for a client, atomically across the cluster: 0, or the id of the
#: client holding it or a look-alike.  The client's record in CLIENTS_KEY, if written
#: already, takes the new nickname in the same step, so that Redis never holds a claim its
#: record does not show (a node that dies right after answering NICK leaves LEFT notices
#: naming the client, not the name it had before).  KEYS: nicks, client-nicks, clients;
#: ARGV: id, the record with the new nickname, keys...
CLAIM_NICK_SCRIPT = (
    _FREE_NICK
    + """
local id = ARGV[1]
for i = 3, #ARGV do
  local holder = redis.call('HGET', KEYS[1], ARGV[i])
  if holder and holder ~= id then return tonumber(holder) end
end
free_nick(KEYS[1], KEYS[2], id)
local keys = {}
for i = 3, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], id)
  keys[#keys + 1] = ARGV[i]
end
redis.call('HSET', KEYS[2], id, table.concat(keys, '\\n'))
if redis.call('HEXISTS', KEYS[3], id) == 1 then redis.call('HSET', KEYS[3], id, ARGV[2]) end
return 0
"""
)

#: Free the nicknames of clients that are gone.  KEYS: nicks, client-nicks; ARGV: ids.
FREE_NICKS_SCRIPT = (
    _FREE_NICK
    + """
for i = 1, #ARGV do free_nick(KEYS[1], KEYS[2], ARGV[i]) end
return #ARGV
"""
)


#: Rooms across the cluster: each key of a room name (``names.name_keys``) -> the room's
#: name as first joined; the names in a sorted set (ROOMS pages, the rooms limit); each
#: room's keys (to free them with it); per room its members (id -> node), its stream (every
#: JOINED, LEFT, MESSAGE and NICK_CHANGED in one order, and membership changes), its lines
#: (server/cluster_history.py); per client its rooms.
ROOM_KEYS_KEY = PREFIX + "room-keys"
ROOM_NAMES_KEY = PREFIX + "room-names"
ROOM_KEYLIST_KEY = PREFIX + "room-keylist"
#: About how many entries a room's stream keeps (its readers are at most a batch behind).
ROOM_STREAM_MAXLEN = 10_000


def room_stream_key(name: str) -> str:
    return f"{PREFIX}room:{name}"


def client_rooms_key(client_id: int | str) -> str:
    return f"{PREFIX}client-rooms:{client_id}"


#: Lua: leave a room (membership, the client's rooms, a ``d=-1`` entry with the LEFT frame if
#: given); the room ends with its last member (its names; its notice stream expires later,
#: its lines stream keeps the history: server/cluster_history.py).
_LEAVE_ROOM = """
local function leave_room(id, node, room, frame)
  local members = 'switchboard:room-members:' .. room
  local stream = 'switchboard:room:' .. room
  redis.call('SREM', 'switchboard:client-rooms:' .. id, room)
  if redis.call('HDEL', members, id) == 0 then return 0 end
  if frame ~= '' then
    redis.call('XADD', stream, 'MAXLEN', '~', ROOM_MAXLEN, '*', 'd', '-1', 'm', id, 'n', node,
               'f', frame, 's', '0')
  else
    redis.call('XADD', stream, 'MAXLEN', '~', ROOM_MAXLEN, '*', 'd', '-1', 'm', id, 'n', node)
  end
  if redis.call('HLEN', members) == 0 then
    local keys = redis.call('HGET', 'switchboard:room-keylist', room)
    if keys then
      for key in string.gmatch(keys, '[^\\n]+') do
        if redis.call('HGET', 'switchboard:room-keys', key) == room then
          redis.call('HDEL', 'switchboard:room-keys', key)
        end
      end
    end
    redis.call('HDEL', 'switchboard:room-keylist', room)
    redis.call('ZREM', 'switchboard:room-names', room)
    redis.call('PEXPIRE', stream, 60000)
  end
  return 1
end
""".replace("ROOM_MAXLEN", str(ROOM_STREAM_MAXLEN))

#: Join a room: find it by any key of its name, or create it (unless the cluster has ARGV[4]
#: rooms: {0, count}); add the member (a ``d=1`` entry when new, carrying the JOINED notice,
#: built here with the room's name as first joined: ARGV[6] is the notice's header up to its
#: request id, ARGV[7] the joiner's nickname).  {1, name, added, the stream's last id
#: before, members (id, node, ...), the newest ARGV[5] lines' frames, newest first, the
#: id of the newest line (stored before the JOIN: not to be delivered live)}.
#: ARGV: id, node, name, max rooms, history, JOINED head, nickname, keys...
JOIN_ROOM_SCRIPT = """
local canonical = false
for i = 8, #ARGV do
  local c = redis.call('HGET', 'switchboard:room-keys', ARGV[i])
  if c then canonical = c break end
end
if not canonical then
  local count = redis.call('ZCARD', 'switchboard:room-names')
  if count >= tonumber(ARGV[4]) then return {0, count} end
  canonical = ARGV[3]
  local keys = {}
  for i = 8, #ARGV do
    redis.call('HSET', 'switchboard:room-keys', ARGV[i], canonical)
    keys[#keys + 1] = ARGV[i]
  end
  redis.call('HSET', 'switchboard:room-keylist', canonical, table.concat(keys, '\\n'))
  redis.call('ZADD', 'switchboard:room-names', 0, canonical)
end
local members = 'switchboard:room-members:' .. canonical
local stream = 'switchboard:room:' .. canonical
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
local added = redis.call('HSET', members, ARGV[1], ARGV[2])
redis.call('SADD', 'switchboard:client-rooms:' .. ARGV[1], canonical)
redis.call('PERSIST', stream)
if added == 1 then
  local payload = struct.pack('>H', #canonical) .. canonical .. struct.pack('>I', ARGV[1])
    .. struct.pack('>H', #ARGV[7]) .. ARGV[7]
  local frame = ARGV[6] .. struct.pack('>II', 0, #payload) .. payload
  redis.call('XADD', stream, 'MAXLEN', '~', ROOM_MAXLEN, '*', 'd', '1', 'm', ARGV[1],
             'n', ARGV[2], 'f', frame, 's', ARGV[1])
end
local history = {}
local n = tonumber(ARGV[5])
-- the lines stream is under the room's first key (cluster_history.lines_key)
local keys = redis.call('HGET', 'switchboard:room-keylist', canonical) or ARGV[8]
local lines = 'switchboard:lines:' .. string.match(keys, '[^\\n]+')
local newest = redis.call('XREVRANGE', lines, '+', '-', 'COUNT', math.max(n, 1))
local last_line = '0-0'
if #newest > 0 then last_line = newest[1][1] end
if n > 0 then
  for _, entry in ipairs(newest) do history[#history + 1] = entry[2][2] end
end
return {1, canonical, added, last_id, redis.call('HGETALL', members), history, last_line}
""".replace("ROOM_MAXLEN", str(ROOM_STREAM_MAXLEN))

#: Leave a room.  ARGV: id, node, room, its LEFT notice ("" for none).
LEAVE_ROOM_SCRIPT = (
    _LEAVE_ROOM
    + """
return leave_room(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

#: A node registers its clients' rooms again (Redis came back): ARGV: node, how many
#: earlier ids follow, the node's earlier client ids (read before RESET_NODE_SCRIPT replaced
#: them), then id, room, room keys triples; the rooms of earlier clients not among them are
#: left (no LEFT frame: those clients went while the node was cut off).
REJOIN_ROOMS_SCRIPT = (
    _LEAVE_ROOM
    + """
local node = ARGV[1]
local first = 3 + tonumber(ARGV[2])
local current = {}
for i = first, #ARGV, 3 do current[ARGV[i]] = true end
for i = 3, first - 1 do
  local id = ARGV[i]
  if not current[id] then
    for _, room in ipairs(redis.call('SMEMBERS', 'switchboard:client-rooms:' .. id)) do
      leave_room(id, node, room, '')
    end
    redis.call('DEL', 'switchboard:client-rooms:' .. id)
  end
end
for i = first, #ARGV, 3 do
  local id, room = ARGV[i], ARGV[i + 1]
  if not redis.call('ZSCORE', 'switchboard:room-names', room) then
    local keys = {}
    for key in string.gmatch(ARGV[i + 2], '[^\\n]+') do
      if not redis.call('HGET', 'switchboard:room-keys', key) then
        redis.call('HSET', 'switchboard:room-keys', key, room)
      end
      keys[#keys + 1] = key
    end
    redis.call('HSET', 'switchboard:room-keylist', room, table.concat(keys, '\\n'))
    redis.call('ZADD', 'switchboard:room-names', 0, room)
  end
  redis.call('HSET', 'switchboard:room-members:' .. room, id, node)
  redis.call('SADD', 'switchboard:client-rooms:' .. id, room)
end
return 1
"""
)


def node_key(name: str) -> str:
    """The node's lease: a key that expires when the node stops renewing it."""
    return f"{PREFIX}node:{name}"


def inbox_key(name: str) -> str:
    """The node's inbox: a stream of batches of operations from the other nodes
    (server/cluster_ops.py), one entry per sending node per flush."""
    return f"{PREFIX}inbox:{name}"


#: About how many batches an inbox keeps (XADD MAXLEN ~): a node that falls further behind
#: loses the oldest, which their senders report NOT_DELIVERED when they time out.
INBOX_MAXLEN = 10_000


def node_clients_key(name: str) -> str:
    """The ids of the node's clients (a set), so that they can be removed with the node."""
    return f"{PREFIX}node-clients:{name}"


#: Forget a node whose lease has ended (or, ARGV[3] = "1", this node, leaving): its clients
#: leave CLIENTS_KEY, and a ``reset`` event with no clients tells the others; one step, so
#: that two nodes finding the same dead node remove it once, and a node that takes its
#: lease again meanwhile is left alone.
#: KEYS: nodes, node:NAME, node-clients:NAME, clients, events, nicks, client-nicks;
#: ARGV: NAME, maxlen, leaving.
REMOVE_NODE_SCRIPT = (
    _FREE_NICK
    + _LEAVE_ROOM
    + """
if ARGV[3] == '1' then redis.call('DEL', KEYS[2])
elseif redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 and ARGV[3] ~= '1' then return -1 end
for i = 4, #ARGV, 3 do leave_room(ARGV[i], ARGV[1], ARGV[i + 1], ARGV[i + 2]) end
local ids = redis.call('SMEMBERS', KEYS[3])
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[4], id)
  free_nick(KEYS[6], KEYS[7], id)
  for _, room in ipairs(redis.call('SMEMBERS', 'switchboard:client-rooms:' .. id)) do
    leave_room(id, ARGV[1], room, '')
  end
  redis.call('DEL', 'switchboard:client-rooms:' .. id)
end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', 'node', ARGV[1], 'reset', '1')
return #ids
"""
)

#: Register every client of this node afresh (after Redis came back, or the node's lease
#: had ended): what Redis held of the node is replaced, the others are told (``reset`` then
#: ``up``), and the id counter is raised to at least ARGV[3] (a Redis restarted empty must
#: not give out ids that live clients hold).
#: Nicknames are claimed again as by CLAIM_NICK_SCRIPT; the ids of the clients whose
#: nickname another client took meanwhile (this node had been counted dead) are returned:
#: they lose it, so that no nickname is held twice.
#: KEYS: node-clients:NAME, clients, events, client-ids, nicks, client-nicks; ARGV: NAME,
#: maxlen, min ids, the packed records (``up``), then id, record, nickname keys triples.
RESET_NODE_SCRIPT = (
    _FREE_NICK
    + """
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('HDEL', KEYS[2], id)
  free_nick(KEYS[5], KEYS[6], id)
end
redis.call('DEL', KEYS[1])
local lost = {}
for i = 5, #ARGV, 3 do
  local id = ARGV[i]
  redis.call('HSET', KEYS[2], id, ARGV[i + 1])
  redis.call('SADD', KEYS[1], id)
  if ARGV[i + 2] ~= '' then
    local taken = false
    for key in string.gmatch(ARGV[i + 2], '[^\\n]+') do
      local holder = redis.call('HGET', KEYS[5], key)
      if holder and holder ~= id then taken = true end
    end
    if taken then
      lost[#lost + 1] = id
    else
      for key in string.gmatch(ARGV[i + 2], '[^\\n]+') do redis.call('HSET', KEYS[5], key, id) end
      redis.call('HSET', KEYS[6], id, ARGV[i + 2])
    end
  end
end
if tonumber(redis.call('GET', KEYS[4]) or '0') < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[4], ARGV[3])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'node', ARGV[1], 'reset', '1',
           'up', ARGV[4])
return lost
"""
)


class ClusterUnreachable(ConfigError):
    """Redis could not be reached (or refused this node) when the server started: ``serve``
    says so in one line and exits 2."""


def default_node_name(port: int) -> str:
    """``HOST:PORT:PID``: unique on a machine, and it says where to look for the process."""
    return f"{socket.gethostname()}:{port}:{os.getpid()}"


def connect_redis(url: ClusterUrl, *, timeout: float) -> aioredis.Redis:
    """A client for the cluster's Redis that fails fast: no retries behind the caller's back
    (the node decides what a lost Redis means), every command bounded by ``timeout``."""
    return aioredis.Redis.from_url(
        url.url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


def describe(exc: BaseException) -> str:
    """One line about a Redis failure (redis-py's messages can span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


class ClusterNode:
    """This process's membership of the cluster: its Redis connection, its name and number,
    and its lease."""

    def __init__(self, config: ServerConfig, events: EventLog) -> None:
        assert config.cluster is not None
        self.config = config
        self.url = parse_cluster_url(config.cluster)
        self.events = events
        self.lease = config.cluster_lease
        self.timeout = min(defaults.CLUSTER_CONNECT_TIMEOUT_S, self.lease / 3)
        #: redis-py's replies are typed as unions of every reply type: read as Any here, their
        #: shapes are those of the commands sent (bytes: no decode_responses).
        self.redis: Any = connect_redis(self.url, timeout=self.timeout)
        #: Set by ``join``.
        self.name = ""
        #: This node's number (one per join, from NODE_NUMBERS_KEY): what makes its message
        #: ids its own (``message_id_base``).
        self.number = 0
        #: Whether the last exchange with Redis succeeded.
        self.available = False
        #: Called (on the loop) when Redis comes back after being lost, or when this node's
        #: lease was found expired: the directory registers its state again.
        self.on_rejoin: Callable[[], Awaitable[None]] | None = None
        #: Called after every successful renewal: the directory looks for dead nodes.
        self.on_tick: Callable[[], Awaitable[None]] | None = None
        #: Called when the node leaves, before its lease is given back: the directory
        #: sends what it still has for the other nodes (the receipts of its last clients).
        self.before_leave: Callable[[], Awaitable[None]] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        #: Set when the node leaves: its loops stop.
        self.leaving = False
        #: The directory's tasks (writing, following), cancelled when the node leaves.
        self.tasks: set[asyncio.Task[None]] = set()
        self._lost_at = 0.0

    # --- start and stop ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Reach Redis (ClusterUnreachable if it cannot be)."""
        try:
            await self.redis.ping()
        except AuthenticationError as exc:
            await self.redis.aclose()
            raise ClusterUnreachable(
                f"the cluster's Redis at {self.url.shown} refused the credentials: {describe(exc)}"
            ) from None
        except (RedisError, OSError) as exc:
            await self.redis.aclose()
            raise ClusterUnreachable(
                f"cannot reach the cluster's Redis at {self.url.shown}: {describe(exc)}"
            ) from None
        self.available = True

    async def join(self, name: str) -> None:
        """Register as node ``name`` with a lease (ClusterUnreachable if a live node has the
        name, or Redis went away), and start renewing it."""
        self.name = name
        try:
            if not await self._claim_lease():
                raise ClusterUnreachable(
                    f"a live node named {name!r} is already in the cluster at "
                    f"{self.url.shown}; choose another --node-name"
                )
        except (RedisError, OSError) as exc:
            await self.redis.aclose()
            raise ClusterUnreachable(
                f"cannot join the cluster at {self.url.shown}: {describe(exc)}"
            ) from None
        self.events.event(
            logging.INFO,
            "cluster_join",
            "joined the cluster at %s as node %s (number %d, lease %gs)",
            self.url.shown,
            name,
            self.number,
            self.lease,
            cluster=self.url.shown,
            node=name,
            node_number=self.number,
            lease=self.lease,
        )
        self._lease_task = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _claim_lease(self) -> bool:
        """Take the node's key if no live node holds it; False if one does.  A node joins
        with a fresh number and keeps it when it joins again (its message ids are made of
        it), raising the counter past it (Redis may have restarted empty)."""
        if self.number:
            number = self.number
            await self.redis.eval(RAISE_COUNTER_SCRIPT, 1, NODE_NUMBERS_KEY, number)
        else:
            number = int(await self.redis.incr(NODE_NUMBERS_KEY))
        lease_ms = int(self.lease * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(node_key(self.name), str(number), px=lease_ms, nx=True)
            pipe.sadd(NODES_KEY, self.name)
            claimed, _ = await pipe.execute()
        if claimed and not self.number:  # a first join: an earlier node's inbox is not ours
            await self.redis.delete(inbox_key(self.name))
        if not claimed:
            return False
        self.number = number
        return True

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` until it ends or the node leaves; if it dies of an error nothing
        caught (a defect), that is logged at once with its traceback, never left for the
        garbage collector's "exception was never retrieved"."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log.error(
                "internal error: the cluster task %s stopped",
                task.get_coro().__qualname__,  # type: ignore[union-attr]
                exc_info=exc,
            )

    async def leave(self) -> None:
        """Give the lease back and forget the node and its clients (shutdown); quiet if
        Redis is gone."""
        if self.before_leave is not None and self.available:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self.before_leave(), self.timeout)
        # redis-py may turn a cancelled read into a ConnectionError, which a loop takes for
        # a lost Redis and goes on: the loops stop on ``leaving``, and none is waited for
        # longer than a command may take.
        self.leaving = True
        tasks = [*self.tasks, *([self._lease_task] if self._lease_task else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout)
        self.tasks.clear()
        self._lease_task = None
        if self.name and self.available:
            try:
                await self.remove_node(self.name, leaving=True)
            except (RedisError, OSError) as exc:
                self.events.event(
                    logging.WARNING,
                    "cluster_leave_failed",
                    "could not leave the cluster cleanly (%s): the lease ends in %gs",
                    describe(exc),
                    self.lease,
                    node=self.name,
                )
            else:
                self.events.event(
                    logging.INFO,
                    "cluster_leave",
                    "left the cluster as node %s",
                    self.name,
                    node=self.name,
                )
        with contextlib.suppress(TimeoutError, RedisError, OSError):
            await asyncio.wait_for(self.redis.aclose(), self.timeout)

    async def remove_node(
        self, name: str, *, leaving: bool = False, lefts: tuple[Any, ...] = ()
    ) -> int:
        """Forget node ``name`` and its clients in one step (REMOVE_NODE_SCRIPT), telling the
        other nodes (a ``reset`` event with no clients) and its clients' rooms (``lefts``:
        id, room, LEFT frame triples); the number of clients it had, or -1 if it is alive
        (unless ``leaving``: this node's own lease is deleted first) or gone."""
        removed = await self.redis.eval(
            REMOVE_NODE_SCRIPT,
            7,
            NODES_KEY,
            node_key(name),
            node_clients_key(name),
            CLIENTS_KEY,
            EVENTS_KEY,
            NICKS_KEY,
            CLIENT_NICKS_KEY,
            name,
            str(EVENTS_MAXLEN),
            "1" if leaving else "0",
            *lefts,
        )
        return int(removed)

    # --- the lease -----------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        # Four times per lease: the lease is renewed well before it ends, and a dead node is
        # found (``on_tick``) within a quarter lease of its lease ending.
        interval = self.lease / 4
        while not self.leaving:
            await asyncio.sleep(interval)
            await self.renew()
            if self.available and self.on_tick is not None:
                try:
                    await self.on_tick()
                except (RedisError, OSError) as exc:
                    self.lost(describe(exc))

    async def renew(self) -> None:
        """Renew the lease once; notice Redis lost (log once), back, or the lease gone."""
        lease_ms = int(self.lease * 1000)
        try:
            renewed = await self.redis.set(
                node_key(self.name), str(self.number), px=lease_ms, xx=True
            )
            if not renewed:
                # Cut off longer than a lease: the others have counted this node dead.
                # Join again under the same name (a node that took the name meanwhile
                # is another process: then this one has nothing left to claim).
                if not await self._claim_lease():
                    self.lost("a live node took this node's name while it was cut off")
                    return
                await self._rejoined("its lease had expired")
                return
        except (RedisError, OSError) as exc:
            self.lost(describe(exc))
            return
        if not self.available:
            await self._rejoined("Redis answers again")

    def lost(self, why: str) -> None:
        """Redis failed this node (a renewal, a write): log it once; the next renewal that
        succeeds rejoins (``on_rejoin``)."""
        if not self.available or self.leaving:  # (a cancelled read, when leaving)
            return
        self.available = False
        self._lost_at = time.monotonic()
        self.events.event(
            logging.WARNING,
            "cluster_lost",
            "lost the cluster's Redis at %s (%s): answering what this node can alone",
            self.url.shown,
            why,
            cluster=self.url.shown,
            node=self.name,
            reason=why,
        )

    async def _rejoined(self, why: str) -> None:
        was_lost = not self.available
        if self.on_rejoin is not None:
            try:
                await self.on_rejoin()
            except (RedisError, OSError) as exc:
                self.available = True  # so that lost() logs this failure
                self.lost(f"registering again failed: {describe(exc)}")
                return
        self.available = True
        down = time.monotonic() - self._lost_at if was_lost and self._lost_at else 0.0
        self.events.event(
            logging.INFO,
            "cluster_rejoin",
            "rejoined the cluster at %s as node %s (%s; cut off %.1fs)",
            self.url.shown,
            self.name,
            why,
            down,
            cluster=self.url.shown,
            node=self.name,
            reason=why,
        )


# --- the directory shared through Redis ----------------------------------------------------------

#: One client in an event's ``up`` field: its id and the length of its packed value.
_ENTRY = struct.Struct("!IH")
_ID = struct.Struct("!I")
_CONNECTED_MS = struct.Struct("!q")


class RemoteClient:
    """A client of another node, as LIST shows it (``directory.Listed``)."""

    __slots__ = ("authenticated", "client_id", "connected_ms", "nick", "node", "record")

    def __init__(self, client_id: int, node: str, authenticated: bool, nick: str, record: bytes):
        self.client_id = client_id
        self.node = node
        self.authenticated = authenticated
        self.nick = nick
        #: Its LIST record as its node encoded it (``fastpath.client_record``).
        self.record = record
        self.connected_ms: int = _CONNECTED_MS.unpack_from(record, len(record) - 8)[0]

    def sender_fields(self) -> bytes:
        return self.record[:-8]


def pack_client(node: str, conn: Peer, renamed: str | None = None) -> bytes:
    """What CLIENTS_KEY holds of a client: its node, NUL, its authenticated flag, its
    nickname's length and bytes, and its LIST record (as it will be once ``renamed``, when
    given)."""
    if renamed is None:
        nick, sender = conn.nick.encode("utf-8"), conn.sender_fields()
    else:
        nick = renamed.encode("utf-8")
        sender = sender_block(conn.client_id, conn.ip, conn.port, renamed)
    return b"".join(
        (
            node.encode(),
            b"\0\1" if conn.authenticated else b"\0\0",
            bytes((len(nick),)) if len(nick) < 256 else b"\0",
            nick if len(nick) < 256 else b"",
            client_record(sender, conn.connected_ms),
        )
    )


def unpack_client(client_id: int, value: bytes) -> RemoteClient:
    node, _, rest = value.partition(b"\0")
    nick_len = rest[1]
    nick = rest[2 : 2 + nick_len].decode("utf-8", "replace")
    return RemoteClient(client_id, node.decode(), rest[0] == 1, nick, rest[2 + nick_len :])


def _holds(held: str, nick: str) -> bool:
    """Whether ``held`` is ``nick`` or looks like it (names.name_keys)."""
    return bool(held) and bool(set(names.name_keys(held)) & set(names.name_keys(nick)))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _stream_id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class RedisDirectory(LocalDirectory):
    """The directory of a cluster node: this process's clients and rooms as ``LocalDirectory``
    keeps them (the hot path never touches Redis), their ids taken from the cluster's
    counter a block at a time, each client written to Redis in batches (once per loop pass,
    not per connection), and a copy of every other node's clients (``remote``), kept by
    following the cluster's event stream, for LIST.

    Not shared yet (issue 16's later steps): SEND to a client of another node (it is
    NO_SUCH_CLIENT), rooms across nodes, and nicknames claimed atomically: a nickname
    another node's client holds is refused by the copy, but two nodes claiming one in the
    same instant can both win (docs/CLUSTER.md)."""

    def __init__(
        self,
        node: ClusterNode,
        history: int,
        *,
        max_unacked: int = defaults.MAX_UNACKED,
        max_rooms: int = defaults.MAX_ROOMS,
        max_rooms_per_client: int = defaults.MAX_ROOMS_PER_CLIENT,
        history_bytes: int = defaults.HISTORY_BYTES,
        store: StreamHistory | None = None,
    ) -> None:
        super().__init__(
            history,
            max_rooms=_UNBOUNDED,  # the cluster's limit is kept in Redis (JOIN_ROOM_SCRIPT)
            max_rooms_per_client=max_rooms_per_client,
            history_bytes=history_bytes,
        )
        self.node = node
        self.max_rooms = max_rooms
        self.history_limit = history
        #: The rooms' lines in Redis (its retention), and who hears how a line went
        #: (``handlers.line_ordered``, set by the server): (pending, id, None or the failure).
        self.store = store or StreamHistory(node.url, keep=defaults.HISTORY_KEEP, max_age_s=0)
        self.on_line: Callable[[Any, int, RequestFailed | None], None] = _unheard
        #: Lines waiting for Redis per connection id (at most CLUSTER_MAX_WAITING_LINES).
        self._lines_waiting: dict[int, int] = {}
        #: Rooms with a member on this node: the other nodes' members (id -> node), and
        #: where this node stands in each room's stream.
        self._room_remote: dict[str, dict[int, str]] = {}
        self._room_cursor: dict[str, bytes] = {}
        #: Per room, the newest line that needs no live delivery to this node's members: the
        #: newest this node stored (its sender has had the OK; it may not have been read back
        #: from the room's stream yet), or the newest stored before a member joined (the
        #: room's notice stream may be younger than its lines: a room that ended and came
        #: back).  HISTORY pages reach up to it, or to the stream's cursor if further.
        self._stored_top: dict[str, int] = {}
        #: Per room, the members whose HISTORY page reached past this node's reading of the
        #: room (up to ``_stored_top``): member -> the page's last line id.  Lines up to it
        #: are not delivered to that member live (they were in its page), until the reading
        #: passes it.
        self._page_floor: dict[str, dict[int, int]] = {}
        #: Per room, the members of this node who joined while its reading of the room was
        #: behind, and the stream id their JOIN came after: entries up to it are not theirs
        #: (what they said is in their JOIN's replay), until the reading passes it.
        self._join_floor: dict[str, dict[int, tuple[int, int]]] = {}
        #: JOINs waiting for Redis, by room key; and, while any waits, the room's entries
        #: read meanwhile (its stream id, its fields), for the joiner to get those that came
        #: after its JOIN but were read before it was a member here (``_catch_up``).
        self._joining: dict[str, int] = {}
        self._recent: dict[str, deque[tuple[tuple[int, int], dict[bytes, bytes]]]] = {}
        #: JOINs and ROOMS pages done in Redis, to be taken when answered again.
        self._room_grants: dict[tuple[int, str], RoomGrant] = {}
        self._page_grants: dict[tuple[str, int], PageGrant] = {}
        self._page_counts: dict[str, int] = {}
        self._page_total = 0
        #: Room commands for this pass's pipeline, in order; the LEAVEs of this pass by
        #: room (their LEFT notice joins them), and the JOIN whose JOINED is in the stream.
        self._room_out: list[Any] = []
        self._leaving: dict[str, list[Any]] = {}
        self._announced: tuple[str, int] | None = None
        #: NICK_CHANGED sent once per member however many rooms carry it: who has had it.
        self._told: OrderedDict[bytes, set[int]] = OrderedDict()
        self._notices = 0
        #: The other nodes' clients by id, and their nicknames (look-alikes are one).
        self.remote: dict[int, RemoteClient] = {}
        self._remote_nicks: names.NameIndex[RemoteClient] = names.NameIndex(defaults.MAX_NICK_CHARS)
        #: The ids this node may give out: ``_next_id`` to ``_id_end``, then ``_spare``.
        self._next_id = 1
        self._id_end = 0
        self._spare: tuple[int, int] | None = None
        self._refilling = False
        #: Clients changed since the last write: id -> the connection, or None once gone.
        self._changes: dict[int, Peer | None] = {}
        #: Nicknames claimed in Redis for a client, to be taken when its request is answered
        #: again (``rename``).
        self._granted: dict[int, str] = {}
        self._wake = asyncio.Event()
        #: Held while this node's client records are written (``_write``) and while a
        #: nickname is claimed (``_claim``), so that no record packed before a claim lands
        #: after it: Redis's record shows a claimed nickname from the claim on.
        self._records_lock = asyncio.Lock()
        self._last_event = b"0-0"
        self._snapshot_needed = True
        #: The next snapshot follows a lost Redis, which may have come back empty.
        self._snapshot_after_loss = False
        #: Nodes whose clients this node still holds though Redis lost them (it restarted
        #: empty): until each registers its clients again (its "reset" event), or the
        #: monotonic time given here passes (a lease: then it is gone too), its clients stay
        #: in ``remote``, so that a SEND to one is forwarded to its node, not refused
        #: NO_SUCH_CLIENT while that node has not noticed the restart yet.
        self._unconfirmed: dict[str, float] = {}
        #: Entries of the streams this node follows that it could not apply, logged as
        #: repeated events are (a burst per interval, then a count), per stream.
        self._bad_entries = RepeatedEvents(
            node.events,
            "cluster",
            interval=node.config.log_repeat_interval,
            burst=node.config.log_repeat_burst,
            max_runs=defaults.LOG_REPEAT_CLUSTER_STREAMS,
        )
        self.max_unacked = max_unacked
        #: Operations for other nodes, by node, sent once per loop pass (``_send_outbox``).
        self._outbox: dict[str, list[bytes]] = {}
        self._outbox_scheduled = False
        self._sending = False
        #: Replies and frames that could not be sent while Redis was away: sent again when
        #: it is back (their receivers drop what they have had already).
        self._unsent: dict[str, list[bytes]] = {}
        self._unsent_count = 0
        self._last_inbox = b"0-0"
        #: SENDs to other nodes' clients not answered yet, by token, and how many each
        #: sender has (at most CLUSTER_MAX_WAITING_SENDS).
        self._tokens = 0
        self._pending: dict[int, PendingSend] = {}
        self._waiting: dict[int, int] = {}
        #: Messages to another node's clients answered OK, awaiting their receipt:
        #: node -> message id -> (sender, target id).
        self._outstanding: dict[str, dict[int, tuple[Peer, int]]] = {}
        #: The other nodes' senders of messages to this node's clients, as the clients'
        #: ``awaiting_ack`` holds them (their receipts go back through Redis).
        self._senders: dict[tuple[str, int], RemoteSender] = {}
        self._sender_by_id: dict[int, RemoteSender] = {}
        node.on_rejoin = self._register_again
        node.on_tick = self._tick
        node.before_leave = self._drain_outbox

    # --- start ---------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Take the first block of client ids (before the server listens)."""
        try:
            self._next_id, self._id_end = await self._take_block()
        except (RedisError, OSError) as exc:
            await self.node.redis.aclose()
            raise ClusterUnreachable(
                f"cannot reach the cluster's Redis at {self.node.url.shown}: {describe(exc)}"
            ) from None

    def start(self) -> None:
        """Follow the other nodes' changes and write this node's (once it has joined)."""
        self.node.spawn(self._write_forever())
        self.node.spawn(self._read_forever())
        self._wake.set()  # clients admitted between listening and joining

    async def _take_block(self) -> tuple[int, int]:
        block = defaults.CLUSTER_ID_BLOCK
        end = int(await self.node.redis.incrby(CLIENT_IDS_KEY, block))
        return end - block + 1, end

    # --- clients: this node's, with ids from the cluster's counter ------------------------

    def register(self, conn: Peer) -> int:
        client_id = self._next_id
        if client_id > self._id_end:
            if self._spare is None:
                self._refill()
                raise RequestFailed(
                    ErrorCode.SERVER_FULL,
                    "this cluster node cannot give out client ids while its Redis is "
                    "unreachable; try again later",
                )
            client_id, self._id_end = self._spare
            self._spare = None
        self._next_id = client_id + 1
        if self._id_end - client_id < defaults.CLUSTER_ID_BLOCK // 2 and self._spare is None:
            self._refill()
        self.client_by_id[client_id] = conn
        self._changed(client_id, conn)
        return client_id

    def _refill(self) -> None:
        if self._refilling:
            return
        self._refilling = True
        self.node.spawn(self._refill_block())

    async def _refill_block(self) -> None:
        try:
            self._spare = await self._take_block()
        except (RedisError, OSError) as exc:
            self.node.lost(describe(exc))
        finally:
            self._refilling = False

    def release(self, conn: Peer) -> bool:
        if not super().release(conn):
            return False
        self._granted.pop(conn.client_id, None)
        self._changed(conn.client_id, None)
        return True

    def rename(self, conn: Peer, nick: str) -> None:
        """Claim the nickname in Redis first (AnswerLater: the request is answered again
        once the claim is in), unless this node already knows it is taken, or it is the
        client's own nickname written another way."""
        nick = check_name(
            nick, what="nickname", limit=defaults.MAX_NICK_CHARS, code=ErrorCode.INVALID_NICK
        )
        client_id = conn.client_id
        if self._granted.get(client_id) == nick:  # the claim is in: take it here too
            del self._granted[client_id]
            super().rename(conn, nick)
            self._changed(client_id, conn)
            return
        local = self.client_registry.by_nick(nick)
        if local is not None and local is not conn:
            super().rename(conn, nick)  # NICK_IN_USE, as on a single server
        remote = self._remote_nicks.find(nick)
        if remote is not None:
            taken = _taken(nick, remote.nick, client_id=remote.client_id)
            raise RequestFailed(ErrorCode.NICK_IN_USE, taken)
        keys = names.name_keys(nick)
        if conn.nick and names.name_keys(conn.nick) == keys:
            super().rename(conn, nick)  # its own nickname, written another way: no claim
            self._changed(client_id, conn)
            return
        if not self.node.available:
            raise RequestFailed(ErrorCode.CLUSTER_UNAVAILABLE, _UNAVAILABLE_NICK)
        raise AnswerLater(self._claim(conn, nick, keys))

    async def _claim(self, conn: Peer, nick: str, keys: tuple[str, ...]) -> None:
        client_id = conn.client_id
        try:
            async with self._records_lock:
                holder: int = await self.node.redis.eval(
                    CLAIM_NICK_SCRIPT,
                    3,
                    NICKS_KEY,
                    CLIENT_NICKS_KEY,
                    CLIENTS_KEY,
                    client_id,
                    pack_client(self.node.name, conn, nick),
                    *keys,
                )
                if not holder:
                    self._granted[client_id] = nick  # from here on, records are packed with it
        except (RedisError, OSError) as exc:
            self.node.lost(describe(exc))
            raise RequestFailed(ErrorCode.CLUSTER_UNAVAILABLE, _UNAVAILABLE_NICK) from None
        if holder:
            known = self.remote.get(holder) or self.client_by_id.get(holder)
            raise RequestFailed(
                ErrorCode.NICK_IN_USE, _taken(nick, known.nick if known else nick, client_id=holder)
            )
        if self.client_by_id.get(client_id) is not conn:
            self._granted.pop(client_id, None)
            self._changed(client_id, None)  # gone meanwhile: free what it just claimed

    def update(self, conn: Peer) -> None:
        if self.client_by_id.get(conn.client_id) is conn:
            self._changed(conn.client_id, conn)

    def listed(self) -> list[Listed]:
        if not self.remote:
            return list(self.client_by_id.values())
        everyone: list[Listed] = [*self.client_by_id.values(), *self.remote.values()]
        everyone.sort(key=_listed_id)
        return everyone

    def _changed(self, client_id: int, conn: Peer | None) -> None:
        self._changes[client_id] = conn
        self._wake.set()

    # --- writing this node's changes -------------------------------------------------------

    async def _write_forever(self) -> None:
        while not self.node.leaving:
            # Woken by a change, or a quarter lease on: changes made while Redis was being
            # rejoined (a nickname lost then) go out once it answers again.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.node.lease / 4)
            self._wake.clear()
            if not self.node.available or not self._changes:
                continue  # while cut off, _register_again writes everything on return
            changes, self._changes = self._changes, {}
            try:
                async with self._records_lock:
                    await self._write(changes)
            except (RedisError, OSError) as exc:
                self.node.lost(describe(exc))

    async def _write(self, changes: dict[int, Peer | None]) -> None:
        name = self.node.name
        up: dict[int, bytes] = {}
        down: list[int] = []
        for client_id, conn in changes.items():
            if conn is None:
                down.append(client_id)
            else:
                # A nickname claimed and not taken yet (its NICK is being answered): the
                # record shows it already, as the claim wrote it.
                up[client_id] = pack_client(name, conn, self._granted.get(client_id))
        members = node_clients_key(name)
        async with self.node.redis.pipeline(transaction=True) as pipe:
            if up:
                pipe.hset(CLIENTS_KEY, mapping=up)
                pipe.sadd(members, *up)
            if down:
                pipe.hdel(CLIENTS_KEY, *map(str, down))
                pipe.srem(members, *down)
                pipe.eval(FREE_NICKS_SCRIPT, 2, NICKS_KEY, CLIENT_NICKS_KEY, *down)
            pipe.xadd(
                EVENTS_KEY,
                {"node": name, "up": _pack_up(up), "down": b"".join(map(_ID.pack, down))},
                maxlen=EVENTS_MAXLEN,
                approximate=True,
            )
            await pipe.execute()

    async def _register_again(self) -> None:
        """Redis is back (or this node's lease had ended): write every client of this node
        afresh, and read the others' again."""
        self._spare = None  # taken from a counter that may have restarted since
        highest = max(
            self._id_end,
            max(self.client_by_id, default=0),
            max(self.remote, default=0),
        )
        self._changes = {}
        name = self.node.name
        earlier = [int(i) for i in await self.node.redis.smembers(node_clients_key(name))]
        up = {client_id: pack_client(name, conn) for client_id, conn in self.client_by_id.items()}
        triples: list[Any] = []
        for client_id, value in up.items():
            nick = self.client_by_id[client_id].nick
            triples += [client_id, value, "\n".join(names.name_keys(nick)) if nick else ""]
        lost = await self.node.redis.eval(
            RESET_NODE_SCRIPT,
            6,
            node_clients_key(name),
            CLIENTS_KEY,
            EVENTS_KEY,
            CLIENT_IDS_KEY,
            NICKS_KEY,
            CLIENT_NICKS_KEY,
            name,
            str(EVENTS_MAXLEN),
            str(highest),
            _pack_up(up),
            *triples,
        )
        self._snapshot_needed = True
        for raw_id in lost:
            self._lose_nick(int(raw_id))
        await self._rejoin_rooms(earlier)
        if self._unsent:  # what waited for Redis: its receivers drop what they had already
            for node, ops in self._unsent.items():
                self._outbox.setdefault(node, []).extend(ops)
            self._unsent = {}
            self._unsent_count = 0
            self._schedule_outbox()
        self.events.event(
            logging.INFO,
            "cluster_registered",
            "registered this node's %d client(s) in the cluster again",
            len(up),
            node=name,
            clients=len(up),
        )

    async def _rejoin_rooms(self, earlier: list[int]) -> None:
        """Register this node's memberships again (REJOIN_ROOMS_SCRIPT), and read the other
        nodes' members of its rooms afresh."""
        redis = self.node.redis
        triples: list[Any] = []
        for room_name, room in self.room_registry.by_name.items():
            keys = "\n".join(names.name_keys(room_name))
            for member_id in room.members:
                triples += [member_id, room_name, keys]
        await redis.eval(REJOIN_ROOMS_SCRIPT, 0, self.node.name, len(earlier), *earlier, *triples)
        rooms = list(self.room_registry.by_name)
        if not rooms:
            return
        async with redis.pipeline(transaction=False) as pipe:
            for room_name in rooms:
                pipe.hgetall(f"{PREFIX}room-members:{room_name}")
            tables = await pipe.execute()
        me = self.node.name
        for room_name, table in zip(rooms, tables, strict=True):
            self._room_remote[room_name] = {
                int(k): v.decode() for k, v in table.items() if v.decode() != me
            }

    def _lose_nick(self, client_id: int) -> None:
        """Another client took this client's nickname while this node was counted dead: it
        loses it (its rooms hear NICK_CHANGED to ""), so that no nickname is held twice."""
        conn = self.client_by_id.get(client_id)
        if conn is None or not conn.nick:
            return
        old = conn.nick
        self.client_registry.drop_nick(conn)
        self._changed(client_id, conn)
        if conn.rooms:
            self.deliver_to_rooms_of(conn, encode(NickChanged(client_id, old, "")))
        self.events.event(
            logging.WARNING,
            "cluster_nick_lost",
            "#%d lost its nickname %r: another node's client took it while this node was cut off",
            client_id,
            old,
            client_id=client_id,
            nick=old,
        )

    @property
    def events(self) -> EventLog:
        return self.node.events

    # --- following the other nodes ----------------------------------------------------------

    async def _read_forever(self) -> None:
        redis = self.node.redis
        block_ms = max(1, int(self.node.timeout * 500))  # well within the socket timeout
        inbox = inbox_key(self.node.name)
        inbox_bytes = inbox.encode()
        room_prefix = room_stream_key("").encode()
        while not self.node.leaving:
            try:
                if self._snapshot_needed:
                    await self._snapshot()
                streams: dict[str, bytes] = {EVENTS_KEY: self._last_event, inbox: self._last_inbox}
                for room_name, cursor in self._room_cursor.items():
                    streams[room_stream_key(room_name)] = cursor
                reply = await redis.xread(streams, count=1000, block=block_ms)
            except (RedisError, OSError) as exc:
                self._snapshot_needed = self._snapshot_after_loss = True
                self.node.lost(describe(exc))
                await asyncio.sleep(self.node.lease / 8)
                continue
            # Each entry is applied on its own: one this node cannot apply (written by
            # something that is not a node of this version, or met by a defect) is skipped
            # and logged, and the node goes on following every stream.
            for stream, entries in reply or ():
                if stream == inbox_bytes:
                    for entry_id, fields in entries:
                        self._last_inbox = entry_id
                        try:
                            self._receive(fields)
                        except Exception as exc:
                            self._skip_entry(stream, entry_id, exc)
                    continue
                if stream.startswith(room_prefix):
                    room_name = stream[len(room_prefix) :].decode(errors="replace")
                    if room_name not in self._room_cursor:
                        continue  # left meanwhile
                    for entry_id, fields in entries:
                        self._room_cursor[room_name] = entry_id
                        try:
                            self._room_entry(room_name, entry_id, fields)
                        except Exception as exc:
                            self._skip_entry(stream, entry_id, exc)
                    continue
                for entry_id, fields in entries:
                    self._last_event = entry_id
                    try:
                        self._apply(fields)
                    except Exception as exc:
                        self._skip_entry(stream, entry_id, exc)

    def _skip_entry(self, stream: bytes, entry_id: bytes, exc: Exception) -> None:
        name = stream.decode(errors="replace")
        entry = entry_id.decode(errors="replace")
        reason = f"{type(exc).__name__}: {exc}"
        self._bad_entries.event(
            "cannot apply an entry",
            logging.ERROR,
            "cluster_bad_entry",
            "skipped entry %s of %s, which this node cannot apply (%s)",
            entry,
            name,
            reason,
            source=name,
            stream=name,
            entry=entry,
            reason=reason,
        )

    async def _snapshot(self) -> None:
        """Read every other node's clients, and where the event stream stands, at once."""
        async with self.node.redis.pipeline(transaction=True) as pipe:
            pipe.xrevrange(EVENTS_KEY, count=1)
            pipe.hgetall(CLIENTS_KEY)
            last, table = await pipe.execute()
        before = self.remote
        self.remote = {}
        self._remote_nicks = names.NameIndex(defaults.MAX_NICK_CHARS)
        me = self.node.name
        for key, value in table.items():
            client = unpack_client(int(key), value)
            if client.node != me:
                self._put(client)
        # Redis may have restarted empty: the clients it no longer has are kept until their
        # node registers them again or a lease passes (``_unconfirmed``), through every
        # snapshot meanwhile (this node's own registering again takes one).
        vanished = [c for c in before.values() if c.client_id not in self.remote and c.node != me]
        if self._snapshot_after_loss:
            until = time.monotonic() + self.node.lease
            for client in vanished:
                self._unconfirmed.setdefault(client.node, until)
        for client in vanished:
            if client.node in self._unconfirmed:
                self._put(client)
        self._last_event = last[0][0] if last else b"0-0"
        self._snapshot_needed = self._snapshot_after_loss = False

    def _apply(self, fields: dict[bytes, bytes]) -> None:
        node = fields.get(b"node", b"").decode()
        if node == self.node.name:
            return
        if fields.get(b"reset"):
            self._unconfirmed.pop(node, None)  # what it registers now is all it has
            for client in [c for c in self.remote.values() if c.node == node]:
                self._drop(client.client_id)
            if b"up" not in fields:  # removed (dead, or left): not registering again
                self._node_gone(node)
        up = fields.get(b"up", b"")
        pos = 0
        while pos < len(up):
            client_id, size = _ENTRY.unpack_from(up, pos)
            pos += _ENTRY.size
            self._drop(client_id, gone=False)
            self._put(unpack_client(client_id, up[pos : pos + size]))
            pos += size
        down = fields.get(b"down", b"")
        for (client_id,) in _ID.iter_unpack(down[: len(down) - len(down) % 4]):
            self._drop(client_id)

    def _put(self, client: RemoteClient) -> None:
        self.remote[client.client_id] = client
        if client.nick:
            self._remote_nicks.add(client.nick, client)

    def _drop(self, client_id: int, *, gone: bool = True) -> None:
        client = self.remote.pop(client_id, None)
        if client is not None and client.nick:
            self._remote_nicks.remove(client.nick, client)
        sender = self._sender_by_id.pop(client_id, None) if gone else None
        if sender is not None:  # its receipts have nowhere to go now
            sender.state = ConnectionState.CLOSED
            self._senders.pop((sender.node, client_id), None)

    # --- SEND to another node's client ----------------------------------------------------

    def reaches(self, client_id: int) -> bool:
        return client_id in self.remote

    def nick_elsewhere(self, nick: str) -> int:
        holder = self._remote_nicks.find(nick)
        return holder.client_id if holder is not None else 0

    def send_elsewhere(
        self,
        conn: Peer,
        request_id: int,
        target_id: int,
        message_id: int,
        text: Buffer,
        *,
        nick: str = "",
    ) -> None:
        """Forward a direct MESSAGE to another node's client: answered (in its place among
        ``conn``'s answers) when that node has handed it to the client's connection, or
        refused it; RequestFailed CLUSTER_UNAVAILABLE at once without Redis."""
        target = self.remote[target_id]
        waiting = self._waiting.get(conn.client_id, 0)
        if waiting >= defaults.CLUSTER_MAX_WAITING_SENDS:
            raise RequestFailed(
                ErrorCode.RATE_LIMITED,
                f"{waiting} SENDs to other nodes' clients await their answers; slow down",
            )
        if not self.node.available:
            raise RequestFailed(
                ErrorCode.CLUSTER_UNAVAILABLE,
                f"client #{target_id} is on another node, and the cluster's Redis cannot be "
                "reached; try again later",
            )
        self._tokens = token = self._tokens + 1
        lease = self.node.lease
        frame = encode_message_fields(message_id, conn.direct_fields(), _now_ms(), 0, text)
        slot = conn.reserve_answer()
        self._waiting[conn.client_id] = waiting + 1
        self._pending[token] = PendingSend(
            conn,
            slot,
            request_id,
            target_id,
            message_id,
            target.node,
            time.monotonic() + lease,
            by_nick=bool(nick),
        )
        flags = RECEIPTS_BATCHED if conn.receipts_batched else 0
        expires = _now_ms() + int(lease * 1000)
        self.queue(
            target.node,
            pack_send(
                SendOp(token, conn.client_id, flags, target_id, message_id, expires, frame, nick)
            ),
        )

    def deliver(self, client_id: int, frame: bytes) -> bool:
        if super().deliver(client_id, frame):
            return True
        sender = self._sender_by_id.get(client_id)
        node = sender.node if sender is not None else None
        if node is None:
            remote = self.remote.get(client_id)
            node = remote.node if remote is not None else None
        if node is None:
            return False
        self.queue(node, pack_frame(client_id, frame))
        return True

    def queue(self, node: str, op: bytes) -> None:
        """Send ``op`` to ``node`` in this loop pass's batch."""
        ops = self._outbox.get(node)
        if ops is None:
            self._outbox[node] = [op]
        else:
            ops.append(op)
        self._schedule_outbox()

    def _schedule_outbox(self) -> None:
        if not self._outbox_scheduled:
            self._outbox_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_outbox)

    def _start_outbox(self) -> None:
        self._outbox_scheduled = False
        if not self._sending and (self._outbox or self._room_out):
            self.node.spawn(self._send_outbox())

    async def _send_outbox(self) -> None:
        """One pipeline (one round trip) per pass: an XADD per destination node carrying
        every operation for it."""
        if self._sending:
            return
        self._sending = True
        me = self.node.name
        try:
            while self._outbox or self._room_out:
                batch, self._outbox = self._outbox, {}
                rooms, self._room_out = self._room_out, []
                self._leaving = {}
                if not self.node.available:
                    self._not_sent(batch)
                    self._lines_failed(rooms, _LINE_NOT_STORED)
                    _release(rooms)
                    continue
                try:
                    async with self.node.redis.pipeline(transaction=False) as pipe:
                        lines = self._room_commands(pipe, rooms)
                        for node, ops in batch.items():
                            pipe.xadd(
                                inbox_key(node),
                                {"from": me, "ops": b"".join(ops)},
                                maxlen=INBOX_MAXLEN,
                                approximate=True,
                            )
                        # Each line hears its own outcome (Redis may refuse one: OOM).
                        results = await pipe.execute(raise_on_error=False)
                except (RedisError, OSError) as exc:
                    self._lines_failed(rooms, _LINE_UNKNOWN)
                    self.node.lost(describe(exc))
                    self._not_sent(batch)
                except Exception:
                    # A defect (ours or the Redis library's), not a lost Redis: the pass's
                    # requests still get their one answer each, nothing waits for ever
                    # behind them, and the pass is logged once with its traceback.
                    _log.exception(
                        "internal error sending %d line(s) and %d node batch(es) to Redis",
                        sum(1 for command in rooms if command[0] == "line"),
                        len(batch),
                    )
                    self._lines_failed(rooms, _LINE_INTERNAL, ErrorCode.INTERNAL_ERROR)
                    self._not_sent(batch)
                else:
                    failed = self._lines_stored(lines, results)
                    if failed is not None:
                        self.node.lost(describe(failed))
                        self._not_sent(batch)
                finally:
                    _release(rooms)
        finally:
            self._sending = False
            if self._outbox or self._room_out:  # (an error above): what came meanwhile
                self._schedule_outbox()

    def _room_commands(self, pipe: Any, commands: list[Any]) -> dict[int, Any]:
        """Queue this pass's room commands on ``pipe``; the lines among them by their index
        in the pipeline's replies."""
        me = self.node.name
        lines: dict[int, Any] = {}
        store = self.store
        for command in commands:
            kind = command[0]
            if kind == "barrier":
                continue  # released once the pipeline is through (``_release``)
            if kind == "line":
                if not lines:  # once per pipeline: its lines run the script by its SHA
                    pipe.script_load(LINE_SCRIPT)
                pending = command[1]
                lines[len(pipe.command_stack)] = pending
                text_bytes = len(pending.message.text.encode("utf-8"))
                pipe.evalsha(
                    LINE_SHA,
                    0,
                    pending.room.name,
                    pending.frame,
                    pending.conn.client_id,
                    store.keep,
                    store.max_age_ms,
                    ROOM_STREAM_MAXLEN,
                    lines_key(pending.room.name),
                    len(pending.frame) - text_bytes - 5,  # the flags byte: then u32, text
                    text_bytes,
                )
            elif kind == "xadd":
                pipe.xadd(
                    room_stream_key(command[1]),
                    command[2],
                    maxlen=ROOM_STREAM_MAXLEN,
                    approximate=True,
                )
            else:  # "leave"
                pipe.eval(LEAVE_ROOM_SCRIPT, 0, command[1], me, command[2], command[3])
        return lines

    def _lines_stored(self, lines: dict[int, Any], results: list[Any]) -> BaseException | None:
        """Tell each line of a pipeline how it went; the first error of another command
        (None: all went through)."""
        failed: BaseException | None = None
        for index, result in enumerate(results):
            pending = lines.get(index)
            if pending is None:
                if isinstance(result, BaseException) and failed is None:
                    failed = result
                continue
            self._line_answered(pending.conn.client_id)
            if isinstance(result, BaseException):
                reason = f"the cluster's Redis refused to store the line ({describe(result)})"
                self.on_line(
                    pending,
                    0,
                    RequestFailed(
                        ErrorCode.HISTORY_UNAVAILABLE,
                        reason + ": it was neither stored nor delivered",
                    ),
                )
            else:
                stored = line_id(result)
                room_name = pending.room.name
                # Only for a room this node still has: one its members all left while the
                # line was on its way (a LEAVE pipelined behind it) was forgotten then.
                if room_name in self.room_registry.by_name and stored > self._stored_top.get(
                    room_name, 0
                ):
                    self._stored_top[room_name] = stored
                self.on_line(pending, stored, None)
        return failed

    def _lines_failed(
        self, commands: list[Any], reason: str, code: ErrorCode = ErrorCode.CLUSTER_UNAVAILABLE
    ) -> None:
        for command in commands:
            if command[0] == "line":
                self._line_answered(command[1].conn.client_id)
                self.on_line(command[1], 0, RequestFailed(code, reason))

    def _line_answered(self, client_id: int) -> None:
        left = self._lines_waiting.get(client_id, 1) - 1
        if left:
            self._lines_waiting[client_id] = left
        else:
            self._lines_waiting.pop(client_id, None)

    # --- room history (server/cluster_history.py; history.SharedHistory) ----------------------

    def check_line(self, client_id: int) -> None:
        waiting = self._lines_waiting.get(client_id, 0)
        if waiting >= defaults.CLUSTER_MAX_WAITING_LINES:
            raise RequestFailed(
                ErrorCode.RATE_LIMITED,
                f"{waiting} BROADCASTs await the cluster's Redis to store their lines; slow down",
            )

    def add_line(self, pending: Any) -> None:
        """Store and order a BROADCAST's line in this pass's pipeline (``LINE_SCRIPT``)."""
        client_id = pending.conn.client_id
        self._lines_waiting[client_id] = self._lines_waiting.get(client_id, 0) + 1
        self._room_out.append(("line", pending))
        self._schedule_outbox()

    def read_page(
        self,
        room: str,
        query: HistoryQuery,
        done: Callable[[HistoryPage | None, BaseException | None], None],
        member_id: int = 0,
    ) -> None:
        """Lines up to what this node has delivered to the room's members here, and up to
        the lines it stored itself (so that a sender finds its own line: its OK came before
        this node read the line back from the room's stream): what comes later reaches the
        member live, after this answer.  Lines the page takes beyond the node's reading
        would reach the member live again when the reading gets there: ``_page_floor``
        keeps them from it."""
        cursor = self._room_cursor.get(room)
        reached = line_id(cursor) if cursor else 0
        through = max(reached, self._stored_top.get(room, 0))
        if cursor is not None and through > reached and member_id:
            floors = self._page_floor.setdefault(room, {})
            floors[member_id] = max(floors.get(member_id, 0), through)
        self.node.spawn(self._read_page(room, query, through, done))

    async def _read_page(
        self,
        room: str,
        query: HistoryQuery,
        through: int,
        done: Callable[[HistoryPage | None, BaseException | None], None],
    ) -> None:
        try:
            page = await read_page(self.node.redis, room, query, through)
        except ResponseError as exc:  # Redis answered, and refused
            done(None, RequestFailed(ErrorCode.HISTORY_UNAVAILABLE, _history_refused(exc)))
        except (RedisError, OSError) as exc:
            self.node.lost(describe(exc))
            done(None, RequestFailed(ErrorCode.CLUSTER_UNAVAILABLE, _UNAVAILABLE_HISTORY))
        except Exception as exc:  # answered all the same: nothing waits forever
            done(None, exc)
        else:
            self.store.epoch = page.epoch
            done(page, None)

    async def _drain_outbox(self) -> None:
        """Send everything queued for other nodes (the node is leaving: the receipts of its
        last clients' messages are among it)."""
        await asyncio.sleep(0)  # the flush the last releases scheduled
        while self._outbox or self._room_out or self._sending:
            if self._sending:
                await asyncio.sleep(0.005)
            else:
                await self._send_outbox()

    def _not_sent(self, batch: dict[str, list[bytes]]) -> None:
        """A batch that may not have reached Redis: its SENDs are answered OK with
        NOT_DELIVERED (each may or may not have arrived), its replies and receipts wait for
        Redis to return (up to a bound: past it they are dropped, and their senders time
        out)."""
        for node, ops in batch.items():
            for raw in ops:
                op = next(unpack_ops(raw), None)
                if op is None:
                    continue  # the empty batch that wakes this node's reader: nothing lost
                if isinstance(op, SendOp):
                    pending = self._settled(op.token)
                    if pending is not None:
                        self._give_up(pending)
                elif self._unsent_count < defaults.CLUSTER_UNSENT_MAX:
                    self._unsent.setdefault(node, []).append(raw)
                    self._unsent_count += 1

    def _settled(self, token: int) -> PendingSend | None:
        """The SEND ``token`` is answered now (or never will be): forget it."""
        pending = self._pending.pop(token, None)
        if pending is not None:
            client_id = pending.conn.client_id
            left = self._waiting.get(client_id, 1) - 1
            if left:
                self._waiting[client_id] = left
            else:
                self._waiting.pop(client_id, None)
        return pending

    def _give_up(self, pending: PendingSend | None) -> None:
        """Answer a SEND whose fate is unknown: OK, then NOT_DELIVERED."""
        if pending is None:
            return
        conn = pending.conn
        status = ReceiptStatus.NOT_DELIVERED
        receipt = (
            encode_receipts(pending.target_id, status, [pending.message_id])
            if conn.receipts_batched
            else encode_receipt(pending.message_id, pending.target_id, status)
        )
        conn.fill_answer(pending.slot, pending.ok() + receipt)

    def _expire_pending(self) -> None:
        now = time.monotonic()
        for token in [t for t, p in self._pending.items() if p.deadline <= now]:
            self._give_up(self._settled(token))

    def _receive(self, fields: dict[bytes, bytes]) -> None:
        """One batch from another node's outbox."""
        node = fields.get(b"from", b"").decode()
        now = _now_ms()
        handed: list[int] = []  # the tokens of the SENDs handed over: one OKS for them all
        try:
            for op in unpack_ops(fields.get(b"ops", b"")):
                if isinstance(op, SendOp):
                    self._deliver_here(node, op, now, handed)
                elif isinstance(op, OksOp):
                    for token in op.tokens:
                        self._handed(token)
                elif isinstance(op, ReplyOp):
                    self._replied(op)
                else:
                    self._frames_for(node, op.client_id, op.frames)
        except BadOps as exc:
            self.events.event(
                logging.WARNING,
                "cluster_bad_batch",
                "a batch in this node's inbox from %r does not parse (%s): the rest is dropped",
                node,
                exc,
                node=node,
            )
        if handed:
            self.queue(node, pack_oks(handed))

    def _deliver_here(self, node: str, op: SendOp, now: int, handed: list[int]) -> None:
        if op.expires_ms < now:
            return  # its sender has answered for it already (NOT_DELIVERED)
        target = self.client_by_id.get(op.target_id)
        code, text = 0, ""
        if target is None or target.state is not ConnectionState.READY:
            code, text = ErrorCode.NO_SUCH_CLIENT, f"no client #{op.target_id} is connected"
        elif op.nick and not _holds(target.nick, op.nick):
            # SEND_NICK: the nickname moved on while the MESSAGE travelled.
            code, text = ErrorCode.NO_SUCH_CLIENT, f"nobody is connected as {op.nick!r}"
        elif target.write_paused:
            code = ErrorCode.RECIPIENT_BUSY
            text = f"client #{op.target_id} is not reading; try again later"
        elif len(target.awaiting_ack) >= self.max_unacked:
            code = ErrorCode.RECIPIENT_BUSY
            text = (
                f"client #{op.target_id} has not acknowledged {len(target.awaiting_ack)} "
                "messages; try again later"
            )
        else:
            target.send_raw(op.frame)
            awaiting_of(target)[op.message_id] = cast(
                Peer, self._sender(node, op.sender_id, bool(op.flags & RECEIPTS_BATCHED))
            )
            handed.append(op.token)
            return
        self.queue(node, pack_reply(op.token, int(code), text))

    def _forget_rooms_of(self, node: str) -> None:
        for remote in self._room_remote.values():
            for member_id in [m for m, n in remote.items() if n == node]:
                del remote[member_id]

    def _sender(self, node: str, client_id: int, batched: bool) -> RemoteSender:
        sender = self._senders.get((node, client_id))
        if sender is None:
            sender = self._senders[node, client_id] = RemoteSender(self, node, client_id, batched)
            self._sender_by_id[client_id] = sender
        return sender

    def _replied(self, op: ReplyOp) -> None:
        if not op.code:
            self._handed(op.token)
            return
        pending = self._settled(op.token)
        if pending is None:
            return  # answered already (timed out, or its node was found dead)
        refusal = ErrorResponse.of(ErrorCode(op.code), op.text, request_id=pending.request_id)
        pending.conn.fill_answer(pending.slot, encode(refusal))

    def _handed(self, token: int) -> None:
        """The SEND ``token`` was handed to its recipient's connection: OK."""
        pending = self._settled(token)
        if pending is None:
            return  # answered already (timed out, or its node was found dead)
        conn = pending.conn
        outstanding = self._outstanding.setdefault(pending.node, {})
        outstanding[pending.message_id] = (conn, pending.target_id)
        conn.fill_answer(pending.slot, pending.ok())

    def _frames_for(self, node: str, client_id: int, frames: bytes) -> None:
        """Receipts for this node's client ``client_id`` from ``node``: only those it is
        waiting for (at most one receipt per message, however often one is sent)."""
        conn = self.client_by_id.get(client_id)
        outstanding = self._outstanding.get(node)
        if conn is None or outstanding is None:
            return
        decoder = FrameDecoder(max_frame=len(frames) + HEADER_SIZE)
        decoder.feed(frames)
        buf = decoder.buffer
        keep: list[bytes] = []
        for key, request_id, start, end in decoder.frames():
            event = decode_payload(key, request_id, buf, start, end)
            if isinstance(event, Receipt):
                if outstanding.pop(event.message_id, None) is not None:
                    keep.append(bytes(buf[start - HEADER_SIZE : end]))
            elif isinstance(event, Receipts):
                ids = [i for i in event.message_ids if outstanding.pop(i, None) is not None]
                if ids:
                    keep.append(encode_receipts(event.target, event.status, ids))
        if keep:
            conn.send_raw(b"".join(keep))

    def _node_gone(self, node: str) -> None:
        """``node`` was removed: every SEND to it not answered yet is answered OK with
        NOT_DELIVERED, every one answered OK and not acknowledged gets NOT_DELIVERED, and
        receipts for its clients are no longer sent."""
        for token in [t for t, p in self._pending.items() if p.node == node]:
            self._give_up(self._settled(token))
        status = int(ReceiptStatus.NOT_DELIVERED)
        by_sender: dict[tuple[Peer, int], list[int]] = {}
        for message_id, (conn, target_id) in self._outstanding.pop(node, {}).items():
            by_sender.setdefault((conn, target_id), []).append(message_id)
        for (conn, target_id), ids in by_sender.items():
            if self.client_by_id.get(conn.client_id) is not conn:
                continue
            if conn.receipts_batched:
                step = defaults.MAX_IDS_PER_FRAME
                for first in range(0, len(ids), step):
                    conn.send_raw(encode_receipts(target_id, status, ids[first : first + step]))
            else:
                conn.send_raw(b"".join(encode_receipt(i, target_id, status) for i in ids))
        self._forget_rooms_of(node)
        for key in [k for k in self._senders if k[0] == node]:
            sender = self._senders.pop(key)
            sender.state = ConnectionState.CLOSED
            if self._sender_by_id.get(sender.client_id) is sender:
                del self._sender_by_id[sender.client_id]

    # --- rooms across nodes ------------------------------------------------------------------
    # A room's JOINED, LEFT, MESSAGE and NICK_CHANGED notices all go through its stream in
    # Redis, from which every node with a member in it delivers them to its members: one
    # order for every member, wherever each is.  JOIN is claimed in Redis first (answered
    # again once it is in), as a ROOMS page and a LIST of a room with no member here are read.

    def join(self, room_name: str, conn: Peer) -> tuple[Room, bool]:
        name = check_name(
            room_name, what="room name", limit=defaults.MAX_ROOM_CHARS, code=ErrorCode.INVALID_ROOM
        )
        local = self.room_registry.find(name)
        if local is not None and conn.client_id in local.members:
            return local, False
        grant = self._room_grants.pop((conn.client_id, name), None)
        if grant is not None:
            room, _ = super().join(grant.name, conn)
            cursor = self._room_cursor.get(grant.name)
            joined_after = _stream_id(grant.last_id)
            if cursor is not None and joined_after > _stream_id(cursor):
                # This node's reading of the room is behind the JOIN: what it reads up to
                # the JOIN is not for this member (its replay has the lines of it).
                floors = self._join_floor.setdefault(grant.name, {})
                floors[conn.client_id] = joined_after
            elif cursor is not None:
                # Ahead of it: what it read after the JOIN, before this member was here,
                # goes to the member now (after its JoinOk: the answer's place is kept).
                self._catch_up(grant.name, conn, joined_after)
            if grant.name not in self._room_cursor:
                self._room_cursor[grant.name] = grant.last_id
                self._room_remote[grant.name] = {}
                self._wake_reader()
            if grant.last_line > self._stored_top.get(grant.name, 0):
                self._stored_top[grant.name] = grant.last_line
            remote = self._room_remote[grant.name]
            for member_id, node in grant.members.items():
                if node != self.node.name:
                    remote[member_id] = node
            room.history = deque(grant.history)
            if grant.added:  # its JOINED went into the stream with it: not again
                self._announced = (grant.name, conn.client_id)
            return room, grant.added
        limit = self.room_registry.max_rooms_per_client
        if len(conn.rooms) >= limit:
            raise RequestFailed(
                ErrorCode.INVALID_ROOM,
                f"you are in {len(conn.rooms)} rooms, the most one connection may be in; "
                "leave one first",
            )
        self._need_cluster("rooms")
        key = room_key(name)
        self._joining[key] = self._joining.get(key, 0) + 1
        raise AnswerLater(self._join_room(conn, name, key))

    async def _join_room(self, conn: Peer, name: str, key: str) -> None:
        try:
            await self._claim_room(conn, name)
        finally:
            left = self._joining.get(key, 1) - 1
            if left:
                self._joining[key] = left
            else:
                self._joining.pop(key, None)  # its entries read meanwhile: kept until taken

    async def _claim_room(self, conn: Peer, name: str) -> None:
        client_id = conn.client_id
        try:
            reply = await self.node.redis.eval(
                JOIN_ROOM_SCRIPT,
                0,
                client_id,
                self.node.name,
                name,
                self.max_rooms,
                self.history_limit,
                _JOINED_HEAD,
                conn.nick,
                *names.name_keys(name),
            )
        except (RedisError, OSError) as exc:
            self.node.lost(describe(exc))
            raise RequestFailed(ErrorCode.CLUSTER_UNAVAILABLE, _UNAVAILABLE_ROOMS) from None
        if int(reply[0]) == 0:
            raise RequestFailed(
                ErrorCode.INVALID_ROOM,
                f"the cluster has {int(reply[1])} rooms, the most it keeps; join an existing room",
            )
        canonical = reply[1].decode()
        # Gone meanwhile, or going (its transport closing: the answer is not given, app.py's
        # answer_later, so nothing would make it a member here): leave again.
        transport = conn.transport
        if (
            self.client_by_id.get(client_id) is not conn
            or transport is None
            or transport.is_closing()
        ):
            # With the LEFT that answers the JOINED the script put in the stream (if it did),
            # and in the four fields a "leave" command has (_room_commands).
            left = Left(canonical, client_id, conn.nick, conn.left_reason) if reply[2] else None
            self._room_out.append(["leave", client_id, canonical, encode(left) if left else b""])
            self._schedule_outbox()
            return
        flat = reply[4]
        members = {int(flat[i]): flat[i + 1].decode() for i in range(0, len(flat), 2)}
        history = decode_lines(reversed(reply[5]), canonical)
        self._room_grants[client_id, name] = RoomGrant(
            canonical, bool(reply[2]), reply[3], members, history, line_id(reply[6])
        )

    def member_room(self, room_name: str, conn: Peer) -> Room:
        room = super().member_room(room_name, conn)
        self._need_cluster("rooms")
        return room

    def leave(self, room: Room, conn: Peer) -> None:
        super().leave(room, conn)
        # The LEFT notice the server sends next (deliver_room) goes with it, in one step.
        command: list[Any] = ["leave", conn.client_id, room.name, b""]
        self._leaving[room.name] = command
        self._room_out.append(command)
        self._schedule_outbox()
        floors = self._join_floor.get(room.name)
        if floors is not None:
            floors.pop(conn.client_id, None)
        page_floors = self._page_floor.get(room.name)
        if page_floors is not None:
            page_floors.pop(conn.client_id, None)
        if room.name not in self.room_registry.by_name:  # no member here any more
            self._room_cursor.pop(room.name, None)
            self._stored_top.pop(room.name, None)
            self._join_floor.pop(room.name, None)
            self._page_floor.pop(room.name, None)
            self._room_remote.pop(room.name, None)
            # Not read any more: no later entry would clear what was kept for a JOIN (and a
            # JOIN still in flight reads the room again from its own place in the stream).
            self._recent.pop(room_key(room.name), None)

    def deliver_room(
        self, room: Room, frame: bytes, *, skip: Peer | None = None, skip_paused: bool = False
    ) -> int:
        reached = max(0, self.member_count(room) - (1 if skip is not None else 0))
        if skip is not None and self._announced == (room.name, skip.client_id):
            self._announced = None  # JOINED: in the stream with the membership already
            return reached
        leaving = self._leaving.pop(room.name, None)
        if leaving is not None and skip is None:
            leaving[3] = frame  # LEFT: with the membership change, in one step
            return reached
        fields = {"f": frame, "s": skip.client_id if skip is not None else 0}
        if skip_paused:
            fields["p"] = 1
        self._room_out.append(("xadd", room.name, fields))
        self._barrier(skip)
        self._schedule_outbox()
        return reached

    def _barrier(self, conn: Peer | None) -> None:
        """What ``conn`` is answered next (BROADCAST's OK, NICK's) waits until the notice it
        caused is in its room's stream: a JOIN after the OK then finds it in the history."""
        if conn is not None and self.client_by_id.get(conn.client_id) is conn:
            self._room_out.append(("barrier", conn, conn.reserve_answer()))

    def deliver_to_rooms_of(self, conn: Peer, frame: bytes) -> None:
        self._notices += 1
        key = f"{self.node.name}:{self._notices}"
        for room_name in conn.rooms:
            self._room_out.append(("xadd", room_name, {"f": frame, "s": conn.client_id, "k": key}))
        self._barrier(conn)
        self._schedule_outbox()

    def record(self, room: Room, message: Message) -> None:
        """Nothing to keep here: a room's lines are in its lines stream in Redis (written
        by ``add_line``), and a JOIN's replay is read from there."""

    def members(self, room: Room) -> list[Listed]:
        everyone: list[Listed] = list(room.members.values())
        for member_id in self._room_remote.get(room.name, ()):
            client = self.remote.get(member_id)
            if client is not None:
                everyone.append(client)
        everyone.sort(key=_listed_id)
        return everyone

    def member_count(self, room: Room) -> int:
        if self.room_registry.by_name.get(room.name) is room:
            return len(room.members) + len(self._room_remote.get(room.name, ()))
        return self._page_counts.get(room.name, len(room.members))

    def rooms_page(self, after: str, limit: int) -> tuple[list[Room], bool]:
        grant = self._page_grants.pop((after, limit), None)
        if grant is None:
            self._need_cluster("rooms")
            raise AnswerLater(self._fetch_page(after, limit))
        self._page_counts = grant.counts
        self._page_total = grant.total
        found = [self.room_registry.by_name.get(n) or Room(n) for n in grant.names]
        return found, grant.more

    def room_count(self) -> int:
        return self._page_total

    async def _fetch_page(self, after: str, limit: int) -> None:
        redis = self.node.redis
        start = "(" + after if after else "-"
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zrangebylex(ROOM_NAMES_KEY, start, "+", start=0, num=limit + 1)
                pipe.zcard(ROOM_NAMES_KEY)
                found, total = await pipe.execute()
            shown = [n.decode() for n in found[:limit]]
            async with redis.pipeline(transaction=False) as pipe:
                for room_name in shown:
                    pipe.hlen(f"{PREFIX}room-members:{room_name}")
                counts = await pipe.execute() if shown else []
        except (RedisError, OSError) as exc:
            self.node.lost(describe(exc))
            raise RequestFailed(ErrorCode.CLUSTER_UNAVAILABLE, _UNAVAILABLE_ROOMS) from None
        self._page_grants[after, limit] = PageGrant(
            shown, len(found) > limit, int(total), dict(zip(shown, map(int, counts), strict=True))
        )

    def list_elsewhere(self, conn: Peer, request_id: int, room: bytes) -> bool:
        if not self.node.available:
            refusal = ErrorResponse.of(
                ErrorCode.CLUSTER_UNAVAILABLE, _UNAVAILABLE_ROOMS, request_id=request_id
            )
            conn.send(refusal)
            return True
        slot = conn.reserve_answer()
        self.node.spawn(self._list_room(conn, slot, request_id, room))
        return True

    async def _list_room(
        self, conn: Peer, slot: ReservedSlot, request_id: int, room: bytes
    ) -> None:
        redis = self.node.redis
        records: list[bytes] = []
        try:
            name = room.decode("utf-8")
            keys = names.name_keys(name) if len(name) <= defaults.MAX_ROOM_CHARS else ()
            canonical = next(
                (c for c in (await redis.hmget(ROOM_KEYS_KEY, *keys) if keys else ()) if c), None
            )
            if canonical is not None:
                flat = await redis.hgetall(f"{PREFIX}room-members:{canonical.decode()}")
                listed: list[Listed] = []
                for raw_id in flat:
                    member_id = int(raw_id)
                    member: Listed | None = self.client_by_id.get(member_id) or self.remote.get(
                        member_id
                    )
                    if member is not None and member.authenticated:
                        listed.append(member)
                listed.sort(key=_listed_id)
                records = [client_record(m.sender_fields(), m.connected_ms) for m in listed]
        except (RedisError, OSError) as exc:
            self.node.lost(describe(exc))
            refusal = ErrorResponse.of(
                ErrorCode.CLUSTER_UNAVAILABLE, _UNAVAILABLE_ROOMS, request_id=request_id
            )
            conn.fill_answer(slot, encode(refusal))
            return
        except Exception:  # a record it cannot read, or a defect: answered all the same
            _log.exception("internal error listing a room's members for #%d", conn.client_id)
            refusal = ErrorResponse.of(
                ErrorCode.INTERNAL_ERROR, "internal server error", request_id=request_id
            )
            conn.fill_answer(slot, encode(refusal))
            return
        conn.fill_answer(slot, encode_list_ok(request_id, room, records))

    def _need_cluster(self, what: str) -> None:
        if not self.node.available:
            raise RequestFailed(ErrorCode.CLUSTER_UNAVAILABLE, _UNAVAILABLE_ROOMS)

    def _wake_reader(self) -> None:
        """The reader blocks in XREAD over the streams it had: an empty batch in this node's
        own inbox wakes it, to read the new room's stream too."""
        self.queue(self.node.name, b"")

    def _catch_up(self, room_name: str, conn: Peer, joined_after: tuple[int, int]) -> None:
        """Hand ``conn`` the notices of the room read after its JOIN and before it was a
        member here (``_recent``)."""
        key = room_key(room_name)
        recent = self._recent.get(key, ())
        member_id = conn.client_id
        for at, fields in recent:
            frame = fields.get(b"f")
            if at <= joined_after or not frame or int(fields.get(b"s", b"0") or 0) == member_id:
                continue
            told_key = fields.get(b"k")
            if told_key is not None:
                told = self._told.setdefault(told_key, set())
                if member_id in told:
                    continue
                told.add(member_id)
            conn.send_raw(frame)
        if not self._joining.get(key):
            self._recent.pop(key, None)

    def _room_entry(self, room_name: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """One entry of a room's stream: a membership change, and/or a notice for the
        members of this node (not for those who joined after it: ``_join_floor``; kept a
        while for those joining now: ``_recent``)."""
        if self._joining or self._recent:
            rkey = room_key(room_name)
            if self._joining.get(rkey):
                recent = self._recent.get(rkey)
                if recent is None:
                    recent = self._recent[rkey] = deque(maxlen=defaults.CLUSTER_JOIN_RECENT)
                recent.append((_stream_id(entry_id), fields))
            elif rkey in self._recent:
                del self._recent[rkey]
        change = fields.get(b"d")
        if change is not None:
            node = fields.get(b"n", b"").decode()
            remote = self._room_remote.get(room_name)
            if node != self.node.name and remote is not None:
                member_id = int(fields.get(b"m", b"0"))
                if change == b"1":
                    remote[member_id] = node
                else:
                    remote.pop(member_id, None)
        frame = fields.get(b"f")
        room = self.room_registry.by_name.get(room_name)
        if not frame or room is None:
            return
        skip = int(fields.get(b"s", b"0") or 0)
        paused = fields.get(b"p") == b"1"
        floors = self._join_floor.get(room_name)
        at = _stream_id(entry_id) if floors else (0, 0)
        pages = self._page_floor.get(room_name)
        line = line_id(entry_id) if pages else 0
        page_floors = pages if paused else None  # a notice, not a line: no page holds it
        key = fields.get(b"k")
        told: set[int] | None = None
        if key is not None:
            told = self._told.get(key)
            if told is None:
                told = self._told[key] = set()
                if len(self._told) > _TOLD_KEYS:
                    self._told.popitem(last=False)
        for member in list(room.members.values()):
            member_id = member.client_id
            if member_id == skip or (paused and member.write_paused):
                continue
            if floors and at <= floors.get(member_id, (0, 0)):
                continue  # before its JOIN: in its replay, or none of its business
            if page_floors and line <= page_floors.get(member_id, 0):
                continue  # in a HISTORY page it had already
            if told is not None:
                if member_id in told:
                    continue
                told.add(member_id)
            member.send_raw(frame)
        if floors:  # the members whose JOIN this node's reading has now passed
            for member_id in [m for m, floor in floors.items() if floor <= at]:
                del floors[member_id]
            if not floors:
                del self._join_floor[room_name]
        if pages:  # the pages this node's reading has now passed
            for member_id in [m for m, last in pages.items() if last <= line]:
                del pages[member_id]
            if not pages:
                del self._page_floor[room_name]

    # --- dead nodes ----------------------------------------------------------------------------

    async def _lefts_of(self, node: str) -> tuple[Any, ...]:
        """The LEFT notices for every room of a dead node's clients: id, room, frame."""
        redis = self.node.redis
        ids = [int(i) for i in await redis.smembers(node_clients_key(node))]
        if not ids:
            return ()
        async with redis.pipeline(transaction=False) as pipe:
            for client_id in ids:
                pipe.smembers(client_rooms_key(client_id))
            pipe.hmget(CLIENTS_KEY, ids)
            *rooms, records = await pipe.execute()
        lefts: list[Any] = []
        for client_id, joined, record in zip(ids, rooms, records, strict=True):
            # Redis's record first: this node's copy follows the event stream and may lag
            # behind the dead node's last changes (a nickname set just before it died).
            if record is not None:
                nick = unpack_client(client_id, record).nick
            else:
                client = self.remote.get(client_id)
                nick = client.nick if client is not None else ""
            for raw in joined:
                room_name = raw.decode()
                left = Left(room_name, client_id, nick, LeftReason.DISCONNECTED)
                lefts += [client_id, room_name, encode(left)]
        return tuple(lefts)

    def _expire_unconfirmed(self) -> None:
        """The clients of nodes that have not registered again within a lease of Redis
        coming back empty: their node is gone too (or cut off, and will register them
        again when it is back)."""
        now = time.monotonic()
        for node, until in list(self._unconfirmed.items()):
            if now >= until:
                del self._unconfirmed[node]
                for client in [c for c in self.remote.values() if c.node == node]:
                    self._drop(client.client_id)

    async def _tick(self) -> None:
        """Remove the nodes whose lease has ended (their clients leave LIST), and read the
        whole state again if the event stream was trimmed past where this node stands."""
        redis = self.node.redis
        me = self.node.name
        others = [n.decode() for n in await redis.smembers(NODES_KEY) if n.decode() != me]
        if others:
            async with redis.pipeline(transaction=False) as pipe:
                for name in others:
                    pipe.exists(node_key(name))
                alive = await pipe.execute()
            for name, live in zip(others, alive, strict=True):
                if live:
                    continue
                removed = await self.node.remove_node(name, lefts=await self._lefts_of(name))
                if removed >= 0:
                    self.events.event(
                        logging.WARNING,
                        "cluster_node_dead",
                        "node %s stopped renewing its lease: removed it and its %d client(s)",
                        name,
                        removed,
                        node=name,
                        clients=removed,
                    )
        self._expire_pending()
        self._bad_entries.flush(expired_only=True)
        self._expire_unconfirmed()
        first = await redis.xrange(EVENTS_KEY, count=1)
        if first and _stream_id(first[0][0]) > _stream_id(self._last_event):
            self._snapshot_needed = True  # the entries after ours were trimmed: read it all


_UNAVAILABLE_HISTORY = (
    "the cluster's Redis cannot be reached: room history cannot be read now; try again later"
)
_LINE_NOT_STORED = (
    "the cluster's Redis cannot be reached: the line was neither stored nor delivered; "
    "try again later"
)
_LINE_UNKNOWN = (
    "the cluster's Redis was lost before it confirmed the line: it may or may not have been "
    "stored and delivered"
)
_LINE_INTERNAL = (
    "internal server error before the cluster's Redis confirmed the line: it may or may not "
    "have been stored and delivered"
)


def _history_refused(exc: BaseException) -> str:
    return f"the cluster's Redis refused to read the history ({describe(exc)})"


def _unheard(pending: Any, message_id: int, error: RequestFailed | None) -> None:
    """``on_line`` before the server sets it (a directory used without a server)."""


_UNAVAILABLE_NICK = (
    "the cluster's Redis cannot be reached: nicknames cannot be claimed now; try again later"
)


def _taken(nick: str, held: str, *, client_id: int) -> str:
    what = repr(nick) if held.casefold() == nick.casefold() else f"{held!r} (looks alike)"
    return f"nickname {what} is taken by #{client_id}"


#: NICK_CHANGED notices remembered, so that a member sharing several rooms with the renamed
#: client hears it once.
_TOLD_KEYS = 1024
#: No bound on a cluster node's own rooms: the cluster's --max-rooms is kept in Redis.
_UNBOUNDED = 1 << 62

#: A JOINED notice's header up to its request id (JOIN_ROOM_SCRIPT builds the rest).
_JOINED_HEAD = encode(Joined("", 0, ""))[:6]

_UNAVAILABLE_ROOMS = (
    "the cluster's Redis cannot be reached: rooms cannot be joined, left, listed or spoken "
    "in now; try again later"
)


@dataclass(frozen=True, slots=True)
class RoomGrant:
    """A JOIN done in Redis (JOIN_ROOM_SCRIPT's answer)."""

    name: str
    added: bool
    last_id: bytes
    members: dict[int, str]
    history: list[Message]
    #: The newest line stored when the member joined (its HISTORY pages reach at least it).
    last_line: int


@dataclass(frozen=True, slots=True)
class PageGrant:
    """A ROOMS page read from Redis."""

    names: list[str]
    more: bool
    total: int
    counts: dict[str, int]


def _release(commands: list[Any]) -> None:
    """Let the answers held behind this pass's room notices go (``_barrier``)."""
    for command in commands:
        if command[0] == "barrier":
            command[1].fill_answer(command[2], b"")


def _pack_up(up: dict[int, bytes]) -> bytes:
    return b"".join(_ENTRY.pack(client_id, len(value)) + value for client_id, value in up.items())


def _listed_id(client: Listed) -> int:
    return client.client_id


# --- SEND across nodes ------------------------------------------------------------------------


class PendingSend:
    """A SEND to another node's client, waiting for that node's reply."""

    __slots__ = (
        "by_nick",
        "conn",
        "deadline",
        "message_id",
        "node",
        "request_id",
        "slot",
        "target_id",
    )

    def __init__(
        self,
        conn: Peer,
        slot: ReservedSlot,
        request_id: int,
        target_id: int,
        message_id: int,
        node: str,
        deadline: float,
        *,
        by_nick: bool = False,
    ) -> None:
        self.by_nick = by_nick
        self.conn = conn
        self.slot = slot
        self.request_id = request_id
        self.target_id = target_id
        self.message_id = message_id
        self.node = node
        self.deadline = deadline

    def ok(self) -> bytes:
        """Its OK: SEND's, or SEND_NICK's."""
        if self.by_nick:
            return encode(SendNickOk(self.message_id, self.target_id, request_id=self.request_id))
        return encode_send_ok(self.request_id, self.message_id, self.target_id)


class RemoteSender:
    """A client of another node that sent messages to a client of this one, as that
    client's ``awaiting_ack`` holds it: what handlers.settle and the server's release write
    to it (RECEIPT, RECEIPTS) goes back to its node in the next batch."""

    __slots__ = ("client_id", "directory", "in_batch", "node", "out", "receipts_batched", "state")

    def __init__(
        self, directory: RedisDirectory, node: str, client_id: int, receipts_batched: bool
    ) -> None:
        self.directory = directory
        self.node = node
        self.client_id = client_id
        self.receipts_batched = receipts_batched
        self.state = ConnectionState.READY
        self.in_batch = False
        self.out: list[bytes] = []

    def flush(self) -> None:
        if self.out:
            frames = b"".join(self.out)
            self.out.clear()
            if self.state is ConnectionState.READY:
                self.directory.queue(self.node, pack_frame(self.client_id, frames))
