"""Review of issue 20's shared sentinels (registry.NO_OUT, registry.NO_ACKS, the lazy decoder):
paths where a connection's write queue or ledger is touched after it was dropped or shed."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from support.peers import RawPeer
from support.servers import ServerThread, shrink_send_buffer
from switchboard.protocol import ErrorCode, SendRequest, encode

#: Non-ASCII: the SEND takes the checked path (its UTF-8 validated), which forwards through
#: the target's send_raw and then queues its OK on the sender's own list.  200 KB: far more
#: than the kernel takes for a client whose buffers are shrunk, so that the MESSAGE's write
#: leaves more than the hard limit in the transport whatever the kernel took.
TEXT = "é" * 100_000


def test_a_self_send_that_drops_its_slow_reader_is_no_internal_error(
    server_factory: Any,
) -> None:
    # A client that sends to itself and never reads: the MESSAGE's own write passes the
    # high-water mark and the hard limit at once, so the connection is aborted inside the
    # SEND (too slow).  Its OK must then be dropped with the rest, not appended to the shared
    # empty write queue (an AttributeError: "internal error handling #N" and a traceback in
    # the log for every such client).
    st: ServerThread = server_factory(
        write_high_water=1024,
        write_hard_limit=2048,
        max_text=len(TEXT.encode()),
        max_frame=1024 * 1024,
        heartbeat=60.0,
    )
    with RawPeer(st.port, rcvbuf=4096) as hostile:
        shrink_send_buffer(st, hostile.client_id)
        me = hostile.client_id
        pipelined = b"".join(encode(SendRequest(me, TEXT, request_id=i)) for i in range(1, 6))
        sender = threading.Thread(target=_send_quietly, args=(hostile, pipelined))
        sender.start()
        try:
            st.wait_for(lambda s: me not in s.directory.client_by_id, timeout=30.0)
        finally:
            sender.join(30.0)

        def counts() -> tuple[int, int]:
            metrics = st.server.metrics
            return metrics.errors.get(ErrorCode.INTERNAL_ERROR, 0), metrics.slow_reader_drops

        internal, drops = st.call(counts)
    assert internal == 0, "a dropped slow reader's SEND ended in an internal error"
    assert drops == 1


def _send_quietly(peer: RawPeer, data: bytes) -> None:
    # The server drops the connection while it is still being written to.
    with contextlib.suppress(OSError):
        peer.sock.sendall(data)
