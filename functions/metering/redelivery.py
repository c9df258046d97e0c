"""Holding an SQS message back until the input can make progress (an uncertain request waits for its grace period).

A failed message comes back after the queue's visibility timeout and is dead-lettered after its fifth receive. An
input waiting for an uncertain request to be resolved is not failing: without this, a grace period longer than a few
visibility timeouts would use up its receives and park it in the dead-letter queue. ``ChangeMessageVisibility`` on
the message being processed makes it come back when the wait is over, costing one receive per wait. The consumer's
event source grants ``sqs:ChangeMessageVisibility`` and ``sqs:GetQueueUrl`` on its queue already.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

# SQS's own bound on a message's visibility timeout.
MAX_VISIBILITY_S = 12 * 3600

_urls: dict[str, str] = {}
_urls_lock = threading.Lock()


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
    try:
        with _urls_lock:
            url = _urls.get(queue_arn)
        if url is None:
            url = str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
            with _urls_lock:
                _urls[queue_arn] = url
        timeout = int(min(MAX_VISIBILITY_S, max(1.0, seconds)))
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt_handle, VisibilityTimeout=timeout)
    except Exception as error:  # the message is retried anyway, only sooner
        logger.warning("could not delay the next try of a message of %s: %s", name, type(error).__name__)
        return False
    return True
