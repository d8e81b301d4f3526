"""Loads the shared test helpers of ``tests/support`` (see its ``__init__``) as plugins, so
that their fixtures reach every test module."""

import pytest

# Before they are imported: their asserts explain themselves in a failure, as a test's do.
pytest.register_assert_rewrite("support")

pytest_plugins = [
    "support.browsers",
    "support.ci",
    "support.commands",
    "support.fake_servers",
    "support.network",
    "support.redis_servers",
    "support.servers",
    "support.services",
]
