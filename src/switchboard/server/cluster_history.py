"""Room history on a cluster node: every room line in a Redis Stream per room, shared by the
nodes (``serve --cluster``; docs/CLUSTER.md, "Room history").

A line is written by ``LINE_SCRIPT``, one Lua step that also puts it in the room's notice
stream (``switchboard:room:NAME``, which orders JOINED, LEFT and MESSAGE for every member):
stored and ordered at once, so that BroadcastOk still means "stored and ordered".  The
line's id is made there, from the room's one order, whichever node the sender is on:

- both streams get the same explicit entry id ``MS-SEQ``, above the last entry of either
  (Redis's clock in milliseconds, or the last id's sequence plus one in the same ms);
- the line's MESSAGE ``message_id`` is that entry id as one 64-bit number,
  ``MS << 20 | SEQ`` (``line_id``; ``entry_id`` maps it back): unique, increasing in the
  room's order, never reused while the store lasts (and, being time, not after a reset
  either), and an AFTER anchor works on any node.

The lines stream (``lines_key``: under the room name's first look-alike key, as the single
server's database keys rooms) keeps each line's MESSAGE frame as a HISTORY page sends it
(flags HISTORY), with its text's length (the page's byte budget) and the room's name as it
was said: a page is a join of stored frames (``page_frames``), not a decoding and an
encoding per line.

Retention: the lines stream is capped at about ``--history-keep`` entries (XADD MAXLEN ~),
entries older than ``--history-max-age`` are trimmed at each write (XTRIM MINID), and the
key expires ``--history-max-age`` after its newest line, so that a room nobody speaks in
any more leaves nothing behind (its lines would all be past their age by then).  The
store's epoch is ``switchboard:history-epoch``, set once (SET NX) with a random number: a
Redis reset (the key gone) gives a new one at the next read.

This module is pure but for ``read_page`` (one pipelined round trip on the node's Redis
connection, awaited on the loop, off the request's path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from typing import Any, Final

from switchboard.protocol import (
    HEADER_SIZE,
    FrameDecoder,
    HistoryMode,
    Message,
    MessageFlags,
    encode,
)
from switchboard.protocol.codec import decode_payload

from .cluster_url import ClusterUrl
from .history import HistoryPage, HistoryQuery, room_key

#: Every key starts with it (the cluster's PREFIX; repeated here to keep this module pure).
_PREFIX: Final = "switchboard:"
#: The store's epoch: a random number set once (SET NX); another one means a reset store.
EPOCH_KEY: Final = _PREFIX + "history-epoch"
#: Bits of a line id that hold the entry id's sequence (the rest: its milliseconds).  A room
#: takes 2^20 lines within one millisecond at most (the script moves on to the next ms).
SEQ_BITS: Final = 20
_SEQ_MASK: Final = (1 << SEQ_BITS) - 1
#: The largest line id a client may name (MESSAGE's u64, read as signed by some clients).
MAX_LINE_ID: Final = (1 << 63) - 1


def lines_key(room: str) -> str:
    """The stream of a room's lines (its history), under the room's first look-alike key
    (``history.room_key``), as the single server's database keeps them: a room that ended
    as "Lobby" and comes back as "LOBBY" is the same room with the same history."""
    return f"{_PREFIX}lines:{room_key(room)}"


def line_id(entry: bytes | str) -> int:
    """The MESSAGE id of the line stored under stream entry id ``entry`` (``MS-SEQ``)."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    ms, _, seq = text.partition("-")
    return int(ms) << SEQ_BITS | int(seq or 0)


def entry_id(line: int) -> str:
    """The stream entry id of line id ``line`` (``line_id``'s inverse)."""
    return f"{line >> SEQ_BITS}-{line & _SEQ_MASK}"


#: Store a room line and order it among the room's notices, in one step.  ARGV: room, the
#: MESSAGE frame (its id to be filled in), the sender's id (not told: it gets BroadcastOk),
#: keep (lines), max age (ms, 0 = none), the room stream's cap, the lines stream's key
#: (``lines_key``), where the frame's flags byte is (from 0), the text's length in bytes.
#: The lines stream keeps the frame as a page or a replay sends it (flags HISTORY: no
#: decoding and encoding again per read), its text's length (a page's byte budget) and the
#: room's name as said (``r``: a page renames the few said under a look-alike name).
#: Returns the entry id.
LINE_SCRIPT: Final = (
    """
local notices = 'switchboard:room:' .. ARGV[1]
local lines = ARGV[7]
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
for _, key in ipairs({notices, lines}) do
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last > 0 then
    local lms, lseq = string.match(last[1][1], '(%d+)-(%d+)')
    lms, lseq = tonumber(lms), tonumber(lseq)
    if lms > ms or (lms == ms and lseq >= seq) then ms, seq = lms, lseq + 1 end
  end
end
if seq > SEQ_MASK then ms, seq = ms + 1, 0 end
local id = string.format('%.0f-%d', ms, seq)
local frame = ARGV[2]
frame = string.sub(frame, 1, ID_AT) .. struct.pack('>I4I4', math.floor(ms / SEQ_SPLIT),
  (ms % SEQ_SPLIT) * SEQ_ONE + seq) .. string.sub(frame, ID_AT + 9)
local at = tonumber(ARGV[8])
local kept = string.sub(frame, 1, at) .. '\1' .. string.sub(frame, at + 2)
redis.call('XADD', lines, 'MAXLEN', '~', ARGV[4], id, 'f', kept, 't', ARGV[9], 'r', ARGV[1])
local age = tonumber(ARGV[5])
if age > 0 then
  redis.call('XTRIM', lines, 'MINID', string.format('%.0f', ms - age))
  redis.call('PEXPIRE', lines, age)
end
redis.call('XADD', notices, 'MAXLEN', '~', ARGV[6], id, 'f', frame, 's', ARGV[3], 'p', '1')
return id
""".replace("SEQ_MASK", str(_SEQ_MASK))
    .replace("SEQ_SPLIT", str(1 << (32 - SEQ_BITS)))
    .replace("SEQ_ONE", str(1 << SEQ_BITS))
    .replace("ID_AT", str(HEADER_SIZE))
)
#: What EVALSHA names it by.  A node's pipeline loads it (SCRIPT LOAD) before its first line
#: and runs each line by this: one copy of the 1.3 KB body per pipeline, not one per line,
#: and a Redis that restarted (its script cache empty) has it again at the next pipeline.
LINE_SHA: Final = hashlib.sha1(LINE_SCRIPT.encode()).hexdigest()


class StreamHistory:
    """The ``HistoryStore`` of a cluster node: what the start-up line and HistoryOk say of
    it (where the lines are, the epoch last read); the lines themselves are written by the
    node's directory (``LINE_SCRIPT`` in its per-pass pipeline) and read by ``read_page``
    and the JOIN script.  Nothing is kept in this process."""

    deferred = False
    last_id = 0

    def __init__(self, url: ClusterUrl, *, keep: int, max_age_s: float) -> None:
        self.keep = keep
        self.max_age_ms = int(max_age_s * 1000)
        days, rest = divmod(max_age_s, 86_400)
        age = (
            "no age limit"
            if not self.max_age_ms
            else f"{days:g} day(s)"
            if days and not rest
            else f"{max_age_s:g} s"
        )
        self.where = (
            f"Redis streams {_PREFIX}lines:ROOM at {url.shown} (shared by the cluster's nodes; "
            f"about {keep:,} lines per room, {age}; line ids from each room's order there)"
        )
        #: The epoch of the last page read (0 until one is: a page always carries its own).
        self.epoch = 0

    # The single-server interface: the handlers use none of it on a cluster node (they
    # write and read through the directory); it answers as an empty memory store would.
    def write(self, lines: Sequence[Message]) -> None:
        """Lines are written with their ordering, by the directory."""

    def latest(self, key: str, count: int, through: int) -> list[Message]:
        return []  # a JOIN's replay comes from the JOIN script

    def page(
        self, key: str, cached: Iterable[Message], query: HistoryQuery, through: int
    ) -> HistoryPage:
        return HistoryPage([], False, self.epoch)

    def prune(self, now_ms: int, limit: int) -> int:
        return 0  # trimmed at each write (XTRIM MINID) and expired with the room's silence

    def close(self) -> None:
        pass


def decode_lines(frames: Iterable[bytes], room: str | None = None) -> list[Message]:
    """MESSAGE frames from a lines stream, marked as history (a replay or a page), naming
    ``room`` when given (they may have been said under a look-alike name)."""
    out = []
    for frame in frames:
        decoder = FrameDecoder(max_frame=len(frame) + HEADER_SIZE)
        decoder.feed(frame)
        buf = decoder.buffer
        for kind, request_id, start, end in decoder.frames():
            event = decode_payload(kind, request_id, buf, start, end)
            if isinstance(event, Message):
                out.append(
                    dataclasses.replace(
                        event, flags=event.flags | MessageFlags.HISTORY, room=room or event.room
                    )
                )
    return out


def page_bounds(query: HistoryQuery, through: int = MAX_LINE_ID) -> tuple[str, str] | None:
    """The XRANGE bounds (exclusive ids, oldest first) a query reads, lines up to id
    ``through`` only; None when no line can lie between them."""
    mode = query.mode
    low, high = 0, min(MAX_LINE_ID, through + 1)
    if mode is HistoryMode.BEFORE:
        high = min(high, query.anchor)
    elif mode is HistoryMode.AFTER:
        low = query.anchor
    elif mode is HistoryMode.BETWEEN:
        low, high = query.anchor, min(high, query.until)
    if low >= MAX_LINE_ID or high <= low + 1:
        return None
    return "(" + entry_id(low), "(" + entry_id(high)


async def read_page(redis: Any, room: str, query: HistoryQuery, through: int) -> HistoryPage:
    """One HISTORY page of ``room`` from its lines stream (ids up to ``through``), with the
    store's epoch (made if missing), in one round trip; RedisError/OSError when Redis cannot
    answer."""
    bounds = page_bounds(query, through)
    newest_first = query.mode in (HistoryMode.LATEST, HistoryMode.BEFORE)
    key = lines_key(room)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(EPOCH_KEY, secrets.randbelow(0xFFFF_FFFF) + 1, nx=True)
        pipe.get(EPOCH_KEY)
        if bounds is not None:
            low, high = bounds
            # One line more than the page: whether more follow, without counting the rest.
            if newest_first:
                pipe.xrevrange(key, high, low, count=query.limit + 1)
            else:
                pipe.xrange(key, low, high, count=query.limit + 1)
        replies = await pipe.execute()
    epoch = int(replies[1])
    entries = replies[2] if bounds is not None else []
    frames = page_frames(entries, room, query)
    more = len(entries) > len(frames)
    if newest_first:
        frames.reverse()
    return HistoryPage([], more, epoch, frames)


def page_frames(entries: list[Any], room: str, query: HistoryQuery) -> list[bytes]:
    """The MESSAGE frames of a page, from lines stream entries in the order read: as
    ``history.fill_page`` takes lines (the limit, the byte budget of text, the first always),
    each naming ``room`` (re-encoded only if said under another name)."""
    said_here = room.encode()
    out: list[bytes] = []
    size = 0
    limit, max_bytes = query.limit, query.max_bytes
    for _, fields in entries:
        if len(out) >= limit:
            break
        frame = fields.get(b"f")
        text_len = fields.get(b"t")
        if frame is None:
            continue
        if text_len is None or fields.get(b"r") != said_here:  # the slow path: rare
            decoded = decode_lines([frame], room)
            if not decoded:
                continue
            line = decoded[0]
            size += len(line.text.encode("utf-8"))
            frame = encode(line)
        else:
            size += int(text_len)
        if out and size > max_bytes:
            break
        out.append(frame)
    return out
