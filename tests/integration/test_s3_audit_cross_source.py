"""One line per S3 request: the real s3_audit handler with moto S3, a delivery ledger and the reference OGC RS,
fed the same requests by CloudTrail log files, EventBridge events and S3 server access logs, in every order."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from metering.ledger import SqliteLedger
from s3_audit.handler import handler
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import cloudtrail_log_file
from tests.events import event_bytes, load_event
from tests.helpers import client_for
from tests.integration.test_s3_audit_handler import CONTEXT, line, record, request_id_for, s3, stored, use
from tests.unit.test_envelopes import ACCESS_LOG_KEY, BUCKET, KEY, SIMPLE_ACCESS_LOG_KEY

__all__ = ["s3"]  # the moto S3 fixture, shared with the handler tests

# The request of envelopes/eventbridge_api_call (and cloudtrail/presigned_get, access_log/presigned_get).
EVENTBRIDGE_ITEM = "S2B_MSIL2A_20251026T050649_N0511_R019_T43PGQ"


def access_log_line(item: str, event_id: str) -> str:
    """The access-log record of the same S3 request as ``record(item, event_id)`` in a CloudTrail log file."""
    template = event_bytes("access_log/presigned_get.log").decode()
    return template.replace("7KQ4B1S9XW2M3N5P", request_id_for(event_id)).replace(
        f"itemId={EVENTBRIDGE_ITEM}", f"itemId={item}"
    )


def cloudtrail_file(*records: dict[str, Any]) -> bytes:
    return cloudtrail_log_file(records)


def notification(key: str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("envelopes/s3_notification"))
    event["Records"][0]["s3"]["object"]["key"] = key
    return event


@pytest.fixture
def ledgered(monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs) -> ReferenceOgcRs:
    """The handler wired to moto S3, the reference OGC RS and one delivery ledger shared by every input."""
    use(monkeypatch, s3, client_for(reference_rs), SqliteLedger())
    return reference_rs


def put_both(s3: Any) -> None:
    """A CloudTrail file with downloads a and b, an access log with b, a and c (c: CloudTrail missed it)."""
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=cloudtrail_file(record("a", "e-a"), record("b", "e-b")))
    lines = [access_log_line("b", "e-b"), access_log_line("a", "e-a"), access_log_line("c", "e-c")]
    s3.put_object(Bucket=BUCKET, Key=ACCESS_LOG_KEY, Body="".join(lines).encode())


def test_access_log_file_is_metered_through_the_handler(s3: Any, ledgered: ReferenceOgcRs) -> None:
    s3.put_object(Bucket=BUCKET, Key=SIMPLE_ACCESS_LOG_KEY, Body=event_bytes("access_log/presigned_get.log"))

    response = handler(load_event("envelopes/sqs_s3_notification_access_log"), CONTEXT)

    assert response == {"batchItemFailures": []}
    assert stored(ledgered) == [line(EVENTBRIDGE_ITEM)]


def test_cloudtrail_file_then_access_log(s3: Any, ledgered: ReferenceOgcRs) -> None:
    put_both(s3)

    handler(notification(KEY), CONTEXT)
    response = handler(load_event("envelopes/s3_notification_access_log"), CONTEXT)

    assert stored(ledgered) == [line("a"), line("b"), line("c")]
    assert (response["metered"], response["delivered"], response["already_delivered"]) == (3, 1, 2)


def test_access_log_then_cloudtrail_file(s3: Any, ledgered: ReferenceOgcRs) -> None:
    put_both(s3)

    handler(load_event("envelopes/s3_notification_access_log"), CONTEXT)
    response = handler(notification(KEY), CONTEXT)

    assert stored(ledgered) == [line("a"), line("b"), line("c")]
    assert (response["metered"], response["delivered"], response["already_delivered"]) == (2, 0, 2)


def test_inline_event_then_cloudtrail_file_then_access_log(s3: Any, ledgered: ReferenceOgcRs) -> None:
    inline = load_event("envelopes/eventbridge_api_call")
    same_request = copy.deepcopy(inline["detail"])
    same_request["additionalEventData"]["bytesTransferredOut"] = 16384
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=cloudtrail_file(same_request, record("d", "e-d")))
    s3.put_object(Bucket=BUCKET, Key=ACCESS_LOG_KEY, Body=event_bytes("access_log/presigned_get.log"))

    first = handler(inline, CONTEXT)
    second = handler(notification(KEY), CONTEXT)
    third = handler(load_event("envelopes/s3_notification_access_log"), CONTEXT)

    assert stored(ledgered) == sorted([line(EVENTBRIDGE_ITEM), line("d")])
    assert [r["delivered"] for r in (first, second, third)] == [1, 1, 0]
    assert third["already_delivered"] == 1


def test_access_log_then_inline_event(s3: Any, ledgered: ReferenceOgcRs) -> None:
    s3.put_object(Bucket=BUCKET, Key=ACCESS_LOG_KEY, Body=event_bytes("access_log/presigned_get.log"))

    handler(load_event("envelopes/s3_notification_access_log"), CONTEXT)
    response = handler(load_event("envelopes/eventbridge_api_call"), CONTEXT)

    assert stored(ledgered) == [line(EVENTBRIDGE_ITEM)]
    assert (response["delivered"], response["already_delivered"]) == (0, 1)


@pytest.mark.parametrize("other_sender_succeeds", [True, False], ids=["other-delivers", "other-fails"])
def test_a_request_another_input_is_delivering_right_now_is_not_sent_twice(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs, other_sender_succeeds: bool
) -> None:
    ledger = SqliteLedger()
    use(monkeypatch, s3, client_for(reference_rs), ledger)
    body = access_log_line("a", "e-a") + access_log_line("c", "e-c")
    s3.put_object(Bucket=BUCKET, Key=SIMPLE_ACCESS_LOG_KEY, Body=body.encode())
    key_a = f"s3-request:stac-assets-prod/{request_id_for('e-a')}"
    assert ledger.claim([key_a]).claimed == {key_a}  # a CloudTrail file with request a is being delivered
    event = load_event("envelopes/sqs_s3_notification_access_log")

    with pytest.raises(BatchProcessingError):  # the message is retried later, after c was delivered
        handler(event, CONTEXT)

    assert stored(reference_rs) == [line("c")]
    if other_sender_succeeds:
        ledger.settle([key_a])
    else:
        ledger.release([key_a])
    assert handler(event, CONTEXT) == {"batchItemFailures": []}
    assert stored(reference_rs) == ([line("c")] if other_sender_succeeds else [line("a"), line("c")])


def test_a_record_repeated_in_one_access_log_is_metered_once(s3: Any, ledgered: ReferenceOgcRs) -> None:
    repeated = access_log_line("r", "e-r")
    body = repeated + access_log_line("s", "e-s") + repeated
    s3.put_object(Bucket=BUCKET, Key=ACCESS_LOG_KEY, Body=body.encode())

    response = handler(load_event("envelopes/s3_notification_access_log"), CONTEXT)

    assert stored(ledgered) == [line("r"), line("s")]
    assert response["filtered"] == {"duplicate_event": 1}


def test_access_log_repeated_in_a_later_object_is_metered_once(s3: Any, ledgered: ReferenceOgcRs) -> None:
    # Delivery is best effort: a record can arrive twice, in two objects.
    later_key = ACCESS_LOG_KEY.replace("13-41-07", "14-02-55")
    s3.put_object(Bucket=BUCKET, Key=ACCESS_LOG_KEY, Body=access_log_line("t", "e-t").encode())
    s3.put_object(
        Bucket=BUCKET, Key=later_key, Body=(access_log_line("t", "e-t") + access_log_line("u", "e-u")).encode()
    )

    handler(load_event("envelopes/s3_notification_access_log"), CONTEXT)
    handler(notification(later_key), CONTEXT)

    assert stored(ledgered) == [line("t"), line("u")]


def test_malformed_access_log_lines_are_quarantined_alone(s3: Any, ledgered: ReferenceOgcRs) -> None:
    names = ["presigned_get", "truncated", "failed_403", "bad_bytes", "header_signed"]
    s3.put_object(Bucket=BUCKET, Key=ACCESS_LOG_KEY, Body=b"".join(event_bytes(f"access_log/{n}.log") for n in names))

    response = handler(load_event("envelopes/s3_notification_access_log"), CONTEXT)

    assert stored(ledgered) == [line(EVENTBRIDGE_ITEM)]
    assert response["quarantined"] == {"invalid_bytes": 1, "malformed_entry": 1}
    assert response["filtered"] == {"failed_request": 1, "not_presigned": 1}
