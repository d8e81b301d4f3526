"""What /metrics shows: plain counters kept by the server, exported at scrape time.

The hot path only adds to ints (``ServerMetrics``), once per table call or per run of
frames, never per frame where a run can be counted by a division; ``MetricsCollector``, a
prometheus_client Collector, turns them into metric families when /metrics is read
(docs/BENCHMARKS.md measures what the counting costs per SEND and per TIME).  No label
names a client or a room: the label values are frame types, error codes, transports and
close reasons, all from fixed sets.

SEND-to-RECEIPT time is sampled: the first SEND of each run (and every SEND_NICK, and every
SEND the checked path forwards) is timed from its forward to its recipient's ACK; the first
ACK of each run of ACKs is looked up in ``receipt_samples`` (one dict lookup per run, not per
ACK: a recipient acknowledges in order, so a run of ACKs starts where a run of SENDs did,
and a sample its ACK run does not start with is forgotten after RECEIPT_SAMPLE_TTL_S).
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from switchboard import __version__, eventloop
from switchboard.protocol import ErrorCode, MessageClass, MessageType
from switchboard.protocol.fastpath import header_word

from .registry import Peer

#: Upper bounds of the SEND-to-RECEIPT histogram's buckets, in seconds: a loopback round trip
#: is a fraction of a millisecond, a browser on a phone some hundreds.
RECEIPT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Sampled messages awaiting their ACK at most; past it no more are sampled until some are
#: acknowledged or forgotten (``forget_samples``, by the heartbeat): a bound on the memory
#: of recipients that never acknowledge.
MAX_RECEIPT_SAMPLES = 4096
#: Seconds a sample waits for its ACK before it is forgotten (a message not acknowledged in
#: a minute is a stuck recipient, not a latency).
RECEIPT_SAMPLE_TTL_S = 60.0


class ServerMetrics:
    """The server's counters: ints and dicts of ints, added to where things happen."""

    __slots__ = (
        "broadcast_deliveries",
        "broadcasts",
        "bytes_in",
        "bytes_out",
        "connections",
        "disconnects",
        "errors",
        "frames",
        "receipt_buckets",
        "receipt_samples",
        "receipt_sum",
        "slow_reader_drops",
    )

    def __init__(self) -> None:
        #: Frames read, by header word (handlers count a run at once; every word a table
        #: answers is here from the start, so that a count is one ``+=``; 0: any other).
        self.frames: dict[int, int] = dict.fromkeys(COUNTED_WORDS, 0)
        #: ERRORs sent, by code.
        self.errors: dict[int, int] = {}
        self.broadcasts = 0
        self.broadcast_deliveries = 0
        self.bytes_in = 0
        self.bytes_out = 0
        #: Connections admitted, by transport ("tcp", "tls", "websocket").
        self.connections: dict[str, int] = {}
        #: Connections closed, by reason (``disconnect_reason``).
        self.disconnects: dict[str, int] = {}
        self.slow_reader_drops = 0
        #: Sampled message id -> monotonic time of its forward.
        self.receipt_samples: dict[int, float] = {}
        #: The SEND-to-RECEIPT histogram: counts per bucket (the last: over the last bound)
        #: and the sum of the times, added to by handlers.ack.
        self.receipt_buckets = [0] * (len(RECEIPT_BUCKETS) + 1)
        self.receipt_sum = 0.0

    def sample_send(self, message_id: int) -> None:
        """Time ``message_id`` until its ACK (one per run of SENDs)."""
        samples = self.receipt_samples
        if len(samples) < MAX_RECEIPT_SAMPLES:
            samples[message_id] = time.monotonic()

    def forget_samples(self) -> None:
        """Drop the samples older than RECEIPT_SAMPLE_TTL_S (oldest first: insertion order)."""
        samples = self.receipt_samples
        too_old = time.monotonic() - RECEIPT_SAMPLE_TTL_S
        for message_id, sent in list(samples.items()):
            if sent >= too_old:
                break
            del samples[message_id]

    def count_error(self, code: int) -> None:
        errors = self.errors
        errors[code] = errors.get(code, 0) + 1

    def count_frames(self, word: int, frames: int) -> None:
        counts = self.frames
        counts[word] = counts.get(word, 0) + frames


def disconnect_reason(close_reason: str) -> str:
    """A connection's close reason as one of a fixed set of label values."""
    for prefix, label in _REASONS:
        if close_reason.startswith(prefix):
            return label
    if close_reason.startswith("closed: "):  # closed with an ERROR code
        code = close_reason[len("closed: ") :].split(" ", 1)[0]
        if code in ErrorCode.__members__:
            return code.lower()
    return "other"


_REASONS = (
    ("closed by peer", "peer_closed"),
    ("connection lost", "connection_lost"),
    ("protocol error", "protocol_error"),
    ("too slow", "slow_reader"),
    ("heartbeat timeout", "heartbeat_timeout"),
    ("shutdown", "shutdown"),
)


def frame_type_name(word: int) -> str:
    """``TIME``, ``SEND``, ``ACK``... for a header word (``codec.HEADER_WORDS``)."""
    try:
        return MessageType(word & 0xFFFF).name
    except ValueError:
        return "unknown"


#: The header words of what clients send: every request type, ACK and PONG, and 0 for the
#: rest (counted as "unknown": a peer's arbitrary words never become label values).
COUNTED_WORDS: tuple[int, ...] = (
    *(header_word((MessageClass.REQUEST << 16) | t) for t in MessageType if t < 0x40),
    header_word((MessageClass.INDICATION << 16) | MessageType.ACK),
    header_word((MessageClass.INDICATION << 16) | MessageType.ACKS),
    header_word((MessageClass.INDICATION << 16) | MessageType.PONG),
    0,
)


class MetricsSource(Protocol):
    """What the collector reads of the server (server.app.SwitchboardServer)."""

    metrics: ServerMetrics
    message_ids: int

    def connections(self) -> Iterable[Peer]: ...
    def transport_kind(self, conn: Peer) -> str: ...


class MetricsCollector(Collector):
    """The server's counters as metric families, built at each scrape."""

    def __init__(self, server: MetricsSource) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        m = server.metrics
        build = InfoMetricFamily("switchboard_build", "Switchboard's version and runtime")
        build.add_metric(
            [],
            {
                "version": __version__,
                "python": platform.python_version(),
                "event_loop": _running_loop_name(),
            },
        )
        yield build
        open_now = GaugeMetricFamily(
            "switchboard_connections",
            "Client connections open now, by transport",
            labels=["transport"],
        )
        queued = 0
        by_kind: dict[str, int] = {"tcp": 0, "tls": 0, "websocket": 0}
        for conn in server.connections():
            kind = server.transport_kind(conn)
            by_kind[kind] = by_kind.get(kind, 0) + 1
            transport = conn.transport
            if transport is not None:
                queued += transport.get_write_buffer_size()
            queued += sum(map(len, conn.out))
        for kind, count in sorted(by_kind.items()):
            open_now.add_metric([kind], count)
        yield open_now
        yield _labelled(
            "switchboard_connections_accepted",
            "Client connections admitted or refused since start, by transport",
            "transport",
            m.connections,
        )
        yield _labelled(
            "switchboard_disconnects",
            "Client connections closed, by reason",
            "reason",
            m.disconnects,
        )
        yield _labelled(
            "switchboard_frames_received",
            "Frames received from clients, by type (requests, ACK, PONG)",
            "type",
            {frame_type_name(word): n for word, n in m.frames.items()},
        )
        yield _labelled(
            "switchboard_errors",
            "ERROR answers sent, by code",
            "code",
            {
                ErrorCode(code).name if code in _CODES else str(code): n
                for code, n in m.errors.items()
            },
        )
        broadcasts = m.broadcasts
        yield _counter(
            "switchboard_messages_forwarded",
            "Direct messages (SEND, SEND_NICK) forwarded to their recipient",
            server.message_ids - broadcasts,
        )
        yield _counter("switchboard_messages_broadcast", "BROADCASTs to a room", broadcasts)
        yield _counter(
            "switchboard_broadcast_deliveries",
            "MESSAGEs that BROADCASTs queued for room members",
            m.broadcast_deliveries,
        )
        yield _counter("switchboard_received_bytes", "Bytes read from clients", m.bytes_in)
        yield _counter("switchboard_sent_bytes", "Bytes written to clients", m.bytes_out)
        yield _counter(
            "switchboard_slow_reader_drops",
            "Clients disconnected for not reading (past --write-hard-limit)",
            m.slow_reader_drops,
        )
        yield GaugeMetricFamily(
            "switchboard_queued_bytes",
            "Bytes queued for clients and not yet sent",
            value=queued,
        )
        cumulative = 0
        buckets = []
        for bound, count in zip((*RECEIPT_BUCKETS, float("inf")), m.receipt_buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        histogram = HistogramMetricFamily(
            "switchboard_send_receipt_seconds",
            "Time from forwarding a direct message to its recipient's ACK (sampled: the "
            "first SEND of each run)",
        )
        histogram.add_metric([], buckets, m.receipt_sum)
        yield histogram


_CODES = frozenset(int(code) for code in ErrorCode)


def _running_loop_name() -> str:
    """ "uvloop" or "asyncio": the loop this server runs on (``switchboard serve`` picks
    uvloop when it is installed: eventloop.run)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return eventloop.loop_name()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def make_registry(server: MetricsSource) -> CollectorRegistry:
    """A registry of this server's own (not prometheus_client's global one: a process may
    run several servers, as the tests do), with the process's CPU, memory and descriptors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(server))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text format of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
