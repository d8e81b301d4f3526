"""The ``--cluster`` URL (``redis://[:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://`` for TLS):
checked when the settings are, and shown without its password wherever it is shown (log
lines, errors, ``--help`` never see the password)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

#: The schemes the cluster's Redis client takes (``rediss``: TLS).
SCHEMES = ("redis", "rediss")


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """A parsed ``--cluster`` URL."""

    url: str
    scheme: str
    host: str
    port: int
    db: int

    @property
    def shown(self) -> str:
        """The URL as logs and errors show it: no user name, no password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.db}"


def parse_cluster_url(url: str) -> ClusterUrl:
    """``url`` parsed; ValueError (with a message that never repeats the password) if it is
    not a Redis URL."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"the cluster URL {redacted(url)!r} is not a URL") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"the cluster URL must start with redis:// or rediss://, not {redacted(url)!r}"
        )
    if not parts.hostname:
        raise ValueError(f"the cluster URL {redacted(url)!r} names no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the cluster URL's database must be a number, not {path!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the cluster URL {redacted(url)!r} takes no query or fragment")
    return ClusterUrl(url, parts.scheme, parts.hostname, port, int(path or 0))


def redacted(url: str) -> str:
    """``url`` with whatever stands before an ``@`` (user, password) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}://{netloc}{slash}{tail}"
