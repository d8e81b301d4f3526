"""Chaos with accounting: 20 clients send to one another while a random third of them
disconnect abruptly (RST, through SO_LINGER 0) or go silent (stop reading, writing and
answering PINGs).

Accounting, checked from what each client saw on the wire:
- every SEND from a surviving client gets exactly one response (OK or ERROR);
- every forwarded message gets exactly one RECEIPT (at most one in general), DELIVERED
  only if its recipient received it, NOT_DELIVERED only if its recipient was a victim;
- no message is delivered twice, and every MESSAGE delivered was sent, by the client it
  names, to the client that got it.

The server runs as ``switchboard serve`` in a subprocess; its resident memory after everyone
has left must return to its baseline, measured after an identical warm-up round (so that the
baseline already holds what the allocator keeps from a round like this) within MEMORY_MARGIN.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from support.servers import ServerProcess, start_server_process
from support.services import open_fds
from support.waiting import wait_until, wait_until_async
from switchboard.bench.procstat import rss_kib
from switchboard.client import Client
from switchboard.protocol import (
    Ack,
    ErrorResponse,
    FrameDecoder,
    Message,
    MessageClass,
    Ping,
    Pong,
    Receipt,
    ReceiptStatus,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
    Welcome,
    encode,
)

CLIENTS = 20
SENDS_PER_CLIENT = 300
HEARTBEAT = 0.5
#: Resident memory the server may keep above its post-warm-up baseline: allocator noise
#: (pymalloc arenas, the kernel's accounting of freed pages), not state left behind.
MEMORY_MARGIN = 3 * 1024 * 1024
SEED = random.randrange(1 << 30)


@dataclass
class Peer:
    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    client_id: int = 0
    fate: str = "survivor"  # or "rst", "silent"
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(max_frame=1 << 24))
    sent: dict[int, tuple[int, str]] = field(default_factory=dict)  # request id -> target, text
    responses: dict[int, object] = field(default_factory=dict)
    duplicate_responses: list[object] = field(default_factory=list)
    receipts: dict[int, list[int]] = field(default_factory=dict)
    received: list[Message] = field(default_factory=list)
    stray: list[object] = field(default_factory=list)
    reading: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> None:
        if self.fate != "silent" and not self.writer.is_closing():
            self.writer.write(data)


async def connect(index: int, host: str, port: int) -> Peer:
    reader, writer = await asyncio.open_connection(host, port)
    peer = Peer(index, reader, writer)
    while not peer.client_id:
        data = await reader.read(4096)
        assert data, "closed before WELCOME"
        peer.decoder.feed(data)
        for event in peer.decoder:
            assert isinstance(event, Welcome)
            peer.client_id = event.client_id
    peer.reading = asyncio.create_task(read_loop(peer))
    return peer


async def read_loop(peer: Peer) -> None:
    while True:
        try:
            data = await peer.reader.read(256 * 1024)
        except ConnectionError:
            return
        if not data:
            return
        peer.decoder.feed(data)
        for event in peer.decoder:
            if isinstance(event, Message):
                peer.received.append(event)
                peer.write(encode(Ack(event.message_id)))
            elif isinstance(event, Receipt):
                peer.receipts.setdefault(event.message_id, []).append(event.status)
            elif isinstance(event, Ping):
                peer.write(encode(Pong()))
            elif getattr(event, "MESSAGE_CLASS", None) == MessageClass.RESPONSE:
                rid = event.request_id
                if rid in peer.responses:
                    peer.duplicate_responses.append(event)
                peer.responses[rid] = event
            else:
                peer.stray.append(event)


async def send_loop(peer: Peer, ids: list[int], rng: random.Random) -> None:
    for n in range(1, SENDS_PER_CLIENT + 1):
        if peer.fate != "survivor":
            return
        target = rng.choice([i for i in ids if i != peer.client_id])
        text = f"{peer.client_id}:{n}"
        peer.sent[n] = (target, text)
        peer.write(encode(SendRequest(target, text, request_id=n)))
        if n % 10 == 0:
            await peer.writer.drain()
            await asyncio.sleep(0.002)  # interleave the clients; not a wait for anything


def kill(peer: Peer, fate: str) -> None:
    peer.fate = fate
    if fate == "rst":
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.writer.transport.abort()
    elif peer.reading is not None:
        peer.reading.cancel()  # silent: reads nothing, writes nothing, answers no PING
        peer.writer.transport.pause_reading()


async def chaos_round(host: str, port: int, rng: random.Random) -> list[Peer]:
    # One bound on the whole round: a connect or drain that never completes fails the test.
    async with asyncio.timeout(60):
        peers = [await connect(i, host, port) for i in range(CLIENTS)]
        ids = [p.client_id for p in peers]
        senders = [asyncio.create_task(send_loop(p, ids, rng)) for p in peers]
        # The kills must land while traffic flows: a quarter of all SENDs out first.
        await wait_until_async(
            lambda: sum(len(p.sent) for p in peers) >= CLIENTS * SENDS_PER_CLIENT // 4,
            20,
            "a quarter of the SENDs",
        )
        victims = rng.sample(peers, round(CLIENTS / 3))
        for n, victim in enumerate(victims):
            kill(victim, "rst" if n % 2 == 0 else "silent")
            await asyncio.sleep(rng.uniform(0, 0.05))
        await asyncio.gather(*senders)
        survivors = [p for p in peers if p.fate == "survivor"]
        await wait_until_async(
            lambda: all(len(p.responses) >= len(p.sent) for p in survivors), 20, "responses"
        )

        def receipts_settled() -> bool:
            return all(
                all(
                    r.message_id in p.receipts
                    for r in p.responses.values()
                    if isinstance(r, SendOk)
                )
                for p in survivors
            )

        # Silent victims are dropped after three heartbeats; then their receipts settle.
        await wait_until_async(receipts_settled, 3 * HEARTBEAT + 10, "receipts")
        # A barrier, not a pause: the server answers a connection's requests in order, so a
        # TIME answered on each survivor's connection arrives after everything queued for it
        # before, any duplicate receipt or response included.
        barrier = SENDS_PER_CLIENT + 1
        for p in survivors:
            p.write(encode(TimeRequest(request_id=barrier)))
        await wait_until_async(
            lambda: all(barrier in p.responses for p in survivors), 10, "the barrier TIMEs"
        )
        for p in survivors:
            assert isinstance(p.responses.pop(barrier), TimeOk)
        for p in peers:
            if p.reading is not None:
                p.reading.cancel()
            p.writer.transport.abort()
        return peers


def check_accounting(peers: list[Peer]) -> Counter[str]:
    by_id = {p.client_id: p for p in peers}
    tally: Counter[str] = Counter()
    delivered_ids: set[int] = set()
    for p in peers:
        for msg in p.received:
            # Sent by the client it names, to this client, with the text that was sent.
            sender = by_id[msg.sender_id]
            n = int(msg.text.split(":")[1])
            assert msg.text.split(":")[0] == str(sender.client_id), msg
            assert sender.sent.get(n) == (p.client_id, msg.text), msg
            assert msg.message_id not in delivered_ids, f"delivered twice: {msg}"
            delivered_ids.add(msg.message_id)
            tally["delivered"] += 1
    for p in peers:
        assert p.duplicate_responses == [] and p.stray == []
        if p.fate != "survivor":
            continue
        assert set(p.responses) == set(p.sent), "one response per SEND"
        for n, reply in p.responses.items():
            target, _ = p.sent[n]
            if isinstance(reply, SendOk):
                statuses = p.receipts[reply.message_id]
                assert len(statuses) == 1, f"receipts {statuses} for one message"
                if statuses[0] == ReceiptStatus.DELIVERED:
                    assert reply.message_id in delivered_ids
                    tally["receipt DELIVERED"] += 1
                else:
                    assert by_id[target].fate != "survivor", "a survivor's ACK was lost"
                    tally["receipt NOT_DELIVERED"] += 1
            else:
                assert isinstance(reply, ErrorResponse), reply
                tally[f"error {reply.name}"] += 1
        forwarded = {r.message_id for r in p.responses.values() if isinstance(r, SendOk)}
        assert set(p.receipts) <= forwarded, "a receipt for a message never sent"
    return tally


@pytest.fixture
def chaos_server() -> Iterator[ServerProcess]:
    sp = start_server_process("--heartbeat", str(HEARTBEAT))
    yield sp
    assert sp.stop() == 0
    assert not [line for line in sp.log if "Traceback" in line], sp.log


def wait_for_no_clients(sp: ServerProcess) -> None:
    with Client(sp.host, sp.port, timeout=5) as checker:
        assert wait_until(
            lambda: [c.client_id for c in checker.list_clients()] == [checker.client_id],
            10,
            step=0.05,
        ), "connections left behind"


def test_chaos_with_accounting(chaos_server: ServerProcess) -> None:
    print(f"chaos seed {SEED}")
    sp = chaos_server
    # Warm-up: the same round once, so the baseline holds the allocator's high-water mark.
    asyncio.run(chaos_round(sp.host, sp.port, random.Random(SEED + 1)))
    wait_for_no_clients(sp)
    baseline = rss_kib(sp.proc.pid) * 1024
    baseline_fds = open_fds(sp.proc.pid)
    peers = asyncio.run(chaos_round(sp.host, sp.port, random.Random(SEED)))
    tally = check_accounting(peers)
    wait_for_no_clients(sp)
    after = rss_kib(sp.proc.pid) * 1024
    # The checker's own connection closes last.
    assert wait_until(lambda: open_fds(sp.proc.pid) <= baseline_fds, 5, step=0.02), (
        "descriptors left open"
    )
    fates = Counter(p.fate for p in peers)
    print(f"fates {dict(fates)}; {dict(tally)}; RSS {baseline / 2**20:.1f} -> "
          f"{after / 2**20:.1f} MiB")  # fmt: skip
    assert fates["rst"] >= 3 and fates["silent"] >= 3
    assert tally["receipt DELIVERED"] > 0 and tally["receipt NOT_DELIVERED"] > 0
    assert after <= baseline + MEMORY_MARGIN, (baseline, after)
