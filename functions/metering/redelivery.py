"""Holding an SQS message back until the input can make progress (an uncertain request waits for its grace period).

A failed message comes back after the queue's visibility timeout and is dead-lettered after its fifth receive. An
input waiting for an uncertain request to be resolved is not failing: without this, a grace period longer than a few
visibility timeouts would use up its receives and park it in the dead-letter queue. ``ChangeMessageVisibility`` on
the message being processed makes it come back when the wait is over, costing one receive per wait. The consumer's
event source grants ``sqs:ChangeMessageVisibility`` on its queue already (``metering.aws_calls``).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

# SQS's own bound on a message's visibility timeout.
MAX_VISIBILITY_S = 12 * 3600


def retry_after_s(error: BaseException) -> float | None:
    """How long the input of a failed delivery should wait before its next try, when the error says so."""
    value = getattr(error, "retry_after_s", None)
    return float(value) if isinstance(value, int | float) else None


def delay_redelivery(sqs: Any, queue_arn: str, receipt_handle: str, seconds: float) -> bool:
    """Make the message come back after ``seconds`` (1 s to 12 h) instead of the queue's visibility timeout.

    False (logged) when SQS refuses: the message then comes back after the queue's visibility timeout, as any failure.
    """
    parts = queue_arn.split(":")
    if len(parts) != 6 or not receipt_handle:
        return False
    account, name = parts[4], parts[5]
    # The queue's URL is the client's endpoint, the account and the name: no GetQueueUrl call needed.
    url = f"{str(sqs.meta.endpoint_url).rstrip('/')}/{account}/{name}"
    try:
        timeout = int(min(MAX_VISIBILITY_S, max(1.0, seconds)))
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt_handle, VisibilityTimeout=timeout)
    except Exception as error:  # the message is retried anyway, only sooner
        code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
        logger.error("could not delay the next try of a message of %s: %s %s", name, type(error).__name__, code)
        return False
    return True
