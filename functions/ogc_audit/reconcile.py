"""``ogc-audit reconcile``: a period's downloads, as the sources tell them, against OGC RS's ``metering`` rows.

The downloads come from the same extraction as ``extract`` and ``replay`` (files, ``-``, or for the AWS sources an
``s3://bucket/prefix`` whose CloudTrail log files and access logs are read together, each S3 request once). The rows
come from OGC RS's database through a read-only session (``metering.ogc_rs_database``). Both sides are reduced to
one key, ``userId|collectionId|itemId|timestamp|bytes`` (ids lower-case, time to the second in UTC), and compared
as multisets: two downloads with equal keys need two rows. Rows whose ``api_path`` is not
``stac/collections/{c}/items/{i}`` (OGC RS's own API metering) are outside the comparison; the period is the
download time in [since, until) on both sides.

Both multisets go to a SQLite file in a temporary folder, not to Python objects, so memory stays bounded whatever
the period holds; the differences are read back with a few grouped queries and streamed into the report.

Nothing here writes to OGC RS's database: ``--repair`` sends the missing lines through the ledger-guarded delivery
(a second repair of the same period sends nothing), and ``--delete-sql`` writes the ``DELETE`` of the surplus
rows for the operator to review and run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO, TypeVar

from metering import env_names
from metering.line import MeteredDownload
from metering.ogc_rs_database import MeteringRow, OgcRsDatabaseError, open_ogc_rs_database
from metering.outcomes import OutcomeTally

if TYPE_CHECKING:
    from metering.exactly_once import LineSender, OnceReport
    from metering.ledger import DeliveryLedger
    from metering.uncertain import UncertainResolver
    from s3_audit.extract import LogStream

_Item = TypeVar("_Item")

__all__ = [
    "LOG_DELIVERY_LAG",
    "Comparison",
    "Period",
    "ReconcileError",
    "download_key",
    "row_key",
    "run_reconcile",
]

LOG_DELIVERY_LAG = timedelta(hours=24)
"""How long after a download its log object may still be written: CloudTrail delivers within minutes, S3 access
logs "within a few hours" (best effort). Log objects under an ``s3://`` prefix named in [since, until + this) are
read; downloads outside the period are then left out by their own time."""
REPAIR_KEY_PREFIX = "reconcile-repair:"
"""Ledger keys of repaired downloads: their own namespace, so a repair is not stopped by the pipeline's own
record of having sent the line (the row is missing all the same), and a second repair finds its first one."""
_STAC_PATH_PREFIX = "stac/collections/"
_ITEMS_SEGMENT = "/items/"
_INSERT_BATCH = 5000
_REPAIR_BATCH = 5000
_DELETE_IDS_PER_STATEMENT = 1000
_SUMMARY_EXAMPLES = 10
SOURCES = ("cloudtrail", "s3-access-log", "minio")


class ReconcileError(Exception):
    """A usage, source or connection problem, said in one sentence (exit status 2)."""


# --------------------------------------------------------------------------------------------------
# The period and the comparison key
# --------------------------------------------------------------------------------------------------


def _line_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Period:
    """[since, until) in UTC, on whole seconds: lines and rows are compared to the second."""

    since: datetime
    until: datetime
    since_text: str
    """``since`` as a line writes time."""
    until_text: str
    """``until`` as a line writes time."""

    @classmethod
    def of(cls, since: datetime, until: datetime) -> Period:
        """A period from aware datetimes; a fraction of a second rounds up, so truncated times compare exactly."""
        if since >= until:
            raise ReconcileError("--since must be before --until")
        since, until = _ceil_second(since), _ceil_second(until)
        return cls(since, until, _line_time(since), _line_time(until))

    def holds(self, line_time: str) -> bool:
        """Whether a line's time (``YYYY-MM-DDTHH:MM:SSZ``: text order is time order) is in the period."""
        return self.since_text <= line_time < self.until_text


def _ceil_second(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment if moment.microsecond == 0 else moment.replace(microsecond=0) + timedelta(seconds=1)


def parse_instant(text: str, name: str) -> datetime:
    """``2025-10-27``, ``2025-10-27T10:00:00Z`` or with an offset; UTC when none is given."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ReconcileError(f"--{name} must be an ISO 8601 date or date-time, got {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def download_key(download: MeteredDownload) -> str:
    """``userId|collectionId|itemId|timestamp|bytes`` of a download: what its row must show."""
    return (
        f"{download.user_id.lower()}|{download.collection_id.lower()}|{download.item_id}"
        f"|{download.timestamp}|{download.bytes_sent}"
    )


def row_key(row: MeteringRow) -> str | None:
    """The same key from a ``metering`` row, or None when its ``api_path`` is no STAC item download."""
    if not row.api_path.startswith(_STAC_PATH_PREFIX):
        return None
    collection, separator, item = row.api_path[len(_STAC_PATH_PREFIX) :].partition(_ITEMS_SEGMENT)
    if not separator or not item or "/" in collection:
        return None
    return f"{row.user_id.lower()}|{row.collection_id.lower()}|{item}|{row.timestamp}|{row.resp_size}"


# --------------------------------------------------------------------------------------------------
# The comparison: two multisets in a SQLite file
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MissingDownload:
    """A download without its row: its line, its key, and the source identity it was metered under."""

    line: str
    key: str
    event_id: str
    ordinal: int
    """1 for the first download of its key, 2 for a second equal one, ...: with the key, it names the download."""


@dataclass(frozen=True, slots=True)
class DuplicatedLine:
    """A key with more rows than downloads: ``row_ids`` are the surplus ones (the latest), ``expected`` kept."""

    line: str
    expected: int
    row_ids: list[int]


@dataclass(frozen=True, slots=True)
class UnexpectedRow:
    """A row no download of the period accounts for."""

    line: str
    row_id: int


@dataclass(slots=True)
class ComparisonCounts:
    """The totals of a comparison."""

    downloads: int = 0
    rows: int = 0
    matched: int = 0
    missing: int = 0
    duplicated: int = 0
    """Surplus rows of keys that have downloads (each one a row too many)."""
    unexpected: int = 0
    downloads_outside_period: int = 0
    rows_outside_comparison: int = 0

    @property
    def exact(self) -> bool:
        """Whether every download has its row and every row its download."""
        return self.missing == 0 and self.duplicated == 0 and self.unexpected == 0


_SCHEMA = """
CREATE TABLE download (key TEXT NOT NULL, line TEXT NOT NULL, event_id TEXT NOT NULL);
CREATE TABLE metering_row (key TEXT NOT NULL, id INTEGER NOT NULL);
"""
_TALLY = """
CREATE INDEX download_by_key ON download (key, event_id, line);
CREATE INDEX row_by_key ON metering_row (key, id);
CREATE TABLE tally (key TEXT PRIMARY KEY, d INTEGER NOT NULL, r INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO tally
    SELECT key, SUM(d), SUM(r) FROM (
        SELECT key, COUNT(*) AS d, 0 AS r FROM download GROUP BY key
        UNION ALL
        SELECT key, 0, COUNT(*) FROM metering_row GROUP BY key
    ) GROUP BY key;
"""


class Comparison:
    """Downloads and rows of one period, compared as multisets of keys. Add both sides, then ``finish()``."""

    def __init__(self, period: Period) -> None:
        self.period = period
        self.counts = ComparisonCounts()
        self._folder = tempfile.TemporaryDirectory(prefix="ogc-audit-reconcile-")
        self._db = sqlite3.connect(Path(self._folder.name) / "comparison.sqlite3", isolation_level=None)
        # A scratch file: no journal, no sync; a bounded page cache keeps memory flat however large the period.
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-16384", "temp_store=FILE"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(_SCHEMA)
        self._finished = False

    def add_downloads(self, downloads: Iterable[MeteredDownload]) -> None:
        """The downloads the sources report; those outside the period are counted and left out."""
        period = self.period
        for batch in _batches(downloads, _INSERT_BATCH):
            inside = [download for download in batch if period.holds(download.timestamp)]
            self.counts.downloads_outside_period += len(batch) - len(inside)
            self.counts.downloads += len(inside)
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO download (key, line, event_id) VALUES (?, ?, ?)",
                [(download_key(download), download.to_line(), download.event_id) for download in inside],
            )
            self._db.execute("COMMIT")

    def add_rows(self, rows: Iterable[MeteringRow]) -> None:
        """The period's ``metering`` rows; rows outside the STAC downloads are counted and left out."""
        for batch in _batches(rows, _INSERT_BATCH):
            keyed = [(key, row.id) for row in batch if (key := row_key(row)) is not None]
            self.counts.rows_outside_comparison += len(batch) - len(keyed)
            self.counts.rows += len(keyed)
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO metering_row (key, id) VALUES (?, ?)", keyed)
            self._db.execute("COMMIT")

    def finish(self) -> ComparisonCounts:
        """Count keys on both sides; afterwards the differences can be read."""
        if not self._finished:
            self._db.executescript(_TALLY)
            matched, missing, duplicated, unexpected = self._db.execute(
                "SELECT COALESCE(SUM(MIN(d, r)), 0),"
                " COALESCE(SUM(CASE WHEN d > r THEN d - r ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN d > 0 AND r > d THEN r - d ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN d = 0 THEN r ELSE 0 END), 0) FROM tally"
            ).fetchone()
            self.counts.matched, self.counts.missing = matched, missing
            self.counts.duplicated, self.counts.unexpected = duplicated, unexpected
            self._finished = True
        return self.counts

    def missing(self) -> Iterator[MissingDownload]:
        """Each download without a row, by key: of equal downloads, those past the number of rows (in event order)."""
        self.finish()
        cursor = self._db.execute(
            "SELECT line, key, event_id, n FROM ("
            "  SELECT dl.line, dl.key, dl.event_id, t.r,"
            "         ROW_NUMBER() OVER (PARTITION BY dl.key ORDER BY dl.event_id, dl.line) AS n"
            "  FROM download AS dl JOIN tally AS t ON t.key = dl.key WHERE t.d > t.r"
            ") WHERE n > r ORDER BY key, n"
        )
        for line, key, event_id, ordinal in cursor:
            yield MissingDownload(line, key, event_id, ordinal)

    def duplicated(self) -> Iterator[DuplicatedLine]:
        """Each key with more rows than downloads, and the surplus rows: those after the first ``expected`` ids."""
        self.finish()
        cursor = self._db.execute(
            "SELECT key, d, id FROM ("
            "  SELECT m.key, t.d, m.id, ROW_NUMBER() OVER (PARTITION BY m.key ORDER BY m.id) AS n"
            "  FROM metering_row AS m JOIN tally AS t ON t.key = m.key WHERE t.d > 0 AND t.r > t.d"
            ") WHERE n > d ORDER BY key, id"
        )
        for (key, expected), group in itertools.groupby(cursor, key=lambda found: (found[0], found[1])):
            yield DuplicatedLine(key, expected, [row_id for _, _, row_id in group])

    def unexpected(self) -> Iterator[UnexpectedRow]:
        """Each row whose key no download of the period has, in id order."""
        self.finish()
        cursor = self._db.execute(
            "SELECT m.key, m.id FROM metering_row AS m JOIN tally AS t ON t.key = m.key WHERE t.d = 0 ORDER BY m.id"
        )
        for key, row_id in cursor:
            yield UnexpectedRow(key, row_id)

    def close(self) -> None:
        """Remove the scratch file."""
        self._db.close()
        self._folder.cleanup()

    def __enter__(self) -> Comparison:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _batches(items: Iterable[_Item], size: int) -> Iterator[list[_Item]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# --------------------------------------------------------------------------------------------------
# Outputs: the JSON report, the summary, the DELETE file
# --------------------------------------------------------------------------------------------------


def write_report(comparison: Comparison, out: TextIO) -> None:
    """The JSON report, streamed (its lists can be long): exactly the keys of the documented report."""
    counts = comparison.finish()
    head = {
        "since": comparison.period.since_text,
        "until": comparison.period.until_text,
        "downloads": counts.downloads,
        "rows": counts.rows,
        "matched": counts.matched,
    }
    out.write(json.dumps(head)[:-1])
    _write_list(out, "missing", (missing.line for missing in comparison.missing()))
    _write_list(
        out,
        "duplicated",
        (
            {"line": duplicated.line, "expected": duplicated.expected, "row_ids": duplicated.row_ids}
            for duplicated in comparison.duplicated()
        ),
    )
    _write_list(out, "unexpected", ({"line": row.line, "row_id": row.row_id} for row in comparison.unexpected()))
    out.write("}\n")


def _write_list(out: TextIO, name: str, items: Iterable[object]) -> None:
    out.write(f', "{name}": [')
    for number, item in enumerate(items):
        out.write(("" if number == 0 else ",") + "\n  " + json.dumps(item, ensure_ascii=False))
    out.write("]")


def summary(comparison: Comparison) -> str:
    """The human summary: the totals in one line, then a few examples of each difference."""
    counts = comparison.finish()
    lines = [
        f"reconcile {comparison.period.since_text} .. {comparison.period.until_text}: "
        f"{counts.downloads} downloads, {counts.rows} rows, {counts.missing} missing, "
        f"{counts.duplicated} duplicated, {counts.unexpected} unexpected ({counts.matched} matched)"
    ]
    if counts.rows_outside_comparison:
        lines.append(f"  {counts.rows_outside_comparison} rows under stac/collections/ name no item (not compared)")
    for title, total, examples in (
        ("missing (no row)", counts.missing, (missing.line for missing in comparison.missing())),
        (
            "duplicated (surplus row ids)",
            counts.duplicated,
            (f"{dup.line} expected {dup.expected}, surplus {dup.row_ids}" for dup in comparison.duplicated()),
        ),
        ("unexpected (row id)", counts.unexpected, (f"{row.line} {row.row_id}" for row in comparison.unexpected())),
    ):
        if total:
            lines.append(f"  {title}:")
            lines.extend(f"    {example}" for example in itertools.islice(examples, _SUMMARY_EXAMPLES))
    return "\n".join(lines) + "\n"


def write_delete_sql(comparison: Comparison, out: TextIO) -> int:
    """The SQL that removes the surplus rows (duplicated keys only), for the operator to review and run; the count."""
    surplus = sorted(row_id for duplicated in comparison.duplicated() for row_id in duplicated.row_ids)
    out.write(
        f"-- ogc-audit reconcile {comparison.period.since_text} .. {comparison.period.until_text}:"
        f" {len(surplus)} surplus metering rows (rows beyond the downloads of their line).\n"
        "-- Review it, then run it (psql -f FILE) as a role allowed to remove rows. Unexpected rows are left out.\n"
    )
    if not surplus:
        out.write("-- nothing to delete\n")
        return 0
    out.write("BEGIN;\n")
    for batch in _batches(surplus, _DELETE_IDS_PER_STATEMENT):
        ids = ", ".join(str(int(row_id)) for row_id in batch)  # integers read from the table, nothing else
        out.write(f"DELETE FROM metering WHERE id IN ({ids});\n")  # noqa: S608 - a file for review, ids only
    out.write("COMMIT;\n")
    return len(surplus)


# --------------------------------------------------------------------------------------------------
# Repair: the missing lines, once
# --------------------------------------------------------------------------------------------------


def repair_key(missing: MissingDownload) -> str:
    """The ledger key of a repaired download: its source identity, else its key and ordinal (hashed)."""
    if missing.event_id:
        return f"{REPAIR_KEY_PREFIX}{missing.event_id}"
    digest = hashlib.sha256(f"{missing.key}#{missing.ordinal}".encode()).hexdigest()
    return f"{REPAIR_KEY_PREFIX}line:{digest}"


@dataclass(slots=True)
class RepairTotals:
    """What ``--repair`` did."""

    sent: int = 0
    already_sent: int = 0
    rejected: int = 0
    reports: list[OnceReport] = field(default_factory=list)


def repair(
    comparison: Comparison, client: LineSender, ledger: DeliveryLedger, resolver: UncertainResolver | None = None
) -> RepairTotals:
    """Send the missing lines through the ledger-guarded delivery: each repaired download once, ever.

    ``resolver`` settles a repair an earlier run left uncertain (default: the process's, see ``process_resolver``).
    """
    from metering.exactly_once import KeyedLine, deliver_once

    totals = RepairTotals()
    for batch in _batches(comparison.missing(), _REPAIR_BATCH):
        keyed = [KeyedLine(repair_key(missing), missing.line) for missing in batch]
        report = deliver_once(client, ledger, keyed, resolver)
        totals.sent += report.delivery.delivered
        totals.already_sent += report.already_delivered
        totals.rejected += len(report.delivery.rejected)
    return totals


def default_ledger_path() -> Path:
    """``$XDG_STATE_HOME/ogc-audit/reconcile-ledger.sqlite3`` (``~/.local/state`` when unset)."""
    state = os.environ.get("XDG_STATE_HOME", "").strip() or str(Path.home() / ".local" / "state")
    return Path(state) / "ogc-audit" / "reconcile-ledger.sqlite3"


def _open_repair_ledger(location: str | None) -> DeliveryLedger:
    from metering.ledger import SqliteLedger

    path = Path(location or os.environ.get(env_names.RECONCILE_LEDGER, "").strip() or default_ledger_path())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteLedger(str(path))
    except (OSError, sqlite3.Error) as error:
        raise ReconcileError(f"cannot open the repair ledger {path}: {error}") from error


# --------------------------------------------------------------------------------------------------
# The downloads of the inputs
# --------------------------------------------------------------------------------------------------


def period_downloads(
    source: str, inputs: Sequence[str], period: Period, tally: OutcomeTally
) -> Iterator[MeteredDownload]:
    """The downloads the INPUTs report, through the extraction ``extract`` and ``replay`` use.

    Local files and ``-`` are read by ``source``. An ``s3://bucket/prefix`` stands for every AWS log object under
    it, recognised by its name (CloudTrail log files and S3 access logs alike), named in
    [since, until + LOG_DELIVERY_LAG), whatever ``source`` is: so one run can reconcile a deployment fed by MinIO
    and AWS S3 (``--source minio bodies.ndjson s3://logs/AWSLogs/``). Across all AWS logs an S3 request is metered
    once; across MinIO files, an entry.
    """
    from s3_audit.extract import downloads_of, path_streams

    local = [path for path in inputs if not path.startswith("s3://")]
    prefixes = [path for path in inputs if path.startswith("s3://")]
    if source == "minio":
        from ogc_audit.extract import extractor_for

        aws_streams: Iterator[LogStream] = (stream for url in prefixes for stream in _s3_period_streams(url, period))
        return itertools.chain(extractor_for(source)(local, tally) if local else (), downloads_of(aws_streams, tally))
    streams = itertools.chain(
        (stream for path in local for stream in path_streams(source, path)),
        (stream for url in prefixes for stream in _s3_period_streams(url, period)),
    )
    return downloads_of(streams, tally)


def _s3_period_streams(url: str, period: Period) -> Iterator[LogStream]:
    import boto3

    from ogc_audit.replay import log_files_in_period
    from s3_audit.extract import LogStream
    from s3_audit.ingest import s3_object_chunks
    from s3_audit.sources.registry import source_named

    s3 = boto3.client("s3")
    for ref in log_files_in_period(s3, url, period.since, period.until + LOG_DELIVERY_LAG):
        yield LogStream(source_named(ref.source), ref.uri, s3_object_chunks(s3, ref))


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReconcileRequest:
    """The arguments of one ``ogc-audit reconcile``."""

    source: str
    since: str
    until: str
    inputs: Sequence[str]
    database_url: str | None = None
    json_path: str | None = None
    repair: bool = False
    delete_sql: str | None = None
    ledger: str | None = None


def run_reconcile(request: ReconcileRequest, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Compare, report, optionally repair and write the DELETE file; 0 exact, 1 differences, 2 an error."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        return _reconcile(request, out, err)
    except ReconcileError as error:
        err.write(f"ogc-audit reconcile: {error}\n")
        return 2


def _reconcile(request: ReconcileRequest, out: TextIO, err: TextIO) -> int:
    if request.source not in SOURCES:
        raise ReconcileError(f"--source must be one of {', '.join(SOURCES)}, got {request.source!r}")
    if not request.inputs:
        raise ReconcileError("give at least one INPUT (a file, - or s3://bucket/prefix)")
    period = Period.of(parse_instant(request.since, "since"), parse_instant(request.until, "until"))
    url = request.database_url or os.environ.get(env_names.OGC_RS_DATABASE_URL, "").strip()
    if not url:
        raise ReconcileError(f"no database: give --database-url or set {env_names.OGC_RS_DATABASE_URL}")
    tally = OutcomeTally()
    with Comparison(period) as comparison:
        try:
            with open_ogc_rs_database(url) as database:
                comparison.add_rows(database.rows(period.since, period.until))
        except OgcRsDatabaseError as error:
            raise ReconcileError(str(error)) from error
        _add_downloads(comparison, request, period, tally)
        counts = comparison.finish()
        if request.json_path is not None:
            _write_to(request.json_path, out, lambda stream: write_report(comparison, stream))
        err.write(summary(comparison))
        if tally.quarantined:
            err.write(f"  sources: {json.dumps(tally.as_dict())} (quarantined entries are not compared)\n")
        if request.delete_sql is not None:
            deleted: list[int] = []
            _write_to(request.delete_sql, out, lambda stream: deleted.append(write_delete_sql(comparison, stream)))
            err.write(f"  wrote the DELETE of {deleted[0]} surplus rows to {request.delete_sql}\n")
        if request.repair and counts.missing:
            _repair(comparison, request, url, err)
    return 0 if counts.exact else 1


def _add_downloads(comparison: Comparison, request: ReconcileRequest, period: Period, tally: OutcomeTally) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        comparison.add_downloads(period_downloads(request.source, request.inputs, period, tally))
    except OSError as error:
        raise ReconcileError(f"cannot read an INPUT: {error}") from error
    except (BotoCoreError, ClientError) as error:
        raise ReconcileError(f"cannot read the s3:// INPUT: {error}") from error
    except ValueError as error:  # replay's location check (ReplayError), a bad prefix
        raise ReconcileError(str(error)) from error


def _repair(comparison: Comparison, request: ReconcileRequest, database_url: str, err: TextIO) -> None:
    from metering.errors import DeliveryError
    from metering.runtime import DatabaseOnDemand, build_uncertain_resolver, ogc_rs_client
    from metering.settings import SettingsError

    ledger = _open_repair_ledger(request.ledger)
    try:
        client = ogc_rs_client(os.environ)  # this run's own client, from PROCESS_API_URL, AUTH_URL, ...
    except SettingsError as error:
        raise ReconcileError(f"--repair needs OGC RS's settings: {error}") from error
    try:
        # The database this run reads settles an earlier repair whose answer was lost (never re-sent blindly).
        resolver = build_uncertain_resolver(os.environ, DatabaseOnDemand(database_url))
        totals = repair(comparison, client, ledger, resolver)
    except DeliveryError as error:
        raise ReconcileError(f"repair stopped, OGC RS unavailable ({error}); run it again to resume") from error
    err.write(
        f"  repaired: {totals.sent} lines sent, {totals.already_sent} sent by an earlier repair"
        f"{f', {totals.rejected} refused by OGC RS' if totals.rejected else ''}\n"
    )


def _write_to(path: str, stdout: TextIO, write: Callable[[TextIO], object]) -> None:
    """Call ``write(stream)`` on the file at ``path`` (``-``: stdout); a file that cannot be written is an error."""
    if path == "-":
        write(stdout)
        stdout.flush()
        return
    try:
        with open(path, "w", encoding="utf-8") as stream:
            write(stream)
    except OSError as error:
        raise ReconcileError(f"cannot write {path}: {error}") from error
