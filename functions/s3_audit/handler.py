"""Lambda entry point of the AWS S3 flow: CloudTrail log files (or records) in, metering lines out to OGC RS.

Thin by design: it unwraps the event into units of work (``envelopes``), hands each log file to ``ingest`` and
the EventBridge events of the whole invocation to ``event_batch`` (their lines go to OGC RS together), and logs
the outcome. SQS batches use partial batch responses, so one failing message does not fail its neighbours.
A message fails (and SQS redelivers it) only when retrying can help: OGC RS unavailable (DeliveryError) or
S3 unreadable (boto errors). A damaged log file is quarantined: logged at ERROR and counted, not retried.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from metering.errors import DeliveryError
from metering.exactly_once import OnceReport
from metering.ledger import DeliveryLedger
from metering.metric_names import FLOW_AWS_S3, PATH_EVENT, PATH_LOG_FILE, SERVICE_OF_FLOW, DeliveryPath
from metering.metrics import (
    delivery_failure_kind,
    flow_metrics,
    record_delivery,
    record_delivery_failure,
    record_line_ages,
    record_lines_by_path,
    record_log_files,
    record_outcomes,
    record_uncertain,
)
from metering.outcomes import OutcomeTally, Reason
from metering.redelivery import delay_redelivery, retry_after_s
from metering.uncertain import UncertainResolver
from s3_audit.envelopes import (
    ALARMING_SKIPS,
    InlineRecord,
    LogFileRef,
    SkippedInput,
    Work,
    work_in_event,
    work_in_message,
)
from s3_audit.event_batch import EventBatchResult, QueuedEvent, ingest_event_batch
from s3_audit.ingest import MAX_QUARANTINE_DETAILS, IngestResult, LineSink, ingest_log_file

logger = Logger(service=SERVICE_OF_FLOW[FLOW_AWS_S3])
# The shared package logs too (e.g. lines OGC RS refused before an outage): as JSON, like the handler.
copy_config_to_registered_loggers(source_logger=logger, include={"metering"})
metrics = flow_metrics(FLOW_AWS_S3)
_processor = BatchProcessor(event_type=EventType.SQS)


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What the function talks to: an S3 client, the OGC RS client and the delivery ledger (None: no ledger), and
    how uncertain requests are resolved (None: by the default grace period)."""

    s3: Any
    sink: LineSink
    ledger: DeliveryLedger | None = None
    resolver: UncertainResolver | None = None


@functools.cache
def dependencies() -> Dependencies:
    """Built once per Lambda container: the OGC RS client's token cache outlives one invocation."""
    import boto3

    from metering.runtime import delivery_ledger, ogc_rs_client, uncertain_resolver

    return Dependencies(
        s3=boto3.client("s3"), sink=ogc_rs_client(), ledger=delivery_ledger(), resolver=uncertain_resolver()
    )


@functools.cache
def _sqs_client() -> Any:
    import boto3

    return boto3.client("sqs")


def _hold_back(record: SQSRecord, error: BaseException) -> None:
    """A message whose input waits for an uncertain request comes back when it can be resolved, not sooner."""
    wait = retry_after_s(error)
    if wait is not None:
        delay_redelivery(_sqs_client(), record.event_source_arn, record.receipt_handle, wait)


@dataclass(slots=True)
class InvocationTotals:
    """Outcomes of one invocation, logged at its end."""

    tally: OutcomeTally = field(default_factory=OutcomeTally)
    files: int = 0
    inline_records: int = 0
    delivered: int = 0
    already_delivered: int = 0
    skipped_inputs: Counter[str] = field(default_factory=Counter)
    # Per path (event, log_file): lines delivered, and lines whose request another input had delivered.
    delivered_by_path: Counter[str] = field(default_factory=Counter)
    known_by_path: Counter[str] = field(default_factory=Counter)

    def add(self, result: IngestResult, path: DeliveryPath, known_requests: int) -> None:
        """Fold one input's (or one event batch's) result in."""
        self.tally.merge(result.tally)
        self.delivered += result.delivered
        self.already_delivered += result.already_delivered
        self.delivered_by_path[path] += result.delivered
        self.known_by_path[path] += known_requests

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "files": self.files,
            "inline_records": self.inline_records,
            "delivered": self.delivered,
            "already_delivered": self.already_delivered,
            "skipped_inputs": dict(sorted(self.skipped_inputs.items())),
            **self.tally.as_dict(),
        }


def process_work(items: Iterable[Work], deps: Dependencies, totals: InvocationTotals) -> None:
    """Ingest every unit of work in order (events of a direct invocation together); DeliveryError and S3 errors
    propagate to fail the input."""
    work = list(items)
    for item in work:
        if isinstance(item, SkippedInput):
            totals.skipped_inputs[item.reason.value] += 1
            # An envelope nobody understood, or a log file where its source never writes: ERROR, for an operator.
            log = logger.error if item.reason in ALARMING_SKIPS else logger.info
            log("input skipped", extra={"reason": item.reason.value, "input": item.detail})
        elif isinstance(item, LogFileRef):
            result = ingest_log_file(item, s3=deps.s3, sink=deps.sink, ledger=deps.ledger, resolver=deps.resolver)
            totals.files += 1
            _log_result(result)
            if result.report is not None:
                record_delivery(metrics, result.report)
            known = result.report.known_requests if isinstance(result.report, OnceReport) else 0
            totals.add(result, PATH_LOG_FILE, known)
    events = [QueuedEvent("direct", item) for item in work if isinstance(item, InlineRecord)]
    if events:
        batch = process_events(events, deps, totals)
        if batch.error is not None:
            raise batch.error


def process_events(events: Sequence[QueuedEvent], deps: Dependencies, totals: InvocationTotals) -> EventBatchResult:
    """Meter and deliver the EventBridge events of the invocation together (chunked posts, not one per event)."""
    batch = ingest_event_batch(events, sink=deps.sink, ledger=deps.ledger, resolver=deps.resolver)
    record_line_ages(metrics, PATH_EVENT, batch.delivered_timestamps, datetime.now(UTC))
    totals.inline_records += len(events)
    _log_result(batch.result)
    if batch.result.report is not None:
        record_delivery(metrics, batch.result.report)
    totals.add(batch.result, PATH_EVENT, batch.known_requests)
    if batch.error is not None:
        logger.warning(
            "event lines not delivered, their messages are retried",
            extra={"messages": sorted(batch.undelivered_messages), "error": str(batch.error)},
        )
    return batch


def _log_result(result: IngestResult) -> None:
    for skip in result.quarantined:
        logger.error(
            "input quarantined", extra={"input": result.uri, "reason": skip.reason.value, "detail": skip.detail}
        )
    for rejected in result.rejected[:MAX_QUARANTINE_DETAILS]:
        logger.error(
            "line rejected by OGC RS, quarantined",
            extra={"input": result.uri, "line": rejected.line, "server_message": rejected.message},
        )
    unlogged = result.tally.quarantined[Reason.REJECTED_BY_OGC_RS.value] - MAX_QUARANTINE_DETAILS
    if unlogged > 0:
        logger.error(
            "more lines rejected by OGC RS, not logged one by one", extra={"input": result.uri, "lines": unlogged}
        )
    logger.info(
        "input processed",
        extra={
            "input": result.uri,
            "outcomes": result.tally.as_dict(),
            "delivered": result.delivered,
            "already_delivered": result.already_delivered,
            "seconds": round(result.seconds, 3),
        },
    )


def _record_totals(totals: InvocationTotals, deps: Dependencies) -> None:
    record_outcomes(metrics, totals.tally)
    if deps.resolver is not None:
        record_uncertain(metrics, deps.resolver.tally.take())
    record_log_files(metrics, totals.files)
    for path in (PATH_EVENT, PATH_LOG_FILE):
        record_lines_by_path(metrics, path, totals.delivered_by_path[path], totals.known_by_path[path])


def _deliver_queued_events(
    work: dict[str, list[Work]], deps: Dependencies, totals: InvocationTotals
) -> dict[str, Exception]:
    """Deliver the events of every message of the batch together; the error of each message left undelivered."""
    events = [
        QueuedEvent(message_id, item)
        for message_id, items in work.items()
        for item in items
        if isinstance(item, InlineRecord)
    ]
    if not events:
        return {}
    try:
        batch = process_events(events, deps, totals)
    except Exception as error:  # the ledger unreachable, say: every message with an event is retried
        logger.exception("event batch failed, SQS will deliver its messages again")
        return {event.message_id: error for event in events}
    if batch.error is None:
        return {}
    return dict.fromkeys(batch.undelivered_messages, batch.error)


def _is_sqs_batch(event: dict[str, Any]) -> bool:
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and isinstance(records[0], dict)
        and (records[0].get("eventSource") == "aws:sqs")
    )


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Entry point for SQS batches (partial batch response), and for direct S3, SNS and EventBridge events."""
    deps = dependencies()
    totals = InvocationTotals()
    if _is_sqs_batch(event):
        work = {
            record.get("messageId", ""): work_in_message(str(record.get("body", ""))) for record in event["Records"]
        }
        failed_events = _deliver_queued_events(work, deps, totals)

        def handle_message(record: SQSRecord) -> None:
            try:
                process_work(
                    [item for item in work[record.message_id] if not isinstance(item, InlineRecord)], deps, totals
                )
                if record.message_id in failed_events:
                    raise failed_events[record.message_id]
            except DeliveryError as error:
                record_delivery_failure(metrics, delivery_failure_kind(error))
                logger.exception("message failed, SQS will deliver it again", extra={"message_id": record.message_id})
                _hold_back(record, error)
                raise
            except Exception:
                logger.exception("message failed, SQS will deliver it again", extra={"message_id": record.message_id})
                raise

        response = process_partial_response(
            event=event, record_handler=handle_message, processor=_processor, context=context
        )
        failed = len(response.get("batchItemFailures", []))
        _record_totals(totals, deps)
        logger.info("invocation totals", extra={"totals": totals.as_dict(), "failed_messages": failed})
        return dict(response)
    # Direct invocation: an error propagates so that Lambda's asynchronous retry (and its DLQ) applies.
    try:
        process_work(work_in_event(event), deps, totals)
    except DeliveryError as error:
        record_delivery_failure(metrics, delivery_failure_kind(error))
        raise
    finally:
        _record_totals(totals, deps)
    logger.info("invocation totals", extra={"totals": totals.as_dict()})
    return {"status": "completed", **totals.as_dict()}
