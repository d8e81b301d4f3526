"""Pipelining and many clients at once: every response matched to its request, every
message received exactly once, every SEND answered exactly once."""

from __future__ import annotations

import collections
import dataclasses
import selectors
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from support.peers import RawPeer
from support.servers import ServerThread
from switchboard.client import Client
from switchboard.protocol import (
    ErrorCode,
    ErrorResponse,
    Event,
    Frame,
    ListOk,
    ListRequest,
    Message,
    NameOk,
    NameRequest,
    PingOk,
    PingRequest,
    Receipt,
    ReceiptStatus,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
    encode,
)

HOST = "127.0.0.1"


def test_a_connections_requests_are_answered_in_order(server: ServerThread) -> None:
    kinds: list[tuple[Frame, type[Frame]]] = [
        (TimeRequest(), TimeOk),
        (NameRequest(), NameOk),
        (ListRequest(), ListOk),
        (PingRequest(), PingOk),
        (SendRequest(999_999, "x"), ErrorResponse),
    ]
    with RawPeer(server.port) as peer:
        # Arbitrary, non-monotonic request ids: the server echoes whatever it was given.
        ids = [(i * 7919 + 13) % 100_003 + 1 for i in range(500)]
        plan = [(kinds[i % len(kinds)], rid) for i, rid in enumerate(ids)]
        peer.send(b"".join(encode(_with_id(req, rid)) for (req, _), rid in plan))
        for (_, expected), rid in plan:
            got = peer.expect(expected)
            assert got.request_id == rid


def _with_id(frame: Frame, request_id: int) -> Frame:
    return dataclasses.replace(frame, request_id=request_id)


def test_fifty_clients_each_pipelining_a_hundred_time_requests(server: ServerThread) -> None:
    """50 raw connections each write 100 TIME requests in one go; one thread reads them all."""
    peers = [RawPeer(server.port) for _ in range(50)]
    try:
        expected: dict[RawPeer, collections.deque[int]] = {}
        for n, peer in enumerate(peers):
            ids = [n * 1_000_000 + i * 3 + 1 for i in range(100)]  # unique across the test
            expected[peer] = collections.deque(ids)
        before = time.time_ns() // 1_000_000
        for peer in peers:
            peer.send(b"".join(encode(TimeRequest(request_id=rid)) for rid in expected[peer]))
        with selectors.DefaultSelector() as sel:
            for peer in peers:
                peer.sock.setblocking(False)
                sel.register(peer.sock, selectors.EVENT_READ, peer)
            deadline = time.monotonic() + 30
            open_peers = len(peers)
            while open_peers:
                assert time.monotonic() < deadline, "responses still missing after 30 s"
                for key, _ in sel.select(timeout=1.0):
                    peer = key.data
                    data = peer.sock.recv(65536)
                    assert data, "the server closed a connection"
                    peer.decoder.feed(data)
                    for event in peer.decoder:
                        assert isinstance(event, TimeOk), event
                        # In order and matched: the next id this connection asked for.
                        assert event.request_id == expected[peer].popleft()
                        assert before <= event.epoch_ms <= time.time_ns() // 1_000_000
                    if not expected[peer]:
                        sel.unregister(peer.sock)
                        open_peers -= 1
    finally:
        for peer in peers:
            peer.close()


def test_fifty_library_clients_pipelining_from_threads(server: ServerThread) -> None:
    """The same through the blocking Client: each thread's 100 futures hold their own answer."""
    answered: list[int] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        received: list[int] = []

        def tracer(direction: str, event: Event, raw: bytes | None) -> None:
            if direction == "<<-" and isinstance(event, TimeOk):
                received.append(event.request_id)

        with Client(HOST, server.port, timeout=20, trace=tracer) as client:
            futures = [client.submit(TimeRequest()) for _ in range(100)]
            results = [f.result(20) for f in futures]
        # Each future got the response carrying its own request's id ...
        assert all(isinstance(r, TimeOk) for r in results)
        ids = [r.request_id for r in results]
        assert len(set(ids)) == 100
        # ... and the wire delivered them in the order they were asked for.
        assert received == ids
        with lock:
            answered.append(len(results))

    with ThreadPoolExecutor(max_workers=50) as pool:
        for f in [pool.submit(run, n) for n in range(50)]:
            f.result(60)
    assert answered == [100] * 50


def test_twenty_clients_sending_to_one_another_at_once(server: ServerThread) -> None:
    n = 20
    clients = [Client(HOST, server.port, timeout=20) for _ in range(n)]
    try:
        ids = [c.client_id for c in clients]
        barrier = threading.Barrier(n)
        responses: list[list[Any]] = [[] for _ in range(n)]

        def run(i: int) -> None:
            me = clients[i]
            barrier.wait(10)
            futures = []
            for j in range(n):  # everyone, oneself included
                futures.append(me.submit(SendRequest(ids[j], f"{i}->{j} 消息 ✉️")))
            responses[i] = [f.result(20) for f in futures]

        with ThreadPoolExecutor(max_workers=n) as pool:
            for f in [pool.submit(run, i) for i in range(n)]:
                f.result(60)

        # Every SEND answered once, with SendOk for the right target.
        for i in range(n):
            assert [type(r) for r in responses[i]] == [SendOk] * n
            assert [r.target for r in responses[i]] == ids
        message_ids = [r.message_id for rs in responses for r in rs]
        assert len(set(message_ids)) == n * n

        # Every message received exactly once, by its addressee.
        deadline = time.monotonic() + 20
        for j, client in enumerate(clients):
            texts: list[str] = []
            receipts: dict[int, int] = {}
            while len(texts) < n or len(receipts) < n:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"client {j}: {len(texts)} messages, {len(receipts)} receipts"
                frame = client.next_indication(timeout=remaining)
                if isinstance(frame, Message):
                    texts.append(frame.text)
                    assert frame.sender_id == ids[int(frame.text.split("->")[0])]
                elif isinstance(frame, Receipt):
                    assert frame.message_id not in receipts, "two receipts for one message"
                    receipts[frame.message_id] = frame.status
            assert sorted(texts) == sorted(f"{i}->{j} 消息 ✉️" for i in range(n))
            own = {r.message_id for r in responses[j]}
            assert set(receipts) == own
            assert set(receipts.values()) == {ReceiptStatus.DELIVERED}
        for client in clients:  # nothing extra arrived afterwards
            assert client.next_indication(timeout=0.02) is None
    finally:
        for client in clients:
            client.close()


def test_unknown_targets_in_a_storm_are_each_answered(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        peer.send(*[SendRequest(10_000 + i, "?", request_id=i + 1) for i in range(300)])
        for i in range(300):
            peer.expect_error(ErrorCode.NO_SUCH_CLIENT, i + 1)
