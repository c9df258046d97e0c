"""Where the reference OGC RS keeps what AuditLogsIngestion writes: SQLite (the demo's default) or PostgreSQL.

Both stores keep OGC RS's two tables and write them in OGC RS's order (ogc-resource-server ``UtilClass``,
``AuditLogsIngestionProcess``; see docs/contracts.md):

1. a ``jobs_table`` row, status ``ACCEPTED``, whose ``input`` is the body's ``inputs`` object plus ``processId``,
   ``userId`` and ``role`` (what OGC RS's API layer adds before the job is stored);
2. the status set to ``RUNNING``;
3. every line validated, then all of them inserted into ``metering`` in one transaction;
4. the status set to ``SUCCESSFUL``, or ``FAILED`` when a line was refused (nothing stored).

The PostgreSQL store creates the tables with OGC RS's own DDL (``metering`` as V20 + V25, ``jobs_table`` as V2 +
V7), so ``metering.ogc_rs_database`` and ``ogc-audit reconcile`` are tested against the real column types. The raw
lines as received (backend included) are kept beside, in a schema of the testbed's own, for tests to read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    import psycopg

__all__ = ["MeteringRow", "MeteringStore", "PostgresMeteringStore", "SqliteMeteringStore", "StoredLine", "open_store"]


class MeteringRow(NamedTuple):
    """One row of the ``metering`` table (``timestamp`` as ISO text, without offset, as stored)."""

    id: int
    user_id: str
    collection_id: str
    api_path: str
    timestamp: str
    resp_size: int


class StoredLine(Protocol):
    """What a store needs of a validated line (``reference_rs.ParsedLogLine``)."""

    @property
    def raw_line(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def collection_id(self) -> str: ...
    @property
    def api_path(self) -> str: ...
    @property
    def timestamp(self) -> str: ...
    @property
    def resp_size(self) -> int: ...
    @property
    def storage_backend(self) -> str: ...


class MeteringStore(Protocol):
    """The reference OGC RS's tables: jobs and metering rows."""

    location: str
    """``sqlite:///path`` or the PostgreSQL URL (what ``metering.ogc_rs_database`` opens)."""

    def start_job(self, job_id: str, process_id: str, user_id: str, job_input: Mapping[str, Any]) -> None:
        """Insert the job row, status ACCEPTED."""
        ...

    def set_job_status(self, job_id: str, status: str, message: str) -> None:
        """Move the job to RUNNING, SUCCESSFUL or FAILED."""
        ...

    def insert(self, lines: Sequence[StoredLine]) -> None:
        """Insert validated lines into ``metering`` in one transaction."""
        ...

    def rows(self) -> list[MeteringRow]:
        """Every ``metering`` row, in id order."""
        ...

    def stored_lines(self) -> list[str]:
        """The stored lines as received, in id order."""
        ...

    def row_count(self) -> int:
        """Number of ``metering`` rows."""
        ...

    def job_statuses(self) -> dict[str, str]:
        """Status of every job, by job id."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def open_store(*, db_path: str = ":memory:", database_url: str | None = None) -> MeteringStore:
    """A PostgreSQL store at ``database_url`` when given, else the SQLite file ``db_path``."""
    if database_url is not None:
        return PostgresMeteringStore(database_url)
    return SqliteMeteringStore(db_path)


# --------------------------------------------------------------------------------------------------
# SQLite (the demo's embedded default)
# --------------------------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS metering (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    collection_id TEXT NOT NULL,
    api_path TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    resp_size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_metering_timestamp ON metering(timestamp);
CREATE TABLE IF NOT EXISTS jobs_table (
    id TEXT PRIMARY KEY,
    process_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    input TEXT,
    status TEXT NOT NULL,
    message TEXT
);
CREATE TABLE IF NOT EXISTS received_line (
    metering_id INTEGER PRIMARY KEY REFERENCES metering(id),
    raw_line TEXT NOT NULL,
    storage_backend TEXT NOT NULL
);
"""


def _now() -> str:
    # OGC RS writes NOW() into columns without time zone: the wall clock of its host.
    return datetime.now().isoformat()


class SqliteMeteringStore:
    """OGC RS's tables in one SQLite file (``:memory:`` for a test)."""

    def __init__(self, path: str) -> None:
        self.location = f"sqlite:///{path}"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(_SQLITE_SCHEMA)

    def start_job(self, job_id: str, process_id: str, user_id: str, job_input: Mapping[str, Any]) -> None:
        """Insert the job row, status ACCEPTED."""
        now = _now()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs_table (id, process_id, user_id, created_at, updated_at, input, status, message)"
                " VALUES (?, ?, ?, ?, ?, ?, 'ACCEPTED', 'Process accepted. Starting the execution..')",
                (job_id, process_id, user_id, now, now, json.dumps(job_input)),
            )

    def set_job_status(self, job_id: str, status: str, message: str) -> None:
        """Move the job to RUNNING, SUCCESSFUL or FAILED."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs_table SET status = ?, message = ?, updated_at = ? WHERE id = ?",
                (status, message, _now(), job_id),
            )

    def insert(self, lines: Sequence[StoredLine]) -> None:
        """Insert validated lines in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for line in lines:
                    cursor = self._db.execute(
                        "INSERT INTO metering (user_id, collection_id, api_path, timestamp, resp_size)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (line.user_id, line.collection_id, line.api_path, line.timestamp, line.resp_size),
                    )
                    self._db.execute(
                        "INSERT INTO received_line (metering_id, raw_line, storage_backend) VALUES (?, ?, ?)",
                        (cursor.lastrowid, line.raw_line, line.storage_backend),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def rows(self) -> list[MeteringRow]:
        """Every ``metering`` row, in id order."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT id, user_id, collection_id, api_path, timestamp, resp_size FROM metering ORDER BY id"
            )
            return [MeteringRow(*row) for row in cursor.fetchall()]

    def stored_lines(self) -> list[str]:
        """The stored lines as received, in id order."""
        with self._lock:
            cursor = self._db.execute("SELECT raw_line FROM received_line ORDER BY metering_id")
            return [line for (line,) in cursor.fetchall()]

    def row_count(self) -> int:
        """Number of ``metering`` rows."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM metering").fetchone()
            return int(count)

    def job_statuses(self) -> dict[str, str]:
        """Status of every job, by job id."""
        with self._lock:
            return dict(self._db.execute("SELECT id, status FROM jobs_table").fetchall())

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


# --------------------------------------------------------------------------------------------------
# PostgreSQL, with OGC RS's own DDL
# --------------------------------------------------------------------------------------------------

# pgcrypto as V1 creates it (V2's default is public.gen_random_uuid()).
# processes_table: only what jobs_table's foreign key needs (V1 has more columns, none read here).
# jobs_table: V2, with V7's progress precision. metering: V20 as V25 leaves it (id an identity column).
_POSTGRES_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;
DO $$ BEGIN
    CREATE TYPE job_status_type AS ENUM ('ACCEPTED', 'RUNNING', 'SUCCESSFUL', 'FAILED', 'DISMISSED');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
DO $$ BEGIN
    CREATE TYPE job_type AS ENUM ('PROCESS');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
CREATE TABLE IF NOT EXISTS processes_table (
    id uuid NOT NULL PRIMARY KEY,
    description character varying,
    input jsonb,
    output jsonb,
    title character varying,
    version character varying
);
CREATE TABLE IF NOT EXISTS jobs_table (
    id uuid DEFAULT public.gen_random_uuid(),
    process_id uuid NOT NULL,
    user_id uuid NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    started_at timestamp without time zone DEFAULT NULL,
    finished_at timestamp without time zone DEFAULT NULL,
    input jsonb,
    output jsonb,
    progress decimal(5,2),
    status job_status_type NOT NULL,
    type job_type NOT NULL,
    message varchar,
    CONSTRAINT job_id_pk PRIMARY KEY (id),
    CONSTRAINT process_id_fk FOREIGN KEY(process_id) REFERENCES processes_table(id)
);
CREATE TABLE IF NOT EXISTS metering (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id UUID NOT NULL,
    collection_id UUID NOT NULL,
    api_path TEXT NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    resp_size BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_metering_user_id ON metering(user_id);
CREATE INDEX IF NOT EXISTS idx_metering_collection_id ON metering(collection_id);
CREATE INDEX IF NOT EXISTS idx_metering_api_path ON metering(api_path);
CREATE INDEX IF NOT EXISTS idx_metering_timestamp ON metering(timestamp);
CREATE INDEX IF NOT EXISTS idx_metering_user_collection_time ON metering(user_id, collection_id, timestamp);
CREATE SCHEMA IF NOT EXISTS reference_testbed;
CREATE TABLE IF NOT EXISTS reference_testbed.received_line (
    metering_id integer PRIMARY KEY,
    raw_line text NOT NULL,
    storage_backend text NOT NULL
);
"""

# OGC RS's UtilClass.UPDATE_JOB_TABLE_STATUS_QUERY, in substance.
_SET_STATUS_SQL = (
    "UPDATE jobs_table SET updated_at = NOW(),"
    " started_at = CASE WHEN %(status)s = 'RUNNING' THEN NOW() ELSE started_at END,"
    " finished_at = CASE WHEN %(status)s IN ('FAILED', 'SUCCESSFUL') THEN NOW() ELSE NULL END,"
    " progress = CASE WHEN %(status)s = 'SUCCESSFUL' THEN 100.0 WHEN %(status)s = 'RUNNING' THEN 14.28"
    " ELSE progress END, status = %(status)s::job_status_type, message = %(message)s WHERE id = %(job)s"
)


class PostgresMeteringStore:
    """OGC RS's tables in a PostgreSQL database (created when missing), one connection behind a lock."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.location = url
        self._lock = threading.Lock()
        # The session's zone is UTC, so NOW() in the *_at columns reads as UTC (OGC RS's depends on its host).
        self._connection: psycopg.Connection[Any] = psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC")
        with self._connection.transaction():
            # One creator at a time: servers of a test may start together on one database.
            self._connection.execute("SELECT pg_advisory_xact_lock(4224242)")
            self._connection.execute(_POSTGRES_SCHEMA)
        self._known_processes: set[str] = set()

    def start_job(self, job_id: str, process_id: str, user_id: str, job_input: Mapping[str, Any]) -> None:
        """Insert the job row, status ACCEPTED (its process row too, the first time)."""
        from psycopg.types.json import Jsonb

        with self._lock:
            if process_id not in self._known_processes:
                self._connection.execute(
                    "INSERT INTO processes_table (id, title, version) VALUES (%s, 'AuditLogsIngestion', '1.0.0')"
                    " ON CONFLICT (id) DO NOTHING",
                    (process_id,),
                )
                self._known_processes.add(process_id)
            self._connection.execute(
                "INSERT INTO jobs_table (id, process_id, user_id, created_at, updated_at, input, output, progress,"
                " status, type, message) VALUES (%s, %s, %s, NOW(), NOW(), %s, NULL, 0.0, 'ACCEPTED', 'PROCESS',"
                " 'Process accepted. Starting the execution..')",
                (job_id, process_id, user_id, Jsonb(dict(job_input))),
            )

    def set_job_status(self, job_id: str, status: str, message: str) -> None:
        """Move the job to RUNNING, SUCCESSFUL or FAILED."""
        with self._lock:
            self._connection.execute(_SET_STATUS_SQL, {"status": status, "message": message, "job": job_id})

    def insert(self, lines: Sequence[StoredLine]) -> None:
        """Insert validated lines in one transaction, as executeBatch does."""
        if not lines:
            return
        with self._lock, self._connection.transaction(), self._connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO metering (user_id, collection_id, api_path, timestamp, resp_size)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                [
                    (
                        line.user_id,
                        line.collection_id,
                        line.api_path,
                        datetime.fromisoformat(line.timestamp),
                        line.resp_size,
                    )
                    for line in lines
                ],
                returning=True,
            )
            ids = []
            while True:
                (row_id,) = cursor.fetchone() or (None,)
                ids.append(row_id)
                if not cursor.nextset():
                    break
            cursor.executemany(
                "INSERT INTO reference_testbed.received_line (metering_id, raw_line, storage_backend)"
                " VALUES (%s, %s, %s)",
                [(row_id, line.raw_line, line.storage_backend) for row_id, line in zip(ids, lines, strict=True)],
            )

    def rows(self) -> list[MeteringRow]:
        """Every ``metering`` row, in id order."""
        with self._lock:
            found = self._connection.execute(
                "SELECT id, user_id::text, collection_id::text, api_path, timestamp, resp_size FROM metering"
                " ORDER BY id"
            ).fetchall()
        return [
            MeteringRow(row_id, user, collection, path, moment.isoformat(), size)
            for row_id, user, collection, path, moment, size in found
        ]

    def stored_lines(self) -> list[str]:
        """The stored lines as received, in id order."""
        with self._lock:
            found = self._connection.execute(
                "SELECT raw_line FROM reference_testbed.received_line ORDER BY metering_id"
            ).fetchall()
        return [line for (line,) in found]

    def row_count(self) -> int:
        """Number of ``metering`` rows."""
        with self._lock:
            row = self._connection.execute("SELECT COUNT(*) FROM metering").fetchone()
        return int(row[0]) if row else 0

    def job_statuses(self) -> dict[str, str]:
        """Status of every job, by job id."""
        with self._lock:
            found = self._connection.execute("SELECT id::text, status::text FROM jobs_table").fetchall()
        return dict(found)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.close()


def job_user_id(client_id: str) -> str:
    """The admin token's user id as a UUID (``jobs_table.user_id``): the client id, or a UUID derived from it."""
    try:
        return str(uuid.UUID(client_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, client_id))
