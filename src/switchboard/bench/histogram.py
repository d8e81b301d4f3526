"""A log-linear latency histogram (HdrHistogram's bucket layout, in plain Python).

Values are integers (the load generator records nanoseconds).  Below ``2**SUB_BITS`` every
value has its own bucket; above, each power of two is split into ``2**(SUB_BITS-1)`` equal
buckets, so a reported value is within ``1 / 2**(SUB_BITS-1)`` (0.8 %) of the truth whatever
its magnitude.  Recording is a few integer operations and one list increment, counts merge
by addition (how worker processes combine theirs), and the exact maximum is kept aside.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

SUB_BITS: Final = 7
_SUB: Final = 1 << SUB_BITS  # 128 exact buckets for the smallest values
_HALF: Final = _SUB >> 1  # 64 buckets per power of two above them
#: Enough buckets for values up to 2**63.
BUCKETS: Final = _SUB + (64 - SUB_BITS) * _HALF


def bucket_of(value: int) -> int:
    """The bucket index of ``value`` (negative values count as 0)."""
    if value < _SUB:
        return value if value > 0 else 0
    shift = value.bit_length() - SUB_BITS
    return _SUB + (shift - 1) * _HALF + ((value >> shift) - _HALF)


def bucket_value(index: int) -> int:
    """The value a bucket reports: the middle of its range (exact below ``2**SUB_BITS``)."""
    if index < _SUB:
        return index
    shift, sub = divmod(index - _SUB, _HALF)
    shift += 1
    low = (sub + _HALF) << shift
    return low + ((1 << shift) >> 1)


class Histogram:
    """Counts per bucket, the total and the exact maximum."""

    __slots__ = ("counts", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.total = 0
        self.max = 0

    def record(self, value: int, count: int = 1) -> None:
        """Record ``value`` ``count`` times."""
        if value < _SUB:
            index = value if value > 0 else 0
        else:
            shift = value.bit_length() - SUB_BITS
            index = _SUB + (shift - 1) * _HALF + ((value >> shift) - _HALF)
        self.counts[index] += count
        self.total += count
        if value > self.max:
            self.max = value

    def percentile(self, q: float) -> int:
        """The smallest recorded value (to bucket precision) with at least ``q`` % at or below
        it; the exact maximum for q = 100; 0 when nothing was recorded."""
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile {q} is not within 0..100")
        if self.total == 0:
            return 0
        if q >= 100.0:
            return self.max
        # Rank of the wanted sample, 1-based; "nearest rank" as HdrHistogram reports it.
        rank = max(1, -(-int(q * self.total * 1000) // 100_000))
        seen = 0
        for index, count in enumerate(self.counts):
            if count:
                seen += count
                if seen >= rank:
                    return min(bucket_value(index), self.max)
        return self.max

    def merge(self, other: Histogram) -> None:
        counts = self.counts
        for index, count in enumerate(other.counts):
            if count:
                counts[index] += count
        self.total += other.total
        self.max = max(self.max, other.max)

    def to_sparse(self) -> dict[int, int]:
        """Non-empty buckets only: what crosses the pipe from a worker process."""
        return {i: c for i, c in enumerate(self.counts) if c}

    @classmethod
    def from_sparse(cls, sparse: Mapping[int, int], maximum: int) -> Histogram:
        hist = cls()
        for index, count in sparse.items():
            hist.counts[index] += count
            hist.total += count
        hist.max = maximum
        return hist

    @classmethod
    def of(cls, values: Iterable[int]) -> Histogram:
        hist = cls()
        for value in values:
            hist.record(value)
        return hist
