"""The batches cluster nodes write to one another's inboxes (server/cluster_ops.py): every
operation round-trips, and whatever bytes an inbox holds either parse or raise BadOps."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.server.cluster_ops import (
    BadOps,
    FrameOp,
    OksOp,
    ReplyOp,
    SendOp,
    pack_frame,
    pack_oks,
    pack_reply,
    pack_send,
    unpack_ops,
)

sends = st.builds(
    SendOp,
    token=st.integers(0, 2**64 - 1),
    sender_id=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 255),
    target_id=st.integers(0, 2**32 - 1),
    message_id=st.integers(0, 2**64 - 1),
    expires_ms=st.integers(-(2**63), 2**63 - 1),
    frame=st.binary(max_size=200),
    nick=st.text(max_size=20),
)
replies = st.builds(
    ReplyOp, token=st.integers(0, 2**64 - 1), code=st.integers(0, 65535), text=st.text(max_size=50)
)
frames = st.builds(FrameOp, client_id=st.integers(0, 2**32 - 1), frames=st.binary(max_size=200))
oks = st.builds(OksOp, tokens=st.lists(st.integers(0, 2**64 - 1), max_size=20).map(tuple))


def pack(op: SendOp | ReplyOp | OksOp | FrameOp) -> bytes:
    if isinstance(op, SendOp):
        return pack_send(op)
    if isinstance(op, OksOp):
        return pack_oks(list(op.tokens))
    if isinstance(op, ReplyOp):
        return pack_reply(op.token, op.code, op.text)
    return pack_frame(op.client_id, op.frames)


@given(st.lists(st.one_of(sends, replies, oks, frames), max_size=10))
def test_a_batch_round_trips(ops: list[SendOp | ReplyOp | OksOp | FrameOp]) -> None:
    assert list(unpack_ops(b"".join(map(pack, ops)))) == ops


@given(st.binary(max_size=300))
def test_garbage_parses_or_raises_bad_ops(data: bytes) -> None:
    with contextlib.suppress(BadOps):  # anything else fails the test
        list(unpack_ops(data))


def test_a_cut_batch_is_bad_ops() -> None:
    whole = pack_send(SendOp(1, 2, 0, 3, 4, 5, b"frame"))
    for cut in range(1, len(whole)):
        with pytest.raises(BadOps):
            list(unpack_ops(whole[:cut]))
    with pytest.raises(BadOps, match="unknown operation 9"):
        list(unpack_ops(b"\x09"))
