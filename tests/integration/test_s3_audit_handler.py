"""The s3_audit Lambda handler against moto S3 and the reference OGC RS on loopback."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from metering.errors import DeliveryError
from metering.ledger import DeliveryLedger, SqliteLedger
from metering.ogc_rs import DeliveryReport, OgcRsClient, RejectedLine, SettledCallback
from s3_audit import handler as s3_audit_handler
from s3_audit.handler import Dependencies, handler
from s3_audit.ingest import LineSink
from testbed.local_aws import lambda_context
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import cloudtrail_log_file
from tests.events import load_event
from tests.helpers import client_for
from tests.unit.test_envelopes import BUCKET, DIRECT_NOTIFICATIONS, KEY, ORG_KEY, SPACE_KEY

USER = "3f1c9a52-7a4e-4c1e-9f0b-2d5f8e6a1b7c"
COLLECTION = "8b2d4e6f-1a3c-4b5d-8e7f-9a0b1c2d3e4f"

CONTEXT = lambda_context("s3-audit", memory_mb=512)


def record(item: str, event_id: str, fixture: str = "presigned_get") -> dict[str, Any]:
    """A CloudTrail record from a fixture, with its own item, eventID and S3 request ID."""
    value = copy.deepcopy(load_event(f"cloudtrail/{fixture}"))
    value["eventID"] = event_id
    value["requestID"] = request_id_for(event_id)
    value["requestParameters"]["itemId"] = item
    return value


def request_id_for(event_id: str) -> str:
    """A 16-character S3 request ID of its own for each event (one event, one request)."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:16].upper()


def log_file(name: str) -> bytes:
    """A gzipped log file with two metered downloads (items ``<name>-1``, ``<name>-2``) and three filtered events."""
    records = [
        record(f"{name}-1", f"{name}-e1"),
        record(f"{name}-2", f"{name}-e2", "float_bytes"),
        record(f"{name}-3", f"{name}-e3", "failed_403"),
        record(f"{name}-4", f"{name}-e4", "header_signed"),
        record(f"{name}-5", f"{name}-e5", "non_uuid_user"),
    ]
    return cloudtrail_log_file(records)


def line(item: str, size: int = 16384) -> str:
    return f"{USER}|{COLLECTION}|{item}|2025-10-27T10:12:30Z|{size}|aws_s3"


@pytest.fixture
def s3(mocked_aws: None) -> Any:
    """Moto S3 with the log bucket."""
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def use(monkeypatch: pytest.MonkeyPatch, s3: Any, sink: LineSink, ledger: DeliveryLedger | None = None) -> None:
    monkeypatch.setattr(s3_audit_handler, "dependencies", lambda: Dependencies(s3=s3, sink=sink, ledger=ledger))


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs) -> ReferenceOgcRs:
    """The handler wired to moto S3 and the reference OGC RS."""
    use(monkeypatch, s3, client_for(reference_rs))
    return reference_rs


def stored(rs: ReferenceOgcRs) -> list[str]:
    return sorted(rs.stored_lines())


@pytest.mark.parametrize(
    ("fixture", "key"),
    [*DIRECT_NOTIFICATIONS, ("eventbridge_object_created", SPACE_KEY), ("cloudtrail_sns_message", ORG_KEY)],
)
def test_direct_envelopes_deliver_the_log_file(fixture: str, key: str, s3: Any, wired: ReferenceOgcRs) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=log_file("f"))

    response = handler(load_event(f"envelopes/{fixture}"), CONTEXT)

    assert stored(wired) == [line("f-1"), line("f-2")]
    assert response["files"] == 1
    assert response["metered"] == 2
    assert response["filtered"] == {"failed_request": 1, "invalid_user_id": 1, "not_presigned": 1}


@pytest.mark.parametrize(("fixture", "key"), [("sqs_s3_notification", KEY), ("sqs_sns_s3_notification", SPACE_KEY)])
def test_sqs_envelopes_deliver_the_log_file(fixture: str, key: str, s3: Any, wired: ReferenceOgcRs) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=log_file("q"))

    response = handler(load_event(f"envelopes/{fixture}"), CONTEXT)

    assert response == {"batchItemFailures": []}
    assert stored(wired) == [line("q-1"), line("q-2")]


def test_eventbridge_api_call_meters_the_inline_record(wired: ReferenceOgcRs) -> None:
    response = handler(load_event("envelopes/eventbridge_api_call"), CONTEXT)

    assert response["inline_records"] == 1
    assert stored(wired) == [line("S2B_MSIL2A_20251026T050649_N0511_R019_T43PGQ")]


@pytest.mark.parametrize("fixture", ["s3_notification_skipped_keys", "s3_test_event", "sqs_s3_test_event"])
def test_skipped_inputs_read_nothing_and_send_nothing(fixture: str, wired: ReferenceOgcRs) -> None:
    # The keys do not exist in the bucket: reading one would fail the invocation.
    response = handler(load_event(f"envelopes/{fixture}"), CONTEXT)

    assert response.get("batchItemFailures", []) == []
    assert wired.token_requests == 0
    assert wired.row_count() == 0


def test_skipped_keys_are_counted_per_reason(wired: ReferenceOgcRs) -> None:
    response = handler(load_event("envelopes/s3_notification_skipped_keys"), CONTEXT)

    assert response["skipped_inputs"] == {"digest_file": 1, "insight_file": 1, "not_log_file": 1}


def test_unknown_sqs_message_is_logged_at_error_not_retried(
    wired: ReferenceOgcRs, caplog: pytest.LogCaptureFixture
) -> None:
    event = load_event("envelopes/sqs_s3_notification")
    event["Records"][0]["body"] = "hello"

    response = handler(event, CONTEXT)

    assert response == {"batchItemFailures": []}
    (logged,) = [entry for entry in caplog.records if entry.levelno == logging.ERROR]
    assert logged.__dict__["reason"] == "unknown_envelope"
    assert "hello" in logged.__dict__["input"]


def test_a_deeply_nested_message_is_a_counted_skip_beside_a_delivered_one(
    s3: Any, wired: ReferenceOgcRs, caplog: pytest.LogCaptureFixture
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=log_file("n"))
    event = load_event("envelopes/sqs_s3_notification")
    deep = copy.deepcopy(event["Records"][0])
    deep["messageId"], deep["body"] = "deep", "[" * 50_000 + "]" * 50_000
    event["Records"].append(deep)

    response = handler(event, CONTEXT)

    assert response == {"batchItemFailures": []}
    assert stored(wired) == [line("n-1"), line("n-2")]
    (logged,) = [entry for entry in caplog.records if entry.levelno == logging.ERROR]
    assert logged.__dict__["reason"] == "unknown_envelope"
    assert "nested too deeply" in logged.__dict__["input"]


def quarantine_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [entry for entry in caplog.records if entry.levelno == logging.ERROR and entry.msg == "input quarantined"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "bad_json"),
        (b"this is not JSON", "bad_json"),
        (gzip.compress(b'{"Records": [')[:-3], "bad_gzip"),
        (b"\x1f\x8b\x08\x00garbage", "bad_gzip"),
    ],
    ids=["empty", "not-json", "truncated-gzip", "corrupt-gzip"],
)
def test_damaged_file_is_quarantined_and_does_not_fail_the_message(
    body: bytes, reason: str, s3: Any, wired: ReferenceOgcRs, caplog: pytest.LogCaptureFixture
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)

    response = handler(load_event("envelopes/sqs_s3_notification"), CONTEXT)

    assert response == {"batchItemFailures": []}
    (logged,) = quarantine_logs(caplog)
    assert logged.__dict__["input"] == f"s3://{BUCKET}/{KEY}"
    assert logged.__dict__["reason"] == reason
    assert logged.__dict__["detail"]


def test_records_before_the_damage_are_delivered(s3: Any, wired: ReferenceOgcRs) -> None:
    whole = log_file("t")
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=whole[: len(whole) - 10])

    response = handler(load_event("envelopes/s3_notification"), CONTEXT)

    assert response["quarantined"] == {"bad_gzip": 1}
    assert stored(wired) == [line("t-1"), line("t-2")]


def test_duplicate_event_ids_in_a_file_are_metered_once(s3: Any, wired: ReferenceOgcRs) -> None:
    first, repeat = record("d-1", "same-id"), record("d-1", "same-id")
    body = cloudtrail_log_file([first, record("d-2", "other-id"), repeat])
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)

    response = handler(load_event("envelopes/s3_notification"), CONTEXT)

    assert stored(wired) == [line("d-1"), line("d-2")]
    assert response["filtered"] == {"duplicate_event": 1}


class FakeSink:
    """The parts of OgcRsClient the function uses; subclasses decide what ``deliver`` does."""

    batch_max_lines = 500

    def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
        raise NotImplementedError


class FailingFor(FakeSink):
    """An OGC RS client that is down for lines of one item prefix and delivers the others."""

    def __init__(self, sink: OgcRsClient, failing_prefix: str) -> None:
        self.sink = sink
        self.failing_prefix = failing_prefix

    def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
        if any(f"|{self.failing_prefix}" in text for text in lines):
            raise DeliveryError("OGC RS answered 503 after retries")
        return self.sink.deliver(lines, on_settled)


class FailsAfterFirstLine(FakeSink):
    """OGC RS goes down after answering the first line of a delivery."""

    def __init__(self, sink: OgcRsClient) -> None:
        self.sink = sink
        self.batch_max_lines = sink.batch_max_lines

    def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
        self.sink.deliver(lines[:1], on_settled)
        raise DeliveryError("OGC RS unreachable after retries: ConnectionError")


def test_one_failing_message_does_not_fail_its_neighbours(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    for key, name in ((KEY, "a"), (ORG_KEY, "b"), (SPACE_KEY, "c")):
        s3.put_object(Bucket=BUCKET, Key=key, Body=log_file(name))
    use(monkeypatch, s3, FailingFor(client_for(reference_rs), "b-"))
    event = load_event("envelopes/sqs_three_messages")

    response = handler(event, CONTEXT)

    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    assert stored(reference_rs) == [line("a-1"), line("a-2"), line("c-1"), line("c-2")]


def test_unreadable_log_file_fails_its_message(s3: Any, wired: ReferenceOgcRs) -> None:
    # The first key has no object (S3 answers NoSuchKey): that message is retried and may end in the DLQ.
    s3.put_object(Bucket=BUCKET, Key=ORG_KEY, Body=log_file("b"))
    s3.put_object(Bucket=BUCKET, Key=SPACE_KEY, Body=log_file("c"))
    event = load_event("envelopes/sqs_three_messages")

    response = handler(event, CONTEXT)

    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert stored(wired) == [line("b-1"), line("b-2"), line("c-1"), line("c-2")]


def test_batch_whose_every_message_fails_is_retried_whole(s3: Any, wired: ReferenceOgcRs) -> None:
    with pytest.raises(BatchProcessingError):
        handler(load_event("envelopes/sqs_s3_notification"), CONTEXT)


def test_direct_invocation_raises_when_delivery_fails(monkeypatch: pytest.MonkeyPatch, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=log_file("x"))

    class Down(FakeSink):
        def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
            raise DeliveryError("OGC RS unreachable after retries: ConnectionError")

    use(monkeypatch, s3, Down())

    with pytest.raises(DeliveryError):
        handler(load_event("envelopes/s3_notification"), CONTEXT)


def test_rejected_lines_are_logged_and_counted_as_quarantined(
    monkeypatch: pytest.MonkeyPatch, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=log_file("r"))

    class RejectsOne(FakeSink):
        def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
            message = "Invalid itemId in log line 1"
            return DeliveryReport(delivered=len(lines) - 1, rejected=[RejectedLine(lines[0], message)])

    use(monkeypatch, s3, RejectsOne())

    response = handler(load_event("envelopes/s3_notification"), CONTEXT)

    assert response["metered"] == 1
    assert response["quarantined"] == {"rejected_by_ogc_rs": 1}
    (logged,) = [entry for entry in caplog.records if entry.levelno == logging.ERROR]
    assert logged.__dict__["server_message"] == "Invalid itemId in log line 1"
    assert logged.__dict__["line"] == line("r-1")


def test_redelivered_message_is_not_metered_twice(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=log_file("once"))
    use(monkeypatch, s3, client_for(reference_rs), SqliteLedger())
    event = load_event("envelopes/sqs_s3_notification")

    assert handler(event, CONTEXT) == {"batchItemFailures": []}
    assert handler(event, CONTEXT) == {"batchItemFailures": []}  # SQS delivers at least once

    assert stored(reference_rs) == [line("once-1"), line("once-2")]


def test_an_event_repeated_in_a_later_log_file_is_metered_once(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    later_key = KEY.replace("T1015Z", "T1020Z")
    assert later_key != KEY
    repeated = [record("x-1", "x-e1"), record("y-1", "y-e1")]  # x-e1 was in the first file already
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=log_file("x"))
    s3.put_object(Bucket=BUCKET, Key=later_key, Body=cloudtrail_log_file(repeated))
    use(monkeypatch, s3, client_for(reference_rs), SqliteLedger())
    event = load_event("envelopes/s3_notification")

    handler(event, CONTEXT)
    later = copy.deepcopy(event)
    later["Records"][0]["s3"]["object"]["key"] = later_key
    response = handler(later, CONTEXT)

    assert stored(reference_rs) == sorted([line("x-1"), line("x-2"), line("y-1")])
    assert (response["delivered"], response["metered"]) == (1, 2)


def test_retry_after_a_partial_delivery_sends_only_the_rest(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=log_file("part"))
    ledger = SqliteLedger()
    client = client_for(reference_rs, batch_max_lines=1)  # one ledger key per line here
    event = load_event("envelopes/s3_notification")
    use(monkeypatch, s3, FailsAfterFirstLine(client), ledger)
    with pytest.raises(DeliveryError):
        handler(event, CONTEXT)
    assert stored(reference_rs) == [line("part-1")]

    use(monkeypatch, s3, client, ledger)
    response = handler(event, CONTEXT)

    assert stored(reference_rs) == [line("part-1"), line("part-2")]
    assert response["delivered"] == 1


def emf_documents(text: str) -> list[dict[str, Any]]:
    """The embedded-metric-format documents among the JSON lines the handler printed."""
    documents = []
    for printed in text.splitlines():
        if printed.startswith("{") and '"_aws"' in printed:
            documents.append(json.loads(printed))
    return documents


def test_outcomes_and_delivery_are_published_as_metrics(
    s3: Any, wired: ReferenceOgcRs, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=log_file("m"))

    handler(load_event("envelopes/sqs_s3_notification"), CONTEXT)

    documents = emf_documents(capsys.readouterr().out)
    totals = next(d for d in documents if "Metered" in d and "reason" not in d)
    assert (totals["flow"], totals["service"]) == ("aws_s3", "s3_audit")
    assert (totals["Metered"], totals["EntriesSeen"], totals["LogFilesRead"]) == ([2.0], [5.0], [1.0])
    assert (totals["LinesDelivered"], totals["DeliveryRequests"], totals["TokenFetches"]) == ([2.0], [1.0], [1.0])
    by_reason = {d["reason"]: d["Filtered"] for d in documents if "reason" in d and "Filtered" in d}
    assert by_reason == {"failed_request": [1.0], "invalid_user_id": [1.0], "not_presigned": [1.0]}


def test_a_delivery_failure_is_published_with_its_kind(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs, capsys: pytest.CaptureFixture[str]
) -> None:
    use(monkeypatch, s3, client_for(reference_rs))
    reference_rs.faults.push("status", 503, times=2)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=log_file("x"))

    with pytest.raises(BatchProcessingError):  # the batch's only message failed
        handler(load_event("envelopes/sqs_s3_notification"), CONTEXT)

    documents = emf_documents(capsys.readouterr().out)
    assert [d["DeliveryFailures"] for d in documents if d.get("kind") == "unavailable"] == [[1.0]]
