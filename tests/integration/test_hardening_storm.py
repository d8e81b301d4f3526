"""A connection storm: 5,000 concurrent connections each asking TIME, all answered.

Marked ``load`` (CI runs it).  The server is ``switchboard serve --max-clients 6000`` in a
subprocess: it raises its own open-file limit at start and says so, or warns when the hard
limit is too low.  The connections come from asyncio in this process, whose own soft limit
is raised first.
"""

from __future__ import annotations

import asyncio
import resource
import time

import pytest

from support.servers import start_server_process
from switchboard.protocol import FrameDecoder, TimeOk, TimeRequest, Welcome, encode

CONNECTIONS = 5_000
pytestmark = pytest.mark.load


def raise_own_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(wanted, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        pytest.skip(f"this process may open only {soft} files; the storm needs {wanted}")


async def read_frame(reader: asyncio.StreamReader, decoder: FrameDecoder) -> object:
    while True:
        for event in decoder:
            return event
        data = await reader.read(4096)
        if not data:
            raise ConnectionError("closed")
        decoder.feed(data)


async def one_client(
    host: str, port: int, all_connected: asyncio.Event, connected: list[int]
) -> tuple[float, int]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        decoder = FrameDecoder(max_frame=1 << 20)
        welcome = await read_frame(reader, decoder)
        assert isinstance(welcome, Welcome), welcome
        connected.append(welcome.client_id)
        if len(connected) == CONNECTIONS:
            all_connected.set()
        await all_connected.wait()  # everyone is connected at once before anyone asks
        start = time.monotonic()
        writer.write(encode(TimeRequest(request_id=7)))
        answer = await read_frame(reader, decoder)
        assert isinstance(answer, TimeOk) and answer.request_id == 7, answer
        return time.monotonic() - start, welcome.client_id
    finally:
        writer.close()


async def storm(host: str, port: int) -> list[tuple[float, int]]:
    all_connected = asyncio.Event()
    connected: list[int] = []
    tasks = [one_client(host, port, all_connected, connected) for _ in range(CONNECTIONS)]
    return await asyncio.wait_for(asyncio.gather(*tasks), 50)


def test_five_thousand_concurrent_connections_each_asking_time() -> None:
    raise_own_limit(CONNECTIONS + 200)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # Started with the usual soft limit of 1,024, the server must lift it itself.
    sp = start_server_process("--max-clients", "6000", file_limit=(1024, hard))
    try:
        limit_line = sp.wait_for_log(r"open-file limit")
        assert f"raised the open-file limit from 1024 to {hard}" in limit_line, limit_line
        started = time.monotonic()
        results = asyncio.run(storm(sp.host, sp.port))
        elapsed = time.monotonic() - started
        assert len({client_id for _, client_id in results}) == CONNECTIONS
        latencies = sorted(latency for latency, _ in results)
        print(
            f"{CONNECTIONS} connections answered in {elapsed:.1f}s; TIME latency "
            f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms"
        )
    finally:
        assert sp.stop(timeout=20) == 0
    assert not [line for line in sp.log if "Traceback" in line or "ERROR" in line]


def test_the_server_says_when_it_cannot_get_enough_files() -> None:
    # A hard limit of 512, which an unprivileged process cannot lift: the server raises its
    # soft limit as far as it goes, then says that is below what --max-clients needs.
    sp = start_server_process("--max-clients", "6000", file_limit=(256, 512))
    try:
        assert "from 256 to 512" in sp.wait_for_log(r"raised the open-file limit")
        assert "below the 6064" in sp.wait_for_log(r"open-file limit is 512")
    finally:
        assert sp.stop() == 0
