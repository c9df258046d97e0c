"""Ingesting one log file (of any registered source) or one inline record: read, meter, deliver to OGC RS.

Plain functions over their collaborators (an S3 client, a ``LineSink`` such as ``OgcRsClient``), so the
handler stays thin and tests pass fakes or real loopback servers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from metering.exactly_once import (
    KeyedChunk,
    OnceReport,
    chunk_key,
    claim_resolving,
    deliver_chunks_once,
    process_resolver,
    raise_if_waiting,
)
from metering.ledger import Claim, DeliveryLedger
from metering.line import MeteredDownload
from metering.ogc_rs import DeliveryReport, RejectedLine, SettledCallback
from metering.outcomes import OutcomeTally, Reason, Skip
from metering.uncertain import UncertainResolver
from s3_audit.cloudtrail import EventIdSet, classify, record_from_object
from s3_audit.envelopes import InlineRecord, LogFileRef
from s3_audit.log_file import LogRecord
from s3_audit.sources import cloudtrail as cloudtrail_source
from s3_audit.sources.registry import source_named

READ_SIZE = 256 * 1024  # bytes per S3 read; CloudTrail gzip inflates ~10-20x, access logs are plain text
# Quarantines kept per file for the ERROR log; a file of 50,000 malformed records must not log 50,000 lines.
MAX_QUARANTINE_DETAILS = 20
_DUPLICATE = Skip.filtered(Reason.DUPLICATE_EVENT)


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


def meter_outcomes(outcomes: Iterable[MeteredDownload | Skip], seen: EventIdSet | None = None) -> MeteredBatch:
    """Collect one input's outcomes into a MeteredBatch; a download whose request was metered before in ``seen``
    (the same S3 request, or the same eventID) is filtered as DUPLICATE_EVENT."""
    seen = EventIdSet() if seen is None else seen
    batch = MeteredBatch()
    for outcome in outcomes:
        if isinstance(outcome, MeteredDownload) and seen.first_time(outcome):
            batch.downloads.append(outcome)
            batch.tally.metered += 1
            continue
        skip = _DUPLICATE if isinstance(outcome, MeteredDownload) else outcome
        batch.tally.count(skip)
        if skip.kind == "quarantined" and len(batch.quarantined) < MAX_QUARANTINE_DETAILS:
            batch.quarantined.append(skip)
    return batch


def meter_records(records: Iterable[LogRecord], seen: EventIdSet | None = None) -> MeteredBatch:
    """Classify decoded CloudTrail records (and quarantines) into a MeteredBatch; repeats are metered once."""
    return meter_outcomes((record if isinstance(record, Skip) else classify(record) for record in records), seen)


def meter_log_file(ref: LogFileRef, chunks: Iterable[bytes], seen: EventIdSet | None = None) -> MeteredBatch:
    """Meter the bytes of one log file with the rules of its source."""
    return meter_outcomes(source_named(ref.source).outcomes(chunks), seen)


def s3_object_chunks(s3: Any, ref: LogFileRef, read_size: int = READ_SIZE) -> Iterator[bytes]:
    """The bytes of an S3 object, streamed; boto errors (transient or not) propagate to the caller."""
    body = s3.get_object(Bucket=ref.bucket, Key=ref.key)["Body"]
    with contextlib.closing(body):
        yield from body.iter_chunks(read_size)


def ingest_log_file(
    ref: LogFileRef,
    *,
    s3: Any,
    sink: LineSink,
    ledger: DeliveryLedger | None = None,
    resolver: UncertainResolver | None = None,
) -> IngestResult:
    """Read one log file from S3, meter it with its source's rules and deliver its lines (each S3 request once,
    given a ledger).

    A damaged file is quarantined in the result, not raised: reading it again cannot help. S3 errors and
    DeliveryError propagate, so the input is retried.
    """
    started = time.monotonic()
    batch = meter_log_file(ref, s3_object_chunks(s3, ref))
    return _deliver(ref.uri, batch, sink, ledger, started, source=ref.source, resolver=resolver)


def ingest_inline_record(item: InlineRecord, *, sink: LineSink, ledger: DeliveryLedger | None = None) -> IngestResult:
    """Meter and deliver the one CloudTrail record of an EventBridge "AWS API Call via CloudTrail" event."""
    started = time.monotonic()
    batch = meter_records([record_from_object(item.record)])
    return _deliver(item.uri, batch, sink, ledger, started, source=cloudtrail_source.NAME)


def request_ledger_key(download: MeteredDownload) -> str:
    """The ledger key of one S3 request (``s3_audit.sources.identity``): every file, event and source reporting the
    same request has the same one."""
    return download.event_id


def keyed_chunks(
    downloads: Sequence[MeteredDownload], size: int, source: str = cloudtrail_source.NAME
) -> list[KeyedChunk]:
    """The downloads in chunks keyed by their request identities: a retried or replayed file gives the same keys."""
    chunks = []
    for start in range(0, len(downloads), size):
        part = downloads[start : start + size]
        # An event without an id is known by its line (time, size, ids): the best identity it has.
        identities = [download.event_id or download.to_line() for download in part]
        chunks.append(
            KeyedChunk(
                chunk_key(source, identities),
                [download.to_line() for download in part],
                # One per line, so a request found stored after a lost answer settles exactly its lines' events.
                [request_ledger_key(download) if download.event_id else "" for download in part],
            )
        )
    return chunks


def deliver_downloads_once(
    downloads: Sequence[MeteredDownload],
    sink: LineSink,
    ledger: DeliveryLedger,
    source: str = cloudtrail_source.NAME,
    resolver: UncertainResolver | None = None,
) -> OnceReport:
    """Send the downloads whose S3 request no other input delivered or is delivering, in chunks each sent once.

    Each request key is claimed first, so two inputs reporting the same request (a CloudTrail file and an access
    log, an EventBridge event and a log file) never both send it, even at the same moment: a key another sender
    holds raises InFlightError after the rest is delivered, and the input is retried later (as for a key waiting
    for an uncertain request: UncertainPendingError). ``already_delivered`` counts chunks an earlier try of this
    input sent and requests another input delivered.
    """
    resolver = process_resolver(resolver)
    keys = list(dict.fromkeys(request_ledger_key(download) for download in downloads if download.event_id))
    claim = claim_resolving(ledger, keys, resolver) if keys else Claim()
    fresh = [d for d in downloads if not d.event_id or request_ledger_key(d) in claim.claimed]
    mine = list(claim.claimed)
    try:
        if fresh:
            once = deliver_chunks_once(sink, ledger, keyed_chunks(fresh, sink.batch_max_lines, source), resolver)
        else:
            once = OnceReport(DeliveryReport())
    except BaseException:
        # Give back the claims of requests not delivered (release deletes only claims: never a settled key, nor
        # one waiting for an uncertain request).
        ledger.release(list(set(mine) - ledger.delivered(mine)))
        raise
    # A chunk found delivered by an earlier try settled its requests then; anything left claimed is settled now.
    unsettled = set(mine) - ledger.delivered(mine)
    if unsettled:
        ledger.settle(list(unsettled))
    once.known_requests = sum(1 for d in downloads if d.event_id and request_ledger_key(d) in claim.delivered)
    once.already_delivered += once.known_requests
    raise_if_waiting(claim, "S3 requests", once.delivery)
    return once


def _deliver(
    uri: str,
    batch: MeteredBatch,
    sink: LineSink,
    ledger: DeliveryLedger | None,
    started: float,
    *,
    source: str,
    resolver: UncertainResolver | None = None,
) -> IngestResult:
    result = IngestResult(uri=uri, tally=batch.tally, quarantined=batch.quarantined)
    if batch.downloads:
        # No lines, no call: a file without downloads needs no token.
        if ledger is None:
            report = sink.deliver([download.to_line() for download in batch.downloads])
            result.report = report
        else:
            once = deliver_downloads_once(batch.downloads, sink, ledger, source, resolver)
            report, result.report, result.already_delivered = once.delivery, once, once.already_delivered
        result.delivered = report.delivered
        result.rejected = list(report.rejected)
        if report.rejected:
            # A line OGC RS refused is not metered after all: it ends quarantined with the server's message.
            result.tally.metered -= len(report.rejected)
            result.tally.count(Skip.quarantined(Reason.REJECTED_BY_OGC_RS), len(report.rejected))
    result.seconds = time.monotonic() - started
    return result
