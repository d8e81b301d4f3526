"""A lossy loopback relay: a UDP proxy that drops, delays (reorders) and duplicates datagrams.

A testing aid: put it between chat clients and the room (``switchboard udpchat relay``) to see
retries, duplicate suppression and gap notices at work.  Each client gets its own upstream
socket, so the server sees one address per client as it would without the relay.  Faults
come from a seeded random generator (reproducible runs) and, for tests that need a precise
loss, from a ``drop_if`` predicate.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, cast

from .room import Address

log: Final = logging.getLogger("switchboard.services.udpchat.relay")

#: Seconds after which a client's upstream socket is closed if nothing went through it.
RELAY_IDLE_S: Final = 120.0

#: ``drop_if(data, upstream)``: True to drop this datagram (``upstream`` is the direction:
#: client to server).
DropPredicate = Callable[[bytes, bool], bool]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Fractions (0..1) of datagrams to drop, to delay past later ones, and to duplicate."""

    drop: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    reorder_delay_s: float = 0.05
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("drop", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, not {value}")
        if self.reorder_delay_s < 0:
            raise ValueError("reorder_delay_s cannot be negative")

    def describe(self) -> str:
        """For the log: ``drop 30%, reorder 0% (delay 0.05 s), duplicate 10%, seed 5``."""
        seed = "random seed" if self.seed is None else f"seed {self.seed}"
        return (
            f"drop {self.drop:.0%}, reorder {self.reorder:.0%} (delay {self.reorder_delay_s:g} s), "
            f"duplicate {self.duplicate:.0%}, {seed}"
        )


@dataclass(slots=True)
class FaultCounts:
    passed: int = 0
    dropped: int = 0
    delayed: int = 0
    duplicated: int = 0

    def describe(self) -> str:
        """For the log: ``120 passed, 30 dropped, 4 delayed, 12 duplicated``."""
        return (
            f"{self.passed} passed, {self.dropped} dropped, {self.delayed} delayed, "
            f"{self.duplicated} duplicated"
        )


@dataclass(slots=True)
class FaultInjector:
    """Decides each datagram's fate: the delays at which its copies go out ([] is a drop)."""

    plan: FaultPlan
    counts: FaultCounts = field(default_factory=FaultCounts)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.plan.seed)

    def decide(self) -> list[float]:
        plan, rng = self.plan, self.rng
        if rng.random() < plan.drop:
            self.counts.dropped += 1
            return []
        delay = 0.0
        if rng.random() < plan.reorder:
            self.counts.delayed += 1
            delay = plan.reorder_delay_s * (0.5 + rng.random())
        else:
            self.counts.passed += 1
        if rng.random() < plan.duplicate:
            self.counts.duplicated += 1
            return [delay, delay + plan.reorder_delay_s * rng.random()]
        return [delay]


class _Upstream(asyncio.DatagramProtocol):
    """One client's socket towards the server."""

    def __init__(self, relay: LossyRelay, client: Address) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last_used = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        for data in self.pending:
            self.transport.sendto(data)
        self.pending.clear()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.last_used = asyncio.get_running_loop().time()
        self.relay.forward(data, upstream=False, client=self.client)

    def error_received(self, exc: Exception) -> None:
        log.debug("upstream ICMP error for %s: %s", self.client, exc)

    def send(self, data: bytes) -> None:
        self.last_used = asyncio.get_running_loop().time()
        if self.transport is None:
            self.pending.append(data)
        elif not self.transport.is_closing():
            self.transport.sendto(data)


class LossyRelay(asyncio.DatagramProtocol):
    """Listens on ``listen`` and relays to ``upstream`` through a ``FaultInjector``."""

    def __init__(
        self,
        upstream: tuple[str, int],
        plan: FaultPlan | None = None,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        drop_if: DropPredicate | None = None,
    ) -> None:
        self.upstream = upstream
        self.listen = listen
        self.injector = FaultInjector(plan or FaultPlan())
        self.drop_if = drop_if
        self.transport: asyncio.DatagramTransport | None = None
        self._clients: dict[Address, _Upstream] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._timer_ids = itertools.count()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def counts(self) -> FaultCounts:
        return self.injector.counts

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=self.listen)
        self._sweeper = loop.call_later(RELAY_IDLE_S / 4, self._sweep)
        host, port = self.upstream
        upstream = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("lossy relay on port %d -> %s: %s", self.port, upstream,
                 self.injector.plan.describe())  # fmt: skip

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in self._tasks:
            task.cancel()
        for up in self._clients.values():
            if up.transport is not None:
                up.transport.close()
        self._clients.clear()
        if self.transport is not None:
            self.transport.close()
        log.info("lossy relay stopped: %s", self.counts.describe())

    async def __aenter__(self) -> LossyRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- the client side -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.forward(data, upstream=True, client=addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("ICMP error towards a client: %s", exc)

    # --- relaying ------------------------------------------------------------------------------

    def forward(self, data: bytes, *, upstream: bool, client: Address) -> None:
        if self.drop_if is not None and self.drop_if(data, upstream):
            self.injector.counts.dropped += 1
            return
        loop = asyncio.get_running_loop()
        for delay in self.injector.decide():
            if delay <= 0:
                self._deliver(data, upstream, client)
            else:
                key = next(self._timer_ids)
                self._timers[key] = loop.call_later(delay, self._fire, key, data, upstream, client)

    def _fire(self, key: int, data: bytes, upstream: bool, client: Address) -> None:
        del self._timers[key]
        self._deliver(data, upstream, client)

    def _deliver(self, data: bytes, upstream: bool, client: Address) -> None:
        if not upstream:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.sendto(data, client)
            return
        up = self._clients.get(client)
        if up is None:
            up = self._clients[client] = _Upstream(self, client)
            task: asyncio.Task[object] = asyncio.ensure_future(
                asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: up, remote_addr=self.upstream
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        up.send(data)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for client, up in list(self._clients.items()):
            if now - up.last_used > RELAY_IDLE_S and up.transport is not None:
                up.transport.close()
                del self._clients[client]
        self._sweeper = loop.call_later(RELAY_IDLE_S / 4, self._sweep)
