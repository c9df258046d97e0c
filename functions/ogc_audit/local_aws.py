"""Run the Lambda handlers on one machine: an AWS emulator on loopback and an SQS event-source pump.

The pump gives the handlers Lambda's SQS semantics: a batch of received messages becomes one SQS event,
messages the handler reports in ``batchItemFailures`` stay in the queue (visible again after the visibility
timeout, then redriven to the DLQ by the queue's redrive policy), and the others are deleted.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

LambdaHandler = Callable[[dict[str, Any], Any], Any]

_EMULATOR_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def lambda_context(function_name: str, memory_mb: int = 1024) -> LambdaContext:
    """A Lambda context object with the attributes Powertools reads."""
    context = LambdaContext()
    context._function_name = function_name
    context._memory_limit_in_mb = memory_mb
    context._invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
    context._aws_request_id = str(uuid.uuid4())
    return context


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block and restore the previous ones after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def local_aws() -> Iterator[str]:
    """A moto server on 127.0.0.1 with boto3 pointed at it (AWS_ENDPOINT_URL); yields its URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto keeps its state per process, not per server: start from nothing.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()  # noqa: S310
    try:
        with environment({**_EMULATOR_ENV, "AWS_ENDPOINT_URL": url}):
            yield url
    finally:
        server.stop()


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source builds from received messages."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    "ApproximateReceiveCount": message.get("Attributes", {}).get("ApproximateReceiveCount", "1")
                },
                "messageAttributes": {},
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
    }


@dataclass
class PumpResult:
    """What draining a queue did."""

    invocations: int = 0
    succeeded: int = 0
    failed: int = 0


def pump_queue(
    sqs: Any,
    queue_url: str,
    handler: LambdaHandler,
    *,
    function_name: str,
    batch_size: int = 10,
    max_rounds: int = 1000,
    idle_rounds: int = 1,
    wait_between_s: float = 0.0,
) -> PumpResult:
    """Invoke ``handler`` on batches from ``queue_url`` until it has been empty ``idle_rounds`` times in a row."""
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    result, idle = PumpResult(), 0
    for _ in range(max_rounds):
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=batch_size, AttributeNames=["ApproximateReceiveCount"]
        ).get("Messages", [])
        if not messages:
            idle += 1
            if idle >= idle_rounds:
                break
            time.sleep(wait_between_s)
            continue
        idle = 0
        response = handler(sqs_event(messages, queue_arn), lambda_context(function_name)) or {}
        failed = {failure["itemIdentifier"] for failure in response.get("batchItemFailures", [])}
        result.invocations += 1
        result.failed += len(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        result.succeeded += len(done)
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ],
            )
    return result
