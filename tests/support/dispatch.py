"""A token server with no listener driven by fake transports (no sockets), and one example of
every request type: the socket-free dispatch and directory tests share them."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
from switchboard.server import ClientConnection, ServerConfig, SwitchboardServer

TOKEN = "s3cret-token"


class Harness:
    """A token server with no listener, on an event loop of its own (for its call_soon)."""

    def __init__(self, token_file: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = SwitchboardServer(
            ServerConfig(
                port=0, rate=0, name="dispatch", auth_token_file=str(token_file), data_dir="none"
            )
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
        conn.data_received(encode(req))
        self.settle()
        return self.read(transport, decoder)

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
