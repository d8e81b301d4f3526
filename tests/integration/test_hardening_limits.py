"""Floods, slow readers and slowloris, over real sockets against an in-process server.

These extend test_server_protocol.py (one rate-limited burst, a frame left half-sent) and
test_server_limits.py (one sender against one reader that never reads): here a flood runs
beside a well-behaved client, several senders pile onto one reader that never reads, and a
slowloris drips a frame byte by byte.
"""

from __future__ import annotations

import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from support.peers import RawPeer
from support.servers import ServerThread, queued_bytes
from switchboard.client import Client
from switchboard.protocol import (
    ErrorCode,
    ErrorResponse,
    Frame,
    NameOk,
    NameRequest,
    Pong,
    Receipt,
    ReceiptStatus,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
    encode,
)

HOST = "127.0.0.1"


# --- floods -----------------------------------------------------------------------------------


def read_answers(peer: RawPeer, count: int, timeout: float = 20) -> dict[int, Any]:
    """Exactly one response per request id 1..count, in order; indications are skipped."""
    answers: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    expected = 1
    while expected <= count:
        frame = peer.next(max(0.0, deadline - time.monotonic()))
        assert frame is not None, f"closed after {len(answers)} of {count} answers"
        if frame.request_id == 0:
            continue  # PING and other indications
        assert frame.request_id == expected, (frame, expected)
        answers[expected] = frame
        expected += 1
    return answers


def test_a_flood_gets_rate_limited_answers_and_others_are_still_served(
    server_factory: Any,
) -> None:
    st: ServerThread = server_factory(rate=500.0, burst=200)
    total = 5_000
    with RawPeer(st.port) as flooder, Client(HOST, st.port, timeout=5) as other:
        flooder.send(b"".join(encode(TimeRequest(request_id=i)) for i in range(1, total + 1)))
        # While the flood is in flight (its answers unread), a person's requests are answered.
        latencies: list[float] = []
        for _ in range(5):
            start = time.monotonic()
            assert other.time().epoch_ms > 0
            latencies.append(time.monotonic() - start)
        answers = read_answers(flooder, total)
        ok = [i for i, f in answers.items() if isinstance(f, TimeOk)]
        limited = [
            i
            for i, f in answers.items()
            if isinstance(f, ErrorResponse) and f.code == ErrorCode.RATE_LIMITED
        ]
        # Every request got exactly one answer: OK or RATE_LIMITED, nothing dropped silently.
        assert len(ok) + len(limited) == total
        assert len(ok) >= 200 and len(limited) > total // 2
        assert ok[:200] == list(range(1, 201))  # the burst is served first
        # The flooder keeps its connection and is served again once the bucket refills
        # (500 tokens/s: a few ms), each retry being answered too.
        for attempt in range(100):
            flooder.send(NameRequest(request_id=total + 1 + attempt))
            reply = flooder.expect(Frame)
            assert reply.request_id == total + 1 + attempt
            if isinstance(reply, NameOk):
                break
            assert isinstance(reply, ErrorResponse) and reply.code == ErrorCode.RATE_LIMITED
            time.sleep(0.01)  # a client backing off, as RATE_LIMITED asks
        assert isinstance(reply, NameOk)
        assert max(latencies) < 2.0, latencies


def test_the_default_rate_limit_never_touches_normal_pipelining(server: ServerThread) -> None:
    # The default bucket (10,000/s, bursts of 20,000) lets 10,000 pipelined requests through.
    with RawPeer(server.port) as peer:
        peer.send(b"".join(encode(TimeRequest(request_id=i)) for i in range(1, 10_001)))
        answers = read_answers(peer, 10_000)
        assert all(isinstance(f, TimeOk) for f in answers.values())


# --- slow readers -----------------------------------------------------------------------------

TEXT = "y" * 4000


def pong_until(stop: threading.Event, peers: list[RawPeer]) -> None:
    """Each peer sends PONG every 0.1 s (any frame is life to the server) until ``stop``."""
    while not stop.wait(0.1):
        for peer in peers:
            peer.send(Pong())


def test_several_senders_and_one_reader_that_never_reads(server_factory: Any) -> None:
    high_water, hard_limit = 64 * 1024, 8 * 1024 * 1024
    st: ServerThread = server_factory(
        heartbeat=0.5, write_high_water=high_water, write_hard_limit=hard_limit
    )
    slow = RawPeer(st.port, rcvbuf=4096)
    senders = [RawPeer(st.port) for _ in range(4)]
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        # The slow reader's queued bytes, as the server sees them, every 10 ms.
        while not sampling.wait(0.01):
            peak[0] = max(peak[0], queued_bytes(st, slow.client_id))

    sampler = threading.Thread(target=sample)
    sampler.start()
    keep_alive: threading.Thread | None = None
    try:
        per_sender, batch = 600, 50

        def flood(peer: RawPeer) -> list[Frame]:
            got: list[Frame] = []
            for first in range(1, per_sender + 1, batch):
                ids = range(first, first + batch)
                peer.send(*[SendRequest(slow.client_id, TEXT, request_id=i) for i in ids])
                for i in ids:
                    reply = peer.expect(Frame)
                    assert reply.request_id == i, reply
                    got.append(reply)
            return got

        # result() re-raises a sender's failed assertion here, and bounds the wait.
        with ThreadPoolExecutor(max_workers=len(senders)) as pool:
            futures = {p.client_id: pool.submit(flood, p) for p in senders}
            results = {client_id: fut.result(timeout=60) for client_id, fut in futures.items()}
        sent_bytes = len(senders) * per_sender * len(TEXT)
        forwarded: dict[int, set[int]] = {}
        for peer in senders:
            replies = results[peer.client_id]
            assert len(replies) == per_sender  # one answer per SEND
            busy = [r for r in replies if isinstance(r, ErrorResponse)]
            assert busy and all(r.code == ErrorCode.RECIPIENT_BUSY for r in busy)
            forwarded[peer.client_id] = {r.message_id for r in replies if isinstance(r, SendOk)}
        # 9.6 MB were sent to it; the server held a bounded amount (high water plus what one
        # loop pass of the four senders' reads can add), far below what was sent.
        assert peak[0] < high_water + 4 * 512 * 1024, peak[0]
        assert peak[0] < sent_bytes / 4
        # The senders stay alive while the slow reader is dropped (raw peers answer no PING:
        # under load the heartbeat pass that drops it could drop them too, receipts unsent).
        keep_alive = threading.Thread(target=pong_until, args=(sampling, senders))
        keep_alive.start()
        # It is silent (the server stopped reading it): dropped after three heartbeats ...
        st.wait_for(lambda s: slow.client_id not in s.directory.client_by_id, timeout=10)
        # ... and every message forwarded to it is settled NOT_DELIVERED, exactly once.
        for peer in senders:
            settled: dict[int, int] = {}
            deadline = time.monotonic() + 10
            while len(settled) < len(forwarded[peer.client_id]):
                assert time.monotonic() < deadline, (len(settled), len(forwarded[peer.client_id]))
                frame = peer.next(max(0.0, deadline - time.monotonic()))
                assert frame is not None, "the server closed a sender"
                if isinstance(frame, Receipt):
                    assert frame.message_id not in settled
                    settled[frame.message_id] = frame.status
            assert set(settled) == forwarded[peer.client_id]
            # (A sender that came late to the race may have had nothing forwarded at all.)
            assert set(settled.values()) <= {ReceiptStatus.NOT_DELIVERED}
        assert any(forwarded.values())
        print(f"peak buffered for the slow reader: {peak[0]} bytes of {sent_bytes} sent")
    finally:
        sampling.set()
        sampler.join(5)
        if keep_alive is not None:
            keep_alive.join(5)
        slow.close()
        for peer in senders:
            peer.close()


# --- slowloris --------------------------------------------------------------------------------


def test_a_frame_dripped_byte_by_byte_is_still_cut_off(server_factory: Any) -> None:
    # A byte every 50 ms keeps the connection "alive" for the heartbeat, but the frame
    # timeout counts from the first byte of the unfinished frame, not from the last byte.
    st: ServerThread = server_factory(frame_timeout=0.5, heartbeat=5.0)
    payload = b"x" * 1000
    frame = encode(SendRequest(1, payload.decode(), request_id=7))
    with RawPeer(st.port) as peer, Client(HOST, st.port, timeout=5) as other:
        start = time.monotonic()
        for i in range(len(frame) - 1):  # never the last byte: the frame stays unfinished
            assert time.monotonic() - start < 5, "the server let the drip go on"
            try:
                peer.sock.sendall(frame[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            # The drip's pace, one byte per 50 ms, until the server speaks: then it is over
            # (expect_error below reads what it said).
            if select.select([peer.sock], [], [], 0.05)[0]:
                break
        peer.expect_error(ErrorCode.IDLE_TIMEOUT, 0)
        assert peer.expect_closed() == []
        assert 0.5 * 0.9 <= time.monotonic() - start < 3.0
        assert other.name() == "test-server"
