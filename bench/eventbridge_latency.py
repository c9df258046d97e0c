"""Benchmark: how long a download takes to become a stored line, by EventBridge event and by log file, locally.

Usage::

    .venv/bin/python -m bench.eventbridge_latency [--events 600] [--rate 50] [--log-files 20] [--records 10]

Everything runs on loopback: a moto server holds the event queue, the log-file queue, the log bucket (its
ObjectCreated notification feeds the log-file queue) and the DynamoDB delivery ledger; the reference OGC RS
(``testbed.reference_rs``) stores the lines; the real ``s3_audit`` handler runs in this process behind a pump that
behaves like Lambda's SQS event source mapping with the deployed settings (``infra.constants``): the event queue
in batches of EVENT_BATCH_SIZE after at most EVENT_MAX_BATCHING_WINDOW, the log-file queue one file at a time.

1. Event path: ``--events`` "AWS API Call via CloudTrail" events are enqueued at ``--rate`` per second, as the
   rule's target does; each event's latency runs from just before its SendMessage to the return of the handler
   invocation that delivered it (OGC RS answers only once the lines are stored).
2. Log-file path, in the same run: ``--log-files`` CloudTrail log files of ``--records`` new downloads each are
   written to the log bucket one after the other; latency runs from just before PutObject (notification -> queue
   -> handler reads the file -> OGC RS) to the handler's return. This is the path's floor: in AWS, CloudTrail
   adds its own delivery delay (about 5 minutes) before the file exists.

Prints p50 and p99 of each path and their ratios (event / log file), checks that OGC RS stored every line exactly
once, and exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import logging
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from infra.constants import EVENT_BATCH_SIZE, EVENT_MAX_BATCHING_WINDOW
from testbed.local_aws import environment, lambda_context, local_aws, sqs_event
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import cloudtrail_log_key, cloudtrail_record, eventbridge_api_call, random_download, utc

START = utc("2025-10-27T10:10:00")
RECEIVE_MAX = 10  # SQS hands out at most 10 messages per ReceiveMessage; the pump gathers a batch from several
# What CloudTrail adds before a log file exists (AWS CloudTrail user guide: "about every 5 minutes").
CLOUDTRAIL_DELIVERY_S = 300.0


@dataclass
class PathRun:
    """Latencies (seconds) of one path and what its handler invocations saw."""

    latencies: list[float] = field(default_factory=list)
    invocations: int = 0
    failed_messages: int = 0
    handler_seconds: list[float] = field(default_factory=list)

    def percentile(self, share: float) -> float:
        """The ``share`` quantile (nearest rank) of the latencies."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def _queue(sqs: Any, name: str) -> tuple[str, str]:
    """A queue with a dead-letter queue, as DurableQueue makes it; returns its URL and ARN."""
    dead_letters = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dead_letters_arn = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["QueueArn"])["Attributes"]
    policy = {"deadLetterTargetArn": dead_letters_arn["QueueArn"], "maxReceiveCount": "5"}
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(policy)})[
        "QueueUrl"
    ]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, str(arn)


def _invoke(
    handler: Callable[[dict[str, Any], Any], Any], sqs: Any, url: str, arn: str, messages: list[dict[str, Any]]
) -> tuple[float, set[str], float]:
    """One invocation as the event source mapping makes it; deletes the messages that did not fail.

    Returns the time the handler returned, the failed message ids and the handler's duration.
    """
    began = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):  # metric documents, disabled anyway
        response = handler(sqs_event(messages, arn), lambda_context("s3-audit")) or {}
    returned = time.monotonic()
    failed = {failure["itemIdentifier"] for failure in response.get("batchItemFailures", [])}
    done = [message for message in messages if message["MessageId"] not in failed]
    for start in range(0, len(done), RECEIVE_MAX):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    return returned, failed, returned - began


def run_event_path(
    sqs: Any, url: str, arn: str, *, count: int, rate: float, batch_size: int, window_s: float
) -> PathRun:
    """Enqueue ``count`` events at ``rate``/s from a producer thread while the pump consumes them in batches."""
    from s3_audit.handler import handler

    rng = random.Random(12)  # sample data, reproducible
    events = [eventbridge_api_call(random_download(rng, START)) for _ in range(count)]
    enqueued: dict[str, float] = {}

    def produce() -> None:
        begin = time.monotonic()
        for index, event in enumerate(events):
            time.sleep(max(0.0, begin + index / rate - time.monotonic()))
            enqueued[event["id"]] = time.monotonic()
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))

    producer = threading.Thread(target=produce, daemon=True)
    run = PathRun()
    producer.start()
    while len(run.latencies) < count:
        batch: list[dict[str, Any]] = []
        first_seen = 0.0
        # Lambda invokes when the batch is full or the window since the first message has passed.
        while len(batch) < batch_size and (not batch or time.monotonic() - first_seen < window_s):
            received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=min(RECEIVE_MAX, batch_size - len(batch)))
            messages = received.get("Messages", [])
            if messages and not batch:
                first_seen = time.monotonic()
            batch += messages
            if not messages:
                time.sleep(0.01)
        returned, failed, seconds = _invoke(handler, sqs, url, arn, batch)
        run.invocations += 1
        run.failed_messages += len(failed)
        run.handler_seconds.append(seconds)
        for message in batch:
            if message["MessageId"] not in failed:
                run.latencies.append(returned - enqueued[json.loads(message["Body"])["id"]])
    producer.join()
    return run


def run_log_file_path(s3: Any, sqs: Any, bucket: str, url: str, arn: str, *, files: int, records: int) -> PathRun:
    """Write log files one at a time; each is pumped (batch size 1, as deployed) until its handler returns."""
    from s3_audit.handler import handler

    rng = random.Random(34)  # sample data, reproducible
    run = PathRun()
    for number in range(files):
        when = START + timedelta(minutes=5 * number)
        body = {"Records": [cloudtrail_record(random_download(rng, when)) for _ in range(records)]}
        data = gzip.compress(json.dumps(body).encode())
        written = time.monotonic()
        name = f"bench{number:04d}"
        s3.put_object(Bucket=bucket, Key=cloudtrail_log_key(when, name), Body=data)
        delivered = False
        while not delivered:  # until the invocation that read this file has returned
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", [])
            if not messages:
                continue
            returned, failed, seconds = _invoke(handler, sqs, url, arn, messages)
            run.invocations += 1
            run.failed_messages += len(failed)
            run.handler_seconds.append(seconds)
            delivered = name in messages[0]["Body"] and not failed  # the key is URL-encoded there
        run.latencies += [returned - written] * records  # every line of the file was stored at that moment
    return run


def _report(event: PathRun, log_file: PathRun, out: Any) -> None:
    def row(label: str, run: PathRun) -> str:
        per_invocation = statistics.median(run.handler_seconds) * 1000
        return (
            f"  {label:<9} {len(run.latencies):>6} lines  p50 {run.percentile(0.5) * 1000:8.1f} ms  "
            f"p99 {run.percentile(0.99) * 1000:8.1f} ms  invocations {run.invocations:>4}  "
            f"handler median {per_invocation:6.1f} ms  failed messages {run.failed_messages}"
        )

    out.write("measured locally (moto server + reference OGC RS on loopback), same run:\n")
    out.write(row("event", event) + "\n")
    out.write(row("log file", log_file) + "\n")
    p50 = event.percentile(0.5) / log_file.percentile(0.5)
    p99 = event.percentile(0.99) / log_file.percentile(0.99)
    out.write(f"ratios event / log-file floor: p50 {p50:.2f}x  p99 {p99:.2f}x\n")
    aws_p50 = event.percentile(0.5) / (CLOUDTRAIL_DELIVERY_S + log_file.percentile(0.5))
    out.write(
        f"in AWS the log-file path first waits for CloudTrail's delivery (~{CLOUDTRAIL_DELIVERY_S:.0f} s): with that "
        f"added, event / log file p50 ~ {aws_p50:.4f}x before EventBridge's own (undocumented) delivery time; "
        "see docs/latency.md\n"
    )


def main(argv: Sequence[str] | None = None, out: Any = sys.stdout) -> int:
    """Run both paths once and print their latencies and ratios; exit status 1 if a line is missing or doubled."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--rate", type=float, default=50.0, help="events enqueued per second")
    parser.add_argument("--log-files", type=int, default=20)
    parser.add_argument("--records", type=int, default=10, help="downloads per log file")
    parser.add_argument("--batch-size", type=int, default=EVENT_BATCH_SIZE)
    parser.add_argument("--window", type=float, default=EVENT_MAX_BATCHING_WINDOW.to_seconds(), help="seconds")
    args = parser.parse_args(argv)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    with ReferenceOgcRs() as rs, local_aws():
        import boto3

        sqs, s3, dynamodb = boto3.client("sqs"), boto3.client("s3"), boto3.client("dynamodb")
        events_url, events_arn = _queue(sqs, "bench-events")
        logs_url, logs_arn = _queue(sqs, "bench-log-files")
        bucket = "bench-trail-logs"
        s3.create_bucket(Bucket=bucket)
        rules = [{"Name": "prefix", "Value": "AWSLogs/"}, {"Name": "suffix", "Value": ".json.gz"}]
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": logs_arn, "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": rules}}}
                ]
            },
        )
        # S3 announces a new notification configuration with s3:TestEvent: consume it before measuring.
        while message := sqs.receive_message(QueueUrl=logs_url, WaitTimeSeconds=1).get("Messages"):
            sqs.delete_message(QueueUrl=logs_url, ReceiptHandle=message[0]["ReceiptHandle"])
        dynamodb.create_table(
            TableName="bench-ledger",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        settings = {
            "PROCESS_API_URL": rs.process_url,
            "AUTH_URL": rs.token_url,
            "AUTH_ITEM_ID": rs.rs_host,
            "CLIENT_ID": rs.client_id,
            "CLIENT_SECRET": rs.client_secret,
            "OGC_AUDIT_ALLOW_HTTP": "1",  # the reference OGC RS speaks plain http on loopback
            "IDEMPOTENCY_TABLE_NAME": "bench-ledger",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        with environment(settings):
            from s3_audit.handler import dependencies

            dependencies.cache_clear()  # built inside the emulator's environment
            out.write(
                f"event path: {args.events} events at {args.rate:g}/s, batches of up to {args.batch_size} after at "
                f"most {args.window:g} s; log-file path: {args.log_files} files of {args.records} downloads\n"
            )
            event = run_event_path(
                sqs,
                events_url,
                events_arn,
                count=args.events,
                rate=args.rate,
                batch_size=args.batch_size,
                window_s=args.window,
            )
            log_file = run_log_file_path(
                s3, sqs, bucket, logs_url, logs_arn, files=args.log_files, records=args.records
            )
            dependencies.cache_clear()
        stored = rs.stored_lines()
    _report(event, log_file, out)
    expected = args.events + args.log_files * args.records
    once = len(stored) == len(set(stored)) == expected
    out.write(f"OGC RS stored {len(stored)} lines, {len(set(stored))} distinct, {expected} expected: ")
    out.write("OK\n" if once else "MISMATCH\n")
    return 0 if once else 1


if __name__ == "__main__":
    sys.exit(main())
