"""The EventBridge events of one invocation ("AWS API Call via CloudTrail"), metered and delivered together.

The event queue hands the function a batch of events; their lines go to OGC RS in requests of up to
``batchMaxLines`` lines, not one POST per event. Each line is claimed in the delivery ledger under its S3 request
key (``s3_audit.sources.identity``), the key the log files and access logs record too: a batch composed
differently on a retry, the request's CloudTrail log file and its access log all find it, in any order. When
delivery fails, only the messages whose lines did not reach OGC RS are reported failed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from metering.errors import DeliveryError
from metering.exactly_once import KeyedLine, OnceReport, deliver_once
from metering.ledger import DeliveryLedger
from metering.line import MeteredDownload
from metering.outcomes import OutcomeTally, Reason, Skip
from metering.uncertain import UncertainResolver
from s3_audit.cloudtrail import classify, record_from_object
from s3_audit.envelopes import InlineRecord
from s3_audit.ingest import MAX_QUARANTINE_DETAILS, IngestResult, LineSink, request_ledger_key

# A record without request ID and eventID is known by its line (time, size, ids): the best identity it has.
LINE_KEY_PREFIX = "eventbridge-line:"
_DUPLICATE = Skip.filtered(Reason.DUPLICATE_EVENT)


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One inline CloudTrail record and the SQS message (or direct invocation) that brought it."""

    message_id: str
    record: InlineRecord


@dataclass(slots=True)
class EventBatchResult:
    """What became of a batch of events: its totals, and the messages to retry because their line was not sent."""

    result: IngestResult
    undelivered_messages: frozenset[str] = frozenset()
    error: DeliveryError | None = None
    known_requests: int = 0
    """Lines not sent because an earlier input (a log file, an access log, an earlier event) delivered the request."""
    delivered_timestamps: list[str] = field(default_factory=list)
    """The download time of each line this batch delivered (for the LineAge metric)."""


@dataclass(slots=True)
class _MeteredEvents:
    """The batch's downloads in order, each with its ledger key and the messages that carried it."""

    downloads: list[MeteredDownload] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    carriers: dict[str, list[str]] = field(default_factory=dict)

    def messages_of(self, keys: set[str]) -> frozenset[str]:
        """Every message that carried one of ``keys``."""
        return frozenset(message for key in keys for message in self.carriers[key])


def ledger_key(download: MeteredDownload) -> str:
    """The key a download is claimed under: its S3 request key, else a digest of its line."""
    if download.event_id:
        return request_ledger_key(download)
    return LINE_KEY_PREFIX + hashlib.sha256(download.to_line().encode()).hexdigest()


def ingest_event_batch(
    events: Sequence[QueuedEvent],
    *,
    sink: LineSink,
    ledger: DeliveryLedger | None = None,
    resolver: UncertainResolver | None = None,
) -> EventBatchResult:
    """Meter every event, deliver the new lines together and name the messages whose lines were not delivered.

    A DeliveryError (OGC RS unavailable, a request in flight in another invocation) is returned beside the
    messages it affects, not raised: the batch's other messages are done and must not be retried.
    """
    started = time.monotonic()
    result = IngestResult(uri=f"eventbridge:{len(events)} events", tally=OutcomeTally(), quarantined=[])
    metered = _meter(events, result)
    batch = EventBatchResult(result)
    if metered.downloads:
        if ledger is None:
            _deliver_without_ledger(metered, sink, batch)
        else:
            _deliver_with_ledger(metered, sink, ledger, batch, resolver)
    result.seconds = time.monotonic() - started
    return batch


def _meter(events: Sequence[QueuedEvent], result: IngestResult) -> _MeteredEvents:
    """Classify each event's record; a request repeated in the batch is metered once, for all its messages."""
    metered = _MeteredEvents()
    for event in events:
        record = record_from_object(event.record.record)
        outcome = record if isinstance(record, Skip) else classify(record)
        if isinstance(outcome, MeteredDownload):
            key = ledger_key(outcome)
            if key in metered.carriers:
                metered.carriers[key].append(event.message_id)
                result.tally.count(_DUPLICATE)
                continue
            metered.carriers[key] = [event.message_id]
            metered.downloads.append(outcome)
            metered.keys.append(key)
            result.tally.metered += 1
            continue
        result.tally.count(outcome)
        if outcome.kind == "quarantined" and len(result.quarantined) < MAX_QUARANTINE_DETAILS:
            result.quarantined.append(outcome)
    return metered


def _deliver_with_ledger(
    metered: _MeteredEvents,
    sink: LineSink,
    ledger: DeliveryLedger,
    batch: EventBatchResult,
    resolver: UncertainResolver | None,
) -> None:
    known = ledger.delivered(metered.keys)
    items = [
        KeyedLine(key, download.to_line())
        for key, download in zip(metered.keys, metered.downloads, strict=True)
        if key not in known
    ]
    batch.known_requests = len(known)
    batch.result.already_delivered = len(known)
    if not items:
        return
    time_of = {key: download.timestamp for key, download in zip(metered.keys, metered.downloads, strict=True)}
    try:
        once = deliver_once(sink, ledger, items, resolver)
    except DeliveryError as error:
        # Keys settled before the failure were delivered (or refused for good); the others' messages are retried.
        settled = ledger.delivered([item.key for item in items])
        batch.error = error
        batch.undelivered_messages = metered.messages_of({item.key for item in items} - settled)
        batch.result.delivered = len(settled)
        batch.delivered_timestamps = [time_of[key] for key in settled]
        return
    _account(batch, once)
    batch.delivered_timestamps = [time_of[item.key] for item in items]


def _deliver_without_ledger(metered: _MeteredEvents, sink: LineSink, batch: EventBatchResult) -> None:
    answered: set[int] = set()
    lines = [download.to_line() for download in metered.downloads]
    try:
        report = sink.deliver(lines, on_settled=answered.update)
    except DeliveryError as error:
        batch.error = error
        batch.undelivered_messages = metered.messages_of(
            {key for position, key in enumerate(metered.keys) if position not in answered}
        )
        batch.result.delivered = len(answered)
        batch.delivered_timestamps = [metered.downloads[position].timestamp for position in sorted(answered)]
        return
    _account(batch, OnceReport(report))
    batch.delivered_timestamps = [download.timestamp for download in metered.downloads]


def _account(batch: EventBatchResult, once: OnceReport) -> None:
    """Fold a completed delivery into the batch's result, refused lines counted as quarantined."""
    result, report = batch.result, once.delivery
    result.report = once
    result.delivered = report.delivered
    result.already_delivered += once.already_delivered
    batch.known_requests += once.already_delivered  # another invocation settled them between the read and the claim
    result.rejected = list(report.rejected)
    if report.rejected:
        result.tally.metered -= len(report.rejected)
        result.tally.count(Skip.quarantined(Reason.REJECTED_BY_OGC_RS), len(report.rejected))
