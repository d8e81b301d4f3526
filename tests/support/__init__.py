"""What the tests share, one topic a module; tests/conftest.py loads the fixtures.

- ``servers``: a Switchboard server in-process (``ServerThread``) or as a subprocess
  (``ServerProcess``, ``spawn_logged``), ``run_cli``/``cli_env`` for the commands, and probes of
  a running server's state; fixtures ``server``, ``server_factory``, ``server_process``,
  ``server_process_factory``.
- ``peers``: ``RawPeer`` (the protocol spoken by hand over a blocking socket), frame builders,
  and helpers for reading a ``Client``'s indications.
- ``fake_servers``: ``FakeServer`` (a scripted one-connection server); fixtures
  ``fake_server``, ``unanswered_port``.
- ``network``: ``free_port``, IPv6-loopback detection (``needs_ipv6``).
- ``waiting``: ``wait_until`` (poll with a deadline), in a thread or a coroutine.
- ``commands``: long-running CLI commands read line by line (``Follower``, piped ``Chat``);
  fixtures ``follow``, ``chats``.
- ``terminals``: interactive clients in a pseudo-terminal (pexpect).
- ``services``: the lab services in-process (reversal server, UDP chat) and their fixtures.
- ``tls_certs``, ``protocol_strategies``: certificates, hypothesis strategies.
- ``lab``: the lab's experiments in-process (``run_experiment``) and what they must not
  leave behind (``left_on``, ``children``).
- ``redis_servers``: ``RedisServer``, a redis-server of the test's own (free port, nothing
  saved, stopped by pid); fixtures ``redis_server``, ``redis_factory``.
- ``ci``: in CI, a skipped test fails.

Test modules import from here, never from one another.
"""
