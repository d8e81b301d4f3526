"""The three split loops (FrameDecoder.frames, the server's split loop, the null server) accept
and refuse the same headers: each reads it with codec.HEADER_WORDS and checks it inline, so
this is what keeps the three copies of that one comparison from drifting apart.

Each loop is given one header and no payload: a header it accepts leaves it waiting for the
payload, one it refuses ends the stream (ProtocolError; ERROR and close; close).
"""

from __future__ import annotations

import asyncio
import struct

from hypothesis import example, given
from hypothesis import strategies as st

from support.transports import FakeTransport
from switchboard.bench.null_server import MAX_FRAME, MAX_PAYLOAD, NullConnection, NullServer
from switchboard.protocol import (
    HEADER_SIZE,
    MAGIC,
    VERSION,
    ErrorResponse,
    FrameDecoder,
    MessageClass,
    ProtocolError,
    Welcome,
)
from switchboard.server import ClientConnection, ServerConfig, SwitchboardServer

_HEADER = struct.Struct("!HBBHII")  # spelled out here, not taken from the code under test

headers = st.builds(
    _HEADER.pack,
    st.one_of(st.just(MAGIC), st.integers(0, 0xFFFF)),
    st.one_of(st.just(VERSION), st.integers(0, 0xFF)),
    st.one_of(st.sampled_from([0, *MessageClass, max(MessageClass) + 1]), st.integers(0, 0xFF)),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF_FFFF),
    # Never 0: a complete frame would be answered, which is not what is compared here.
    st.one_of(
        st.integers(1, 64),
        st.sampled_from([MAX_PAYLOAD, MAX_PAYLOAD + 1]),
        st.integers(1, 0xFFFF_FFFF),
    ),
)


def decoder_accepts(header: bytes) -> tuple[bool, int | None]:
    decoder = FrameDecoder(max_frame=MAX_FRAME)
    decoder.feed(header)
    try:
        assert decoder.next_event() is None
    except ProtocolError as err:
        return False, int(err.code)
    return True, None


def server_accepts(loop: asyncio.AbstractEventLoop, header: bytes) -> tuple[bool, int | None]:
    server = SwitchboardServer(ServerConfig(port=0, rate=0, max_frame=MAX_FRAME, data_dir="none"))
    server._loop = loop
    server._all_closed = asyncio.Event()
    conn = ClientConnection(server)
    transport = FakeTransport(40000)
    conn.connection_made(transport)
    conn.data_received(header)
    events = FrameDecoder(max_frame=1 << 20)
    events.feed(bytes(transport.written))
    answers = [event for event in events if not isinstance(event, Welcome)]
    if not transport.closed:
        assert answers == [], answers
        return True, None
    assert len(answers) == 1 and isinstance(answers[0], ErrorResponse), answers
    return False, int(answers[0].code)


def null_server_accepts(header: bytes) -> bool:
    conn = NullConnection(NullServer())
    transport = FakeTransport(40001)
    conn.connection_made(transport)  # type: ignore[arg-type]
    transport.written.clear()
    conn.data_received(header)
    assert not transport.written
    return not transport.closed


@given(headers)
@example(_HEADER.pack(MAGIC, VERSION, MessageClass.REQUEST, 1, 7, MAX_PAYLOAD))
@example(_HEADER.pack(MAGIC, VERSION, MessageClass.REQUEST, 1, 7, MAX_PAYLOAD + 1))
@example(_HEADER.pack(MAGIC, VERSION, min(MessageClass) - 1, 1, 7, 5))
@example(_HEADER.pack(MAGIC, VERSION, max(MessageClass) + 1, 1, 7, 5))
@example(_HEADER.pack(MAGIC, VERSION + 1, MessageClass.REQUEST, 1, 7, 5))
@example(_HEADER.pack(MAGIC ^ 1, VERSION, MessageClass.REQUEST, 1, 7, 5))
def test_the_three_split_loops_accept_and_refuse_the_same_headers(header: bytes) -> None:
    assert len(header) == HEADER_SIZE
    loop = asyncio.new_event_loop()
    try:
        by_decoder = decoder_accepts(header)
        by_server = server_accepts(loop, header)
    finally:
        loop.close()
    # The server answers with the decoder's own error (it calls decoder.reject).
    assert by_server == by_decoder
    assert null_server_accepts(header) == by_decoder[0]
