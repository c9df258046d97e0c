"""The spool: metered lines kept durably between MinIO's answer and their delivery to OGC RS.

``serve`` answers MinIO as soon as a body's lines are committed here, and delivers them behind. Two stores share one
contract: a SQLite file beside the process (one instance; the ledger lives in the same file) and a PostgreSQL table
shared by a fleet of instances. A line is *claimed* by one deliverer for a lease (the visibility timeout, renewed
while it is being sent), *removed* once the ledger shows it delivered, or *deferred* to a later try; a lease that
runs out (its instance died) makes the line claimable again. Each claim is a *round*: its id and start are written
on the lines before anything is sent, so whoever takes over lines of a round that never finished can tell which
lines that round may have posted (``round_lines``) and hand them to the ledger as an uncertain request. Each line
carries its ledger key (MinIO ``deploymentid:requestID``): the spool holds one line per key, and the ledger decides
whether it is ever sent.

Appends are committed in groups (``GroupCommit``): the requests that arrive while one commit is being synced to disk
share the next one, so a disk that syncs in 10 ms still accepts thousands of bodies a second.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from metering.exactly_once import KeyedLine
from metering.ledger.sqlite import create_private_file

logger = logging.getLogger(__name__)


class SpoolUnavailable(RuntimeError):
    """The spool cannot take lines now (full, or its database unreachable): the webhook answers 503."""


@dataclass(frozen=True, slots=True)
class SpooledLine:
    """A line in the spool, with its row id (to remove or defer it) and its ledger key."""

    id: int
    key: str
    line: str
    lapsed_round: str | None = None
    """When this claim took the line over from a round whose lease ran out (its instance died or stalled): that
    round's id. None for a line nobody held."""
    lapsed_started_at: float | None = None
    """When that lapsed round was claimed (epoch seconds): the earliest its request can have been sent."""


@dataclass(frozen=True, slots=True)
class SpoolRound:
    """The lines one claim leased, in the order they are sent, and when that claim was made (epoch seconds)."""

    round_id: str
    started_at: float
    lines: list[SpooledLine]


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """How much the spool holds: lines waiting (claimed or not) and the age of the oldest one."""

    depth: int
    oldest_age_s: float
    """Seconds since the oldest waiting line was spooled; 0 when the spool is empty."""


class Spool(Protocol):
    """Durable storage of lines waiting for delivery, shared by every deliverer of the same store."""

    def append(self, groups: Sequence[Sequence[KeyedLine]]) -> None:
        """Store the lines of several bodies in one transaction, durable on return; a key already spooled is kept
        once. Raises SpoolUnavailable when the store cannot be written."""
        ...

    def claim(self, owner: str, limit: int, lease_s: float, round_id: str) -> list[SpooledLine]:
        """Up to ``limit`` lines nobody holds (oldest first), now held by ``owner`` for ``lease_s`` seconds as round
        ``round_id``, in id order (the order they are sent)."""
        ...

    def round_lines(self, round_id: str) -> SpoolRound | None:
        """The lines still spooled under round ``round_id`` (in id order) and its start; None when none is left."""
        ...

    def renew(self, owner: str, ids: Sequence[int], lease_s: float) -> None:
        """Extend ``owner``'s lease on the lines ``ids`` (while they are being sent)."""
        ...

    def remove(self, ids: Sequence[int]) -> None:
        """Forget delivered lines."""
        ...

    def defer(self, ids: Sequence[int], delay_s: float) -> None:
        """Give lines back, claimable again after ``delay_s`` seconds (a failed try backs off)."""
        ...

    def stats(self) -> SpoolStats:
        """Depth and oldest-line age, read from the store (every instance of a fleet sees the same)."""
        ...

    def close(self) -> None:
        """Close the store's connections."""
        ...


class SqliteSpool:
    """The spool as a table of a SQLite file (WAL, every commit synced to disk), for one ``serve`` instance.

    Appends use a connection of their own, so a commit being synced never delays a deliverer's claim for longer
    than SQLite's write lock.
    """

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            create_private_file(path)
        self._clock = clock
        self._writer = self._connect(path)
        self._writer.executescript(
            "CREATE TABLE IF NOT EXISTS ogc_audit_spool ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, line TEXT NOT NULL,"
            " received_at REAL NOT NULL, available_at REAL NOT NULL, owner TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
            " round_id TEXT, round_started REAL);"
            "CREATE INDEX IF NOT EXISTS ogc_audit_spool_available ON ogc_audit_spool (available_at);"
            "CREATE INDEX IF NOT EXISTS ogc_audit_spool_round ON ogc_audit_spool (round_id);"
        )
        self._reader = self._connect(path) if path != ":memory:" else self._writer
        self._write_lock = threading.Lock()
        self._lock = threading.Lock() if path != ":memory:" else self._write_lock

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        if path != ":memory:":
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")  # the 2xx promises the lines survive a crash
        return connection

    def append(self, groups: Sequence[Sequence[KeyedLine]]) -> None:
        """All groups in one synced transaction; a key already spooled is ignored."""
        now = self._clock()
        rows = [(item.key, item.line, now, now) for group in groups for item in group]
        try:
            with self._write_lock, _transaction(self._writer):
                self._writer.executemany(
                    "INSERT OR IGNORE INTO ogc_audit_spool (key, line, received_at, available_at) VALUES (?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as error:
            raise SpoolUnavailable(f"the spool file cannot be written: {error}") from error

    def claim(self, owner: str, limit: int, lease_s: float, round_id: str) -> list[SpooledLine]:
        """The oldest available lines, leased to ``owner`` as round ``round_id``."""
        now = self._clock()
        with self._lock, _transaction(self._reader):
            rows = self._reader.execute(
                "SELECT id, key, line, CASE WHEN owner IS NULL THEN NULL ELSE round_id END,"
                " CASE WHEN owner IS NULL THEN NULL ELSE round_started END FROM ogc_audit_spool"
                " WHERE available_at <= ? ORDER BY available_at, id LIMIT ?",
                (now, limit),
            ).fetchall()
            self._reader.executemany(
                "UPDATE ogc_audit_spool SET available_at = ?, owner = ?, attempts = attempts + 1, round_id = ?,"
                " round_started = ? WHERE id = ?",
                [(now + lease_s, owner, round_id, now, row[0]) for row in rows],
            )
        return [SpooledLine(*row) for row in sorted(rows)]

    def round_lines(self, round_id: str) -> SpoolRound | None:
        """The lines of a round, by its index."""
        with self._lock:
            rows = self._reader.execute(
                "SELECT id, key, line, round_started FROM ogc_audit_spool WHERE round_id = ? ORDER BY id", (round_id,)
            ).fetchall()
        if not rows:
            return None
        return SpoolRound(round_id, float(rows[0][3]), [SpooledLine(*row[:3]) for row in rows])

    def renew(self, owner: str, ids: Sequence[int], lease_s: float) -> None:
        """Extend the lease of lines still held by ``owner``."""
        until = self._clock() + lease_s
        with self._lock, _transaction(self._reader):
            self._reader.executemany(
                "UPDATE ogc_audit_spool SET available_at = ? WHERE id = ? AND owner = ?",
                [(until, line_id, owner) for line_id in ids],
            )

    def remove(self, ids: Sequence[int]) -> None:
        """Delete the lines."""
        with self._lock, _transaction(self._reader):
            self._reader.executemany("DELETE FROM ogc_audit_spool WHERE id = ?", [(line_id,) for line_id in ids])

    def defer(self, ids: Sequence[int], delay_s: float) -> None:
        """Release the lines, claimable after ``delay_s``."""
        until = self._clock() + delay_s
        with self._lock, _transaction(self._reader):
            self._reader.executemany(
                "UPDATE ogc_audit_spool SET available_at = ?, owner = NULL WHERE id = ?",
                [(until, line_id) for line_id in ids],
            )

    def stats(self) -> SpoolStats:
        """Count the lines; the oldest is the first spooled (ids grow with time)."""
        with self._lock:
            (depth,) = self._reader.execute("SELECT count(*) FROM ogc_audit_spool").fetchone()
            oldest = self._reader.execute("SELECT received_at FROM ogc_audit_spool ORDER BY id LIMIT 1").fetchone()
        return SpoolStats(depth, max(0.0, self._clock() - oldest[0]) if oldest else 0.0)

    def close(self) -> None:
        """Close both connections."""
        self._reader.close()
        if self._writer is not self._reader:
            self._writer.close()


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


# Schema of the PostgreSQL spool, applied at start-up under an advisory lock (instances may start together).
# Each entry is one migration step, applied once in order; never edit a step that has shipped, add one.
_POSTGRES_MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS ogc_audit_spool (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key text NOT NULL UNIQUE,
        line text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        available_at timestamptz NOT NULL DEFAULT now(),
        owner text,
        attempts integer NOT NULL DEFAULT 0,
        round_id text,
        round_started timestamptz
    );
    CREATE INDEX IF NOT EXISTS ogc_audit_spool_available ON ogc_audit_spool (available_at);
    CREATE INDEX IF NOT EXISTS ogc_audit_spool_round ON ogc_audit_spool (round_id);
    """,
)
_MIGRATION_LOCK = 0x6F67_6361_7564_6974  # "ogcaudit": one advisory lock id for the spool's migrations


def migrate_postgres(connection: Any) -> int:
    """Create or migrate the spool's tables; the schema version now in force. Safe when instances start together."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS ogc_audit_spool_schema (version integer NOT NULL)")
        row = connection.execute("SELECT max(version) FROM ogc_audit_spool_schema").fetchone()
        version = int(row[0] or 0)
        for step, statement in enumerate(_POSTGRES_MIGRATIONS[version:], start=version + 1):
            connection.execute(statement)
            connection.execute("INSERT INTO ogc_audit_spool_schema (version) VALUES (%s)", (step,))
            version = step
    return version


class PostgresSpool:
    """The spool as a PostgreSQL table shared by a fleet: claims skip rows another instance has locked
    (``FOR UPDATE SKIP LOCKED``), and the database's clock dates every lease, so instances' clocks never disagree."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._writer: Any = None
        self._reader: Any = None
        with self._lock:
            migrate_postgres(self._connection("_reader"))

    def _connection(self, name: str) -> Any:
        """The live connection kept in attribute ``name``, opened again after the database went away."""
        import psycopg

        connection = getattr(self, name)
        if connection is None or connection.closed or connection.broken:
            connection = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
            setattr(self, name, connection)
        return connection

    @contextmanager
    def _using(self, name: str, lock: threading.Lock) -> Iterator[Any]:
        import psycopg

        with lock:
            try:
                yield self._connection(name)
            except psycopg.OperationalError as error:
                raise SpoolUnavailable(f"the spool database is unavailable: {type(error).__name__}") from error

    def append(self, groups: Sequence[Sequence[KeyedLine]]) -> None:
        """One INSERT of every line (arrays unnested), committed before return; known keys are ignored."""
        keys = [item.key for group in groups for item in group]
        lines = [item.line for group in groups for item in group]
        with self._using("_writer", self._write_lock) as connection:
            connection.execute(
                "INSERT INTO ogc_audit_spool (key, line) SELECT * FROM unnest(%s::text[], %s::text[])"
                " ON CONFLICT (key) DO NOTHING",
                (keys, lines),
            )

    def claim(self, owner: str, limit: int, lease_s: float, round_id: str) -> list[SpooledLine]:
        """Lease the oldest available lines no other instance is claiming at this moment."""
        with self._using("_reader", self._lock) as connection:
            rows = connection.execute(
                "WITH picked AS (SELECT id, owner, round_id, round_started FROM ogc_audit_spool"
                "  WHERE available_at <= now() ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " UPDATE ogc_audit_spool AS spool SET available_at = now() + make_interval(secs => %s), owner = %s,"
                " attempts = spool.attempts + 1, round_id = %s, round_started = now() FROM picked"
                " WHERE spool.id = picked.id"
                " RETURNING spool.id, spool.key, spool.line,"
                " CASE WHEN picked.owner IS NULL THEN NULL ELSE picked.round_id END,"
                " CASE WHEN picked.owner IS NULL THEN NULL ELSE extract(epoch FROM picked.round_started)::float8 END",
                (limit, lease_s, owner, round_id),
            ).fetchall()
        return [SpooledLine(*row) for row in sorted(rows)]

    def round_lines(self, round_id: str) -> SpoolRound | None:
        """The lines of a round, by its index."""
        with self._using("_reader", self._lock) as connection:
            rows = connection.execute(
                "SELECT id, key, line, extract(epoch FROM round_started) FROM ogc_audit_spool WHERE round_id = %s"
                " ORDER BY id",
                (round_id,),
            ).fetchall()
        if not rows:
            return None
        return SpoolRound(round_id, float(rows[0][3]), [SpooledLine(*row[:3]) for row in rows])

    def renew(self, owner: str, ids: Sequence[int], lease_s: float) -> None:
        """Extend the lease of lines still held by ``owner``."""
        with self._using("_reader", self._lock) as connection:
            connection.execute(
                "UPDATE ogc_audit_spool SET available_at = now() + make_interval(secs => %s)"
                " WHERE id = ANY(%s) AND owner = %s",
                (lease_s, list(ids), owner),
            )

    def remove(self, ids: Sequence[int]) -> None:
        """Delete the lines."""
        with self._using("_reader", self._lock) as connection:
            connection.execute("DELETE FROM ogc_audit_spool WHERE id = ANY(%s)", (list(ids),))

    def defer(self, ids: Sequence[int], delay_s: float) -> None:
        """Release the lines, claimable after ``delay_s``."""
        with self._using("_reader", self._lock) as connection:
            connection.execute(
                "UPDATE ogc_audit_spool SET available_at = now() + make_interval(secs => %s), owner = NULL"
                " WHERE id = ANY(%s)",
                (delay_s, list(ids)),
            )

    def stats(self) -> SpoolStats:
        """Count the lines of the whole fleet; the oldest is the first spooled (identity values grow with time)."""
        with self._using("_reader", self._lock) as connection:
            (depth,) = connection.execute("SELECT count(*) FROM ogc_audit_spool").fetchone()
            oldest = connection.execute(
                "SELECT extract(epoch FROM now() - received_at) FROM ogc_audit_spool ORDER BY id LIMIT 1"
            ).fetchone()
        return SpoolStats(int(depth), max(0.0, float(oldest[0])) if oldest else 0.0)

    def close(self) -> None:
        """Close both connections."""
        for name in ("_writer", "_reader"):
            connection = getattr(self, name)
            if connection is not None:
                connection.close()


class GroupCommit:
    """Appends to a spool from many threads, committed together: each caller waits for the commit holding its lines.

    One thread writes: it takes every group queued while the previous commit was syncing and stores them in one
    transaction, so the cost of a sync is shared by all the bodies that arrived meanwhile.
    """

    _STOP = object()

    def __init__(self, spool: Spool, max_groups: int = 512) -> None:
        self._spool = spool
        self._max_groups = max_groups
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    def append(self, lines: Sequence[KeyedLine], timeout: float = 30.0) -> None:
        """Store ``lines`` durably; returns once committed, raises SpoolUnavailable when they could not be."""
        done: Future[None] = Future()
        self._queue.put((lines, done))
        try:
            done.result(timeout)
        except TimeoutError as error:
            raise SpoolUnavailable(f"the spool did not commit within {timeout:.0f} s") from error

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        self._queue.put(self._STOP)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is self._STOP:
                return
            batch = [first]
            stopping = False
            while len(batch) < self._max_groups:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is self._STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)
            if stopping:
                return

    def _commit(self, batch: list[tuple[Sequence[KeyedLine], Future[None]]]) -> None:
        try:
            self._spool.append([lines for lines, _ in batch])
        except Exception as error:  # every waiting request answers 503; MinIO re-sends the bodies
            failure = error if isinstance(error, SpoolUnavailable) else SpoolUnavailable(str(error))
            logger.error("spool append failed for %d bodies: %s", len(batch), failure)
            for _, done in batch:
                done.set_exception(failure)
            return
        for _, done in batch:
            done.set_result(None)
