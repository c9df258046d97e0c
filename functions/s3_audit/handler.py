"""Lambda entry point of the AWS S3 flow: CloudTrail log files (or records) in, metering lines out to OGC RS.

Thin by design: it unwraps the event into units of work (``envelopes``), hands each to ``ingest`` and logs
the outcome. SQS batches use partial batch responses, so one failing message does not fail its neighbours.
A message fails (and SQS redelivers it) only when retrying can help: OGC RS unavailable (DeliveryError) or
S3 unreadable (boto errors). A damaged log file is quarantined: logged at ERROR and counted, not retried.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from metering.errors import DeliveryError
from metering.ledger import DeliveryLedger
from metering.metric_names import FLOW_AWS_S3, SERVICE_OF_FLOW
from metering.metrics import (
    delivery_failure_kind,
    flow_metrics,
    record_delivery,
    record_delivery_failure,
    record_log_files,
    record_outcomes,
)
from metering.outcomes import OutcomeTally
from s3_audit.envelopes import LogFileRef, SkippedInput, SkipReason, Work, work_in_event, work_in_message
from s3_audit.ingest import IngestResult, LineSink, ingest_inline_record, ingest_log_file

logger = Logger(service=SERVICE_OF_FLOW[FLOW_AWS_S3])
# The shared package logs too (e.g. lines OGC RS refused before an outage): as JSON, like the handler.
copy_config_to_registered_loggers(source_logger=logger, include={"metering"})
metrics = flow_metrics(FLOW_AWS_S3)
_processor = BatchProcessor(event_type=EventType.SQS)


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What the function talks to: an S3 client, the OGC RS client and the delivery ledger (None: no ledger)."""

    s3: Any
    sink: LineSink
    ledger: DeliveryLedger | None = None


@functools.cache
def dependencies() -> Dependencies:
    """Built once per Lambda container: the OGC RS client's token cache outlives one invocation."""
    import boto3

    from metering.runtime import delivery_ledger, ogc_rs_client

    return Dependencies(s3=boto3.client("s3"), sink=ogc_rs_client(), ledger=delivery_ledger())


@dataclass(slots=True)
class InvocationTotals:
    """Outcomes of one invocation, logged at its end."""

    tally: OutcomeTally = field(default_factory=OutcomeTally)
    files: int = 0
    inline_records: int = 0
    delivered: int = 0
    already_delivered: int = 0
    skipped_inputs: Counter[str] = field(default_factory=Counter)

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
    """Ingest every unit of work in order; DeliveryError and S3 errors propagate to fail the input."""
    for item in items:
        if isinstance(item, SkippedInput):
            totals.skipped_inputs[item.reason.value] += 1
            # An envelope nobody understood is dropped: ERROR, so an operator sees its excerpt.
            log = logger.error if item.reason is SkipReason.UNKNOWN_ENVELOPE else logger.info
            log("input skipped", extra={"reason": item.reason.value, "input": item.detail})
            continue
        if isinstance(item, LogFileRef):
            result = ingest_log_file(item, s3=deps.s3, sink=deps.sink, ledger=deps.ledger)
            totals.files += 1
        else:
            result = ingest_inline_record(item, sink=deps.sink, ledger=deps.ledger)
            totals.inline_records += 1
        _log_result(result)
        if result.report is not None:
            record_delivery(metrics, result.report)
        totals.tally.merge(result.tally)
        totals.delivered += result.delivered
        totals.already_delivered += result.already_delivered


def _log_result(result: IngestResult) -> None:
    for skip in result.quarantined:
        logger.error(
            "input quarantined", extra={"input": result.uri, "reason": skip.reason.value, "detail": skip.detail}
        )
    for rejected in result.rejected:
        logger.error(
            "line rejected by OGC RS, quarantined",
            extra={"input": result.uri, "line": rejected.line, "server_message": rejected.message},
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


def _record_totals(totals: InvocationTotals) -> None:
    record_outcomes(metrics, totals.tally)
    record_log_files(metrics, totals.files)


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

        def handle_message(record: SQSRecord) -> None:
            try:
                process_work(work_in_message(record.body), deps, totals)
            except DeliveryError as error:
                record_delivery_failure(metrics, delivery_failure_kind(error))
                logger.exception("message failed, SQS will deliver it again", extra={"message_id": record.message_id})
                raise
            except Exception:
                logger.exception("message failed, SQS will deliver it again", extra={"message_id": record.message_id})
                raise

        response = process_partial_response(
            event=event, record_handler=handle_message, processor=_processor, context=context
        )
        failed = len(response.get("batchItemFailures", []))
        _record_totals(totals)
        logger.info("invocation totals", extra={"totals": totals.as_dict(), "failed_messages": failed})
        return dict(response)
    # Direct invocation: an error propagates so that Lambda's asynchronous retry (and its DLQ) applies.
    try:
        process_work(work_in_event(event), deps, totals)
    except DeliveryError as error:
        record_delivery_failure(metrics, delivery_failure_kind(error))
        raise
    finally:
        _record_totals(totals)
    logger.info("invocation totals", extra={"totals": totals.as_dict()})
    return {"status": "completed", **totals.as_dict()}
