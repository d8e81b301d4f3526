"""What an idle connection holds (issue 20: idle memory): no decoder, no acknowledgement
ledger and no write queue of its own until it needs one, and none again once it has been
idle for a heartbeat interval; the shared empty ones are never written to."""

from __future__ import annotations

from typing import Any

from support.peers import RawPeer
from support.servers import ServerThread
from switchboard.protocol import (
    Ack,
    Message,
    Ping,
    Receipt,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
    encode,
)
from switchboard.server.registry import NO_ACKS, NO_OUT

BEAT = 0.3


def held(st: ServerThread, client_id: int) -> tuple[bool, bool, bool, int]:
    """(has a decoder, has a ledger of its own, has a write queue of its own, bytes buffered)
    of a client on the server."""

    def read() -> tuple[bool, bool, bool, int]:
        conn: Any = st.server.directory.client_by_id[client_id]
        return (
            conn.decoder is not None,
            conn.awaiting_ack is not NO_ACKS,
            conn.out is not NO_OUT,
            conn.buffered,
        )

    return st.call(read)


def test_a_welcomed_connection_holds_no_decoder_ledger_or_queue(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        assert held(server, peer.client_id) == (False, False, False, 0)
        # A request answered in one read leaves none behind either.
        peer.send(TimeRequest(request_id=1))
        assert peer.expect(TimeOk).request_id == 1
        assert held(server, peer.client_id) == (False, False, False, 0)


def test_a_partial_frame_is_kept_in_a_decoder_made_for_it(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        frame = encode(TimeRequest(request_id=7))
        peer.send(frame[:5])
        server.wait_for(lambda s: s.directory.client_by_id[peer.client_id].buffered == 5)
        assert held(server, peer.client_id)[0]
        peer.send(frame[5:] + encode(TimeRequest(request_id=8)))
        assert [peer.expect(TimeOk).request_id for _ in range(2)] == [7, 8]


def test_the_ledger_is_made_for_the_first_message_and_given_back_once_idle(
    server_factory: Any,
) -> None:
    st = server_factory(heartbeat=BEAT)
    with RawPeer(st.port) as alice, RawPeer(st.port) as bob:
        # A partial frame from bob too: the decoder it leaves is given back with the ledger.
        bob.send(encode(TimeRequest(request_id=1))[:3])
        alice.send(*(SendRequest(bob.client_id, f"m{i}", request_id=i) for i in range(1, 4)))
        assert [alice.expect(SendOk).request_id for _ in range(3)] == [1, 2, 3]
        messages = [bob.expect(Message) for _ in range(3)]
        assert held(st, bob.client_id)[:2] == (True, True)
        bob.send(encode(TimeRequest(request_id=1))[3:])
        assert bob.expect(TimeOk).request_id == 1
        bob.send(*(Ack(m.message_id) for m in messages))
        assert [alice.expect(Receipt).message_id for _ in range(3)] == [
            m.message_id for m in messages
        ]
        # Silent for an interval: PINGed, and its empty decoder and ledger go.
        bob.expect(Ping, skip_pings=False, timeout=5)
        assert held(st, bob.client_id)[:2] == (False, False)
        # The shared empty ones were never written to, and the next message still arrives.
        assert st.call(lambda: len(NO_ACKS)) == 0
        alice.send(SendRequest(bob.client_id, "again", request_id=9))
        assert alice.expect(SendOk).request_id == 9
        assert bob.expect(Message).text == "again"
        assert held(st, bob.client_id)[1]
