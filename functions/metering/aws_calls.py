"""The AWS calls the functions make besides the delivery ledger's, as the IAM actions a role must allow.

Defined once, here, beside the code that makes the calls: ``infra`` grants each function exactly these (it
imports this module at synthesis time, so: standard library only), and the local runs execute the functions
under the synthesized policies with the emulator enforcing IAM, so a call added without its action fails a test.
The ledger's own actions are ``metering.ledger.DYNAMODB_ACTIONS``.
"""

from __future__ import annotations

from typing import Final

SECRET_READ_ACTIONS: Final = ("secretsmanager:GetSecretValue",)
"""Reading the client-credentials secret (``metering.runtime.secret_string``) and the webhook token."""

LOG_FILE_READ_ACTIONS: Final = ("s3:GetObject",)
"""s3_audit reading a CloudTrail log file (``s3_audit.ingest``); nothing lists or writes the log bucket."""

DELIVERY_QUEUE_SEND_ACTIONS: Final = ("sqs:SendMessage",)
"""The webhook's SendMessageBatch to the delivery queue (``minio_relay.delivery_queue``; IAM names it SendMessage)."""

QUEUE_CONSUMER_ACTIONS: Final = (
    "sqs:ReceiveMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueUrl",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
)
"""What Lambda's SQS event source calls with the function's own role (CDK's SqsEventSource grants them)."""
