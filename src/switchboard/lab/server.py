"""Real servers for the experiments that observe one: a Switchboard server, Switchboard's
reversal service, each on its own event loop in a thread of this process, on a free
loopback port, stopped (and the thread joined) when the experiment is done, whatever
happened in between."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from switchboard import defaults
from switchboard.server import ServerConfig, SwitchboardServer
from switchboard.services.reverse.server import ReverseConfig, ReverseServer

#: Seconds a server may take to start listening, or to stop.
START_STOP_S: Final = 10.0
HOST: Final = "127.0.0.1"
T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running in a thread; ``run`` waits for a coroutine on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = START_STOP_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(START_STOP_S)


@contextmanager
def switchboard_server(**settings: Any) -> Iterator[SwitchboardServer]:
    """A Switchboard server (``ServerConfig``'s ``settings``; a free loopback port unless
    given), shut down on the way out (its clients told SHUTDOWN at once)."""
    settings.setdefault("host", HOST)
    settings.setdefault("port", 0)
    settings.setdefault("shutdown_grace", 0)
    # An experiment's server keeps nothing and serves no page: it must not take the web port
    # or the history database of a server the user runs (`make serve`) beside it.
    settings.setdefault("http", defaults.HTTP_OFF)
    settings.setdefault("data_dir", defaults.DATA_DIR_NONE)
    server = SwitchboardServer(ServerConfig(**settings))
    thread = LoopThread("lab-switchboard-server")
    try:
        thread.run(server.start())
    except BaseException:
        thread.stop()
        raise
    try:
        yield server
    finally:
        try:
            thread.run(server.shutdown("the lab experiment is over"))
        finally:
            thread.stop()


@contextmanager
def reversal_service(**settings: Any) -> Iterator[ReverseServer]:
    """Switchboard's string-reversal service (``ReverseConfig``'s ``settings``; a free
    loopback port unless given), closed on the way out."""
    settings.setdefault("host", HOST)
    settings.setdefault("port", 0)
    service = ReverseServer(ReverseConfig(**settings))
    thread = LoopThread("lab-reversal-service")
    try:
        thread.run(service.start())
    except BaseException:
        thread.stop()
        raise
    try:
        yield service
    finally:
        try:
            thread.run(service.close())
        finally:
            thread.stop()


__all__ = ["LoopThread", "reversal_service", "switchboard_server"]
