"""Room lines through a RawPeer: JOIN with its replay dropped, BROADCASTs pipelined, HISTORY
pages (the history tests of one server and of a cluster share them)."""

from __future__ import annotations

from support.peers import RawPeer
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    HistoryMode,
    HistoryOk,
    HistoryRequest,
    JoinOk,
    JoinRequest,
    Message,
    MessageFlags,
)


def join(peer: RawPeer, room: str, request_id: int = 1) -> JoinOk:
    """JOIN, with its replay read and dropped."""
    peer.send(JoinRequest(room, request_id=request_id))
    ok = peer.expect(JoinOk)
    for _ in range(ok.history):
        peer.expect(Message)
    return ok


def say(peer: RawPeer, room: str, texts: list[str], chunk: int = 500) -> list[int]:
    """BROADCAST each text (pipelined ``chunk`` at a time); the ids their OKs gave."""
    ids: list[int] = []
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        peer.send(*(BroadcastRequest(room, t, request_id=i + 1) for i, t in enumerate(part)))
        for i in range(len(part)):
            ok = peer.expect(BroadcastOk)
            assert ok.request_id == i + 1  # answered in request order
            ids.append(ok.message_id)
    return ids


def page(
    peer: RawPeer,
    room: str,
    mode: HistoryMode,
    anchor: int = 0,
    until: int = 0,
    limit: int = 0,
    request_id: int = 7,
) -> tuple[HistoryOk, list[Message]]:
    """One HISTORY page: its HistoryOk and its lines (each marked as history)."""
    peer.send(HistoryRequest(room, mode, anchor, until, limit, request_id=request_id))
    ok = peer.expect(HistoryOk)
    assert ok.request_id == request_id
    lines = [peer.expect(Message) for _ in range(ok.count)]
    assert all(m.flags & MessageFlags.HISTORY for m in lines)
    return ok, lines


def ids_of(lines: list[Message]) -> list[int]:
    return [m.message_id for m in lines]
