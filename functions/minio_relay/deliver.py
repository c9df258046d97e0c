"""Delivery-queue message -> OGC RS: the deliver function's logic.

A message that cannot be delivered now (OGC RS or the auth server down) raises, so SQS makes it visible
again and, after its retries, parks it in the dead-letter queue; a line OGC RS refuses is quarantined in the
log (retrying cannot change OGC RS's mind) and the rest of the message counts as delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from metering.ogc_rs import DeliveryError, DeliveryReport
from metering.outcomes import Reason
from minio_relay.delivery_queue import MessageFormatError, decode_message

logger = logging.getLogger(__name__)

_EXCERPT_CHARS = 200


class LineDeliverer(Protocol):
    """What deliver needs of the OGC RS client."""

    def deliver(self, lines: Sequence[str]) -> DeliveryReport:
        """Deliver lines; raise DeliveryError when OGC RS stays unavailable."""
        ...


def deliver_message(body: str | bytes, client: LineDeliverer, delivered_keys: set[str] | None = None) -> DeliveryReport:
    """Deliver the lines of one delivery-queue message, each entry key once.

    ``delivered_keys`` holds the keys already delivered by this invocation (a body MinIO re-sent can sit in
    two messages of one batch); the keys of this message are added once it is delivered.
    Raises MessageFormatError for a body that is not a delivery message (it ends in the DLQ for an operator)
    and DeliveryError when OGC RS stays unavailable (SQS retries the message).
    """
    message = decode_message(body)
    done = set() if delivered_keys is None else delivered_keys
    lines: list[str] = []
    keys: set[str] = set()
    for queued in message.lines:
        if queued.key not in done and queued.key not in keys:
            keys.add(queued.key)
            lines.append(queued.line)
    report = client.deliver(lines) if lines else DeliveryReport()
    done.update(keys)
    for rejected in report.rejected:
        logger.error(
            "quarantined %s: %s: %s", Reason.REJECTED_BY_OGC_RS, rejected.message, rejected.line[:_EXCERPT_CHARS]
        )
    logger.info(
        "delivered %d lines, %d rejected, in %d requests", report.delivered, len(report.rejected), report.requests
    )
    return report


class BatchDelivery:
    """Delivers the messages of one SQS batch; after the first outage the rest fail at once.

    When OGC RS is down every message would sit through the client's retries in turn and the invocation
    would run into its timeout; failing the remaining messages straight away returns them to the queue sooner.
    """

    def __init__(self, client: LineDeliverer) -> None:
        self._client = client
        self._outage: DeliveryError | None = None
        self._delivered_keys: set[str] = set()

    def deliver(self, message_id: str, body: str | bytes) -> DeliveryReport:
        """Deliver one message; raise to have SQS retry it."""
        if self._outage is not None:
            raise DeliveryError(f"not tried after an earlier outage in this batch: {self._outage}")
        try:
            return deliver_message(body, self._client, self._delivered_keys)
        except DeliveryError as error:
            self._outage = error
            logger.error("message %s not delivered: %s", message_id, error)
            raise
        except MessageFormatError as error:
            logger.error("quarantined %s: message %s: %s", Reason.MALFORMED_ENTRY, message_id, error)
            raise
