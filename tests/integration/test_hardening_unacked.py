"""Messages a recipient never acknowledges: what the server keeps for them is bounded.

A client that reads its MESSAGEs but never ACKs them made the server keep one entry per
message (its sender, for the RECEIPT) for as long as it stayed connected: 300,000 messages
grew the server by 19 MiB, and its disconnect, which settles each of them NOT_DELIVERED,
held the event loop 0.3 s.  Past ``max_unacked`` unacknowledged messages, a SEND (or
SEND_NICK) to it gets RECIPIENT_BUSY, on the inline forwarding path and the handler's alike;
once it acknowledges, it can be sent to again.
"""

from __future__ import annotations

from collections.abc import Callable

from support.peers import RawPeer
from support.servers import ServerThread
from switchboard import defaults
from switchboard.protocol import (
    Ack,
    ErrorCode,
    ErrorResponse,
    Message,
    NickOk,
    NickRequest,
    Receipt,
    ReceiptStatus,
    SendNickOk,
    SendNickRequest,
    SendOk,
    SendRequest,
)

LIMIT = 8


def answers(peer: RawPeer, count: int) -> list[str]:
    """The next ``count`` answers, each as 'OK' or its error code's name."""
    seen = []
    while len(seen) < count:
        frame = peer.next(10)
        assert frame is not None, "the sender was disconnected"
        if isinstance(frame, SendOk | SendNickOk):
            seen.append("OK")
        elif isinstance(frame, ErrorResponse):
            assert frame.message, frame
            seen.append(frame.name)
    return seen


def unacked_messages(peer: RawPeer, count: int) -> list[int]:
    """Read ``count`` MESSAGEs without acknowledging them; their ids."""
    ids = []
    while len(ids) < count:
        frame = peer.next(10)
        if isinstance(frame, Message):
            ids.append(frame.message_id)
    return ids


def test_sends_past_the_unacked_limit_get_recipient_busy_on_every_path(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = server_factory(max_unacked=LIMIT)
    with RawPeer(st.port) as silent, RawPeer(st.port) as sender:
        silent.send(NickRequest(request_id=1, nick="silent"))
        silent.expect(NickOk)
        # ASCII SENDs take the inline path, non-ASCII ones and SEND_NICK the handlers.
        texts = ["ascii", "é non-ascii"]
        target = silent.client_id
        sender.send(*[SendRequest(target, texts[i % 2], request_id=i + 1) for i in range(LIMIT)])
        assert answers(sender, LIMIT) == ["OK"] * LIMIT
        ids = unacked_messages(silent, LIMIT)
        sender.send(
            SendRequest(target=silent.client_id, text="ascii", request_id=101),
            SendRequest(target=silent.client_id, text="é", request_id=102),
            SendNickRequest(nick="silent", text="by name", request_id=103),
        )
        assert answers(sender, 3) == ["RECIPIENT_BUSY"] * 3
        silent.send(Ack(ids[0]))  # one acknowledged: room for one more
        receipt = sender.expect(Receipt)
        assert (receipt.message_id, receipt.status) == (ids[0], ReceiptStatus.DELIVERED)
        sender.send(SendNickRequest(nick="silent", text="by name", request_id=104))
        assert answers(sender, 1) == ["OK"]
        assert st.call(lambda: len(st.server.client_by_id[silent.client_id].awaiting_ack)) == LIMIT


def test_the_default_limit_holds_for_a_reader_that_never_acknowledges(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = server_factory()
    limit = defaults.MAX_UNACKED
    with RawPeer(st.port) as silent, RawPeer(st.port) as sender:
        target = silent.client_id
        sender.send(*[SendRequest(target, "m", request_id=i + 1) for i in range(limit + 3)])
        seen = answers(sender, limit + 3)
        unacked_messages(silent, limit)
        assert seen == ["OK"] * limit + [ErrorCode.RECIPIENT_BUSY.name] * 3
        assert st.call(lambda: len(st.server.client_by_id[silent.client_id].awaiting_ack)) == limit
