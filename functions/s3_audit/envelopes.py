"""Every envelope that can bring a log file (CloudTrail, S3 access log) or one record to the s3_audit function.

The function receives S3 event notifications (direct, inside SQS, inside SNS, SNS inside SQS), EventBridge
"Object Created" and "AWS API Call via CloudTrail" events, and CloudTrail's own SNS delivery message.
``work_in_event`` and ``work_in_message`` turn any of them into units of work: a ``LogFileRef`` to read (its
source chosen from the bucket and the object name by ``s3_audit.sources.registry``), an
``InlineRecord`` to classify directly, or a ``SkippedInput`` saying why nothing is to be done.

Key encoding: S3 notifications form-encode the key (``red flower.jpg`` -> ``red+flower.jpg``), so those keys
go through ``unquote_plus``. EventBridge events and CloudTrail's SNS message carry the key as stored (the
EventBridge message structure documents no encoding, unlike the notification one), and decoding them
would turn a real ``+`` into a space, so they are used as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote_plus

from metering.line import bounded_json_int
from s3_audit.sources import cloudtrail as cloudtrail_source
from s3_audit.sources import registry
from s3_audit.sources.registry import LogOrigins, recognise


class SkipReason(StrEnum):
    """Why an input delivered to the function holds nothing to meter."""

    TEST_EVENT = "test_event"
    DIGEST_FILE = "digest_file"
    INSIGHT_FILE = "insight_file"
    NOT_LOG_FILE = "not_log_file"
    NOT_OBJECT_CREATED = "not_object_created"
    UNKNOWN_ENVELOPE = "unknown_envelope"
    UNEXPECTED_BUCKET = registry.UNEXPECTED_BUCKET
    UNEXPECTED_ACCOUNT = registry.UNEXPECTED_ACCOUNT


# Inputs an operator must look at: nobody understood them, or a log file arrived where its source never writes
# (a forgery, or a misconfiguration). The others are routine.
ALARMING_SKIPS = frozenset({SkipReason.UNKNOWN_ENVELOPE, SkipReason.UNEXPECTED_BUCKET, SkipReason.UNEXPECTED_ACCOUNT})


@dataclass(frozen=True, slots=True)
class LogFileRef:
    """A log file in S3, with its key decoded, and the name of its source (``cloudtrail``, ``s3-access-log``)."""

    bucket: str
    key: str
    source: str = cloudtrail_source.NAME

    @property
    def uri(self) -> str:
        """The file as ``s3://bucket/key``, the reference operators look for in logs."""
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class InlineRecord:
    """A CloudTrail record carried in the event itself (the ``detail`` of an EventBridge API-call event)."""

    record: object
    source: str

    @property
    def uri(self) -> str:
        """Where the record came from, for logs."""
        return self.source


@dataclass(frozen=True, slots=True)
class SkippedInput:
    """An input deliberately left alone: a test event, a digest or Insights file, a key that is no log file."""

    reason: SkipReason
    detail: str


Work = LogFileRef | InlineRecord | SkippedInput


def classify_key(bucket: str, key: str, origins: LogOrigins | None = None) -> LogFileRef | SkippedInput:
    """A LogFileRef for a log file key of any registered source (any prefix), else the skip reason.

    ``origins`` (default: the environment's, see ``LogOrigins.from_environment``) decides which bucket may hold
    which source: a CloudTrail-named key in the access-log bucket is refused as ``unexpected_bucket``.
    """
    source, reason = recognise(key, bucket, LogOrigins.from_environment() if origins is None else origins)
    if source is not None:
        return LogFileRef(bucket, key, source.name)
    return SkippedInput(SkipReason(reason or SkipReason.NOT_LOG_FILE), f"s3://{bucket}/{key}")


def work_in_event(event: Mapping[str, object]) -> list[Work]:
    """The units of work in a Lambda event or in one decoded message (SQS body, SNS message)."""
    if "detail-type" in event:
        return [_work_in_eventbridge(event)]
    if "s3Bucket" in event and "s3ObjectKey" in event:
        return _work_in_cloudtrail_sns(event)
    if event.get("Type") == "Notification" and isinstance(event.get("Message"), str):  # SNS envelope in an SQS body
        return work_in_message(str(event["Message"]))
    if event.get("Event") == "s3:TestEvent":
        return [SkippedInput(SkipReason.TEST_EVENT, f"bucket {event.get('Bucket')}")]
    records = event.get("Records")
    if isinstance(records, list):
        return [work for record in records for work in _work_in_record(record)]
    return [SkippedInput(SkipReason.UNKNOWN_ENVELOPE, _excerpt(event))]


def work_in_message(text: str) -> list[Work]:
    """The units of work in a message body: an SQS body or an SNS ``Message`` (JSON text).

    Whatever the body holds, this returns: JSON nested deeper than the decoder (or the excerpt of an unknown
    envelope) can follow raises RecursionError, which would fail the whole SQS batch; it is one skipped message.
    """
    try:
        # A 4,300+-digit number would raise here and lose the whole message: it reaches the rules as text.
        message = json.loads(text, parse_int=bounded_json_int)
        if not isinstance(message, dict):
            return [SkippedInput(SkipReason.UNKNOWN_ENVELOPE, f"not a JSON object: {text[:200]!r}")]
        return work_in_event(message)
    except ValueError:
        return [SkippedInput(SkipReason.UNKNOWN_ENVELOPE, f"not JSON: {text[:200]!r}")]
    except RecursionError:
        return [SkippedInput(SkipReason.UNKNOWN_ENVELOPE, f"JSON nested too deeply to read: {text[:200]!r}")]


def _work_in_record(record: object) -> list[Work]:
    """One element of ``Records``: an S3 notification record, an SQS message or an SNS delivery."""
    if not isinstance(record, dict):
        return [SkippedInput(SkipReason.UNKNOWN_ENVELOPE, _excerpt(record))]
    if isinstance(record.get("body"), str):  # SQS
        return work_in_message(record["body"])
    sns = record.get("Sns")
    if isinstance(sns, dict) and isinstance(sns.get("Message"), str):
        return work_in_message(sns["Message"])
    if record.get("eventSource") == "aws:s3":
        return [_work_in_s3_notification(record)]
    return [SkippedInput(SkipReason.UNKNOWN_ENVELOPE, _excerpt(record))]


def _work_in_s3_notification(record: Mapping[str, object]) -> Work:
    event_name = str(record.get("eventName", ""))
    s3 = record.get("s3")
    bucket = _path(s3, "bucket", "name")
    key = _path(s3, "object", "key")
    if not isinstance(bucket, str) or not isinstance(key, str):
        return SkippedInput(SkipReason.UNKNOWN_ENVELOPE, _excerpt(record))
    if not event_name.startswith("ObjectCreated:"):
        return SkippedInput(SkipReason.NOT_OBJECT_CREATED, f"{event_name} s3://{bucket}/{key}")
    return classify_key(bucket, unquote_plus(key))


def _work_in_eventbridge(event: Mapping[str, object]) -> Work:
    detail_type = event.get("detail-type")
    detail = event.get("detail")
    if detail_type == "AWS API Call via CloudTrail":
        return InlineRecord(detail, f"eventbridge:{event.get('id', '')}")
    if detail_type == "Object Created":
        bucket = _path(detail, "bucket", "name")
        key = _path(detail, "object", "key")
        if isinstance(bucket, str) and isinstance(key, str):
            return classify_key(bucket, key)
    return SkippedInput(SkipReason.UNKNOWN_ENVELOPE, f"EventBridge detail-type {detail_type!r}")


def _work_in_cloudtrail_sns(message: Mapping[str, object]) -> list[Work]:
    bucket = message["s3Bucket"]
    keys = message["s3ObjectKey"]
    if not isinstance(bucket, str) or not isinstance(keys, list):
        return [SkippedInput(SkipReason.UNKNOWN_ENVELOPE, _excerpt(message))]
    return [
        classify_key(bucket, key) if isinstance(key, str) else SkippedInput(SkipReason.UNKNOWN_ENVELOPE, repr(key))
        for key in keys
    ]


def _path(value: object, *names: str) -> object:
    """``value[names[0]][names[1]]...``, or None when a level is missing or not an object."""
    for name in names:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _excerpt(value: object) -> str:
    return json.dumps(value, default=str)[:200]
