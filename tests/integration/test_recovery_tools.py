"""Recovery tools run as an operator runs them: ``ogc-audit replay`` and ``ogc-audit redrive``."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from datetime import timedelta

import boto3
import pytest
from moto import mock_aws

from ogc_audit.redrive import redrive, source_queue_of
from ogc_audit.replay import log_file_time
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import cloudtrail_log_file, cloudtrail_log_key, cloudtrail_record, utc
from tests.helpers import log_file_entries, replay_emulator, run_replay

BUCKET = "replay-trail-logs"
START = utc("2025-10-27T10:00:00")


@pytest.fixture
def trail_logs() -> Iterator[list[str]]:
    """A moto server holding three log files (10:00, 10:05, 11:00), each with 3 downloads among 5 records."""
    rng = random.Random(7)
    with replay_emulator(BUCKET) as s3:
        expected: list[str] = []
        for offset in (0, 5, 60):
            when = START + timedelta(minutes=offset)
            entries, metered = log_file_entries(rng, when)
            records = [cloudtrail_record(download, variant) for download, variant in entries]
            records.append(records[0])  # a repeated event
            s3.put_object(Bucket=BUCKET, Key=cloudtrail_log_key(when, f"r{offset}"), Body=cloudtrail_log_file(records))
            expected += metered if offset < 60 else []
        digest = (
            "AWSLogs/111122223333/CloudTrail-Digest/ap-south-1/2025/10/27/x_CloudTrail-Digest_20251027T1000Z.json.gz"
        )
        s3.put_object(Bucket=BUCKET, Key=digest, Body=gzip.compress(b"{}"))
        yield expected


def replay(rs: ReferenceOgcRs, *args: str) -> tuple[int, list[dict[str, object]]]:
    return run_replay(rs, f"s3://{BUCKET}/AWSLogs/", *args)


def test_replaying_a_period_twice_sends_nothing_the_second_time(
    trail_logs: list[str], reference_rs: ReferenceOgcRs
) -> None:
    period = ("--since", "2025-10-27T10:00Z", "--until", "2025-10-27T10:30")
    status, dry = replay(reference_rs, *period, "--dry-run")
    assert status == 0
    assert (dry[-1]["files"], dry[-1]["metered"]) == (2, 4)
    assert reference_rs.row_count() == 0  # a dry run sends nothing

    status, first = replay(reference_rs, *period)
    assert status == 0
    assert (first[-1]["files"], first[-1]["delivered"], first[-1]["already_delivered"]) == (2, 4, 0)
    assert first[-1]["filtered"] == {"duplicate_event": 2, "failed_request": 2, "not_get_object": 2}
    stored = sorted(reference_rs.stored_lines())
    assert [line.rsplit("|", 3)[0] + "|" for line in stored] == sorted(trail_logs)

    status, second = replay(reference_rs, *period)
    assert status == 0
    assert (second[-1]["delivered"], second[-1]["already_delivered"]) == (0, 4)
    assert sorted(reference_rs.stored_lines()) == stored


def test_replay_refuses_a_bad_period(trail_logs: list[str], reference_rs: ReferenceOgcRs) -> None:
    status, _ = replay(reference_rs, "--since", "2025-10-28", "--until", "2025-10-27")
    assert status == 2
    status, _ = replay(reference_rs, "--since", "last tuesday", "--until", "2025-10-27")
    assert status == 2


def test_log_file_time_comes_from_the_name() -> None:
    key = cloudtrail_log_key(utc("2025-10-27T10:05:00"), "abc")
    assert log_file_time(key) == utc("2025-10-27T10:05:00")
    assert log_file_time("AWSLogs/1/CloudTrail-Digest/r/2025/10/27/1_CloudTrail-Digest_r_x.json.gz") is None


@mock_aws
def test_redrive_moves_dead_letters_back_to_their_queue() -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    dead = sqs.create_queue(QueueName="delivery-dlq")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    source = sqs.create_queue(
        QueueName="delivery",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]
    for index in range(13):
        sqs.send_message(QueueUrl=dead, MessageBody=json.dumps({"n": index}))
    assert source_queue_of(sqs, dead) == source
    assert redrive(sqs, dead, source, limit=3) == 3
    assert redrive(sqs, dead, source) == 10
    moved = []
    while messages := sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10).get("Messages", []):
        moved += [json.loads(m["Body"])["n"] for m in messages]
        sqs.delete_message_batch(
            QueueUrl=source, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in messages]
        )
    assert sorted(moved) == list(range(13))
    assert "Messages" not in sqs.receive_message(QueueUrl=dead)
