"""The cluster tests' own redis-server (tests/support/redis_servers.py): it answers, keeps
nothing on disk, restarts on its port, and is gone after stop."""

from __future__ import annotations

from collections.abc import Callable

from support.redis_servers import RedisServer


def test_redis_server_answers_and_stops(redis_server: RedisServer) -> None:
    assert redis_server.command("SET", "k", "v").startswith(b"+OK")
    assert redis_server.command("GET", "k") == b"$1\r\nv\r\n"
    assert redis_server.command("CONFIG", "GET", "save").endswith(b"$4\r\nsave\r\n$0\r\n\r\n")
    redis_server.stop()
    assert redis_server.proc is not None and redis_server.proc.returncode is not None
    assert not redis_server.ping()


def test_redis_server_restarts_on_its_port_empty(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.command("SET", "k", "v")
    redis_server.stop()
    redis_server.start()
    assert redis_server.port == port
    assert redis_server.command("GET", "k") == b"$-1\r\n"  # nothing was saved


def test_redis_server_with_password(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(password="s3cret")
    assert "s3cret" in server.url
    assert server.command("PING").startswith(b"+PONG")
