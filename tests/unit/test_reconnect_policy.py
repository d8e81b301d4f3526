"""client.reconnect: the back-off's delays and the retry loop, without sockets or sleeping
(the loop's waits are on an Event that the tests set, or zero-length)."""

from __future__ import annotations

import random
import threading

import pytest

from switchboard import defaults
from switchboard.client import AuthError, ConnectionFailed
from switchboard.client.reconnect import Backoff, retry
from switchboard.protocol import ErrorCode


def test_delays_double_to_the_cap_with_jitter_and_stop_at_the_bound() -> None:
    backoff = Backoff(initial=1.0, cap=8.0, give_up_s=30.0, rng=random.Random(7))
    elapsed, delays = 0.0, []
    while (delay := backoff.next_delay(elapsed)) is not None:
        delays.append(delay)
        elapsed += delay
    bases = [1, 2, 4, 8, 8, 8, 8, 8, 8, 8]
    for delay, base in zip(delays[:-1], bases, strict=False):
        assert base / 2 <= delay <= base
    assert len(set(delays)) == len(delays)  # jittered: no two the same
    assert elapsed == pytest.approx(30.0)  # the last wait is cut to the bound, then it stops


def test_the_defaults_give_up_after_five_minutes() -> None:
    backoff = Backoff(rng=random.Random(1))
    assert backoff.give_up_s == defaults.RECONNECT_GIVE_UP_S
    assert backoff.next_delay(0.0) is not None
    assert backoff.next_delay(defaults.RECONNECT_GIVE_UP_S) is None


def no_wait() -> Backoff:
    """Every delay zero: the loop runs its attempts back to back."""
    return Backoff(initial=0.0, cap=0.0, give_up_s=60.0)


def test_retry_reports_each_failure_and_returns_the_first_success() -> None:
    failures = iter([ConnectionFailed("refused"), ConnectionFailed("still refused")])
    waits: list[tuple[float, str | None]] = []

    def attempt() -> str:
        for exc in failures:
            raise exc
        return "connected"

    result = retry(attempt, no_wait(), on_wait=lambda d, e: waits.append((d, e)))
    assert result == "connected"
    assert [e for _, e in waits] == [None, "refused", "still refused"]


def test_retry_stops_when_told_and_on_a_refused_token() -> None:
    stop = threading.Event()
    stop.set()
    calls: list[int] = []
    assert retry(lambda: calls.append(1), no_wait(), on_wait=lambda d, e: None, stop=stop) is None
    assert calls == []

    def refused() -> None:
        raise AuthError(ErrorCode.AUTH_FAILED, "AUTH_FAILED", "wrong token")

    with pytest.raises(AuthError):  # retrying cannot help: the caller says so and ends
        retry(refused, no_wait(), on_wait=lambda d, e: None)


def test_retry_gives_up_once_the_bound_has_passed() -> None:
    backoff = Backoff(initial=0.01, cap=0.01, give_up_s=0.05)

    def attempt() -> None:
        raise ConnectionFailed("refused")

    assert retry(attempt, backoff, on_wait=lambda d, e: None) is None
    assert backoff.attempts >= 2
