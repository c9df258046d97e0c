"""The delivery ledger in PostgreSQL (psycopg 3): one ledger shared by a fleet of ``serve`` instances.

Every decision is one statement or one transaction the database arbitrates, so two processes never both win a
key: a claim is ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <claimable>`` (the loser waits for the winner's row
lock, then sees its row), releasing and resolving delete only rows still in the state they were left in, and a
resolver's lease is a conditional ``UPDATE``. The tables are created at start-up (``CREATE TABLE IF NOT EXISTS``
under an advisory lock, so instances starting together do not collide). Times are epoch seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from metering.ledger import (
    COMPLETED,
    IN_PROGRESS,
    IN_PROGRESS_S,
    RETENTION_S,
    UNCERTAIN,
    Claim,
    UncertainRequest,
)

__all__ = ["PostgresLedger"]

# Arbitrary, fixed: serialises the schema creation of instances starting at the same moment.
_SCHEMA_LOCK = 0x6F6763_4C4544  # "ogcLED"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS delivery_ledger ("
    " key text PRIMARY KEY, status text NOT NULL, expires double precision NOT NULL, request text)",
    "CREATE INDEX IF NOT EXISTS delivery_ledger_expires ON delivery_ledger (expires)",
    "CREATE TABLE IF NOT EXISTS uncertain_request ("
    " request_id text PRIMARY KEY, body jsonb NOT NULL, lease_expires double precision NOT NULL DEFAULT 0,"
    " expires double precision NOT NULL)",
)


class PostgresLedger:
    """The ledger in a PostgreSQL database; ``url`` is a ``postgresql://`` connection string.

    One connection per ledger object, used by one thread at a time; a broken connection is reopened on the next
    call. Expired rows are purged every 1,000 claims.
    """

    def __init__(
        self,
        url: str,
        *,
        retention_s: float = RETENTION_S,
        in_progress_s: float = IN_PROGRESS_S,
        clock: Callable[[], float] = time.time,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._retention_s = retention_s
        self._in_progress_s = in_progress_s
        self._clock = clock
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None
        self._claims = 0
        with self._lock, self._transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                cursor.execute(statement)

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def claim(self, keys: Collection[str]) -> Claim:
        """Insert each key as IN_PROGRESS, or take it over when its record expired; report what the others hold."""
        wanted = sorted(set(keys))
        claim = Claim()
        if not wanted:
            return claim
        now = self._clock()
        with self._lock, self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO delivery_ledger (key, status, expires, request)"
                " SELECT key, %(status)s, %(until)s, NULL FROM unnest(%(keys)s::text[]) AS key ORDER BY key"
                " ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, expires = EXCLUDED.expires, request = NULL"
                " WHERE delivery_ledger.expires < %(now)s"
                " RETURNING key",
                {"status": IN_PROGRESS, "until": now + self._in_progress_s, "keys": wanted, "now": now},
            )
            claim.claimed.update(row[0] for row in cursor.fetchall())
            others = [key for key in wanted if key not in claim.claimed]
            if others:
                cursor.execute("SELECT key, status FROM delivery_ledger WHERE key = ANY(%s)", (others,))
                for key, status in cursor.fetchall():
                    {COMPLETED: claim.delivered, UNCERTAIN: claim.uncertain}.get(status, claim.in_flight).add(key)
            self._claims += 1
            if self._claims % 1000 == 0:  # keep the table from growing past the retention window
                cursor.execute("DELETE FROM delivery_ledger WHERE expires < %s", (now,))
                cursor.execute("DELETE FROM uncertain_request WHERE expires < %s", (now,))
        return claim

    def settle(self, keys: Collection[str]) -> None:
        """Upsert the keys as COMPLETED for the retention window."""
        with self._lock, self._transaction() as cursor:
            self._settle(cursor, keys)

    def _settle(self, cursor: psycopg.Cursor[Any], keys: Collection[str]) -> None:
        wanted = sorted(set(keys))
        if not wanted:
            return
        cursor.execute(
            "INSERT INTO delivery_ledger (key, status, expires, request)"
            " SELECT key, %(status)s, %(until)s, NULL FROM unnest(%(keys)s::text[]) AS key ORDER BY key"
            " ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, expires = EXCLUDED.expires, request = NULL",
            {"status": COMPLETED, "until": self._clock() + self._retention_s, "keys": wanted},
        )

    def delivered(self, keys: Collection[str]) -> set[str]:
        """The keys recorded as COMPLETED and not expired."""
        wanted = list(set(keys))
        if not wanted:
            return set()
        with self._lock, self._transaction() as cursor:
            cursor.execute(
                "SELECT key FROM delivery_ledger WHERE key = ANY(%s) AND status = %s AND expires >= %s",
                (wanted, COMPLETED, self._clock()),
            )
            return {row[0] for row in cursor.fetchall()}

    def release(self, keys: Collection[str]) -> None:
        """Delete the keys still IN_PROGRESS (never a settled or uncertain one)."""
        wanted = sorted(set(keys))
        if not wanted:
            return
        with self._lock, self._transaction() as cursor:
            cursor.execute("DELETE FROM delivery_ledger WHERE key = ANY(%s) AND status = %s", (wanted, IN_PROGRESS))

    def mark_uncertain(self, request: UncertainRequest) -> None:
        """Keep the request and mark its keys UNCERTAIN, in one transaction."""
        expires = self._clock() + self._retention_s
        with self._lock, self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO uncertain_request (request_id, body, lease_expires, expires) VALUES (%s, %s, 0, %s)"
                " ON CONFLICT (request_id) DO NOTHING",
                (request.request_id, Jsonb(request.to_json_document()), expires),
            )
            cursor.execute(
                "INSERT INTO delivery_ledger (key, status, expires, request)"
                " SELECT key, %(status)s, %(until)s, %(request)s FROM unnest(%(keys)s::text[]) AS key ORDER BY key"
                " ON CONFLICT (key) DO UPDATE"
                " SET status = EXCLUDED.status, expires = EXCLUDED.expires, request = EXCLUDED.request",
                {
                    "status": UNCERTAIN,
                    "until": expires,
                    "request": request.request_id,
                    "keys": sorted(set(request.keys)),
                },
            )

    def uncertain_requests(self, keys: Collection[str]) -> list[UncertainRequest]:
        """The records behind the keys that are UNCERTAIN, each once."""
        wanted = list(set(keys))
        if not wanted:
            return []
        with self._lock, self._transaction() as cursor:
            cursor.execute(
                "SELECT DISTINCT r.request_id, r.body FROM delivery_ledger l"
                " JOIN uncertain_request r ON r.request_id = l.request"
                " WHERE l.key = ANY(%s) AND l.status = %s ORDER BY r.request_id",
                (wanted, UNCERTAIN),
            )
            return [UncertainRequest.from_json_document(body) for _, body in cursor.fetchall()]

    def lease_uncertain(self, request_id: str) -> bool:
        """A conditional update: won only when the request exists and no live lease holds it."""
        now = self._clock()
        with self._lock, self._transaction() as cursor:
            cursor.execute(
                "UPDATE uncertain_request SET lease_expires = %s WHERE request_id = %s AND lease_expires < %s",
                (now + self._in_progress_s, request_id, now),
            )
            return cursor.rowcount == 1

    def unlease_uncertain(self, request_id: str) -> None:
        """Let the next try take the lease at once."""
        with self._lock, self._transaction() as cursor:
            cursor.execute("UPDATE uncertain_request SET lease_expires = 0 WHERE request_id = %s", (request_id,))

    def resolve_uncertain(self, request: UncertainRequest, *, stored: bool) -> None:
        """Settle (when stored), release the keys still uncertain because of it, forget it: one transaction."""
        with self._lock, self._transaction() as cursor:
            if stored:
                self._settle(cursor, request.stored_keys)
            cursor.execute(
                "DELETE FROM delivery_ledger WHERE key = ANY(%s) AND status = %s AND request = %s",
                (sorted(set(request.keys)), UNCERTAIN, request.request_id),
            )
            cursor.execute("DELETE FROM uncertain_request WHERE request_id = %s", (request.request_id,))

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction on the (re)opened connection (autocommit outside it); the caller holds ``_lock``.

        Keys are always written in sorted order, so two transactions never wait for each other's rows crosswise.
        """
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            connection = psycopg.connect(
                self._url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout_s))
            )
            self._connection = connection
        with connection.transaction(), connection.cursor() as cursor:
            yield cursor
