"""The Wireshark dissector over the WebSocket transport: tshark finds the protocol's frames
in a capture of ``/ws`` by the subprotocol the upgrade chose (``switchboard.v1``), one frame
per binary message, in both directions.  The capture and tshark helpers are the TCP
session's (tests/e2e/test_dissector.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from test_dissector import (
    assert_stream_decodes,
    capture_tools,
    dissect,
    frames_by_stream,
    start_capture,
)

from switchboard.protocol import (
    WEBSOCKET_SUBPROTOCOL,
    Ack,
    FrameDecoder,
    Message,
    SendRequest,
    TimeRequest,
    encode,
)

HOST = "127.0.0.1"


def test_a_websocket_session_decodes_frame_by_frame(server_factory: Any, tmp_path: Path) -> None:
    capture_tools()
    server = server_factory(name="dissector-ws", http=f"{HOST}:0")
    assert server.server.http is not None
    port = server.server.http.addresses[0][1]
    sent: list[Any] = [TimeRequest(request_id=1), SendRequest(0, "", request_id=2)]
    received: list[Any] = []

    async def session() -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"http://{HOST}:{port}/ws", protocols=(WEBSOCKET_SUBPROTOCOL,)) as ws,
        ):
            local_port: int = ws.get_extra_info("sockname")[1]

            async def frame() -> Any:
                decoder = FrameDecoder()
                decoder.feed((await ws.receive(timeout=10)).data)
                (event,) = list(decoder)
                received.append(event)
                return event

            welcome = await frame()
            sent[1] = SendRequest(welcome.client_id, "to myself, 你好", request_id=2)
            for request in sent:
                await ws.send_bytes(encode(request))
            while not any(isinstance(f, Message) for f in received):
                await frame()
            message = next(f for f in received if isinstance(f, Message))
            sent.append(Ack(message.message_id))
            await ws.send_bytes(encode(sent[-1]))
            while len(received) < 5:  # WELCOME, OK(TIME), OK(SEND), MESSAGE, RECEIPT
                await frame()
            return local_port

    with start_capture(tmp_path, f"tcp port {port}") as capture:
        local_port = asyncio.run(session())
        capture.sync()
    packets = dissect(capture.path, "-d", f"tcp.port=={port},http")
    streams = frames_by_stream(packets, port)
    assert_stream_decodes(streams[(local_port, "sent")], sent, "client -> server")
    assert_stream_decodes(streams[(local_port, "received")], received, "server -> client")
    assert not [p for p in packets if p.expert_groups and "Malformed" in p.expert_groups]
