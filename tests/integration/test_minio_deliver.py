"""The deliver function: queue messages -> OGC RS, partial batch failures, and an OGC RS outage end to end."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import boto3
import pytest

from metering.ledger import SqliteLedger
from metering.line import Backend, MeteredDownload
from metering.ogc_rs import DeliveryError, DeliveryReport, RejectedLine, SettledCallback
from minio_relay import handler
from minio_relay.deliver import BatchDelivery, deliver_message
from minio_relay.delivery_queue import pack_messages
from testbed.local_aws import lambda_context
from testbed.reference_rs import Fault, ReferenceOgcRs
from testbed.samples import webhook_post
from tests.events import event_bytes, load_event
from tests.helpers import client_for

TOKEN = "minio-audit-token"
USER = "6f1d2c8e-3b4a-4f5e-9a7b-1c2d3e4f5a6b"
COLLECTION = "0b8e6c1a-9d2f-4e3b-8a7c-5d6e7f8a9b0c"
ITEM = "S2A_MSIL2A_20251020T050701_N0511_R019_T43PGQ"
CONTEXT = lambda_context("minio-deliver", memory_mb=256)


def downloads(count: int, prefix: str = "item") -> list[MeteredDownload]:
    return [
        MeteredDownload(
            USER, COLLECTION, f"{prefix}-{i}", "2025-10-27T10:12:30Z", i, Backend.MINIO, f"dep:{prefix}-{i}"
        )
        for i in range(count)
    ]


def sqs_record(message_id: str, body: str | bytes, receipt: str = "") -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": receipt or message_id,
        "body": body.decode() if isinstance(body, bytes) else body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1761559950000"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:minio-delivery",
        "awsRegion": "eu-west-1",
    }


class StubClient:
    """Records delivered lines; raises DeliveryError for a line it is told to fail on."""

    def __init__(self, fail_on: str | None = None, reject: str | None = None) -> None:
        self.fail_on = fail_on
        self.reject = reject
        self.delivered: list[str] = []

    def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
        if self.fail_on is not None and any(self.fail_on in line for line in lines):
            raise DeliveryError("OGC RS answered 503 after retries")
        report = DeliveryReport()
        for line in lines:
            if self.reject is not None and self.reject in line:
                report.rejected.append(RejectedLine(line, "itemId refused"))
            else:
                self.delivered.append(line)
                report.delivered += 1
        if on_settled is not None:
            on_settled(range(len(lines)))
        return report


def batch_event(*bodies: str | bytes) -> dict[str, Any]:
    return {"Records": [sqs_record(f"msg-{index}", body) for index, body in enumerate(bodies)]}


def failed_ids(response: Any) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


@pytest.fixture(autouse=True)
def fresh_ledger(monkeypatch: pytest.MonkeyPatch) -> SqliteLedger:
    """Each test starts with an empty ledger (the process-wide one would remember other tests' keys)."""
    ledger = SqliteLedger()
    monkeypatch.setattr(handler, "deliver_ledger", lambda: ledger)
    return ledger


def test_malformed_message_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    client = StubClient()
    monkeypatch.setattr(handler, "deliver_client", lambda: client)
    [first] = pack_messages(downloads(2, "a"))
    [third] = pack_messages(downloads(2, "c"))
    response = handler.deliver(batch_event(first, '{"not": "a delivery message"}', third), CONTEXT)
    assert failed_ids(response) == ["msg-1"]
    assert len(client.delivered) == 4


def test_message_whose_delivery_raises_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    client = StubClient(fail_on="c-1")
    monkeypatch.setattr(handler, "deliver_client", lambda: client)
    bodies = [pack_messages(downloads(2, prefix))[0] for prefix in ("a", "b", "c")]
    response = handler.deliver(batch_event(*bodies), CONTEXT)
    assert failed_ids(response) == ["msg-2"]
    assert [line.split("|")[2] for line in client.delivered] == ["a-0", "a-1", "b-0", "b-1"]


def test_after_an_outage_the_rest_of_the_batch_is_not_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    client = StubClient(fail_on="a-0")
    monkeypatch.setattr(handler, "deliver_client", lambda: client)
    bodies = [pack_messages(downloads(1, prefix))[0] for prefix in ("a", "b", "c")]
    response = handler.deliver(batch_event(*bodies), CONTEXT)
    assert failed_ids(response) == ["msg-0", "msg-1", "msg-2"]
    assert client.delivered == []


def test_rejected_lines_are_quarantined_and_the_message_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    client = StubClient(reject="x-1")
    report = deliver_message(pack_messages(downloads(3, "x"))[0], client, SqliteLedger())
    assert (report.delivery.delivered, len(report.delivery.rejected)) == (2, 1)
    assert "quarantined rejected_by_ogc_rs: itemId refused" in caplog.text


def test_same_key_twice_is_delivered_once_within_and_across_batches() -> None:
    client = StubClient()
    ledger = SqliteLedger()
    body = pack_messages(downloads(3))[0]
    batch = BatchDelivery(client, ledger)
    batch.deliver("m1", body)
    batch.deliver("m2", body)  # MinIO re-sent the body: same keys in a second message
    BatchDelivery(client, ledger).deliver("m3", body)  # and again, days later, in another invocation
    assert len(client.delivered) == 3


# ---- OGC RS outage, end to end through the webhook, a moto queue and the reference OGC RS ------


def minio_entry(index: int) -> dict[str, Any]:
    entry = load_event("minio/get_object_presigned")
    entry["requestID"] = f"1872{index:012X}"
    entry["requestQuery"]["itemId"] = f"{ITEM}-{index}"
    entry["api"]["tx"] = 1000 + index
    return entry


@pytest.fixture
def aws_region() -> str:
    """The relay's queue is in eu-west-1, as the SQS records above say."""
    return "eu-west-1"


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch, reference_rs: ReferenceOgcRs, relay_aws: None) -> str:
    monkeypatch.setenv("WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("BATCH_MAX_LINES", "50")
    for name in ("WEBHOOK_TOKEN_SECRET_ARN", "MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    # The production retry budget (seconds of backoff) is not what this test is about.
    client = client_for(reference_rs, batch_max_lines=50)
    monkeypatch.setattr(handler, "deliver_client", lambda: client)
    url: str = boto3.client("sqs").create_queue(QueueName="minio-delivery")["QueueUrl"]
    monkeypatch.setenv("DELIVERY_QUEUE_URL", url)
    return url


def post_body(body: bytes) -> int:
    response = handler.webhook(webhook_post(body, f"Bearer {TOKEN}"), CONTEXT)
    status: int = response["statusCode"]
    return status


def run_deliver_once(url: str) -> tuple[int, int]:
    """One poll of the event source mapping: receive, invoke, delete successes, release failures."""
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    if not messages:
        return 0, 0
    event = {"Records": [sqs_record(m["MessageId"], m["Body"], m["ReceiptHandle"]) for m in messages]}
    failed = set(failed_ids(handler.deliver(event, CONTEXT)))
    for message in messages:
        if message["MessageId"] in failed:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        else:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages), len(failed)


def queue_depth(url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_ogc_rs_outage_nothing_lost_nothing_twice(relay: str, reference_rs: ReferenceOgcRs) -> None:
    # OGC RS and its token endpoint are down for the whole first phase.
    down = [(Fault.with_status(503), 1.0)]
    reference_rs.faults.randomize(down)
    reference_rs.token_faults.randomize(down)

    bodies = [
        event_bytes("minio/batch.ndjson"),  # 3 downloads among 7 entries
        event_bytes("minio/get_object_legacy_2021"),
        event_bytes("minio/get_object_no_access_key_2022"),
        event_bytes("minio/get_object_partial_206"),
        event_bytes("minio/head_object"),
        b"".join(json.dumps(minio_entry(i), separators=(",", ":")).encode() + b"\n" for i in range(120)),
    ]
    assert [post_body(body) for body in bodies] == [200] * len(bodies)
    # MinIO re-sends a body it thinks failed (e.g. our answer reached it after its timeout).
    assert post_body(bodies[0]) == 200
    depth = queue_depth(relay)
    assert depth == 4 + 3 + 1  # one message per small body, 120 lines in messages of 50, the re-sent body

    for _ in range(3):  # the deliver function keeps failing while OGC RS is down
        received, failed = run_deliver_once(relay)
        assert received == failed > 0
    assert queue_depth(relay) == depth
    assert reference_rs.row_count() == 0

    reference_rs.faults.clear()
    reference_rs.token_faults.clear()
    for _ in range(20):
        if queue_depth(relay) == 0:
            break
        run_deliver_once(relay)
    assert queue_depth(relay) == 0

    expected = [
        f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|1048576|minio",
        f"{USER}|{COLLECTION}|S2B_MSIL2A_20251021T050659_N0511_R019_T43PGQ|2025-10-27T10:12:31Z|2048|minio",
        f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:32Z|4096|minio",
        f"{USER}|{COLLECTION}|{ITEM}|2021-06-14T08:03:11Z|52428800|minio",
        f"{USER}|{COLLECTION}|{ITEM}|2022-09-05T16:45:02Z|20480|minio",
        f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|65536|minio",
    ] + [f"{USER}|{COLLECTION}|{ITEM}-{i}|2025-10-27T10:12:30Z|{1000 + i}|minio" for i in range(120)]
    assert sorted(reference_rs.stored_lines()) == sorted(expected)
    assert len({row.id for row in reference_rs.rows()}) == len(expected)
    assert str(uuid.UUID(USER)) == reference_rs.rows()[0].user_id
