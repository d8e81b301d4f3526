"""What cluster nodes tell one another through their Redis inboxes (server/cluster.py): a
batch of operations, packed into one stream entry per destination node per flush.  Pure:
bytes in, operations out, and back.

- ``SendOp``: deliver a MESSAGE (encoded by the sender's node) to a client of the receiving
  node, and say what became of it (``ReplyOp``); dropped unanswered once ``expires_ms`` has
  passed (the sender has then answered for it: docs/CLUSTER.md).
- ``ReplyOp``: the outcome of a ``SendOp``: 0 (handed to the recipient's connection) or the
  ErrorCode that refused it, with the ERROR's text.
- ``OksOp``: the ``SendOp``s of one batch that were handed over, by token (one operation for
  a batch's successes instead of one ``ReplyOp`` each).
- ``FrameOp``: frames for a client of the receiving node (RECEIPT and RECEIPTS from the
  recipient's node; the receiving node keeps only receipts it is waiting for).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

#: op kind (u8), then its fields.
_KIND = struct.Struct("!B")
#: token, sender id, sender flags, target id, message id, expires (ms), frame length, then
#: the frame and the nickname (u16 length; SEND_NICK's, "" for SEND).
_SEND = struct.Struct("!QIBIQqI")
_NICK = struct.Struct("!H")
#: token, code, text length.
_REPLY = struct.Struct("!QHH")
#: client id, frames length.
_FRAME = struct.Struct("!II")

SEND, REPLY, FRAME, OKS = 1, 2, 3, 4
#: OKS: how many tokens follow (u64 each).
_COUNT = struct.Struct("!I")
#: SendOp.flags: the sender negotiated protocol version 2 (its receipts in RECEIPTS).
RECEIPTS_BATCHED = 1


class BadOps(ValueError):
    """A batch that is not what a node writes (another program wrote to the inbox)."""


@dataclass(frozen=True, slots=True)
class SendOp:
    token: int
    sender_id: int
    flags: int
    target_id: int
    message_id: int
    expires_ms: int
    frame: bytes
    #: SEND_NICK: the nickname the target must still hold ("" for SEND).
    nick: str = ""


@dataclass(frozen=True, slots=True)
class ReplyOp:
    token: int
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class OksOp:
    tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FrameOp:
    client_id: int
    frames: bytes


Op = SendOp | ReplyOp | OksOp | FrameOp


def pack_send(op: SendOp) -> bytes:
    return (
        _KIND.pack(SEND)
        + _SEND.pack(
            op.token,
            op.sender_id,
            op.flags,
            op.target_id,
            op.message_id,
            op.expires_ms,
            len(op.frame),
        )
        + op.frame
        + _NICK.pack(len(nick := op.nick.encode("utf-8")))
        + nick
    )


def pack_reply(token: int, code: int, text: str) -> bytes:
    raw = text.encode("utf-8")[:0xFFFF]
    return _KIND.pack(REPLY) + _REPLY.pack(token, code, len(raw)) + raw


def pack_oks(tokens: list[int]) -> bytes:
    count = len(tokens)
    return _KIND.pack(OKS) + _COUNT.pack(count) + struct.pack(f"!{count}Q", *tokens)


def pack_frame(client_id: int, frames: bytes) -> bytes:
    return _KIND.pack(FRAME) + _FRAME.pack(client_id, len(frames)) + frames


def unpack_ops(batch: bytes) -> Iterator[Op]:
    """The operations of one batch, in order (BadOps at the first that does not parse)."""
    pos = 0
    size = len(batch)
    try:
        while pos < size:
            (kind,) = _KIND.unpack_from(batch, pos)
            pos += 1
            if kind == SEND:
                token, sender, flags, target, message_id, expires, length = _SEND.unpack_from(
                    batch, pos
                )
                pos += _SEND.size
                frame = batch[pos : pos + length]
                pos += length
                if len(frame) != length:
                    raise BadOps("a SEND's frame is cut short")
                (nick_length,) = _NICK.unpack_from(batch, pos)
                pos += _NICK.size
                raw_nick = batch[pos : pos + nick_length]
                pos += nick_length
                if len(raw_nick) != nick_length:
                    raise BadOps("a SEND's nickname is cut short")
                nick = raw_nick.decode("utf-8", "replace")
                yield SendOp(token, sender, flags, target, message_id, expires, frame, nick)
            elif kind == REPLY:
                token, code, length = _REPLY.unpack_from(batch, pos)
                pos += _REPLY.size
                text = batch[pos : pos + length].decode("utf-8", "replace")
                pos += length
                yield ReplyOp(token, code, text)
            elif kind == OKS:
                (count,) = _COUNT.unpack_from(batch, pos)
                pos += _COUNT.size
                if count * 8 > size - pos:
                    raise BadOps("an OKS is cut short")
                tokens = struct.unpack_from(f"!{count}Q", batch, pos)
                pos += count * 8
                yield OksOp(tokens)
            elif kind == FRAME:
                client_id, length = _FRAME.unpack_from(batch, pos)
                pos += _FRAME.size
                frames = batch[pos : pos + length]
                pos += length
                if len(frames) != length:
                    raise BadOps("a FRAME's frames are cut short")
                yield FrameOp(client_id, frames)
            else:
                raise BadOps(f"unknown operation {kind}")
    except struct.error as exc:
        raise BadOps(f"an operation is cut short: {exc}") from None
