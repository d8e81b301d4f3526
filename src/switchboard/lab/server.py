"""A real Switchboard server for the experiments that observe one: started on its own event
loop in a thread of this process, on a free loopback port, stopped (and its thread joined)
when the experiment is done, whatever happened in between."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Final

from switchboard.server import ServerConfig, SwitchboardServer

#: Seconds the server may take to start listening, or to stop.
START_STOP_S: Final = 10.0


class ServerInThread:
    """``with ServerInThread(name="lab") as server:`` a Switchboard server listening on
    ``server.host``:``server.port``; ``settings`` are ``ServerConfig``'s."""

    def __init__(self, **settings: Any) -> None:
        settings.setdefault("host", "127.0.0.1")
        settings.setdefault("port", 0)
        settings.setdefault("shutdown_grace", 0)  # the experiment has closed its clients
        self.config = ServerConfig(**settings)
        self.server = SwitchboardServer(self.config)
        self.host = self.config.host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="lab-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            try:
                self._loop.run_until_complete(self.server.start())
            except BaseException as exc:  # a bind error: reported to __enter__
                self._started.set_exception(exc)
                return
            self._started.set_result(None)
            self._loop.run_until_complete(self.server.wait_stopped())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()

    def __enter__(self) -> ServerInThread:
        self._thread.start()
        self._started.result(START_STOP_S)
        self.port = self.server.port
        return self

    def stop(self) -> None:
        """Shut the server down (its clients are told SHUTDOWN) and wait for its thread."""
        if self._thread.is_alive() and not self._loop.is_closed():
            stopping = asyncio.run_coroutine_threadsafe(
                self.server.shutdown("the lab experiment is over"), self._loop
            )
            stopping.result(START_STOP_S)
        self._thread.join(START_STOP_S)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["ServerInThread"]
