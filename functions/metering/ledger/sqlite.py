"""The delivery ledger in a SQLite file (local runs, the standalone server's workers) or in memory (one process)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

from metering.ledger import (
    COMPLETED,
    IN_PROGRESS,
    IN_PROGRESS_S,
    RETENTION_S,
    UNCERTAIN,
    Claim,
    UncertainRequest,
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS delivery_ledger (key TEXT PRIMARY KEY, status TEXT NOT NULL, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS delivery_ledger_expires ON delivery_ledger (expires)",
    "CREATE TABLE IF NOT EXISTS uncertain_request (request_id TEXT PRIMARY KEY, body TEXT NOT NULL,"
    " lease_expires REAL NOT NULL DEFAULT 0, expires REAL NOT NULL)",
)


def create_private_file(path: str) -> None:
    """Create ``path`` readable by its owner only (0600), or narrow an existing file to that, before SQLite opens it:
    the ledger names downloads and users, a spool their lines. SQLite gives its -wal and -shm files the same mode."""
    if path == ":memory:" or path.startswith("file:"):
        return
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        if os.fstat(descriptor).st_mode & 0o077:
            os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


class SqliteLedger:
    """A ledger in a SQLite file (shared by the standalone server's workers) or in memory (one process).

    A new file is created 0600; SQLite gives its -wal and -shm files the database file's mode.
    """

    def __init__(
        self,
        path: str = ":memory:",
        *,
        retention_s: float = RETENTION_S,
        in_progress_s: float = IN_PROGRESS_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        create_private_file(path)
        # Workers of the standalone server share the file: wait for each other's short transactions.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(delivery_ledger)")}
        if "request" not in columns:  # a file written before uncertain requests existed
            self._db.execute("ALTER TABLE delivery_ledger ADD COLUMN request TEXT")
        self._lock = threading.Lock()
        self._retention_s = retention_s
        self._in_progress_s = in_progress_s
        self._clock = clock
        self._claims = 0

    def claim(self, keys: Collection[str]) -> Claim:
        """Claim keys in one transaction; an expired record counts as absent."""
        claim = Claim()
        now = self._clock()
        with self._lock, self._transaction():
            for key in keys:
                row = self._db.execute("SELECT status, expires FROM delivery_ledger WHERE key = ?", (key,)).fetchone()
                if row is None or row[1] < now:
                    self._db.execute(
                        "INSERT OR REPLACE INTO delivery_ledger VALUES (?, ?, ?, NULL)",
                        (key, IN_PROGRESS, now + self._in_progress_s),
                    )
                    claim.claimed.add(key)
                elif row[0] == COMPLETED:
                    claim.delivered.add(key)
                elif row[0] == UNCERTAIN:
                    claim.uncertain.add(key)
                else:
                    claim.in_flight.add(key)
            self._claims += 1
            if self._claims % 1000 == 0:  # keep the file from growing past the retention window
                self._db.execute("DELETE FROM delivery_ledger WHERE expires < ?", (now,))
                self._db.execute("DELETE FROM uncertain_request WHERE expires < ?", (now,))
        return claim

    def settle(self, keys: Collection[str]) -> None:
        """Keep the keys as delivered for the retention window."""
        expires = self._clock() + self._retention_s
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO delivery_ledger VALUES (?, ?, ?, NULL)",
                [(key, COMPLETED, expires) for key in keys],
            )

    def delivered(self, keys: Collection[str]) -> set[str]:
        """The keys recorded as delivered and not expired."""
        now = self._clock()
        found: set[str] = set()
        with self._lock:
            for key in keys:
                row = self._db.execute("SELECT status, expires FROM delivery_ledger WHERE key = ?", (key,)).fetchone()
                if row is not None and row[0] == COMPLETED and row[1] >= now:
                    found.add(key)
        return found

    def release(self, keys: Collection[str]) -> None:
        """Forget claims that were not delivered (never a settled or uncertain key)."""
        with self._lock, self._transaction():
            self._db.executemany(
                "DELETE FROM delivery_ledger WHERE key = ? AND status = ?", [(key, IN_PROGRESS) for key in keys]
            )

    def mark_uncertain(self, request: UncertainRequest) -> None:
        """Keep the request and mark its keys UNCERTAIN, in one transaction."""
        expires = self._clock() + self._retention_s
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO uncertain_request VALUES (?, ?, 0, ?)",
                (request.request_id, request.to_json(), expires),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO delivery_ledger VALUES (?, ?, ?, ?)",
                [(key, UNCERTAIN, expires, request.request_id) for key in request.keys],
            )

    def uncertain_requests(self, keys: Collection[str]) -> list[UncertainRequest]:
        """The records behind the keys that are UNCERTAIN, each once, in the order of ``keys``."""
        found: dict[str, UncertainRequest] = {}
        with self._lock:
            for key in keys:
                row = self._db.execute(
                    "SELECT r.request_id, r.body FROM delivery_ledger l JOIN uncertain_request r"
                    " ON r.request_id = l.request WHERE l.key = ? AND l.status = ?",
                    (key, UNCERTAIN),
                ).fetchone()
                if row is not None and row[0] not in found:
                    found[row[0]] = UncertainRequest.from_json(row[1])
        return list(found.values())

    def lease_uncertain(self, request_id: str) -> bool:
        """A conditional update: won only when no live lease exists."""
        now = self._clock()
        with self._lock, self._transaction():
            cursor = self._db.execute(
                "UPDATE uncertain_request SET lease_expires = ? WHERE request_id = ? AND lease_expires < ?",
                (now + self._in_progress_s, request_id, now),
            )
            return cursor.rowcount == 1

    def unlease_uncertain(self, request_id: str) -> None:
        """Let the next try take the lease at once."""
        with self._lock, self._transaction():
            self._db.execute("UPDATE uncertain_request SET lease_expires = 0 WHERE request_id = ?", (request_id,))

    def resolve_uncertain(self, request: UncertainRequest, *, stored: bool) -> None:
        """Settle (when stored), release the keys still uncertain because of it, forget the record: one transaction."""
        expires = self._clock() + self._retention_s
        with self._lock, self._transaction():
            if stored:
                self._db.executemany(
                    "INSERT OR REPLACE INTO delivery_ledger VALUES (?, ?, ?, NULL)",
                    [(key, COMPLETED, expires) for key in request.stored_keys],
                )
            self._db.executemany(
                "DELETE FROM delivery_ledger WHERE key = ? AND status = ? AND request = ?",
                [(key, UNCERTAIN, request.request_id) for key in request.keys],
            )
            self._db.execute("DELETE FROM uncertain_request WHERE request_id = ?", (request.request_id,))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
