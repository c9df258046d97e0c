"""Every envelope that brings a CloudTrail log file or record to the s3_audit function."""

from __future__ import annotations

import json

import pytest

from s3_audit.envelopes import (
    InlineRecord,
    LogFileRef,
    SkippedInput,
    SkipReason,
    Work,
    classify_key,
    work_in_event,
    work_in_message,
)
from tests.events import load_event

BUCKET = "org-cloudtrail-logs"
KEY = (
    "AWSLogs/111122223333/CloudTrail/ap-south-1/2025/10/27/"
    "111122223333_CloudTrail_ap-south-1_20251027T1015Z_Ab12Cd34Ef56Gh78.json.gz"
)
ORG_KEY = (
    "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/ap-south-1/2025/10/27/"
    "111122223333_CloudTrail_ap-south-1_20251027T1020Z_Zx98Yw76Vu54Ts32.json.gz"
)
# Stored with a space and a plus; S3 notifications write it form-encoded as trail+logs%2B2025/...
SPACE_KEY = (
    "trail logs+2025/AWSLogs/111122223333/CloudTrail/ap-south-1/2025/10/27/"
    "111122223333_CloudTrail_ap-south-1_20251027T1025Z_Qr12St34Uv56Wx78.json.gz"
)
# The S3 and SNS notification samples that name one log file directly (not inside SQS), with its key.
DIRECT_NOTIFICATIONS = [
    ("s3_notification", KEY),
    ("s3_notification_org_trail", ORG_KEY),
    ("s3_notification_encoded_key", SPACE_KEY),
    ("sns_s3_notification", ORG_KEY),
]


def refs(work: list[Work]) -> list[LogFileRef]:
    assert all(isinstance(item, LogFileRef) for item in work), work
    return [item for item in work if isinstance(item, LogFileRef)]


def skip_reasons(work: list[Work]) -> list[SkipReason]:
    return [item.reason for item in work if isinstance(item, SkippedInput)]


@pytest.mark.parametrize(("fixture", "key"), DIRECT_NOTIFICATIONS)
def test_direct_s3_and_sns_notifications(fixture: str, key: str) -> None:
    assert refs(work_in_event(load_event(f"envelopes/{fixture}"))) == [LogFileRef(BUCKET, key)]


def test_s3_notification_inside_sqs() -> None:
    event = load_event("envelopes/sqs_s3_notification")

    assert refs(work_in_message(event["Records"][0]["body"])) == [LogFileRef(BUCKET, KEY)]
    assert refs(work_in_event(event)) == [LogFileRef(BUCKET, KEY)]


def test_sns_inside_sqs_decodes_the_key_once() -> None:
    body = load_event("envelopes/sqs_sns_s3_notification")["Records"][0]["body"]

    assert refs(work_in_message(body)) == [LogFileRef(BUCKET, SPACE_KEY)]


def test_eventbridge_object_created_key_is_not_form_decoded() -> None:
    # EventBridge carries the key as stored: decoding it would turn its real "+" into a space.
    assert refs(work_in_event(load_event("envelopes/eventbridge_object_created"))) == [LogFileRef(BUCKET, SPACE_KEY)]


def test_eventbridge_api_call_carries_the_record_inline() -> None:
    event = load_event("envelopes/eventbridge_api_call")

    (item,) = work_in_event(event)

    assert isinstance(item, InlineRecord)
    assert item.record == event["detail"]
    assert item.uri == "eventbridge:6f2b4c1e-8d3a-4e5f-9a7b-0c1d2e3f4a5b"


def test_cloudtrail_own_sns_message_lists_keys_and_skips_digests() -> None:
    work = work_in_event(load_event("envelopes/cloudtrail_sns_message"))

    assert work[0] == LogFileRef(BUCKET, ORG_KEY)
    assert skip_reasons(work[1:]) == [SkipReason.DIGEST_FILE]


@pytest.mark.parametrize("fixture", ["s3_test_event", "sqs_s3_test_event"])
def test_s3_test_event_is_skipped(fixture: str) -> None:
    assert skip_reasons(work_in_event(load_event(f"envelopes/{fixture}"))) == [SkipReason.TEST_EVENT]


def test_digest_insight_and_other_keys_are_skipped_with_their_reason() -> None:
    work = work_in_event(load_event("envelopes/s3_notification_skipped_keys"))

    assert skip_reasons(work) == [SkipReason.DIGEST_FILE, SkipReason.INSIGHT_FILE, SkipReason.NOT_LOG_FILE]
    assert all(isinstance(item, SkippedInput) and item.detail.startswith("s3://") for item in work)


def test_object_removed_notification_is_skipped() -> None:
    event = load_event("envelopes/s3_notification")
    event["Records"][0]["eventName"] = "ObjectRemoved:Delete"

    assert skip_reasons(work_in_event(event)) == [SkipReason.NOT_OBJECT_CREATED]


@pytest.mark.parametrize(
    "body",
    ["not json", "[1, 2]", json.dumps({"hello": "world"}), json.dumps({"Records": [{"eventSource": "aws:kinesis"}]})],
)
def test_unknown_messages_are_skipped_not_raised(body: str) -> None:
    assert skip_reasons(work_in_message(body)) == [SkipReason.UNKNOWN_ENVELOPE]


def test_eventbridge_of_another_type_is_skipped() -> None:
    event = load_event("envelopes/eventbridge_object_created")
    event["detail-type"] = "Object Deleted"

    assert skip_reasons(work_in_event(event)) == [SkipReason.UNKNOWN_ENVELOPE]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (KEY, None),
        (ORG_KEY, None),
        ("prefix/AWSLogs/111122223333/CloudTrail/eu-west-1/2025/10/27/a.json.gz", None),
        ("AWSLogs/111122223333/CloudTrail/eu-west-1/2025/10/27/a.json", SkipReason.NOT_LOG_FILE),
        ("AWSLogs/111122223333/elasticloadbalancing/eu-west-1/2025/10/27/a.log.gz", SkipReason.NOT_LOG_FILE),
        ("AWSLogs/111122223333/CloudTrail-Digest/eu-west-1/2025/10/27/a.json.gz", SkipReason.DIGEST_FILE),
        ("AWSLogs/o-a1b2c3/111122223333/CloudTrail-Insight/eu-west-1/2025/a.json.gz", SkipReason.INSIGHT_FILE),
    ],
)
def test_classify_key(key: str, expected: SkipReason | None) -> None:
    work = classify_key(BUCKET, key)

    if expected is None:
        assert work == LogFileRef(BUCKET, key)
    else:
        assert isinstance(work, SkippedInput)
        assert work.reason is expected


def test_log_file_ref_uri() -> None:
    assert LogFileRef("b", "AWSLogs/x.json.gz").uri == "s3://b/AWSLogs/x.json.gz"


ACCESS_LOG_KEY = "access-logs/111122223333/ap-south-1/stac-assets-prod/2025/10/27/2025-10-27-13-41-07-7F48A46E2E37A2F9"
SIMPLE_ACCESS_LOG_KEY = "access-logs/2025-10-27-13-41-07-7F48A46E2E37A2F9"


def test_access_log_notification_names_an_access_log_file() -> None:
    assert refs(work_in_event(load_event("envelopes/s3_notification_access_log"))) == [
        LogFileRef(BUCKET, ACCESS_LOG_KEY, "s3-access-log")
    ]


def test_access_log_notification_in_sqs_with_the_simple_naming_form() -> None:
    assert refs(work_in_event(load_event("envelopes/sqs_s3_notification_access_log"))) == [
        LogFileRef(BUCKET, SIMPLE_ACCESS_LOG_KEY, "s3-access-log")
    ]


def test_cloudtrail_keys_keep_the_cloudtrail_source() -> None:
    work = classify_key(BUCKET, KEY)

    assert isinstance(work, LogFileRef)
    assert work.source == "cloudtrail"


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON decoder follows
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '{"Records":[' + '{"x":' * 985 + "1" + "}" * 985 + "]}",  # decodes, but its excerpt is too deep to encode
    ],
    ids=["arrays", "objects", "excerpt"],
)
def test_a_deeply_nested_message_is_skipped_not_raised(body: str) -> None:
    (skipped,) = work_in_message(body)

    assert isinstance(skipped, SkippedInput)
    assert skipped.reason is SkipReason.UNKNOWN_ENVELOPE
    assert len(skipped.detail) < 300
