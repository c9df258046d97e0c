"""EventBridge events through the event queue: the real s3_audit handler with moto (S3, the DynamoDB delivery ledger)
and the reference OGC RS on loopback. A batch of events becomes chunked posts; a failure fails only the messages
whose lines were not delivered; a download seen as an event and in its log file is one line, in either order."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from metering.errors import DeliveryError
from metering.exactly_once import InFlightError
from metering.ledger import DeliveryLedger, DynamoDbLedger
from s3_audit.sources.identity import request_key
from testbed.reference_rs import ReferenceOgcRs
from tests.events import load_event
from tests.helpers import client_for, create_ledger_table
from tests.integration.test_s3_audit_cross_source import cloudtrail_file, notification
from tests.integration.test_s3_audit_handler import (
    CONTEXT,
    FailsAfterFirstLine,
    emf_documents,
    handler,
    line,
    record,
    request_id_for,
    s3,
    stored,
    use,
)
from tests.unit.test_envelopes import BUCKET, KEY

__all__ = ["s3"]  # the moto S3 fixture of the handler tests

ASSET_BUCKET = "stac-assets-prod"  # requestParameters.bucketName of the cloudtrail/presigned_get fixture


def api_call_event(item: str, event_id: str, fixture: str = "presigned_get") -> dict[str, Any]:
    """The EventBridge "AWS API Call via CloudTrail" event of one download, as the rule hands it to SQS."""
    event = copy.deepcopy(load_event("envelopes/eventbridge_api_call"))
    event["id"] = f"eb-{event_id}"
    event["detail"] = record(item, event_id, fixture)
    return event


def sqs_batch(*bodies: dict[str, Any] | str, first: int = 1) -> dict[str, Any]:
    """An SQS batch as Lambda's event source mapping delivers it; messages are named m<first>, m<first+1>, ..."""
    return {
        "Records": [
            {
                "messageId": f"m{first + index}",
                "receiptHandle": f"handle-{first + index}",
                "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1761560142137"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:111122223333:OgcAuditS3-EventsQueue",
                "awsRegion": "us-east-1",
            }
            for index, body in enumerate(bodies)
        ]
    }


def busy_key() -> str:
    """The ledger key of the download of ``api_call_event("busy", "e-busy")``."""
    key = request_key(ASSET_BUCKET, request_id_for("e-busy"))
    assert key is not None
    return key


def failures(response: dict[str, Any]) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def posts(rs: ReferenceOgcRs) -> list[int]:
    """The number of lines of each answered POST to the process endpoint."""
    return [request.lines for request in rs.requests_log if request.path.endswith("/execution") and request.status]


@pytest.fixture
def ledger(mocked_aws: None) -> DeliveryLedger:
    """The DynamoDB delivery ledger on moto, as the function uses it in AWS."""
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    create_ledger_table(dynamodb)
    return DynamoDbLedger("ledger", dynamodb)


def wire(
    monkeypatch: pytest.MonkeyPatch,
    s3: Any,
    rs: ReferenceOgcRs,
    ledger: DeliveryLedger | None,
    batch_max_lines: int = 500,
) -> None:
    use(monkeypatch, s3, client_for(rs, batch_max_lines=batch_max_lines), ledger)


@pytest.fixture
def rs(
    monkeypatch: pytest.MonkeyPatch, s3: Any, ledger: DeliveryLedger, reference_rs: ReferenceOgcRs
) -> ReferenceOgcRs:
    """The reference OGC RS, with the handler wired to it, to the moto S3 and to the ledger (default batch size)."""
    wire(monkeypatch, s3, reference_rs, ledger)
    return reference_rs


def test_a_batch_of_events_is_delivered_in_chunked_posts(
    monkeypatch: pytest.MonkeyPatch, s3: Any, ledger: DeliveryLedger, reference_rs: ReferenceOgcRs
) -> None:
    wire(monkeypatch, s3, reference_rs, ledger, batch_max_lines=2)
    items = [f"ev-{n}" for n in range(5)]

    response = handler(sqs_batch(*(api_call_event(item, f"e-{item}") for item in items)), CONTEXT)

    assert failures(response) == []
    assert stored(reference_rs) == sorted(line(item) for item in items)
    assert posts(reference_rs) == [2, 2, 1]  # not one POST per event
    assert reference_rs.token_requests == 1


def test_a_request_repeated_in_a_batch_is_one_line(rs: ReferenceOgcRs) -> None:
    twice = api_call_event("r", "e-r")  # EventBridge delivers at least once: the same event in two messages

    response = handler(sqs_batch(twice, api_call_event("s", "e-s"), twice), CONTEXT)

    assert failures(response) == []
    assert stored(rs) == [line("r"), line("s")]
    assert posts(rs) == [2]


def test_filtered_malformed_and_unknown_messages_beside_events_do_not_fail(rs: ReferenceOgcRs) -> None:
    malformed = api_call_event("m", "e-m")
    malformed["detail"]["requestParameters"] = ["not", "an", "object"]
    batch = sqs_batch(
        api_call_event("ok", "e-ok"),
        api_call_event("f", "e-f", "failed_403"),
        malformed,
        "not JSON at all",
        api_call_event("h", "e-h", "header_signed"),
    )

    response = handler(batch, CONTEXT)

    assert failures(response) == []
    assert stored(rs) == [line("ok")]


def test_event_batch_outcomes_and_path_are_published_as_metrics(
    rs: ReferenceOgcRs, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = sqs_batch(api_call_event("a", "e-a"), api_call_event("b", "e-b"), api_call_event("f", "e-f", "failed_403"))

    handler(batch, CONTEXT)

    documents = emf_documents(capsys.readouterr().out)
    totals = next(d for d in documents if "Metered" in d and "reason" not in d)
    assert (totals["Metered"], totals["EntriesSeen"], totals["LinesDelivered"]) == ([2.0], [3.0], [2.0])
    assert totals["DeliveryRequests"] == [1.0]
    by_path = {d["path"]: d["LinesDeliveredByPath"] for d in documents if "LinesDeliveredByPath" in d}
    assert by_path == {"event": [2.0]}
    # Each delivered line's age: from its download (2025-10-27T10:12:30Z in the fixture) to now.
    (ages,) = [d for d in documents if "LineAge" in d]
    assert ages["path"] == "event"
    expected_age = (datetime.now(UTC) - datetime(2025, 10, 27, 10, 12, 30, tzinfo=UTC)).total_seconds()
    assert len(ages["LineAge"]) == 2
    assert all(abs(age - expected_age) < 60 for age in ages["LineAge"])


@pytest.mark.parametrize("with_ledger", [True, False], ids=["ledger", "no-ledger"])
def test_a_failed_post_fails_only_the_messages_whose_lines_were_not_delivered(
    with_ledger: bool,
    monkeypatch: pytest.MonkeyPatch,
    s3: Any,
    ledger: DeliveryLedger,
    reference_rs: ReferenceOgcRs,
) -> None:
    wire(monkeypatch, s3, reference_rs, ledger if with_ledger else None, batch_max_lines=2)
    # The first POST (events 1 and 2) is stored, then OGC RS answers 503 to the second and to its retry.
    reference_rs.faults.push("ok").push("status", 503, times=2)
    batch = sqs_batch(*(api_call_event(f"p{n}", f"e-p{n}") for n in (1, 2, 3, 4)))

    response = handler(batch, CONTEXT)

    assert failures(response) == ["m3", "m4"]
    assert stored(reference_rs) == [line("p1"), line("p2")]


def test_failed_messages_retried_in_another_batch_are_delivered_once(
    monkeypatch: pytest.MonkeyPatch, s3: Any, ledger: DeliveryLedger, reference_rs: ReferenceOgcRs
) -> None:
    # OGC RS answers the first line, then goes down: the retry comes back in a batch composed differently.
    use(monkeypatch, s3, FailsAfterFirstLine(client_for(reference_rs)), ledger)
    first = sqs_batch(api_call_event("q1", "e-q1"), api_call_event("q2", "e-q2"), api_call_event("q3", "e-q3"))
    assert failures(handler(first, CONTEXT)) == ["m2", "m3"]

    wire(monkeypatch, s3, reference_rs, ledger)
    retry = sqs_batch(
        api_call_event("q3", "e-q3"), api_call_event("q1", "e-q1"), api_call_event("q2", "e-q2"), first=10
    )
    response = handler(retry, CONTEXT)

    assert failures(response) == []
    assert stored(reference_rs) == [line("q1"), line("q2"), line("q3")]


def test_an_event_held_by_another_invocation_fails_only_its_message(rs: ReferenceOgcRs, ledger: DeliveryLedger) -> None:
    ledger.claim([busy_key()])  # another invocation is sending it now

    response = handler(sqs_batch(api_call_event("free", "e-free"), api_call_event("busy", "e-busy")), CONTEXT)

    assert failures(response) == ["m2"]
    assert stored(rs) == [line("free")]


def test_direct_invocation_raises_when_the_event_line_is_not_delivered(
    rs: ReferenceOgcRs, ledger: DeliveryLedger
) -> None:
    ledger.claim([busy_key()])

    with pytest.raises(InFlightError):
        handler(api_call_event("busy", "e-busy"), CONTEXT)


def test_ledger_unreachable_fails_every_event_message(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    class Unreachable:
        def delivered(self, keys: object) -> set[str]:
            raise DeliveryError("DynamoDB unreachable")

    wire(monkeypatch, s3, reference_rs, Unreachable())  # type: ignore[arg-type]
    batch = sqs_batch(api_call_event("a", "e-a"), "not JSON at all", api_call_event("b", "e-b"))

    response = handler(batch, CONTEXT)

    assert failures(response) == ["m1", "m3"]
    assert reference_rs.row_count() == 0


# --- one line per S3 request, whichever path brings it first -------------------------------------------------------


def test_event_then_its_log_file_is_one_line(rs: ReferenceOgcRs, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=cloudtrail_file(record("x", "e-x"), record("y", "e-y")))

    assert failures(handler(sqs_batch(api_call_event("x", "e-x")), CONTEXT)) == []
    capsys.readouterr()
    response = handler(notification(KEY), CONTEXT)

    assert stored(rs) == [line("x"), line("y")]  # y: EventBridge missed it, the log file has it
    assert (response["metered"], response["delivered"], response["already_delivered"]) == (2, 1, 1)
    documents = emf_documents(capsys.readouterr().out)
    known = {d["path"]: d["RequestsAlreadyDelivered"] for d in documents if "RequestsAlreadyDelivered" in d}
    by_path = {d["path"]: d["LinesDeliveredByPath"] for d in documents if "LinesDeliveredByPath" in d}
    assert (known, by_path) == ({"log_file": [1.0]}, {"log_file": [1.0]})


def test_log_file_then_its_event_is_one_line(rs: ReferenceOgcRs, s3: Any) -> None:
    # EventBridge is best effort and can be late: the log file may win.
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=cloudtrail_file(record("x", "e-x"), record("y", "e-y")))

    handler(notification(KEY), CONTEXT)
    response = handler(sqs_batch(api_call_event("y", "e-y"), api_call_event("z", "e-z")), CONTEXT)

    assert failures(response) == []
    assert stored(rs) == [line("x"), line("y"), line("z")]
    assert posts(rs) == [2, 1]  # the log file's two lines, then only z


def test_event_retried_after_its_log_file_delivered_the_request_is_not_sent_again(rs: ReferenceOgcRs, s3: Any) -> None:
    # The event's first try failed (OGC RS down); by its retry the log file has delivered the request.
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=cloudtrail_file(record("w", "e-w")))
    rs.faults.push("status", 503, times=2)
    with pytest.raises(BatchProcessingError):  # every message of the batch failed: Lambda retries the batch
        handler(sqs_batch(api_call_event("w", "e-w")), CONTEXT)

    handler(notification(KEY), CONTEXT)
    response = handler(sqs_batch(api_call_event("w", "e-w"), first=5), CONTEXT)

    assert failures(response) == []
    assert stored(rs) == [line("w")]
