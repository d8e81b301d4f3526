"""A server process as a node of a cluster whose shared state lives in Redis
(``serve --cluster URL``; docs/CLUSTER.md has the design, the keys and the failure table).

``ClusterNode`` is the node's tie to Redis: it connects at start (Redis unreachable: a
``ClusterUnreachable``, which ``serve`` turns into one line and exit 2), registers the node
under its name with a lease (``switchboard:node:NAME``, a key whose TTL is the lease), renews
the lease three times per lease, notices when Redis goes away and comes back (one log line
each), and leaves the cluster at shutdown.  Nothing here is on a request's path: the handlers
never await Redis.

Every key starts with ``switchboard:`` so that the cluster can share a Redis database with
others; the URL's password is never logged (``ClusterUrl.shown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError

from switchboard import defaults

from .cluster_url import ClusterUrl, parse_cluster_url
from .config import ConfigError, ServerConfig
from .logs import EventLog

#: The prefix of every key the cluster keeps.
PREFIX = "switchboard:"
#: The set of the names of the nodes that have joined and not left (a dead one stays
#: until its lease is seen to have expired).
NODES_KEY = PREFIX + "nodes"
#: The counter each node takes its node number from (one per join).
NODE_NUMBERS_KEY = PREFIX + "node-numbers"


def node_key(name: str) -> str:
    """The node's lease: a key that expires when the node stops renewing it."""
    return f"{PREFIX}node:{name}"


class ClusterUnreachable(ConfigError):
    """Redis could not be reached (or refused this node) when the server started: ``serve``
    says so in one line and exits 2."""


def default_node_name(port: int) -> str:
    """``HOST:PORT:PID``: unique on a machine, and it says where to look for the process."""
    return f"{socket.gethostname()}:{port}:{os.getpid()}"


def connect_redis(url: ClusterUrl, *, timeout: float) -> aioredis.Redis:
    """A client for the cluster's Redis that fails fast: no retries behind the caller's back
    (the node decides what a lost Redis means), every command bounded by ``timeout``."""
    return aioredis.Redis.from_url(
        url.url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


def describe(exc: BaseException) -> str:
    """One line about a Redis failure (redis-py's messages can span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


class ClusterNode:
    """This process's membership of the cluster: its Redis connection, its name and number,
    and its lease."""

    def __init__(self, config: ServerConfig, events: EventLog) -> None:
        assert config.cluster is not None
        self.config = config
        self.url = parse_cluster_url(config.cluster)
        self.events = events
        self.lease = config.cluster_lease
        self.timeout = min(defaults.CLUSTER_CONNECT_TIMEOUT_S, self.lease / 3)
        self.redis = connect_redis(self.url, timeout=self.timeout)
        #: Set by ``join``.
        self.name = ""
        #: This node's number (one per join, from NODE_NUMBERS_KEY): what makes its message
        #: ids its own (``message_id_base``).
        self.number = 0
        #: Whether the last exchange with Redis succeeded.
        self.available = False
        #: Called (on the loop) when Redis comes back after being lost, or when this node's
        #: lease was found expired: the directory registers its state again.
        self.on_rejoin: Callable[[], Awaitable[None]] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._lost_at = 0.0

    # --- start and stop ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Reach Redis (ClusterUnreachable if it cannot be)."""
        try:
            await self.redis.ping()
        except AuthenticationError as exc:
            await self.redis.aclose()
            raise ClusterUnreachable(
                f"the cluster's Redis at {self.url.shown} refused the credentials: {describe(exc)}"
            ) from None
        except (RedisError, OSError) as exc:
            await self.redis.aclose()
            raise ClusterUnreachable(
                f"cannot reach the cluster's Redis at {self.url.shown}: {describe(exc)}"
            ) from None
        self.available = True

    async def join(self, name: str) -> None:
        """Register as node ``name`` with a lease (ClusterUnreachable if a live node has the
        name, or Redis went away), and start renewing it."""
        self.name = name
        try:
            if not await self._claim_lease():
                raise ClusterUnreachable(
                    f"a live node named {name!r} is already in the cluster at "
                    f"{self.url.shown}; choose another --node-name"
                )
        except (RedisError, OSError) as exc:
            await self.redis.aclose()
            raise ClusterUnreachable(
                f"cannot join the cluster at {self.url.shown}: {describe(exc)}"
            ) from None
        self.events.event(
            logging.INFO,
            "cluster_join",
            "joined the cluster at %s as node %s (number %d, lease %gs)",
            self.url.shown,
            name,
            self.number,
            self.lease,
            cluster=self.url.shown,
            node=name,
            node_number=self.number,
            lease=self.lease,
        )
        self._lease_task = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _claim_lease(self) -> bool:
        """Take the node's key if no live node holds it; False if one does."""
        number = int(await self.redis.incr(NODE_NUMBERS_KEY))
        lease_ms = int(self.lease * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(node_key(self.name), str(number), px=lease_ms, nx=True)
            pipe.sadd(NODES_KEY, self.name)
            claimed, _ = await pipe.execute()
        if not claimed:
            return False
        self.number = number
        return True

    async def leave(self) -> None:
        """Give the lease back and forget the node (shutdown); quiet if Redis is gone."""
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
            self._lease_task = None
        if self.name and self.available:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(node_key(self.name))
                    pipe.srem(NODES_KEY, self.name)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self.events.event(
                    logging.WARNING,
                    "cluster_leave_failed",
                    "could not leave the cluster cleanly (%s): the lease ends in %gs",
                    describe(exc),
                    self.lease,
                    node=self.name,
                )
            else:
                self.events.event(
                    logging.INFO,
                    "cluster_leave",
                    "left the cluster as node %s",
                    self.name,
                    node=self.name,
                )
        await self.redis.aclose()

    # --- the lease -----------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)
            await self.renew()

    async def renew(self) -> None:
        """Renew the lease once; notice Redis lost (log once), back, or the lease gone."""
        lease_ms = int(self.lease * 1000)
        try:
            renewed = await self.redis.set(
                node_key(self.name), str(self.number), px=lease_ms, xx=True
            )
            if not renewed:
                # Cut off longer than a lease: the others have counted this node dead.
                # Join again under the same name (a node that took the name meanwhile
                # is another process: then this one has nothing left to claim).
                if not await self._claim_lease():
                    self._lost("a live node took this node's name while it was cut off")
                    return
                await self._rejoined("its lease had expired")
                return
        except (RedisError, OSError) as exc:
            self._lost(describe(exc))
            return
        if not self.available:
            await self._rejoined("Redis answers again")

    def _lost(self, why: str) -> None:
        if not self.available:
            return
        self.available = False
        self._lost_at = time.monotonic()
        self.events.event(
            logging.WARNING,
            "cluster_lost",
            "lost the cluster's Redis at %s (%s): answering what this node can alone",
            self.url.shown,
            why,
            cluster=self.url.shown,
            node=self.name,
            reason=why,
        )

    async def _rejoined(self, why: str) -> None:
        was_lost = not self.available
        self.available = True
        if self.on_rejoin is not None:
            await self.on_rejoin()
        down = time.monotonic() - self._lost_at if was_lost and self._lost_at else 0.0
        self.events.event(
            logging.INFO,
            "cluster_rejoin",
            "rejoined the cluster at %s as node %s (%s; cut off %.1fs)",
            self.url.shown,
            self.name,
            why,
            down,
            cluster=self.url.shown,
            node=self.name,
            reason=why,
        )
