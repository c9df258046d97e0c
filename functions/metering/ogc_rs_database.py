"""Read-only access to OGC RS's own database: "did this request land?" and "the rows of a period".

OGC RS keeps two records of what AuditLogsIngestion did (see docs/contracts.md, "OGC RS: its database"):

- ``jobs_table``: every execution POST first inserts a row whose jsonb ``input`` is the body's ``inputs`` object
  (so ``input -> 'logs'`` is the very array that was sent), then moves its ``status`` from ``ACCEPTED`` to
  ``RUNNING``, inserts the lines in one transaction, and ends ``SUCCESSFUL`` or ``FAILED``.
- ``metering``: one row per line, ``api_path = 'stac/collections/{c}/items/{i}'``, the timestamp without its offset.

A PostgreSQL URL (``postgresql://...``) reads the real server's tables through a read-only session (every
transaction read-only, a short statement timeout); ``sqlite:///path`` reads the reference OGC RS's demo file
(``testbed.reference_rs``), which keeps the same two tables. Nothing here ever writes.

psycopg is imported only when a PostgreSQL URL is opened: the Lambda bundles do not carry it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_STATEMENT_TIMEOUT_S",
    "MeteringRow",
    "OgcRsDatabase",
    "OgcRsDatabaseError",
    "RequestLanding",
    "open_ogc_rs_database",
]

DEFAULT_STATEMENT_TIMEOUT_S = 10.0
DEFAULT_CONNECT_TIMEOUT_S = 5
# Rows fetched per round trip of the server-side cursor: memory stays bounded by this, not by the period.
_ROWS_PER_FETCH = 5000
# Only rows written through AuditLogsIngestion start so; OGC RS's own API metering writes paths with a leading "/".
_STAC_PATH_PREFIX = "stac/collections/"


class OgcRsDatabaseError(Exception):
    """OGC RS's database cannot be read: a bad URL, no connection, a refused query. One sentence, no password."""


class RequestLanding(StrEnum):
    """What OGC RS's ``jobs_table`` says about a POST whose ``inputs.logs`` was a given array."""

    STORED = "stored"
    """A job with exactly these logs ended SUCCESSFUL: the lines are in ``metering``."""
    NOT_STORED = "not_stored"
    """No job holds these logs, or each one ended FAILED or DISMISSED: nothing was stored (rolled back)."""
    PENDING = "pending"
    """A job with these logs is still ACCEPTED or RUNNING: it may yet store them; ask again later."""


class MeteringRow(NamedTuple):
    """One row of OGC RS's ``metering`` table, its time as a line writes it (UTC, whole seconds, ``Z``)."""

    id: int
    user_id: str
    collection_id: str
    api_path: str
    timestamp: str
    resp_size: int


# jobs_table statuses (V2's job_status_type) and what each says about the lines of that request.
_STORED_STATUSES = frozenset({"SUCCESSFUL"})
_PENDING_STATUSES = frozenset({"ACCEPTED", "RUNNING"})


def landing_of(statuses: Sequence[str]) -> RequestLanding:
    """The landing of a request from the statuses of every job that holds its logs (the request may have been
    sent more than once): one SUCCESSFUL job stored the lines; otherwise an unfinished one may still store them."""
    upper = {status.upper() for status in statuses}
    if upper & _STORED_STATUSES:
        return RequestLanding.STORED
    if upper & _PENDING_STATUSES:
        return RequestLanding.PENDING
    return RequestLanding.NOT_STORED


class OgcRsDatabase(Protocol):
    """Read-only questions to OGC RS's database. Close it (or use it as a context manager) when done."""

    @property
    def location(self) -> str:
        """Where it reads, for messages: host, port and database, or the SQLite path; never a password."""
        ...

    def landing(self, logs: Sequence[str]) -> RequestLanding:
        """Whether a POST whose ``inputs.logs`` was exactly ``logs`` (same lines, same order) landed."""
        ...

    def rows(self, since: datetime, until: datetime) -> Iterator[MeteringRow]:
        """The STAC download rows (``api_path`` ``stac/collections/...``) whose time is in [since, until),
        streamed; ``since``/``until`` are aware datetimes (naive ones are taken as UTC)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...

    def __enter__(self) -> OgcRsDatabase: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None: ...


def open_ogc_rs_database(
    url: str,
    *,
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
) -> OgcRsDatabase:
    """Open OGC RS's database read-only: ``postgresql://user[:password]@host[:port]/db`` (psycopg 3) or
    ``sqlite:///path`` (the reference OGC RS's file). Raises OgcRsDatabaseError, naming the place, not the password."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        return _PostgresOgcRsDatabase(url, statement_timeout_s, connect_timeout_s)
    if scheme == "sqlite":
        return _SqliteOgcRsDatabase(_sqlite_path(url))
    raise OgcRsDatabaseError(
        f"unsupported database URL scheme {scheme!r}: use postgresql://user@host:port/database or sqlite:///path"
    )


def _utc_naive(moment: datetime) -> datetime:
    """The instant as OGC RS stores it: UTC wall-clock time, no offset."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _logs_json(logs: Sequence[str]) -> str:
    if isinstance(logs, str):  # a str is a Sequence[str] too, and would match nothing
        raise TypeError("logs is the array of lines, not one line")
    return json.dumps(list(logs))


def redacted_location(url: str) -> str:
    """``host:port/database`` of a database URL, for messages (user and password left out)."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "sqlite":
        return _sqlite_path(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"


def _sqlite_path(url: str) -> str:
    if not url.lower().startswith("sqlite:///") or len(url) <= len("sqlite:///"):
        raise OgcRsDatabaseError(f"a SQLite database URL is sqlite:///path, got {url[:80]!r}")
    return url[len("sqlite:///") :]


# --------------------------------------------------------------------------------------------------
# PostgreSQL: the real OGC RS
# --------------------------------------------------------------------------------------------------

_LANDING_SQL = "SELECT status::text FROM jobs_table WHERE input -> 'logs' = %s::jsonb"
# to_char truncates fractions, which is how a line writes time; the prefix filter can use the api_path index.
_ROWS_SQL = (
    "SELECT id, user_id::text, collection_id::text, api_path,"
    ' to_char(timestamp, \'YYYY-MM-DD"T"HH24:MI:SS"Z"\'), resp_size'
    " FROM metering WHERE timestamp >= %s AND timestamp < %s AND api_path LIKE 'stac/collections/%%'"
)


class _PostgresOgcRsDatabase:
    """OGC RS's PostgreSQL through one read-only session; reconnects once when the connection was lost."""

    def __init__(self, url: str, statement_timeout_s: float, connect_timeout_s: int) -> None:
        self._url = url
        self.location = redacted_location(url)
        self._statement_timeout_ms = max(1, int(statement_timeout_s * 1000))
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None
        with self._lock:
            self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        if self._connection is not None and not self._connection.closed:
            return self._connection
        # Read-only for every transaction of the session, whatever the role may do: this code never writes.
        options = (
            f"-c default_transaction_read_only=on -c statement_timeout={self._statement_timeout_ms}"
            f" -c idle_in_transaction_session_timeout={max(60_000, self._statement_timeout_ms * 6)}"
        )
        try:
            self._connection = psycopg.connect(
                self._url,
                options=options,
                connect_timeout=self._connect_timeout_s,
                application_name="ogc-audit",
                autocommit=True,
            )
        except psycopg.Error as error:
            raise _failure(f"cannot connect to OGC RS's database at {self.location}", error) from error
        return self._connection

    def landing(self, logs: Sequence[str]) -> RequestLanding:
        """Whether a POST whose ``inputs.logs`` was exactly ``logs`` landed (from ``jobs_table``)."""
        import psycopg

        payload = _logs_json(logs)
        with self._lock:
            for attempt in (1, 2):
                connection = self._connect()
                try:
                    statuses = [status for (status,) in connection.execute(_LANDING_SQL, (payload,)).fetchall()]
                except psycopg.OperationalError as error:
                    # A connection lost since the last question (a restart, an idle cut): one fresh try.
                    if attempt == 1 and connection.closed:
                        continue
                    raise _failure(f"cannot read jobs_table at {self.location}", error) from error
                except psycopg.Error as error:
                    raise _failure(f"cannot read jobs_table at {self.location}", error) from error
                return landing_of(statuses)
        raise AssertionError("unreachable")  # pragma: no cover

    def rows(self, since: datetime, until: datetime) -> Iterator[MeteringRow]:
        """The STAC rows of [since, until), through a server-side cursor (bounded memory)."""
        import psycopg

        # A separate connection: a long period streams while landing() may be asked on this one.
        try:
            connection = psycopg.connect(
                self._url,
                options=f"-c default_transaction_read_only=on -c statement_timeout={self._statement_timeout_ms}",
                connect_timeout=self._connect_timeout_s,
                application_name="ogc-audit reconcile",
            )
        except psycopg.Error as error:
            raise _failure(f"cannot connect to OGC RS's database at {self.location}", error) from error
        with connection:
            try:
                with connection.cursor(name="ogc_audit_period_rows") as cursor:
                    cursor.itersize = _ROWS_PER_FETCH
                    cursor.execute(_ROWS_SQL, (_utc_naive(since), _utc_naive(until)))
                    for row in cursor:
                        yield MeteringRow(*row)
            except psycopg.Error as error:
                raise _failure(f"cannot read metering at {self.location}", error) from error

    def close(self) -> None:
        """Close the session."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> _PostgresOgcRsDatabase:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _failure(what: str, error: BaseException) -> OgcRsDatabaseError:
    """One sentence: what failed, and the first line of the driver's reason (libpq never puts the password there)."""
    text = str(error).strip()
    return OgcRsDatabaseError(f"{what}: {text.splitlines()[0] if text else type(error).__name__}")


# --------------------------------------------------------------------------------------------------
# SQLite: the reference OGC RS's demo file
# --------------------------------------------------------------------------------------------------


class _SqliteOgcRsDatabase:
    """The reference OGC RS's SQLite file, opened read-only (``mode=ro``)."""

    def __init__(self, path: str) -> None:
        self.location = path
        self._read_only_uri = Path(path).resolve().as_uri() + "?mode=ro"
        self._lock = threading.Lock()
        try:
            self._connection = sqlite3.connect(
                self._read_only_uri, uri=True, check_same_thread=False, isolation_level=None
            )
            self._connection.execute("SELECT 1 FROM metering LIMIT 0")
        except sqlite3.Error as error:
            raise OgcRsDatabaseError(f"cannot open the SQLite metering file {path}: {error}") from error

    def landing(self, logs: Sequence[str]) -> RequestLanding:
        """Whether a POST whose ``inputs.logs`` was exactly ``logs`` landed (from the file's ``jobs_table``)."""
        payload = _logs_json(logs)
        with self._lock:
            try:
                found = self._connection.execute(
                    "SELECT status FROM jobs_table WHERE json_extract(input, '$.logs') = json(?)", (payload,)
                ).fetchall()
            except sqlite3.Error as error:
                raise OgcRsDatabaseError(f"cannot read jobs_table in {self.location}: {error}") from error
        return landing_of([status for (status,) in found])

    def rows(self, since: datetime, until: datetime) -> Iterator[MeteringRow]:
        """The STAC rows of [since, until); the file keeps ISO text times, which compare in time order."""
        bounds = (_utc_naive(since).isoformat(), _utc_naive(until).isoformat())
        # A cursor of its own: SQLite steps through the result, nothing is loaded at once.
        connection = sqlite3.connect(self._read_only_uri, uri=True)
        try:
            cursor = connection.execute(
                "SELECT id, user_id, collection_id, api_path, substr(timestamp, 1, 19) || 'Z', resp_size"
                " FROM metering WHERE timestamp >= ? AND timestamp < ? AND substr(api_path, 1, 17) = ?",
                (*bounds, _STAC_PATH_PREFIX),
            )
            for row in cursor:
                yield MeteringRow(*row)
        except sqlite3.Error as error:
            raise OgcRsDatabaseError(f"cannot read metering in {self.location}: {error}") from error
        finally:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> _SqliteOgcRsDatabase:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
