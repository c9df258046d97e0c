"""Ingesting one CloudTrail log file or one inline record: read, meter, deliver to OGC RS.

Plain functions over their collaborators (an S3 client, a ``LineSink`` such as ``OgcRsClient``), so the
handler stays thin and tests pass fakes or real loopback servers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from metering.exactly_once import KeyedChunk, OnceReport, chunk_key, deliver_chunks_once
from metering.ledger import DeliveryLedger
from metering.line import MeteredDownload
from metering.ogc_rs import DeliveryReport, RejectedLine, SettledCallback
from metering.outcomes import OutcomeTally, Reason, Skip
from s3_audit.cloudtrail import EventIdSet, meter, record_from_object
from s3_audit.envelopes import InlineRecord, LogFileRef
from s3_audit.log_file import LogRecord, read_log_records

READ_SIZE = 256 * 1024  # compressed bytes per S3 read; CloudTrail gzip inflates ~10-20x
# Quarantines kept per file for the ERROR log; a file of 50,000 malformed records must not log 50,000 lines.
MAX_QUARANTINE_DETAILS = 20


class LineSink(Protocol):
    """Where metered lines go: ``OgcRsClient`` in production (raises DeliveryError when OGC RS is down)."""

    @property
    def batch_max_lines(self) -> int:
        """Most lines posted in one request; a file's lines are keyed in chunks of this size."""
        ...

    def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
        """Deliver the lines; report what was delivered and what OGC RS rejected."""
        ...


@dataclass(slots=True)
class MeteredBatch:
    """The metered downloads of one input, its outcome tally and a sample of its quarantined entries."""

    downloads: list[MeteredDownload] = field(default_factory=list)
    tally: OutcomeTally = field(default_factory=OutcomeTally)
    quarantined: list[Skip] = field(default_factory=list)


@dataclass(slots=True)
class IngestResult:
    """What became of one log file or inline record, for logs and the invocation totals."""

    uri: str
    tally: OutcomeTally
    quarantined: list[Skip]
    delivered: int = 0
    already_delivered: int = 0  # lines an earlier attempt at the same input delivered, not sent again
    report: DeliveryReport | OnceReport | None = None  # requests, latency and token fetches, for metrics
    rejected: list[RejectedLine] = field(default_factory=list)
    seconds: float = 0.0


def meter_records(records: Iterable[LogRecord], seen: EventIdSet | None = None) -> MeteredBatch:
    """Classify decoded records (and quarantines) into a MeteredBatch; repeated eventIDs are metered once."""
    seen = EventIdSet() if seen is None else seen
    batch = MeteredBatch()
    for record in records:
        outcome = record if isinstance(record, Skip) else meter(record, seen)
        if isinstance(outcome, MeteredDownload):
            batch.downloads.append(outcome)
            batch.tally.metered += 1
            continue
        batch.tally.count(outcome)
        if outcome.kind == "quarantined" and len(batch.quarantined) < MAX_QUARANTINE_DETAILS:
            batch.quarantined.append(outcome)
    return batch


def s3_object_chunks(s3: Any, ref: LogFileRef, read_size: int = READ_SIZE) -> Iterator[bytes]:
    """The bytes of an S3 object, streamed; boto errors (transient or not) propagate to the caller."""
    body = s3.get_object(Bucket=ref.bucket, Key=ref.key)["Body"]
    with contextlib.closing(body):
        yield from body.iter_chunks(read_size)


def ingest_log_file(ref: LogFileRef, *, s3: Any, sink: LineSink, ledger: DeliveryLedger | None = None) -> IngestResult:
    """Read one log file from S3, meter it and deliver its lines (once per chunk of events, given a ledger).

    A damaged file is quarantined in the result, not raised: reading it again cannot help. S3 errors and
    DeliveryError propagate, so the input is retried.
    """
    started = time.monotonic()
    batch = meter_records(read_log_records(s3_object_chunks(s3, ref)))
    return _deliver(ref.uri, batch, sink, ledger, started)


def ingest_inline_record(item: InlineRecord, *, sink: LineSink, ledger: DeliveryLedger | None = None) -> IngestResult:
    """Meter and deliver the one CloudTrail record of an EventBridge "AWS API Call via CloudTrail" event."""
    started = time.monotonic()
    batch = meter_records([record_from_object(item.record)])
    return _deliver(item.uri, batch, sink, ledger, started)


def cloudtrail_event_key(download: MeteredDownload) -> str:
    """The ledger key of one CloudTrail event: an event repeated in another log file has the same one."""
    return f"cloudtrail-event:{download.event_id}"


def keyed_chunks(downloads: Sequence[MeteredDownload], size: int) -> list[KeyedChunk]:
    """The downloads in chunks keyed by their eventIDs: a retried or replayed file gives the same keys."""
    chunks = []
    for start in range(0, len(downloads), size):
        part = downloads[start : start + size]
        # An event without an id is known by its line (time, size, ids): the best identity it has.
        identities = [download.event_id or download.to_line() for download in part]
        chunks.append(
            KeyedChunk(
                chunk_key("cloudtrail", identities),
                [download.to_line() for download in part],
                [cloudtrail_event_key(download) for download in part if download.event_id],
            )
        )
    return chunks


def deliver_downloads_once(downloads: Sequence[MeteredDownload], sink: LineSink, ledger: DeliveryLedger) -> OnceReport:
    """Send the downloads no earlier log file delivered, in chunks that are each sent once.

    ``already_delivered`` counts both chunks an earlier try of this input sent and events an earlier log file
    delivered (CloudTrail may repeat an event in a later file).
    """
    with_id = [download for download in downloads if download.event_id]
    known = ledger.delivered([cloudtrail_event_key(download) for download in with_id]) if with_id else set()
    fresh = [download for download in downloads if not download.event_id or cloudtrail_event_key(download) not in known]
    if not fresh:
        return OnceReport(DeliveryReport(), already_delivered=len(downloads))
    once = deliver_chunks_once(sink, ledger, keyed_chunks(fresh, sink.batch_max_lines))
    once.already_delivered += len(downloads) - len(fresh)
    return once


def _deliver(
    uri: str, batch: MeteredBatch, sink: LineSink, ledger: DeliveryLedger | None, started: float
) -> IngestResult:
    result = IngestResult(uri=uri, tally=batch.tally, quarantined=batch.quarantined)
    if batch.downloads:
        # No lines, no call: a file without downloads needs no token.
        if ledger is None:
            report = sink.deliver([download.to_line() for download in batch.downloads])
            result.report = report
        else:
            once = deliver_downloads_once(batch.downloads, sink, ledger)
            report, result.report, result.already_delivered = once.delivery, once, once.already_delivered
        result.delivered = report.delivered
        result.rejected = list(report.rejected)
        if report.rejected:
            # A line OGC RS refused is not metered after all: it ends quarantined with the server's message.
            result.tally.metered -= len(report.rejected)
            result.tally.count(Skip.quarantined(Reason.REJECTED_BY_OGC_RS), len(report.rejected))
    result.seconds = time.monotonic() - started
    return result
