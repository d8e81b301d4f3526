"""The room-history store: where a room's lines are remembered beyond the replay cache.

One small interface, ``HistoryStore``, that the handlers use for all of it, and two
implementations:

- ``MemoryHistory`` (``--data-dir none``): nothing beyond the replay cache each live room
  keeps in memory (``Room.history``, bounded by ``--history`` and ``--history-bytes``); a room
  that empties, or a restart, loses it.  Writes complete at once, on the event loop.
- ``SqliteHistory`` (the default): every line in an SQLite database (WAL mode) in the data
  directory, kept per room by count and by age.  Writes are group commits: the lines the
  handlers accept during one pass of the event loop are written in one transaction, on a
  thread of their own, while the loop goes on (``GroupCommit``); a line is delivered, and its
  sender answered, only once its transaction is committed.  Reads (a cold room's replay,
  HISTORY pages) are bounded indexed queries answered on the loop through a second
  connection (WAL lets it read while the writer writes).

A store shared by the nodes of a cluster (Redis Streams with a length cap) is a third
(server/cluster_history.py): its lines are written and read through the cluster's directory,
one Redis round trip per loop pass, with their ordering (``SharedHistory``).

Ids: a room line's id is its MESSAGE ``message_id`` (server-wide, increasing; rooms share the
counter with direct messages, so a room's ids increase but are not consecutive).  The server
starts its counter at the highest id the store holds, so ids are never reused across
restarts; the store's ``epoch`` (random, made with the database) changes only when the store
is reset, and tells a client that the ids it remembers mean nothing any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from switchboard import defaults, names
from switchboard.protocol import HistoryMode, Message, MessageFlags
from switchboard.statedir import state_dir

from .config import ConfigError

#: The schema's version, in SQLite's ``user_version``: a database made by a later version
#: is refused at start rather than misread.
SCHEMA_VERSION: Final = 1

T = TypeVar("T")

#: Databases up to this size have every page checked at start (SQLite's quick_check, about
#: a second for 64 MiB); larger ones only their header and schema.
QUICK_CHECK_MAX_BYTES: Final = 64 * 1024 * 1024

#: ``--history-sync`` values: SQLite's synchronous modes that keep a committed line.
SYNC_MODES: Final = ("normal", "full")

#: The file whose lock says a server uses the data directory (flock: released when the
#: process ends, however it ends).
LOCK_FILE: Final = "lock"

#: The largest id SQLite's INTEGER PRIMARY KEY (and MESSAGE's u64, read as signed) holds.
MAX_ID: Final = (1 << 63) - 1


class HistoryUnavailable(Exception):
    """The store could not do what was asked (disk full, I/O error, a damaged database):
    the request fails with HISTORY_UNAVAILABLE, the server goes on."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """One HISTORY page asked for: ``mode`` with its ids, at most ``limit`` lines and about
    ``max_bytes`` of text (the first line always fits)."""

    mode: HistoryMode
    anchor: int
    until: int
    limit: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """The lines of one page, oldest first, and whether more lie beyond it in the direction
    asked (older for LATEST/BEFORE, newer for AFTER/BETWEEN)."""

    lines: list[Message]
    more: bool
    #: The epoch of the store the page was read from, when the store tells it with the page
    #: (a cluster's Redis); 0: the server's ``HistoryStore.epoch``.
    epoch: int = 0
    #: The page as MESSAGE frames ready to send, instead of ``lines``, when the store keeps
    #: them so (a cluster's Redis).
    frames: list[bytes] | None = None


@functools.lru_cache(maxsize=4096)
def room_key(room_name: str) -> str:
    """The key a room's lines are stored under: the first of its look-alike keys
    (``names.name_keys``), so that "Lobby" after a restart is the "lobby" of before."""
    return names.name_keys(room_name)[0]


class HistoryStore(Protocol):
    """Where room lines are remembered (the replay cache aside: ``Room.history``)."""

    #: Whether lines are written off the event loop (the handlers then hold a BROADCAST's
    #: delivery and answer until ``GroupCommit`` reports its transaction committed).
    deferred: bool
    #: Names this store's ids; another epoch means the store was reset.
    epoch: int
    #: The highest id the store holds (the server's id counter starts above it).
    last_id: int
    #: Where the lines are, for the log ("memory only", the database's path).
    where: str

    def write(self, lines: Sequence[Message]) -> None:
        """Store ``lines`` in one transaction (on the store's writer thread when deferred);
        HistoryUnavailable if it could not be committed (then none of them is stored)."""
        ...

    def latest(self, key: str, count: int, through: int) -> list[Message]:
        """The newest ``count`` lines of the room stored under ``key`` with ids up to
        ``through``, oldest first (a cold room's replay cache)."""
        ...

    def page(
        self, key: str, cached: Iterable[Message], query: HistoryQuery, through: int
    ) -> HistoryPage:
        """One HISTORY page of the room (``cached``: its replay cache, all the memory store
        has); lines with ids above ``through`` (committed but not delivered yet) left out."""
        ...

    def prune(self, now_ms: int, limit: int) -> int:
        """Delete up to ``limit`` of the lines past their age (on the writer thread, between
        transactions); how many (``limit``: call again, more are due)."""
        ...

    def close(self) -> None: ...


class SharedHistory(Protocol):
    """A store that orders the lines it keeps (a cluster's Redis: server/cluster_history.py),
    written and read by the cluster's directory off the request's path."""

    def check_line(self, client_id: int) -> None:
        """Refuse (RequestFailed) a line from a connection that has too many waiting."""
        ...

    def add_line(self, pending: Any) -> None:
        """Store and order ``pending``'s line (a ``handlers.PendingLine`` whose frame has id
        0: the store gives the id); its outcome goes to the callback the server set."""
        ...

    def read_page(
        self,
        room: str,
        query: HistoryQuery,
        done: Callable[[HistoryPage | None, BaseException | None], None],
        member_id: int = 0,
    ) -> None:
        """Read one HISTORY page of ``room`` for member ``member_id``; ``done(page, None)``
        or ``done(None, error)`` on the loop (error: a ``RequestFailed`` naming the code to
        answer)."""
        ...


def select_page(lines: Sequence[Message], query: HistoryQuery, through: int) -> HistoryPage:
    """A page of ``lines`` (oldest first) as ``query`` asks: the memory store's answer, and
    the rule the SQLite store's queries follow."""
    mode = query.mode
    low, high = 0, through + 1  # ids strictly between
    if mode is HistoryMode.BEFORE:
        high = min(high, query.anchor)
    elif mode is HistoryMode.AFTER:
        low = query.anchor
    elif mode is HistoryMode.BETWEEN:
        low, high = query.anchor, min(high, query.until)
    chosen = [m for m in lines if low < m.message_id < high]
    newest_first = mode in (HistoryMode.LATEST, HistoryMode.BEFORE)
    ordered = reversed(chosen) if newest_first else iter(chosen)
    page = fill_page(ordered, query)
    more = len(page) < len(chosen)
    if newest_first:
        page.reverse()
    return HistoryPage(page, more)


def fill_page(lines: Iterable[Message], query: HistoryQuery) -> list[Message]:
    """Lines taken in order until ``query.limit`` or ``query.max_bytes`` (at least one)."""
    page: list[Message] = []
    size = 0
    for line in lines:
        if len(page) >= query.limit:
            break
        size += len(line.text.encode("utf-8"))
        if page and size > query.max_bytes:
            break
        page.append(line)
    return page


class MemoryHistory:
    """No store beyond each live room's replay cache (``--data-dir none``)."""

    deferred = False
    where = "memory only (--data-dir none)"

    def __init__(self) -> None:
        # A fresh epoch per process: a restart is a reset of this store.
        self.epoch = _new_epoch()
        self.last_id = 0

    def write(self, lines: Sequence[Message]) -> None:
        """Nothing to write: the replay cache is the history."""

    def latest(self, key: str, count: int, through: int) -> list[Message]:
        return []

    def page(
        self, key: str, cached: Iterable[Message], query: HistoryQuery, through: int
    ) -> HistoryPage:
        return select_page(list(cached), query, through)

    def prune(self, now_ms: int, limit: int) -> int:
        return 0

    def close(self) -> None:
        pass


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY,
    room_key TEXT NOT NULL,
    room TEXT NOT NULL,
    sender_id INTEGER NOT NULL,
    sender_ip TEXT NOT NULL,
    sender_port INTEGER NOT NULL,
    sender_nick TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_by_room ON lines (room_key, id);
"""
_COLUMNS: Final = "id, room, sender_id, sender_ip, sender_port, sender_nick, sent_ms, text"
_INSERT: Final = (
    "INSERT INTO lines (id, room_key, room, sender_id, sender_ip, sender_port, sender_nick,"
    " sent_ms, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The room's oldest ``?2`` lines: the excess over ``keep``, found from the oldest end of the
# room's index (a delete "below the keep-th newest" walked 10,000 index entries per commit:
# 750 µs, three quarters of a 50-line commit's time).
_TRIM: Final = (
    "DELETE FROM lines WHERE room_key = ?1 AND id <= ("
    "SELECT id FROM lines WHERE room_key = ?1 ORDER BY id LIMIT 1 OFFSET ?2 - 1)"
)
#: A room is trimmed back to ``keep`` lines once it holds 1/TRIM_SLACK more: one range delete
#: every keep/16 lines instead of one delete per line (50-line commits into full rooms: 14 ->
#: 9 µs per line).
TRIM_SLACK: Final = 16
#: Rooms whose line count the writer keeps (counted once, then kept up to date); past this
#: many the counts are forgotten and counted again as rooms are written to.
_COUNTED_ROOMS: Final = 2 * defaults.MAX_ROOMS


def _line(row: tuple[Any, ...]) -> Message:
    message_id, room, sender_id, ip, port, nick, sent_ms, text = row
    return Message(message_id, sender_id, ip, port, nick, room, sent_ms, MessageFlags.HISTORY, text)


class SqliteHistory:
    """Room lines in an SQLite database (``sqlite3``, WAL): written by ``write`` (and
    ``prune``) on the writer thread, read by ``latest`` and ``page`` through a second
    connection on the reader thread (``HistoryReads``); WAL lets the two work at once."""

    deferred = True

    def __init__(
        self, path: Path, *, keep: int, max_age_s: float, sync: str = defaults.HISTORY_SYNC
    ) -> None:
        self.path = path
        self.where = f"{path} (--history-sync {sync})"
        self.keep = keep
        self.max_age_ms = int(max_age_s * 1000)
        #: Lines stored per room key (the writer's; a room is counted when first written).
        self._counts: dict[str, int] = {}
        # One server per data directory: a second one would hand out the same ids.
        self._lock = _lock_directory(path.parent)
        try:
            self._writer = _connect(path)  # ConfigError if it cannot be opened
            try:
                self.epoch, self.last_id = _prepare(self._writer, path, sync)
                self._reader = _connect(path)
            except BaseException:
                self._writer.close()
                raise
        except BaseException:
            os.close(self._lock)
            raise

    def write(self, lines: Sequence[Message]) -> None:
        rows = []
        rooms: dict[str, None] = {}
        for m in lines:
            key = room_key(m.room)
            rooms[key] = None
            rows.append(
                (m.message_id, key, m.room, m.sender_id, m.sender_ip, m.sender_port,
                 m.sender_nick, m.sent_ms, m.text)
            )  # fmt: skip
        db = self._writer
        counts = self._counts
        if len(counts) > _COUNTED_ROOMS:
            counts.clear()
        added: dict[str, int] = dict.fromkeys(rooms, 0)
        for row in rows:
            added[row[1]] += 1
        try:
            with db:  # one transaction: all of them, or (rolled back) none
                db.executemany(_INSERT, rows)
                after: dict[str, int] = {}
                for key, count in added.items():
                    known = counts.get(key)
                    if known is None:
                        known = (
                            db.execute(
                                "SELECT count(*) FROM lines WHERE room_key = ?", (key,)
                            ).fetchone()[0]
                            - count
                        )
                    total = known + count
                    if total > self.keep + self.keep // TRIM_SLACK:
                        db.execute(_TRIM, (key, total - self.keep))
                        total = self.keep
                    after[key] = total
        except sqlite3.Error as exc:
            counts.clear()  # what the rolled-back transaction did is unknown: count again
            raise HistoryUnavailable(_reason(exc)) from exc
        counts.update(after)
        if lines:
            self.last_id = max(self.last_id, lines[-1].message_id)

    def latest(self, key: str, count: int, through: int) -> list[Message]:
        if count <= 0:
            return []
        rows = self._read(
            f"SELECT {_COLUMNS} FROM lines WHERE room_key = ? AND id <= ? ORDER BY id DESC LIMIT ?",
            (key, through, count),
        )
        return [_line(r) for r in reversed(rows)]

    def page(
        self, key: str, cached: Iterable[Message], query: HistoryQuery, through: int
    ) -> HistoryPage:
        mode = query.mode
        low, high = 0, min(through + 1, MAX_ID)
        if mode is HistoryMode.BEFORE:
            high = min(high, query.anchor)
        elif mode is HistoryMode.AFTER:
            low = query.anchor
        elif mode is HistoryMode.BETWEEN:
            low, high = query.anchor, min(high, query.until)
        if low >= MAX_ID or high <= low + 1:
            return HistoryPage([], False)
        order = "DESC" if mode in (HistoryMode.LATEST, HistoryMode.BEFORE) else "ASC"
        # One line more than the page: whether more follow, without a count of the rest.
        rows = self._read(
            f"SELECT {_COLUMNS} FROM lines WHERE room_key = ? AND id > ? AND id < ? "
            f"ORDER BY id {order} LIMIT ?",
            (key, low, high, query.limit + 1),
        )
        page = fill_page(map(_line, rows), query)
        more = len(rows) > len(page)
        if order == "DESC":
            page.reverse()
        return HistoryPage(page, more)

    def prune(self, now_ms: int, limit: int) -> int:
        """Up to ``limit`` lines older than the age bound, oldest first, found by id order
        (ids grow with time), deleted in one transaction on the writer's connection: a
        backlog is deleted a chunk at a time, with the group commits between the chunks."""
        if not self.max_age_ms:
            return 0
        db = self._writer
        cutoff = now_ms - self.max_age_ms
        try:
            with db:
                row = db.execute(
                    "SELECT id FROM lines WHERE sent_ms >= ? ORDER BY id LIMIT 1", (cutoff,)
                ).fetchone()
                below = MAX_ID if row is None else row[0]
                cursor = db.execute(
                    "DELETE FROM lines WHERE id IN "
                    "(SELECT id FROM lines WHERE id < ? ORDER BY id LIMIT ?)",
                    (below, limit),
                )
        except sqlite3.Error as exc:
            raise HistoryUnavailable(_reason(exc)) from exc
        finally:
            self._counts.clear()  # rooms lost lines: counted again when next written
        return cursor.rowcount

    def close(self) -> None:
        for db in (self._reader, self._writer):
            with contextlib.suppress(sqlite3.Error):
                db.close()
        if self._lock >= 0:
            os.close(self._lock)  # releases the directory
            self._lock = -1

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise HistoryUnavailable(_reason(exc)) from exc


def _lock_directory(directory: Path) -> int:
    """An exclusive lock on ``directory``'s lock file, held until the descriptor is closed;
    ConfigError when another process holds it."""
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot use the data directory {directory}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(
            f"the data directory {directory} is in use by another switchboard server"
        ) from None
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    # The lines are people's messages: the file is the server user's alone (SQLite gives its
    # -wal and -shm files the database's permissions).
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        # check_same_thread off: the writer connection is made here and used on the writer
        # thread only (never two at once); the reader stays on the loop's thread.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else _reason(exc)
        raise ConfigError(f"cannot open the history database {path}: {reason}") from exc
    db.isolation_level = "DEFERRED"  # "with db:" opens a transaction and commits it
    return db


def _prepare(db: sqlite3.Connection, path: Path, sync: str) -> tuple[int, int]:
    """Check and set up the database: WAL, the schema, the epoch; (epoch, highest id)."""
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the history database {path} was made by a later version of switchboard "
                f"(schema {version}, this one knows {SCHEMA_VERSION}); use --data-dir elsewhere"
            )
        # A file that is no database fails above; its pages are checked too when that is
        # quick (quick_check reads them all: 0.4 s per 100,000 lines, minutes for a large
        # store, whose damage is then found where it is read: HISTORY_UNAVAILABLE, logged).
        if path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                what = " ".join(str(check).replace("*", "").split())[:200]  # one line
                raise ConfigError(f"the history database {path} is damaged ({what}); move it away")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"the history database {path} cannot use WAL mode ({mode})")
        # NORMAL: a commit is in the WAL file before the BROADCAST's OK goes out, which a
        # crashed or killed server keeps (the kernel has it); FULL also fsyncs it, for a
        # crash of the machine or a power cut, at a disk flush per group commit (measured in
        # docs/BENCHMARKS.md).  SQLite's documented pairing for WAL is NORMAL.
        if sync not in SYNC_MODES:
            raise ConfigError(f"history_sync must be one of {', '.join(SYNC_MODES)}, not {sync!r}")
        db.execute(f"PRAGMA synchronous={sync.upper()}")
        with db:
            db.executescript("BEGIN;" + _SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
        with db:
            row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            if row is None:
                epoch = _new_epoch()
                db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
            else:
                epoch = int(row[0])
        last = db.execute("SELECT max(id) FROM lines").fetchone()[0]
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot use the history database {path}: {_reason(exc)}") from exc
    return epoch, int(last or 0)


def _reason(exc: sqlite3.Error) -> str:
    """sqlite3's message, which names the cause ("database or disk is full")."""
    return str(exc) or exc.__class__.__name__


def _new_epoch() -> int:
    return secrets.randbelow(0xFFFF_FFFF) + 1  # 1..2^32-1: 0 means "no epoch" to a client


def open_store(
    data_dir: str | None, *, keep: int, max_age_s: float, sync: str = defaults.HISTORY_SYNC
) -> HistoryStore:
    """The store ``--data-dir`` names: ``none`` is memory only; a directory (made 0700 if
    missing) holds the SQLite database.  ConfigError, with one line that says why, when it
    cannot be used (the server then exits 2 before listening)."""
    if data_dir is not None and data_dir.lower() == defaults.DATA_DIR_NONE:
        return MemoryHistory()
    directory = Path(data_dir) if data_dir else state_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the data directory {directory}: {exc.strerror}") from exc
    path = directory / defaults.HISTORY_DB_FILE
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"cannot use the history database {path}: permission denied")
    return SqliteHistory(path, keep=keep, max_age_s=max_age_s, sync=sync)


class GroupCommit:
    """Group commits of a deferred store: the lines added during one pass of the event loop
    are written in one transaction on the store's writer thread; while it runs, the next
    batch gathers.  ``on_done(batch, error)`` runs on the loop for each batch, in order."""

    __slots__ = (
        "_added",
        "_done",
        "_executor",
        "_idle",
        "_loop",
        "_on_done",
        "_pending",
        "_running",
        "_waiters",
        "store",
    )

    def __init__(
        self,
        store: HistoryStore,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[list[Any], BaseException | None], None],
    ) -> None:
        self.store = store
        self._loop = loop
        self._on_done = on_done
        self._pending: list[Any] = []
        self._running = False
        #: Lines added, and lines whose transaction is over (committed or failed), so far;
        #: and what waits for the lines added before it (``after_pending``).
        self._added = 0
        self._done = 0
        self._waiters: list[tuple[int, Callable[[], None]]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-writer")

    def add(self, item: Any) -> None:
        """Queue ``item`` (its ``message`` is the line) for the next transaction."""
        pending = self._pending
        pending.append(item)
        self._added += 1
        if len(pending) == 1 and not self._running:
            self._idle.clear()
            self._loop.call_soon(self._start)

    def _start(self) -> None:
        if self._running or not self._pending:
            return
        batch, self._pending = self._pending, []
        self._running = True
        lines = [item.message for item in batch]
        future = self._loop.run_in_executor(self._executor, self.store.write, lines)
        future.add_done_callback(lambda f: self._finished(batch, f))

    def _finished(self, batch: list[Any], future: asyncio.Future[None]) -> None:
        self._running = False
        self._done += len(batch)
        error = None if future.cancelled() else future.exception()
        try:
            self._on_done(batch, error)
        finally:
            if self._pending:
                self._start()
            else:
                self._idle.set()
            if self._waiters:
                due = [w for w in self._waiters if w[0] <= self._done]
                self._waiters = [w for w in self._waiters if w[0] > self._done]
                for _, callback in due:
                    callback()

    def after_pending(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop once every line added so far has been committed (or
        has failed) and reported; at once when none is under way."""
        if self._done >= self._added:
            callback()
        else:
            self._waiters.append((self._added, callback))

    def run(self, job: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``job`` on the writer thread, after the transactions before it (pruning)."""
        return self._loop.run_in_executor(self._executor, job)

    async def drain(self) -> None:
        """Wait until every line added so far is committed (or has failed) and reported."""
        await self._idle.wait()

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class HistoryReads:
    """Reads of a store written off the loop (HISTORY pages, a cold room's replay): on a
    thread of their own, the store's reading connection used there only, each outcome
    reported on the loop (``done(result, None)`` or ``done(None, error)``), in the order
    asked.  A store reached over the network (Redis) is read the same way."""

    __slots__ = ("_executor", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-reader")

    def submit(
        self, job: Callable[[], T], done: Callable[[T | None, BaseException | None], None]
    ) -> None:
        future = self._loop.run_in_executor(self._executor, job)

        def report(f: asyncio.Future[T]) -> None:
            if f.cancelled():
                done(None, asyncio.CancelledError())
            elif f.exception() is not None:
                done(None, f.exception())
            else:
                done(f.result(), None)

        future.add_done_callback(report)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
