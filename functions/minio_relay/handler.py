"""Lambda entry points of the MinIO flow: ``webhook`` (API Gateway REST proxy) and ``deliver`` (SQS).

Both are thin: they turn the event into plain values, call the logic in ``webhook`` / ``deliver`` and shape
the answer. Everything built from the environment is built once per execution environment and reused.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from metering import env_names
from metering.errors import DeliveryError
from metering.exactly_once import LineSender
from metering.ledger import DeliveryLedger
from metering.metric_names import FLOW_MINIO, KIND_CONFIGURATION, SERVICE_OF_FLOW
from metering.metrics import (
    delivery_failure_kind,
    flow_metrics,
    record_auth_failure,
    record_delivery,
    record_delivery_failure,
    record_outcomes,
    record_rejected_lines,
    record_uncertain,
)
from metering.redelivery import delay_redelivery, retry_after_s
from metering.settings import SettingsError
from metering.uncertain import UncertainResolver
from minio_relay.deliver import BatchDelivery
from minio_relay.delivery_queue import enqueue
from minio_relay.webhook import Webhook, WebhookRequest, WebhookResponse, WebhookSettings

# The answer while the function's own configuration is unusable: MinIO keeps the bodies and re-sends them.
_MISCONFIGURED = WebhookResponse(503, {"error": "webhook misconfigured; retry later"}, configuration_error=True)

# The service logger is the parent of the minio_relay.* module loggers, so their records are JSON too.
logger = Logger(service=SERVICE_OF_FLOW[FLOW_MINIO])
metrics = flow_metrics(FLOW_MINIO)
copy_config_to_registered_loggers(source_logger=logger, include={"metering"})


def sqs_client() -> Any:
    """The SQS client of this execution environment, with timeouts that keep the webhook's answer fast."""
    return _sqs_client()


@functools.cache
def _sqs_client() -> Any:
    import boto3
    from botocore.config import Config

    # MinIO waits ~3 s: a slow SQS call should end in 503 (MinIO re-sends) rather than in MinIO's timeout.
    config = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("sqs", config=config)


@functools.cache
def _webhook() -> Webhook:
    settings = WebhookSettings.from_env()
    queue_url = os.environ.get(env_names.DELIVERY_QUEUE_URL, "").strip()
    if not queue_url:
        raise SettingsError(f"environment variable {env_names.DELIVERY_QUEUE_URL} is required")
    sqs = sqs_client()
    max_lines = settings.batch_max_lines

    def to_queue(downloads: Any) -> None:
        enqueue(downloads, sqs=sqs, queue_url=queue_url, max_lines=max_lines)

    return Webhook(token=settings.token_source(), sink=to_queue, max_body_bytes=settings.max_body_bytes)


def request_from_event(event: dict[str, Any]) -> WebhookRequest:
    """A WebhookRequest from an API Gateway REST proxy event (headers are matched case-insensitively)."""
    headers = {str(name).lower(): str(value) for name, value in (event.get("headers") or {}).items()}
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            body = b"\x00not base64"  # parse_body refuses it with a clear 400
    else:
        body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    # `resource` is the route template, unaffected by a custom domain's base path.
    path = event.get("resource") or event.get("path") or "/"
    return WebhookRequest(method=str(event.get("httpMethod", "")), path=str(path), headers=headers, body=body)


def response_to_proxy(response: WebhookResponse) -> dict[str, Any]:
    """The API Gateway proxy integration answer."""
    return {
        "statusCode": response.status,
        "headers": {"Content-Type": "application/json"},
        "body": response.body().decode(),
        "isBase64Encoded": False,
    }


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def webhook(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """API Gateway: POST/PUT /auditlogs/processor (MinIO audit bodies) and GET / (health)."""
    try:
        hook = _webhook()
    except SettingsError as error:  # e.g. a weak WEBHOOK_TOKEN: refuse every request, log and alarm it
        logger.error("configuration error: %s; every request is refused", error)
        response = _MISCONFIGURED
    else:
        response = hook.handle(request_from_event(event))
    if response.configuration_error:
        record_delivery_failure(metrics, KIND_CONFIGURATION)
    if response.status == 401:
        record_auth_failure(metrics)
    if response.tally is not None:
        record_outcomes(metrics, response.tally)
    return response_to_proxy(response)


def deliver_client() -> LineSender:
    """The process-wide OGC RS client (its token cache outlives one invocation)."""
    from metering.runtime import ogc_rs_client

    return ogc_rs_client()


def deliver_ledger() -> DeliveryLedger:
    """The process-wide delivery ledger (DynamoDB table IDEMPOTENCY_TABLE_NAME)."""
    from metering.runtime import delivery_ledger

    return delivery_ledger()


def deliver_resolver() -> UncertainResolver:
    """The process-wide resolver of uncertain requests (grace period only: Lambda cannot reach OGC RS's database)."""
    from metering.runtime import uncertain_resolver

    return uncertain_resolver()


_processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def deliver(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """SQS delivery queue -> OGC RS; failed messages are reported back one by one (partial batch response)."""
    resolver = deliver_resolver()
    batch = BatchDelivery(deliver_client(), deliver_ledger(), resolver)

    def record_handler(record: SQSRecord) -> None:
        try:
            report = batch.deliver(record.message_id, record.body)
        except DeliveryError as error:
            record_delivery_failure(metrics, delivery_failure_kind(error))
            wait = retry_after_s(error)
            if wait is not None:  # an uncertain request: come back when it can be resolved, not sooner
                delay_redelivery(sqs_client(), record.event_source_arn, record.receipt_handle, wait)
            raise
        except Exception:
            # An AWS error (the ledger table: AccessDenied, throttling) must be visible, not only the retry.
            logger.exception("message failed, SQS will deliver it again", extra={"message_id": record.message_id})
            raise
        record_delivery(metrics, report)
        # Lines the webhook counted as metered but OGC RS refused end quarantined.
        record_rejected_lines(metrics, len(report.delivery.rejected))

    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=_processor, context=context
        )
    finally:
        record_uncertain(metrics, resolver.tally.take())
