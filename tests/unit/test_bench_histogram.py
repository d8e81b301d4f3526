"""The benchmark's latency histogram and /proc parsing (pure, no timing asserted)."""

from __future__ import annotations

import os

import pytest

from switchboard.bench.histogram import BUCKETS, SUB_BITS, Histogram, bucket_of, bucket_value
from switchboard.bench.procstat import (
    ProcError,
    cpu_seconds,
    parse_cpu_ticks,
    parse_rss_kib,
    parse_steal,
    rss_kib,
    steal_ticks,
)
from switchboard.bench.suite import steal_share


def test_small_values_are_exact() -> None:
    hist = Histogram.of(range(1, 101))  # 1..100
    assert hist.total == 100
    assert hist.percentile(50) == 50
    assert hist.percentile(90) == 90
    assert hist.percentile(99) == 99
    assert hist.percentile(99.9) == 100
    assert hist.percentile(100) == 100
    assert hist.percentile(0) == 1


def test_large_values_within_bucket_precision() -> None:
    values = [1_000 * i for i in range(1, 1001)]  # 1 µs .. 1 ms in ns
    hist = Histogram.of(values)
    precision = 1 / (1 << (SUB_BITS - 1))
    for q, exact in ((50, 500_000), (90, 900_000), (99, 990_000), (99.9, 999_000)):
        assert abs(hist.percentile(q) - exact) <= exact * precision, q
    assert hist.percentile(100) == 1_000_000  # the maximum is exact


def test_every_value_lands_in_the_bucket_that_reports_it() -> None:
    for value in [0, 1, 127, 128, 129, 255, 256, 1000, 12_345, 10**6, 10**9, 2**40 + 7]:
        index = bucket_of(value)
        assert 0 <= index < BUCKETS
        assert bucket_of(bucket_value(index)) == index
        assert abs(bucket_value(index) - value) <= max(1, value) / (1 << (SUB_BITS - 1))


def test_counts_and_merge() -> None:
    a = Histogram()
    a.record(10, count=9)
    a.record(1_000_000)
    b = Histogram.of([20] * 10)
    a.merge(b)
    assert a.total == 20 and a.max == 1_000_000
    assert a.percentile(45) == 10 and a.percentile(50) == 20 and a.percentile(95) == 20
    assert a.percentile(100) == 1_000_000
    again = Histogram.from_sparse(a.to_sparse(), a.max)
    assert again.counts == a.counts and again.total == a.total


def test_empty_and_invalid() -> None:
    assert Histogram().percentile(99) == 0
    with pytest.raises(ValueError):
        Histogram().percentile(101)


STAT = (
    "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 2345 0 0 0 "
    "731 205 0 0 20 0 3 0 123456 1234567 890 18446744073709551615"
)


def test_cpu_ticks_are_utime_plus_stime() -> None:
    assert parse_cpu_ticks(STAT) == 731 + 205


def test_bad_stat_line() -> None:
    with pytest.raises(ProcError):
        parse_cpu_ticks("garbage")


def test_rss() -> None:
    assert parse_rss_kib("Name:\tx\nVmPeak:\t 9000 kB\nVmRSS:\t   12345 kB\n") == 12345
    with pytest.raises(ProcError):
        parse_rss_kib("Name:\tx\n")


PROC_STAT = (
    "cpu  471009 7714 65312 878562 1996 0 32360 17986 0 0\n"
    "cpu0 181316 3611 31423 492560 300 0 16450 9284 0 0\n"
    "intr 12345 0 0\n"
)


def test_steal_is_the_eighth_column_of_the_all_cpus_line() -> None:
    total = 471009 + 7714 + 65312 + 878562 + 1996 + 0 + 32360 + 17986
    assert parse_steal(PROC_STAT) == (17986, total)
    assert parse_steal("cpu  10 0 5 85\n") == (0, 100)  # an old kernel: no steal column
    for bad in ("intr 1 2\n", "cpu  a b c d e f g h\n", ""):
        with pytest.raises(ProcError):
            parse_steal(bad)


def test_steal_share() -> None:
    assert steal_share((100, 10_000), (150, 12_000)) == "2.5 % of all CPU time"
    assert steal_share((100, 10_000), (100, 10_000)) == "not measured"  # no time passed
    assert steal_share(None, (1, 2)) == "not measured"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_reads_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert rss_kib(os.getpid()) > 1000
    steal, total = steal_ticks()
    assert 0 <= steal < total
    with pytest.raises(ProcError):
        cpu_seconds(2**22 + 12345)  # above pid_max's default: no such process
