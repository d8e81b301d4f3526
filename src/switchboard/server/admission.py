"""Who may connect, and how fast they may guess tokens: per address, per prefix, in total.

Pure bookkeeping (no sockets, no asyncio): the server asks ``ConnectionCounts.refusal``
before admitting a connection and ``AuthThrottle.begin`` before looking at a HELLO's token.
Every table here is bounded: by the connections open (ConnectionCounts) or by
``defaults.AUTH_TRACKED_SOURCES`` (AuthThrottle).
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import OrderedDict

from switchboard import defaults


@functools.lru_cache(maxsize=4096)
def source_of(ip: str) -> tuple[str, bool]:
    """``(prefix, loopback)`` for a peer address: its /24 (IPv4) or /64 (IPv6) network as
    text, and whether it is a loopback address.  IPv4-mapped IPv6 addresses (a dual-stack
    listener) count as the IPv4 address they carry; anything unparsable is its own prefix."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip, False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = defaults.PREFIX_IPV4 if addr.version == 4 else defaults.PREFIX_IPV6
    network = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
    return str(network), addr.is_loopback


class ConnectionCounts:
    """Connections open per address and per prefix, and the limits on them."""

    __slots__ = ("_by_address", "_by_prefix", "limit_loopback", "per_address", "per_prefix")

    def __init__(self, *, per_address: int, per_prefix: int, limit_loopback: bool) -> None:
        self.per_address = per_address
        self.per_prefix = per_prefix
        self.limit_loopback = limit_loopback
        self._by_address: dict[str, int] = {}
        self._by_prefix: dict[str, int] = {}

    def refusal(self, ip: str) -> str | None:
        """Why one more connection from ``ip`` may not be admitted, or None if it may."""
        prefix, loopback = source_of(ip)
        if loopback and not self.limit_loopback:
            return None
        if self._by_address.get(ip, 0) >= self.per_address:
            return f"too many connections from your address (max {self.per_address})"
        if self._by_prefix.get(prefix, 0) >= self.per_prefix:
            return f"too many connections from your network {prefix} (max {self.per_prefix})"
        return None

    def add(self, ip: str) -> None:
        prefix = source_of(ip)[0]
        self._by_address[ip] = self._by_address.get(ip, 0) + 1
        self._by_prefix[prefix] = self._by_prefix.get(prefix, 0) + 1

    def remove(self, ip: str) -> None:
        prefix = source_of(ip)[0]
        for table, key in ((self._by_address, ip), (self._by_prefix, prefix)):
            left = table.get(key, 0) - 1
            if left > 0:
                table[key] = left
            else:
                table.pop(key, None)

    def from_address(self, ip: str) -> int:
        return self._by_address.get(ip, 0)


class _Failures:
    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0


class AuthThrottle:
    """Failed HELLOs per address, per prefix and server-wide, and the hold they earn.

    ``begin(ip)`` is called for each HELLO on a token server before its token is checked: it
    returns how long to hold the HELLO (from the failures so far; the same whatever the token
    is) and counts the attempt as a failure in advance, so that parallel guesses from one
    source escalate too.  ``succeeded(ip)`` takes that back for a right token and forgets
    the address's failures.  Counts are forgotten ``memory_s`` after a source's last failure.
    """

    def __init__(
        self,
        *,
        free_per_address: int = defaults.AUTH_FAILURES_BEFORE_DELAY,
        free_per_prefix: int = defaults.AUTH_PREFIX_FAILURES_BEFORE_DELAY,
        free_in_total: int = defaults.AUTH_SERVER_FAILURES_BEFORE_DELAY,
        base_delay: float = defaults.AUTH_DELAY_BASE_S,
        max_delay: float = defaults.AUTH_DELAY_MAX_S,
        memory_s: float = defaults.AUTH_FAILURE_MEMORY_S,
        max_sources: int = defaults.AUTH_TRACKED_SOURCES,
    ) -> None:
        self.free_per_address = free_per_address
        self.free_per_prefix = free_per_prefix
        self.free_in_total = free_in_total
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.memory_s = memory_s
        self.max_sources = max_sources
        #: Least recently failed first (move_to_end on each failure): eviction and expiry
        #: both take from the front.
        self.by_address: OrderedDict[str, _Failures] = OrderedDict()
        self.by_prefix: OrderedDict[str, _Failures] = OrderedDict()
        self.total = _Failures()

    def failures(self, ip: str) -> tuple[int, int, int]:
        """Recent failures from ``ip``, from its prefix, and server-wide."""
        now = time.monotonic()
        prefix = source_of(ip)[0]
        return (
            self._count(self.by_address.get(ip), now),
            self._count(self.by_prefix.get(prefix), now),
            self._count(self.total, now),
        )

    def delay(self, ip: str) -> float:
        """Seconds to hold the next HELLO from ``ip`` (0: none), capped at ``max_delay``."""
        address, prefix, total = self.failures(ip)
        excess = max(
            address - self.free_per_address,
            prefix - self.free_per_prefix,
            total - self.free_in_total,
        )
        if excess < 0:
            return 0.0
        # 2.0 ** 64 is finite: clamping the exponent keeps the float from overflowing.
        return min(self.max_delay, self.base_delay * 2.0 ** min(excess + 1, 64))

    def begin(self, ip: str) -> float:
        """The hold for this HELLO; the attempt is counted as a failure until it succeeds."""
        hold = self.delay(ip)
        now = time.monotonic()
        prefix = source_of(ip)[0]
        self._charge(self.by_address, ip, now, 1)
        self._charge(self.by_prefix, prefix, now, 1)
        self._bump(self.total, now, 1)
        return hold

    def succeeded(self, ip: str) -> None:
        """A right token: forget the address's failures, take back the attempt elsewhere."""
        now = time.monotonic()
        self.by_address.pop(ip, None)
        prefix_failures = self.by_prefix.get(source_of(ip)[0])
        if prefix_failures is not None:
            self._bump(prefix_failures, now, -1)
        self._bump(self.total, now, -1)

    def sweep(self) -> None:
        """Forget sources whose last failure is older than ``memory_s``."""
        forget_before = time.monotonic() - self.memory_s
        for table in (self.by_address, self.by_prefix):
            while table:
                key, failures = next(iter(table.items()))
                if failures.last >= forget_before:
                    break
                del table[key]

    def _count(self, failures: _Failures | None, now: float) -> int:
        if failures is None or now - failures.last > self.memory_s:
            return 0
        return failures.count

    def _charge(self, table: OrderedDict[str, _Failures], key: str, now: float, n: int) -> None:
        failures = table.get(key)
        if failures is None:
            if len(table) >= self.max_sources:
                table.popitem(last=False)  # the one that failed longest ago
            failures = table[key] = _Failures()
        else:
            table.move_to_end(key)
        self._bump(failures, now, n)

    def _bump(self, failures: _Failures, now: float, n: int) -> None:
        if now - failures.last > self.memory_s:
            failures.count = 0
        failures.count = max(0, failures.count + n)
        if n > 0:  # a refund does not make the failures recent again
            failures.last = now
