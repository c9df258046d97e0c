"""``ogc-audit redrive``: move messages from a dead-letter queue back to its source queue for another try.

The same as the console's "Start DLQ redrive" (``sqs:StartMessageMoveTask``), done message by message so it
also works where that API is not available (older regions, local emulators). A message is deleted from the DLQ
only after the source queue accepted its copy: a crash in between leaves a duplicate message, never a lost one,
and the delivery ledger makes the duplicate harmless.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


class RedriveError(ValueError):
    """A DLQ without a known source queue, or similar; said in one sentence."""


def source_queue_of(sqs: Any, dead_letter_url: str) -> str:
    """The one queue whose redrive policy points at ``dead_letter_url``."""
    sources: list[str] = sqs.list_dead_letter_source_queues(QueueUrl=dead_letter_url).get("queueUrls", [])
    if len(sources) != 1:
        raise RedriveError(f"{dead_letter_url} is the dead-letter queue of {len(sources)} queues; name one with --to")
    return sources[0]


def redrive(sqs: Any, dead_letter_url: str, target_url: str, limit: int | None = None) -> int:
    """Move up to ``limit`` messages (all when None); returns how many were moved."""
    moved = 0
    while limit is None or moved < limit:
        wanted = 10 if limit is None else min(10, limit - moved)
        messages = sqs.receive_message(
            QueueUrl=dead_letter_url, MaxNumberOfMessages=wanted, MessageAttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            break
        entries = [
            {"Id": str(index), "MessageBody": message["Body"]}
            | ({"MessageAttributes": message["MessageAttributes"]} if message.get("MessageAttributes") else {})
            for index, message in enumerate(messages)
        ]
        sent = sqs.send_message_batch(QueueUrl=target_url, Entries=entries)
        accepted = {entry["Id"] for entry in sent.get("Successful", [])}
        done = [
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
            for index, message in enumerate(messages)
            if str(index) in accepted
        ]
        if done:
            sqs.delete_message_batch(QueueUrl=dead_letter_url, Entries=done)
        moved += len(done)
        if sent.get("Failed"):
            raise RedriveError(f"the source queue refused {len(sent['Failed'])} messages; they stay in the DLQ")
    return moved


def run_redrive(dead_letter_url: str, target_url: str | None, limit: int | None, err: TextIO | None = None) -> int:
    """Redrive and report on stderr; exit 2 when the queues cannot be worked out."""
    import boto3

    err = sys.stderr if err is None else err
    sqs = boto3.client("sqs")
    try:
        target = target_url or source_queue_of(sqs, dead_letter_url)
        moved = redrive(sqs, dead_letter_url, target, limit)
    except RedriveError as error:
        err.write(f"ogc-audit redrive: {error}\n")
        return 2
    err.write(json.dumps({"moved": moved, "from": dead_letter_url, "to": target}) + "\n")
    return 0
