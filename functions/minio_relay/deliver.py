"""Delivery-queue message -> OGC RS: the deliver function's logic.

A message that cannot be delivered now (OGC RS or the auth server down) raises, so SQS makes it visible
again and, after its retries, parks it in the dead-letter queue; a line OGC RS refuses is quarantined in the
log (retrying cannot change OGC RS's mind) and the rest of the message counts as delivered.
"""

from __future__ import annotations

import logging

from metering.errors import DeliveryError, UncertainPendingError
from metering.exactly_once import InFlightError, KeyedLine, LineSender, OnceReport, deliver_once, process_resolver
from metering.ledger import DeliveryLedger
from metering.outcomes import Reason
from metering.uncertain import UncertainResolver
from minio_relay.audit_entry import entry_ledger_key
from minio_relay.delivery_queue import MessageFormatError, decode_message

logger = logging.getLogger(__name__)

_EXCERPT_CHARS = 200


def deliver_message(
    body: str | bytes, client: LineSender, ledger: DeliveryLedger, resolver: UncertainResolver | None = None
) -> OnceReport:
    """Deliver the lines of one delivery-queue message, each entry key once, ever (see metering.ledger).

    Raises MessageFormatError for a body that is not a delivery message (it ends in the DLQ for an operator)
    and DeliveryError when OGC RS stays unavailable (SQS retries the message; delivered keys are not resent),
    or when some entries wait for an uncertain request (``retry_after_s`` says when to try again).
    """
    message = decode_message(body)
    keyed = [KeyedLine(entry_ledger_key(queued.key), queued.line) for queued in message.lines]
    report = deliver_once(client, ledger, keyed, resolver)
    delivery = report.delivery
    for rejected in delivery.rejected:
        logger.error(
            "quarantined %s: %s: %s", Reason.REJECTED_BY_OGC_RS, rejected.message, rejected.line[:_EXCERPT_CHARS]
        )
    logger.info(
        "delivered %d lines, %d rejected, %d already delivered, in %d requests",
        delivery.delivered,
        len(delivery.rejected),
        report.already_delivered + report.repeated_in_input,
        delivery.requests,
    )
    return report


class BatchDelivery:
    """Delivers the messages of one SQS batch; after the first outage the rest fail at once.

    When OGC RS is down every message would sit through the client's retries in turn and the invocation
    would run into its timeout; failing the remaining messages straight away returns them to the queue sooner.
    """

    def __init__(self, client: LineSender, ledger: DeliveryLedger, resolver: UncertainResolver | None = None) -> None:
        self._client = client
        self._ledger = ledger
        self._resolver = process_resolver(resolver)
        self._outage: DeliveryError | None = None

    def deliver(self, message_id: str, body: str | bytes) -> OnceReport:
        """Deliver one message; raise to have SQS retry it."""
        if self._outage is not None:
            raise DeliveryError(f"not tried after an earlier outage in this batch: {self._outage}")
        try:
            return deliver_message(body, self._client, self._ledger, self._resolver)
        except (InFlightError, UncertainPendingError) as error:  # this message waits; OGC RS is not down
            logger.warning("message %s retried later: %s", message_id, error)
            raise
        except DeliveryError as error:
            self._outage = error
            logger.error("message %s not delivered: %s", message_id, error)
            raise
        except MessageFormatError as error:
            logger.error("quarantined %s: message %s: %s", Reason.MALFORMED_ENTRY, message_id, error)
            raise
