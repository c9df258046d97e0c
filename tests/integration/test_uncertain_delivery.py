"""Exactly once into a slow OGC RS, end to end through the Lambda handlers: ``deliver`` (MinIO flow) and ``s3_audit``
(a CloudTrail log file, and a batch of EventBridge events), each fed by a moto SQS queue polled as Lambda's event
source does (a failed message comes back after its visibility timeout), against the reference OGC RS on loopback.

An OGC RS that answers after the client's read timeout, or commits and then loses its answer, makes a request
uncertain. The next tries never send it blindly: with OGC RS's database to ask, every line lands exactly once;
without it, the message is held back for the grace period, then its lines are sent once more and counted as
possible duplicates, one per line of the lost answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from metering.ledger import DeliveryLedger, SqliteLedger
from metering.line import Backend, MeteredDownload
from metering.ogc_rs_database import open_ogc_rs_database
from metering.uncertain import UncertainResolver
from minio_relay import handler as relay_handler
from minio_relay.delivery_queue import pack_messages
from s3_audit import handler as s3_audit_handler
from s3_audit.handler import Dependencies
from testbed.local_aws import sqs_event
from testbed.reference_rs import Fault, ReferenceOgcRs
from testbed.samples import cloudtrail_log_file
from tests.helpers import client_for
from tests.integration.test_s3_audit_cross_source import notification
from tests.integration.test_s3_audit_event_batch import api_call_event
from tests.integration.test_s3_audit_handler import CONTEXT, USER, record
from tests.unit.test_envelopes import BUCKET, KEY

COLLECTION = "8b2d4e6f-1a3c-4b5d-8e7f-9a0b1c2d3e4f"
LINES = 5  # in requests of 2: the second request is the uncertain one, the third is not sent with it
CHUNK = 2
READ_TIMEOUT_S = 0.4
GRACE_S = 2.5
POLL_VISIBILITY_S = 1  # a plainly failed message comes back this soon (the queue's visibility timeout)
PATHS = ["deliver", "log_file", "event_batch"]


@dataclass
class Flow:
    """One path wired to a moto queue, the reference OGC RS and a ledger; ``invoke`` is the Lambda handler."""

    queue_url: str
    queue_arn: str
    invoke: Callable[[dict[str, Any]], Any]
    resolver: UncertainResolver
    receipts: dict[str, list[float]] = field(default_factory=dict)


@pytest.fixture
def queue(mocked_aws: None) -> tuple[str, str]:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="work", Attributes={"VisibilityTimeout": str(POLL_VISIBILITY_S)})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


@pytest.fixture
def fresh_handlers(mocked_aws: None) -> Iterator[None]:
    """The handlers' cached AWS clients built inside this test's moto."""
    relay_handler._sqs_client.cache_clear()
    s3_audit_handler._sqs_client.cache_clear()
    yield
    relay_handler._sqs_client.cache_clear()
    s3_audit_handler._sqs_client.cache_clear()


@dataclass
class Wiring:
    """What a flow is wired to: the reference OGC RS, the moto queue, and the test's monkeypatch."""

    rs: ReferenceOgcRs
    queue: tuple[str, str]
    monkeypatch: pytest.MonkeyPatch


@pytest.fixture
def wiring(
    monkeypatch: pytest.MonkeyPatch, reference_rs: ReferenceOgcRs, queue: tuple[str, str], fresh_handlers: None
) -> Wiring:
    return Wiring(reference_rs, queue, monkeypatch)


@pytest.fixture
def database_wiring(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, queue: tuple[str, str], fresh_handlers: None
) -> Iterator[Wiring]:
    """The reference OGC RS on PostgreSQL with OGC RS's own tables (jobs_table, metering)."""
    with ReferenceOgcRs(database_url=postgres_url) as rs:
        yield Wiring(rs, queue, monkeypatch)


def database_resolver(rs: ReferenceOgcRs) -> UncertainResolver:
    """Asks OGC RS's database. A NOT_STORED answer is trusted once the request is 2 s old (60 s in production): the
    "answers_late" OGC RS only starts on a request after 1 s, as if it had travelled that long."""
    return UncertainResolver(open_ogc_rs_database(rs.database_url), not_stored_after_s=2.0, ask_again_s=1.0)


def wire(
    path: str,
    wiring: Wiring,
    *,
    ledger: DeliveryLedger,
    resolver: UncertainResolver,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> Flow:
    """Put the path's input on the queue and wire its handler; returns the flow."""
    monkeypatch = wiring.monkeypatch
    client = client_for(wiring.rs, batch_max_lines=CHUNK, read_timeout_s=read_timeout_s)
    sqs = boto3.client("sqs")
    url, arn = wiring.queue
    if path == "deliver":
        monkeypatch.setattr(relay_handler, "deliver_client", lambda: client)
        monkeypatch.setattr(relay_handler, "deliver_ledger", lambda: ledger)
        monkeypatch.setattr(relay_handler, "deliver_resolver", lambda: resolver)
        downloads = [
            MeteredDownload(USER, COLLECTION, f"item-{i}", "2025-10-27T10:12:30Z", i, Backend.MINIO, f"dep:req-{i}")
            for i in range(LINES)
        ]
        for body in pack_messages(downloads, max_lines=LINES):
            sqs.send_message(QueueUrl=url, MessageBody=body.decode())
        return Flow(url, arn, lambda event: relay_handler.deliver(event, CONTEXT), resolver)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    deps = Dependencies(s3=s3, sink=client, ledger=ledger, resolver=resolver)
    monkeypatch.setattr(s3_audit_handler, "dependencies", lambda: deps)
    records = [record(f"item-{i}", f"event-{i}") for i in range(LINES)]
    if path == "log_file":
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=cloudtrail_log_file(records))
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(notification(KEY)))
    else:
        for i in range(LINES):
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(api_call_event(f"item-{i}", f"event-{i}")))
    return Flow(url, arn, lambda event: s3_audit_handler.handler(event, CONTEXT), resolver)


def pump(flow: Flow, timeout_s: float = 20.0) -> None:
    """Poll the queue as Lambda's event source does until it is empty: invoke on each batch, delete what
    succeeded, leave the failures to come back (after the queue's visibility timeout, or later if the handler
    held them back)."""
    sqs = boto3.client("sqs")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=flow.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            attributes = sqs.get_queue_attributes(QueueUrl=flow.queue_url, AttributeNames=["All"])["Attributes"]
            if (
                int(attributes["ApproximateNumberOfMessages"])
                + int(attributes["ApproximateNumberOfMessagesNotVisible"])
                == 0
            ):
                return
            time.sleep(0.1)
            continue
        for message in messages:
            flow.receipts.setdefault(message["MessageId"], []).append(time.monotonic())
        try:
            response = flow.invoke(sqs_event(messages, flow.queue_arn))
        except BatchProcessingError:  # every message failed: Lambda returns the whole batch to the queue
            continue
        failed = {failure["itemIdentifier"] for failure in response.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=flow.queue_url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError(f"the queue did not drain within {timeout_s} s")


def distinct_items(rs: ReferenceOgcRs) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in rs.stored_lines():
        item = line.split("|")[2]
        counts[item] = counts.get(item, 0) + 1
    return counts


def emf_values(printed: str, metric: str) -> list[float]:
    values: list[float] = []
    for text in printed.splitlines():
        if text.startswith("{") and f'"{metric}"' in text:
            document = json.loads(text)
            value = document.get(metric)
            values.extend(float(v) for v in (value if isinstance(value, list) else [value]) if v is not None)
    return values


LATE_FAULTS = [Fault.store_then_drop(), Fault.store_then_delay(1.0), Fault.delay(1.0)]
LATE_IDS = ["answer_lost", "stored_then_answers_late", "answers_late"]


@pytest.mark.parametrize("fault", [*LATE_FAULTS, Fault.with_status(500)], ids=[*LATE_IDS, "status_500"])
@pytest.mark.parametrize("path", PATHS)
def test_with_the_database_every_line_lands_exactly_once(
    path: str, fault: Fault, database_wiring: Wiring, capsys: pytest.CaptureFixture[str]
) -> None:
    rs = database_wiring.rs
    flow = wire(path, database_wiring, ledger=SqliteLedger(), resolver=database_resolver(rs))
    rs.faults.push("ok").push_fault(fault)
    pump(flow)

    assert sorted(distinct_items(rs).values()) == [1] * LINES
    printed = capsys.readouterr().out
    assert sum(emf_values(printed, "LinesUncertain")) == 2
    assert sum(emf_values(printed, "LinesPossiblyDuplicated")) == 0
    stored_first = fault.kind != "status"  # the reference's injected 500 stores nothing
    assert sum(emf_values(printed, "LinesFoundStored")) == (2 if stored_first else 0)


@pytest.mark.parametrize("fault", LATE_FAULTS, ids=LATE_IDS)
@pytest.mark.parametrize("path", PATHS)
def test_without_the_database_a_lost_answer_is_held_back_then_sent_once_as_counted_possible_duplicates(
    path: str, fault: Fault, wiring: Wiring, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    flow = wire(path, wiring, ledger=SqliteLedger(), resolver=UncertainResolver(grace_s=GRACE_S))
    wiring.rs.faults.push("ok").push_fault(fault)
    started = time.monotonic()
    pump(flow)

    counts = distinct_items(wiring.rs)
    assert sorted(counts) == [f"item-{i}" for i in range(LINES)]  # nothing lost
    assert sorted(counts.values()) == [1, 1, 1, 2, 2]  # the uncertain request's two lines, sent once more
    printed = capsys.readouterr().out
    assert sum(emf_values(printed, "LinesPossiblyDuplicated")) == 2  # each duplicate counted once
    assert sum(emf_values(printed, "LinesUncertain")) == 2
    (logged,) = [entry for entry in caplog.records if entry.getMessage().startswith("possible duplicates")]
    assert (logged.levelname, logged.__dict__["possible_duplicates"]) == ("WARNING", 2)
    # Held back for the grace period, not re-sent when the queue's visibility timeout (1 s) ran out.
    assert time.monotonic() - started >= GRACE_S
    assert max(len(times) for times in flow.receipts.values()) <= 3


@pytest.mark.parametrize("path", PATHS)
def test_an_ogc_rs_answering_after_3_s_within_the_read_timeout_stores_every_line_once(
    path: str, wiring: Wiring
) -> None:
    # The production read timeout (60 s) is far longer than OGC RS's 3 s.
    flow = wire(path, wiring, ledger=SqliteLedger(), resolver=UncertainResolver(grace_s=GRACE_S), read_timeout_s=60)
    wiring.rs.faults.push_fault(Fault.store_then_delay(3.0))  # stores on receipt, answers 3 s later
    pump(flow)
    assert sorted(distinct_items(wiring.rs).values()) == [1] * LINES
