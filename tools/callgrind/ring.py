"""The server's split loop under callgrind: 50 connections with fake transports, no sockets.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python tools/callgrind/ring.py send|time ROUNDS

Each round, every connection gets one batch of 32 SENDs to the next one (which then ACKs them
in one batch) or 32 TIME requests.  RING_RATE=1e9 in the environment measures the rate limit's
path (on by default) with a limit that never refuses; RING_PROTOCOL=1 has the clients stay on
protocol version 1 (an ACK and a RECEIPT per message) instead of saying HELLO version 2 and
acknowledging each batch with one ACKS (one RECEIPTS back).  Run it with two round counts
(measure.sh: 5 and 25) and divide the difference of the instructions collected by the
operations: what one delivered message (SEND, MESSAGE, OK, ACK, RECEIPT) or one TIME costs
the server, start-up excluded.
"""

import asyncio
import logging
import os
import struct
import sys

from switchboard.protocol import Ack, Acks, HelloRequest, SendRequest, TimeRequest, encode
from switchboard.server import ServerConfig, SwitchboardServer
from switchboard.server.connection import ClientConnection

logging.getLogger("switchboard.server").setLevel(logging.WARNING)


class Loop:
    def __init__(self):
        self.ready = []

    def call_soon(self, fn, *a):
        self.ready.append((fn, a))
        return self

    def cancel(self):
        pass

    def run(self):
        while self.ready:
            r, self.ready = self.ready, []
            for fn, a in r:
                fn(*a)


class Transport:
    def __init__(self, n):
        self.n = n
        self.written = 0

    def get_extra_info(self, k, d=None):
        return ("127.0.0.1", 40000 + self.n) if k == "peername" else None

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def write(self, data):
        self.written += len(data)

    def get_write_buffer_size(self):
        return 0

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_closing(self):
        return False

    def close(self):
        pass

    def abort(self):
        pass


mode, rounds = sys.argv[1], int(sys.argv[2])
# RING_RATE=1e9: the rate limit on (the default's path) but never refusing.
server = SwitchboardServer(
    ServerConfig(port=0, rate=float(os.environ.get("RING_RATE", "0")), name="cg")
)
loop = Loop()
server._loop = loop

server._all_closed = asyncio.Event()
server.events.refresh()
conns = []
N, W = 50, 32
for i in range(N):
    c = ClientConnection(server)
    c.connection_made(Transport(i))
    conns.append(c)
loop.run()
ids = [c.client_id for c in conns]
batched = os.environ.get("RING_PROTOCOL", "2") != "1"
if batched:
    for c in conns:
        c.data_received(encode(HelloRequest(version=2, request_id=1)))
        loop.run()
text = "x" * 64

pack_q = struct.Struct("!Q").pack
ack_head = encode(Ack(1))[:-8]
if mode == "send":
    sends = [
        b"".join(encode(SendRequest(ids[(i + 1) % N], text, request_id=r + 1)) for r in range(W))
        for i in range(N)
    ]
    for _ in range(rounds):
        for i, c in enumerate(conns):
            first = server.message_ids + 1
            c.data_received(sends[i])
            loop.run()
            target = conns[(i + 1) % N]
            if batched:
                target.data_received(encode(Acks(tuple(range(first, first + W)))))
            else:
                acks = b"".join([ack_head + pack_q(m) for m in range(first, first + W)])
                target.data_received(acks)
            loop.run()
else:
    batch = b"".join(encode(TimeRequest(request_id=r + 1)) for r in range(W))
    for _ in range(rounds):
        for c in conns:
            c.data_received(batch)
            loop.run()
print(mode, rounds, server.message_ids)
