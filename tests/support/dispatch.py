"""A token server with no listener driven by fake transports (no sockets), and one example of
every request type: the socket-free dispatch and directory tests share them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from support.transports import FakeTransport
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    Event,
    Frame,
    FrameDecoder,
    HelloOk,
    HelloRequest,
    HistoryOk,
    HistoryRequest,
    JoinOk,
    JoinRequest,
    LeaveOk,
    LeaveRequest,
    ListOk,
    ListRequest,
    NameOk,
    NameRequest,
    NickOk,
    NickRequest,
    PingOk,
    PingRequest,
    RoomsOk,
    RoomsRequest,
    SendNickOk,
    SendNickRequest,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
    encode,
)
from switchboard.server import ClientConnection, ServerConfig, SwitchboardServer, Tracer
from switchboard.server.states import ConnectionState

TOKEN = "s3cret-token"


class Harness:
    """A token server with no listener, on an event loop of its own (for its call_soon)."""

    def __init__(self, token_file: Path, *, trace: Tracer | None = None, **settings: Any) -> None:
        self.loop = asyncio.new_event_loop()
        settings = {"rate": 0, "data_dir": "none", **settings}
        self.server = SwitchboardServer(
            ServerConfig(port=0, name="dispatch", auth_token_file=str(token_file), **settings),
            trace=trace,
        )
        self.server._loop = self.loop
        self.server._all_closed = asyncio.Event()
        self.server.events.refresh()
        self.ports = iter(range(40000, 41000))

    def connect(self) -> tuple[ClientConnection, FakeTransport, FrameDecoder]:
        conn = ClientConnection(self.server)
        transport = FakeTransport(next(self.ports))
        conn.connection_made(transport)
        self.settle()
        decoder = FrameDecoder(max_frame=1 << 20)
        welcome = self.read(transport, decoder)
        assert [type(e).__name__ for e in welcome] == ["Welcome"], welcome
        return conn, transport, decoder

    def settle(self) -> None:
        """Run what the connection scheduled (flushes to other clients)."""
        self.loop.run_until_complete(asyncio.sleep(0))

    def read(self, transport: FakeTransport, decoder: FrameDecoder) -> list[Event]:
        decoder.feed(bytes(transport.written))
        transport.written.clear()
        return list(decoder)

    def ask(
        self, conn: ClientConnection, transport: FakeTransport, decoder: FrameDecoder, req: Frame
    ) -> list[Event]:
        self.feed(conn, encode(req))
        return self.read(transport, decoder)

    def feed(self, conn: ClientConnection, data: bytes) -> None:
        """``data`` read by ``conn``, inside the loop as a transport would deliver it, and
        the loop run until the connection has taken all of it (a batch that outlasts its time
        slice yields and goes on in a later loop pass), then settled."""

        async def read() -> None:
            conn.data_received(data)
            for _ in range(10_000):
                if not conn.buffered or conn.state > ConnectionState.READY:
                    break
                await asyncio.sleep(0)

        self.loop.run_until_complete(read())
        self.settle()

    def close(self) -> None:
        self.loop.close()


#: One well-formed example of every request type, in an order in which each can succeed
#: (the JOIN before the BROADCAST and the LEAVE), and the answer each gets once HELLO is done.
REQUESTS: list[tuple[Frame, type[Frame]]] = [
    (HelloRequest(nick="amy", token=TOKEN, request_id=1), HelloOk),
    (TimeRequest(request_id=2), TimeOk),
    (NameRequest(request_id=3), NameOk),
    (ListRequest("", request_id=4), ListOk),
    (SendRequest(0, "hello bob", request_id=5), SendOk),  # target: bob's id, set below
    (NickRequest("amelia", request_id=6), NickOk),
    (JoinRequest("lobby", request_id=7), JoinOk),
    (BroadcastRequest("lobby", "hi all", request_id=8), BroadcastOk),
    (HistoryRequest("lobby", request_id=13), HistoryOk),
    (LeaveRequest("lobby", request_id=9), LeaveOk),
    (PingRequest(request_id=10), PingOk),
    (SendNickRequest("bob", "hi bob", request_id=11), SendNickOk),
    (RoomsRequest("", request_id=12), RoomsOk),
]
