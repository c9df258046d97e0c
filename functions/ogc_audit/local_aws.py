"""Run the Lambda handlers on one machine: an AWS emulator on loopback and an SQS event-source pump.

The pump gives the handlers Lambda's SQS semantics: a batch of received messages becomes one SQS event,
messages the handler reports in ``batchItemFailures`` stay in the queue (visible again after the visibility
timeout, then redriven to the DLQ by the queue's redrive policy), and the others are deleted.
"""

from __future__ import annotations

import json
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
    queue_arn = _queue_arn(sqs, queue_url)
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


@dataclass(frozen=True)
class FlowResources:
    """What the stacks create for both flows, created in the emulator under one name prefix."""

    log_bucket: str
    log_file_queue_url: str
    log_file_dead_letter_url: str
    delivery_queue_url: str
    delivery_dead_letter_url: str
    ledger_table: str
    client_credentials_secret_arn: str
    webhook_token_secret_arn: str

    def function_environment(self) -> dict[str, str]:
        """The environment the stacks give the functions (besides the OGC RS settings)."""
        return {
            "CLIENT_CREDENTIALS_SECRET_ARN": self.client_credentials_secret_arn,
            "WEBHOOK_TOKEN_SECRET_ARN": self.webhook_token_secret_arn,
            "DELIVERY_QUEUE_URL": self.delivery_queue_url,
            "IDEMPOTENCY_TABLE_NAME": self.ledger_table,
        }


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _durable_queue(sqs: Any, name: str, visibility_timeout_s: int, max_receive_count: int) -> tuple[str, str]:
    """A queue and its DLQ; returns both URLs."""
    dead_letter = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    policy = {"deadLetterTargetArn": _queue_arn(sqs, dead_letter), "maxReceiveCount": str(max_receive_count)}
    queue = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": str(visibility_timeout_s), "RedrivePolicy": json.dumps(policy)},
    )["QueueUrl"]
    return queue, dead_letter


def create_flow_resources(
    aws: Any,
    *,
    prefix: str,
    client_credentials: Mapping[str, str],
    webhook_token: str,
    visibility_timeout_s: int = 1,
    max_receive_count: int = 5,
) -> FlowResources:
    """Secrets, both queues with DLQs, the ledger table and the log bucket notifying its queue, like the stacks.

    ``aws`` is the boto3 module (or a Session); short visibility timeouts keep local runs fast.
    """
    secrets = aws.client("secretsmanager")
    credentials_arn = secrets.create_secret(
        Name=f"{prefix}/client-credentials", SecretString=json.dumps(dict(client_credentials))
    )["ARN"]
    token_arn = secrets.create_secret(Name=f"{prefix}/webhook-token", SecretString=webhook_token)["ARN"]
    sqs = aws.client("sqs")
    log_queue, log_dead_letter = _durable_queue(sqs, f"{prefix}-log-files", visibility_timeout_s, max_receive_count)
    delivery, delivery_dead_letter = _durable_queue(sqs, f"{prefix}-delivery", visibility_timeout_s, max_receive_count)
    ledger_table = f"{prefix}-ledger"
    aws.client("dynamodb").create_table(
        TableName=ledger_table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    log_bucket = f"{prefix}-trail-logs"
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=log_bucket)
    rules = [{"Name": "prefix", "Value": "AWSLogs/"}, {"Name": "suffix", "Value": ".json.gz"}]
    s3.put_bucket_notification_configuration(
        Bucket=log_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": _queue_arn(sqs, log_queue),
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": rules}},
                }
            ]
        },
    )
    return FlowResources(
        log_bucket=log_bucket,
        log_file_queue_url=log_queue,
        log_file_dead_letter_url=log_dead_letter,
        delivery_queue_url=delivery,
        delivery_dead_letter_url=delivery_dead_letter,
        ledger_table=ledger_table,
        client_credentials_secret_arn=credentials_arn,
        webhook_token_secret_arn=token_arn,
    )
