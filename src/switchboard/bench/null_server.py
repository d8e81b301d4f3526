"""The null server: the ceiling for a Python server on this machine.

    python -m switchboard.bench.null_server [--host H] [--port P]

A minimal uvloop server speaking just enough of the Switchboard framing for ``switchboard
bench`` to drive it with the same load generator: it splits frames with one
``struct.unpack_from`` each and answers every request with the smallest valid response, an
OK whose payload is only the answered type (16 bytes).  It checks each header as every split
loop does (codec.HEADER_WORDS: the same struct, words and check; on a bad one it closes the
connection, where Switchboard would send ERROR first) and validates nothing else; it logs
nothing, keeps no heartbeat and no rate limit.  So that ``send`` can run against it, it does
the least routing the protocol needs: a SEND is answered and forwarded as a MESSAGE carrying
the same text (sender, address and nickname left empty), and the recipient's ACK becomes the
sender's RECEIPT; that is two dictionary lookups per message.  It speaks protocol version 2
as Switchboard does: a HELLO stating version 2 gets its sender RECEIPTS frames, one per ACKS
(or ACK) that settles its messages, and ACKS is taken from anyone.

Comparable with Switchboard: ``time`` (one frame in, one out) and ``send`` (five frames
per message).  ``list`` and ``broadcast`` run but are not comparable: LIST gets an empty
answer and BROADCAST reaches nobody.  Every connection's output is written once per
``data_received`` (and once per loop pass for frames forwarded to it), as in Switchboard.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
from collections.abc import Sequence
from typing import Final

from switchboard import defaults
from switchboard.eventloop import run
from switchboard.protocol import (
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    VERSION,
    MessageClass,
    MessageType,
    ReceiptStatus,
    Welcome,
    encode,
)
from switchboard.protocol.codec import FIRST_HEADER_WORD, HEADER_WORDS, LAST_HEADER_WORD
from switchboard.protocol.fastpath import (
    RECEIPT_HEAD,
    SEND_OK_MIDDLE,
    SEND_OK_PREFIX,
    WORD_ACK,
    WORD_FIRST_NON_REQUEST,
    WORD_HELLO,
    WORD_SEND,
    direct_fields,
    encode_receipts,
    message_packer,
    pack_receipt,
    pack_send_ok,
    parse_acks,
    sender_block,
    unpack_ack,
    unpack_send_head,
)
from switchboard.services.runtime import stop_on_signals

from .loadgen import raise_file_limit

_unpack_header = HEADER_WORDS.unpack_from
_pack_ok = struct.Struct("!HBBHIIH").pack
_unpack_u16 = struct.Struct("!H").unpack_from
WORD_ACKS: Final = WORD_ACK - MessageType.ACK + MessageType.ACKS
_RESP: Final = int(MessageClass.RESPONSE)
_OK: Final = int(MessageType.OK)
_DELIVERED: Final = ReceiptStatus.DELIVERED
#: The frame size it announces in WELCOME, and so the largest payload a header may announce.
MAX_FRAME: Final = 1 << 20
MAX_PAYLOAD: Final = MAX_FRAME - HEADER_SIZE


class NullServer:
    """Shared state: connections by id, forwarded messages awaiting their ACK."""

    def __init__(self) -> None:
        self.by_id: dict[int, NullConnection] = {}
        self.unacked: dict[int, tuple[NullConnection, int]] = {}
        self.next_id = 0
        self.next_message = 0
        self.dirty: list[NullConnection] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.flush_scheduled = False

    def mark_dirty(self, conn: NullConnection) -> None:
        """``conn`` has frames caused by another connection: written at the end of this loop
        pass."""
        self.dirty.append(conn)
        if not self.flush_scheduled and self.loop is not None:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush_all)

    def flush_all(self) -> None:
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()


class NullConnection(asyncio.Protocol):
    __slots__ = ("batched", "buf", "client_id", "fields", "out", "server", "transport")

    def __init__(self, server: NullServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.client_id = 0
        #: Its HELLO stated protocol version 2: its receipts come in RECEIPTS frames.
        self.batched = False
        #: The MESSAGE fields this connection's messages carry (sender, address, nick, room).
        self.fields = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        server.next_id += 1
        self.client_id = server.next_id
        server.by_id[self.client_id] = self
        # Address and nickname left empty: a MESSAGE carries only the sender's id.
        self.fields = direct_fields(sender_block(self.client_id, "", 0, ""))
        peer = transport.get_extra_info("peername") or ("", 0)
        welcome = Welcome(
            client_id=self.client_id,
            server_name="null",
            version=PROTOCOL_VERSION,
            heartbeat_ms=0,
            max_frame=MAX_FRAME,
            max_text=1 << 20,
            max_clients=0,
            ip="",
            port=peer[1],
        )
        transport.write(encode(welcome))  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.by_id.pop(self.client_id, None)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        # As lean as Switchboard's own split loop (the same packers, called inline), so that
        # it stays the ceiling: no validation, no per-frame function call of its own.
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        out = self.out
        server = self.server
        by_id = server.by_id
        unacked = server.unacked
        fields = self.fields
        pack_message, prefix, base, block = message_packer(fields, 0, 0)
        while n - pos >= HEADER_SIZE:
            magic, word, request_id, length = _unpack_header(buf, pos)
            if (
                magic != MAGIC
                or not FIRST_HEADER_WORD <= word <= LAST_HEADER_WORD
                or length > MAX_PAYLOAD
            ):
                # The stream cannot be split any further: nothing after this is read.
                buf.clear()
                out.clear()
                if self.transport is not None:
                    self.transport.abort()
                return
            end = pos + HEADER_SIZE + length
            if end > n:
                break
            if word == WORD_SEND:
                target_id, text_len = unpack_send_head(buf, pos + 14)
                target = by_id.get(target_id)
                server.next_message = mid = server.next_message + 1
                if target is not None:
                    target_out = target.out
                    if not target_out and target is not self:
                        server.mark_dirty(target)
                    target_out.append(
                        pack_message(prefix, base + text_len, mid, block, text_len)
                        + buf[pos + 22 : end]
                    )
                    unacked[mid] = (self, target_id)
                out.append(pack_send_ok(SEND_OK_PREFIX, request_id, SEND_OK_MIDDLE, mid, target_id))
            elif word < WORD_FIRST_NON_REQUEST:
                if word == WORD_HELLO and length >= 2:
                    self.batched = _unpack_u16(buf, pos + 14)[0] >= 2
                out.append(_pack_ok(MAGIC, VERSION, _RESP, _OK, request_id, 2, word & 0xFFFF))
            elif word == WORD_ACK and length == 8:
                self.settle((unpack_ack(buf, pos + 14)[0],))
            elif word == WORD_ACKS:
                acked = parse_acks(buf, pos + 14, end)
                if acked:
                    self.settle(acked)
            pos = end
        if pos:
            del buf[:pos]
        self.flush()

    def settle(self, acked: Sequence[int]) -> None:
        """Each sender hears of its messages in ``acked``: one RECEIPT each, or one RECEIPTS
        for all of them to a sender whose HELLO stated version 2."""
        server = self.server
        unacked = server.unacked
        batches: dict[NullConnection, list[int]] = {}
        for message_id in acked:
            entry = unacked.pop(message_id, None)
            if entry is None:
                continue
            sender = entry[0]
            if sender.batched:
                batches.setdefault(sender, []).append(message_id)
                continue
            if not sender.out and sender is not self:
                server.mark_dirty(sender)
            sender.out.append(pack_receipt(RECEIPT_HEAD, message_id, self.client_id, _DELIVERED))
        for sender, ids in batches.items():
            if not sender.out and sender is not self:
                server.mark_dirty(sender)
            sender.out.append(encode_receipts(self.client_id, _DELIVERED, ids))

    def flush(self) -> None:
        out = self.out
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = NullServer()
    server.loop = loop
    listener = await loop.create_server(
        lambda: NullConnection(server), host, port, reuse_address=True, backlog=4096
    )
    bound = listener.sockets[0].getsockname()
    # On stderr, as ``switchboard serve`` logs it: tests and scripts read the port from it.
    print(
        f"null server listening on {bound[0]}:{bound[1]} (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    stop_on_signals(stop)
    await stop.wait()
    listener.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.bench.null_server",
        description="A minimal uvloop server that frames and answers: the benchmark's ceiling.",
    )
    parser.add_argument("--host", default=defaults.HOST)
    parser.add_argument("--port", type=int, default=defaults.PORT + 10)
    args = parser.parse_args(argv)
    # As high as allowed: the benchmark reports failed connects if the limit is too low.
    raise_file_limit(None)
    try:
        run(serve(args.host, args.port))
    except OSError as exc:
        print(f"null server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["NullServer", "main", "serve"]
