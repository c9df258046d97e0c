"""Ingesting one log file (of any registered source): read, meter and deliver to OGC RS as it is read.

Plain functions over their collaborators (an S3 client, a ``LineSink`` such as ``OgcRsClient``), so the
handler stays thin and tests pass fakes or real loopback servers.

Delivered as read: a log file inflates up to ``MAX_LOG_FILE_BYTES`` (1 GiB, millions of downloads), so its
downloads are never all held. Every ``batch_max_lines`` metered downloads (a window) are claimed and delivered
before the next are read: memory is a window, the reader's buffers and the compact set of requests already
metered in the file (``SeenRequests``). The windows are the same on every read of the file (same records, same
order, same duplicates dropped), so a retried or replayed file gives the same chunk keys: the windows an earlier
try delivered are found in the ledger and send nothing, and delivery resumes at the first window not settled.

A file found damaged (or past a bound) part-way is quarantined from that point: the windows before it have been
delivered by then and stay delivered, the downloads read before the damage in the last window are delivered too
(exactly what reading the whole file first would deliver), the file counts one quarantine with its reason and
byte offset, and the message succeeds (reading it again cannot help). Without a ledger a retry sends the windows
again: only the ledger makes delivery exactly-once.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from metering.errors import UncertainPendingError
from metering.exactly_once import (
    InFlightError,
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
from s3_audit.cloudtrail import classify
from s3_audit.envelopes import LogFileRef
from s3_audit.log_file import LogRecord
from s3_audit.seen_requests import SeenRequests
from s3_audit.sources import cloudtrail as cloudtrail_source
from s3_audit.sources.registry import source_named

READ_SIZE = 256 * 1024  # bytes per S3 read; CloudTrail gzip inflates ~10-20x, access logs are plain text
# Quarantines kept per file for the ERROR log; a file of 50,000 malformed records must not log 50,000 lines.
MAX_QUARANTINE_DETAILS = 20
# Lines OGC RS refused kept per file (for the LinesRejected metric and the log): a bound, not a sample size.
MAX_REJECTED_KEPT = 1000
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

    def count_rejected(self, rejected: Sequence[RejectedLine]) -> None:
        """Lines OGC RS refused are not metered after all: they end quarantined with the server's message."""
        if not rejected:
            return
        self.rejected.extend(rejected[: max(0, MAX_REJECTED_KEPT - len(self.rejected))])
        self.tally.metered -= len(rejected)
        self.tally.count(Skip.quarantined(Reason.REJECTED_BY_OGC_RS), len(rejected))


def judged(
    outcomes: Iterable[MeteredDownload | Skip], tally: OutcomeTally, quarantined: list[Skip], seen: SeenRequests
) -> Iterator[MeteredDownload]:
    """Count every outcome in ``tally`` (a sample of quarantines in ``quarantined``) and yield each download whose
    request ``seen`` did not meet before (the same S3 request, or the same eventID); a repeat is DUPLICATE_EVENT."""
    for outcome in outcomes:
        if isinstance(outcome, MeteredDownload) and seen.first_time(outcome):
            tally.metered += 1
            yield outcome
            continue
        skip = _DUPLICATE if isinstance(outcome, MeteredDownload) else outcome
        tally.count(skip)
        if skip.kind == "quarantined" and len(quarantined) < MAX_QUARANTINE_DETAILS:
            quarantined.append(skip)


def meter_outcomes(outcomes: Iterable[MeteredDownload | Skip], seen: SeenRequests | None = None) -> MeteredBatch:
    """Collect one input's outcomes into a MeteredBatch (all its downloads held: small inputs and dry runs)."""
    batch = MeteredBatch()
    batch.downloads.extend(judged(outcomes, batch.tally, batch.quarantined, SeenRequests() if seen is None else seen))
    return batch


def meter_records(records: Iterable[LogRecord], seen: SeenRequests | None = None) -> MeteredBatch:
    """Classify decoded CloudTrail records (and quarantines) into a MeteredBatch; repeats are metered once."""
    return meter_outcomes((record if isinstance(record, Skip) else classify(record) for record in records), seen)


def meter_log_file(ref: LogFileRef, chunks: Iterable[bytes], seen: SeenRequests | None = None) -> MeteredBatch:
    """Meter the bytes of one log file with the rules of its source (every download held: a dry run)."""
    return meter_outcomes(source_named(ref.source).outcomes(chunks), seen)


def s3_object_chunks(s3: Any, ref: LogFileRef, read_size: int = READ_SIZE) -> Iterator[bytes]:
    """The bytes of an S3 object, streamed; boto errors (transient or not) propagate to the caller."""
    body = s3.get_object(Bucket=ref.bucket, Key=ref.key)["Body"]
    with contextlib.closing(body):
        yield from body.iter_chunks(read_size)


def windows(downloads: Iterable[MeteredDownload], size: int) -> Iterator[list[MeteredDownload]]:
    """The downloads in consecutive lists of ``size`` (the last one shorter), read only as each is needed."""
    iterator = iter(downloads)
    while window := list(itertools.islice(iterator, size)):
        yield window


def ingest_log_file(
    ref: LogFileRef,
    *,
    s3: Any,
    sink: LineSink,
    ledger: DeliveryLedger | None = None,
    resolver: UncertainResolver | None = None,
) -> IngestResult:
    """Read one log file from S3, meter it with its source's rules and deliver its lines as they are read, a window
    of ``sink.batch_max_lines`` downloads at a time (each S3 request once, given a ledger).

    A damaged file is quarantined in the result, not raised: reading it again cannot help; what was read before
    the damage is delivered. S3 errors and DeliveryError propagate, so the input is retried (and, with a ledger,
    resumes after the windows delivered); InFlightError and UncertainPendingError are raised once the rest of the
    file is delivered.
    """
    started = time.monotonic()
    result = IngestResult(uri=ref.uri, tally=OutcomeTally(), quarantined=[])
    outcomes = source_named(ref.source).outcomes(s3_object_chunks(s3, ref))
    downloads = judged(outcomes, result.tally, result.quarantined, SeenRequests())
    delivery = FileDelivery(sink, ledger, ref.source, result, process_resolver(resolver))
    for window in windows(downloads, sink.batch_max_lines):
        delivery.send(window)
    delivery.finish()
    result.seconds = time.monotonic() - started
    return result


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
    *,
    resolver: UncertainResolver | None = None,
    waiting: Claim | None = None,
) -> OnceReport:
    """Send the downloads whose S3 request no other input delivered or is delivering, in chunks each sent once.

    Each request key is claimed first, so two inputs reporting the same request (a CloudTrail file and an access
    log, an EventBridge event and a log file) never both send it, even at the same moment. Keys another sender
    holds, or that wait for an uncertain request, are added to ``waiting`` when given (the caller raises once the
    rest of its input is delivered), else InFlightError or UncertainPendingError is raised after the rest is
    delivered. ``already_delivered`` counts chunks an earlier try of this input sent and requests another input
    delivered. DeliveryError propagates after the claims of the requests not delivered are given back.
    """
    resolver = process_resolver(resolver)
    keys = list(dict.fromkeys(request_ledger_key(download) for download in downloads if download.event_id))
    claim = claim_resolving(ledger, keys, resolver) if keys else Claim()
    fresh = [d for d in downloads if not d.event_id or request_ledger_key(d) in claim.claimed]
    mine = list(claim.claimed)
    held = Claim(in_flight=set(claim.in_flight), uncertain=set(claim.uncertain), retry_after_s=claim.retry_after_s)
    try:
        if fresh:
            once = deliver_chunks_once(sink, ledger, keyed_chunks(fresh, sink.batch_max_lines, source), resolver)
        else:
            once = OnceReport(DeliveryReport())
    except (InFlightError, UncertainPendingError) as error:
        # The window's chunk itself is held by another sender or waits for an uncertain request (nothing of it was
        # sent now): give its requests back and wait with the rest.
        ledger.release(list(set(mine) - ledger.delivered(mine)))
        _add_waiting(held, error, f"{source}:{len(fresh)} lines")
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
    if waiting is None:
        raise_if_waiting(held, "S3 requests", once.delivery)
    else:
        waiting.in_flight |= held.in_flight
        waiting.uncertain |= held.uncertain
        waiting.retry_after_s = max(waiting.retry_after_s, held.retry_after_s)
    return once


def _add_waiting(held: Claim, error: InFlightError | UncertainPendingError, chunk: str) -> None:
    """Count a chunk another sender holds (or that waits for an uncertain request) among the keys waited for."""
    if isinstance(error, UncertainPendingError):
        held.uncertain.add(chunk)
        held.retry_after_s = max(held.retry_after_s, error.retry_after_s or 0.0)
    else:
        held.in_flight.add(chunk)


class FileDelivery:
    """Delivers the windows of one input as they are read and adds up what each delivery did in its result."""

    def __init__(
        self,
        sink: LineSink,
        ledger: DeliveryLedger | None,
        source: str,
        result: IngestResult,
        resolver: UncertainResolver,
    ) -> None:
        self._sink = sink
        self._ledger = ledger
        self._source = source
        self._result = result
        self._resolver = resolver
        self._waiting = Claim()

    def send(self, window: Sequence[MeteredDownload]) -> None:
        """Deliver one window; DeliveryError propagates (what earlier windows delivered is settled)."""
        if not window:
            return
        result = self._result
        if self._ledger is None:
            report = self._sink.deliver([download.to_line() for download in window])
            once: OnceReport | None = None
        else:
            once = deliver_downloads_once(
                window, self._sink, self._ledger, self._source, resolver=self._resolver, waiting=self._waiting
            )
            report = once.delivery
            result.already_delivered += once.already_delivered
        result.delivered += report.delivered
        result.count_rejected(report.rejected)
        result.report = _added(result.report, report, once, result.rejected)

    def finish(self) -> None:
        """Raise InFlightError (another input is sending some of this one's requests) or UncertainPendingError (some
        wait for an uncertain request): the input is tried again later; the lines refused so far are logged first."""
        raise_if_waiting(self._waiting, "S3 requests", DeliveryReport(rejected=self._result.rejected))


def _added(
    total: DeliveryReport | OnceReport | None,
    report: DeliveryReport,
    once: OnceReport | None,
    rejected: list[RejectedLine],
) -> DeliveryReport | OnceReport:
    """The reports of the windows so far plus one more (lines refused: the bounded list the result keeps)."""
    before = total.delivery if isinstance(total, OnceReport) else total
    delivery = DeliveryReport(
        delivered=report.delivered + (before.delivered if before else 0),
        rejected=rejected,
        requests=report.requests + (before.requests if before else 0),
        seconds=report.seconds + (before.seconds if before else 0.0),
        token_fetches=report.token_fetches + (before.token_fetches if before else 0),
    )
    if once is None:
        return delivery
    earlier = total if isinstance(total, OnceReport) else OnceReport(DeliveryReport())
    return OnceReport(
        delivery,
        already_delivered=earlier.already_delivered + once.already_delivered,
        repeated_in_input=earlier.repeated_in_input + once.repeated_in_input,
        known_requests=earlier.known_requests + once.known_requests,
    )
