"""The SQS delivery queue between the webhook and the deliver function: message format and enqueueing.

A message carries metered lines with the deduplication key of the entry each came from
(``deploymentid:requestID``), so delivery can recognise a line MinIO sent twice. Messages are cut
deterministically from a body, so a body MinIO re-sends yields the same messages; on a FIFO queue
(URL ending ``.fifo``) their deduplication ids then make SQS drop the copies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from metering.line import MeteredDownload
from metering.settings import DEFAULT_BATCH_MAX_LINES
from minio_relay.webhook import DownstreamUnavailable

# SQS limits: 10 entries per SendMessageBatch and 256 KiB for the messages of one call together.
MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 250_000
# One message stays well below the batch limit so several fit in one call.
MAX_MESSAGE_BYTES = 64_000


class QueueUnavailable(DownstreamUnavailable):
    """SQS did not take every message; the webhook answers 503 so MinIO keeps and re-sends the body."""


class MessageFormatError(ValueError):
    """An SQS message body that is not a delivery message."""


class QueuedLine(msgspec.Struct, frozen=True):
    """A metered line and the key of the entry it came from."""

    key: str
    line: str


class DeliveryMessage(msgspec.Struct, frozen=True):
    """The body of one delivery-queue message."""

    lines: list[QueuedLine]


_encoder = msgspec.json.Encoder()


def _encode(message: DeliveryMessage) -> bytes:
    """The message as JSON; U+FFFE and U+FFFF, which SQS refuses in a message body, are written as escapes."""
    return _encoder.encode(message).replace(b"\xef\xbf\xbe", b"\\ufffe").replace(b"\xef\xbf\xbf", b"\\uffff")


_decode_message = msgspec.json.Decoder(DeliveryMessage).decode


def decode_message(body: str | bytes) -> DeliveryMessage:
    """Parse a delivery-queue message body; MessageFormatError when it is anything else."""
    try:
        return _decode_message(body)
    except msgspec.DecodeError as error:  # ValidationError is a DecodeError too
        raise MessageFormatError(f"not a delivery message: {error}") from None


def pack_messages(downloads: Sequence[MeteredDownload], max_lines: int = DEFAULT_BATCH_MAX_LINES) -> list[bytes]:
    """Message bodies holding ``downloads`` in order, each at most ``max_lines`` lines and MAX_MESSAGE_BYTES.

    ``max_lines`` is the OGC RS client's chunk size, so one message is delivered in one request and a
    message that fails was not partly delivered.
    """
    messages: list[bytes] = []
    current: list[QueuedLine] = []
    size = 0
    for download in downloads:
        queued = QueuedLine(download.event_id, download.to_line())
        # Each line adds its two strings plus ~25 bytes of JSON punctuation.
        cost = len(queued.key) + len(queued.line) + 25
        if current and (len(current) >= max_lines or size + cost > MAX_MESSAGE_BYTES):
            messages.append(_encode(DeliveryMessage(current)))
            current, size = [], 0
        current.append(queued)
        size += cost
    if current:
        messages.append(_encode(DeliveryMessage(current)))
    return messages


def _batches(messages: Sequence[bytes]) -> list[list[bytes]]:
    """Group messages into SendMessageBatch calls within the entry and byte limits."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for message in messages:
        if current and (len(current) >= MAX_BATCH_ENTRIES or size + len(message) > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(message)
        size += len(message)
    if current:
        batches.append(current)
    return batches


def _entry(index: int, message: bytes, fifo: bool) -> dict[str, str]:
    entry = {"Id": str(index), "MessageBody": message.decode()}
    if fifo:
        digest = hashlib.sha256(message).hexdigest()
        # Same body re-sent -> same id -> SQS drops the copy within its 5-minute window.
        entry["MessageDeduplicationId"] = digest
        # One group per message: ordering does not matter and distinct groups are delivered in parallel.
        entry["MessageGroupId"] = digest[:32]
    return entry


def _send_batch(sqs: Any, queue_url: str, entries: list[dict[str, str]]) -> None:
    """One SendMessageBatch; entries SQS reports as failed for a transient reason are tried once more."""
    from botocore.exceptions import BotoCoreError, ClientError

    for attempt in (1, 2):
        try:
            response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as error:
            raise QueueUnavailable(f"SQS SendMessageBatch failed: {type(error).__name__}: {error}") from error
        failed = response.get("Failed") or []
        if not failed:
            return
        sender_faults = [item for item in failed if item.get("SenderFault")]
        if sender_faults or attempt == 2:
            codes = sorted({str(item.get("Code")) for item in failed})
            raise QueueUnavailable(f"SQS refused {len(failed)} of {len(entries)} messages: {', '.join(codes)}")
        failed_ids = {item["Id"] for item in failed}
        entries = [entry for entry in entries if entry["Id"] in failed_ids]


def enqueue(
    downloads: Sequence[MeteredDownload],
    *,
    sqs: Any,
    queue_url: str,
    max_lines: int = DEFAULT_BATCH_MAX_LINES,
) -> int:
    """Put the lines of ``downloads`` on the delivery queue; return the number of messages sent.

    Raises QueueUnavailable when any message could not be sent.
    """
    fifo = queue_url.endswith(".fifo")
    sent = 0
    for batch in _batches(pack_messages(downloads, max_lines)):
        _send_batch(sqs, queue_url, [_entry(index, message, fifo) for index, message in enumerate(batch)])
        sent += len(batch)
    return sent
