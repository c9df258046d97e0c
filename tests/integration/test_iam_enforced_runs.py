"""Each function runs under the IAM policy its synthesized template grants it, with the emulator enforcing IAM.

The resources come from the templates too (``create_flow_resources``): queues with their redrive policies, the
ledger tables, the log bucket's notification, the event-source settings and each function's environment. A call a
function makes that its policy does not allow fails here exactly as it would in an AWS account; the last tests
take one action out of each function's synthesized policy and watch the run fail with AccessDenied.

The runs go twice: with cdk.json's context (AWS-managed encryption) and with ``kmsKey=create``, where every queue,
the ledger table, the secrets and the trail's log files are under the app's customer managed key. The services
then use the key in the caller's context (``testbed.caller_kms``): a kms action missing from a role fails here too.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from metering import env_names
from metering.aws_calls import QUEUE_CONSUMER_ACTIONS
from metering.ledger import DYNAMODB_ACTIONS
from testbed import samples
from testbed.local_aws import FlowResources, create_flow_resources, local_aws, pump_queue, sqs_event
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import Download, Variant
from tests.events import load_event

Templates = Mapping[str, Mapping[str, Any]]
FlowWithout = Callable[[str, str], FlowResources]
"""Starts the flow with one action taken out of one function's template policy: ``(function, action)``."""
TOKEN = "iam-test-webhook-token-3b9d0c5a"
START = samples.utc("2025-10-27T10:10:00")
S3_AUDIT = "s3_audit.handler.handler"
WEBHOOK = "minio_relay.handler.webhook"
DELIVER = "minio_relay.handler.deliver"


def start_flow(rs: ReferenceOgcRs, templates: Templates, batch_max_lines: int = 2) -> FlowResources:
    """The templates' resources in the running emulator, the functions pointed at the reference OGC RS."""
    return create_flow_resources(
        boto3,
        prefix="iam",
        ogc_rs=rs,
        webhook_token=TOKEN,
        # Small OGC RS requests: a log file and a MinIO batch each take several chunks.
        local_settings={env_names.BATCH_MAX_LINES: str(batch_max_lines)},
        templates=templates,
    )


@pytest.fixture
def emulator() -> Iterator[str]:
    with local_aws() as url:
        yield url


@pytest.fixture(scope="module")
def key_templates() -> Templates:
    """The app with its customer managed key (``kmsKey=create``): stack OgcAuditKey, and the roles' kms grants."""
    from testbed.stack_template import synthesized_templates

    return synthesized_templates(kmsKey="create")


@pytest.fixture(params=["aws-managed-encryption", "kmsKey=create"])
def templates(request: pytest.FixtureRequest, flow_templates: Templates) -> Templates:
    """cdk.json's templates, then those with the app's key: each realistic run goes under both."""
    return flow_templates if request.param == "aws-managed-encryption" else request.getfixturevalue("key_templates")


@pytest.fixture
def flow(emulator: str, reference_rs: ReferenceOgcRs, templates: Templates) -> FlowResources:
    return start_flow(reference_rs, templates)


def line(download: Download, backend: str) -> str:
    return (
        f"{download.user_id}|{download.collection_id}|{download.item_id}|"
        f"{download.when:%Y-%m-%dT%H:%M:%SZ}|{download.size}|{backend}"
    )


def write_log_file(flow: FlowResources, name: str, rng: random.Random, repeat: dict[str, Any] | None = None) -> Any:
    """A CloudTrail log file with 5 metered downloads among filtered events; returns (downloads, records)."""
    records: list[dict[str, Any]] = [repeat] if repeat else []
    downloads = []
    for variant in [*[Variant.PRESIGNED_GET] * 5, Variant.FAILED_403, Variant.HEADER_SIGNED, Variant.HEAD_OBJECT]:
        download = samples.random_download(rng, START)
        records.append(samples.cloudtrail_record(download, variant))
        if variant is Variant.PRESIGNED_GET:
            downloads.append(download)
    flow.put_log_file(boto3.client("s3"), samples.cloudtrail_log_key(START, name), samples.cloudtrail_log_file(records))
    return downloads, records


def webhook_event(body: bytes) -> dict[str, Any]:
    return samples.webhook_post(body, f"Bearer {TOKEN}")


def minio_batch(rng: random.Random, size: int) -> tuple[bytes, list[Download]]:
    entries = [(samples.random_download(rng, START), variant) for variant in [Variant.PRESIGNED_GET] * size]
    body = samples.minio_body(samples.minio_entry(download, variant) for download, variant in entries)
    return body, [download for download, _ in entries]


def queue_depth(url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


# --- Under the full template policies: every call allowed ----------------------------------------------------------


def test_resources_and_settings_are_the_templates(flow: FlowResources, flow_templates: Templates) -> None:
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=flow.log_file_queue_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert int(attributes["VisibilityTimeout"]) == 6 * 300  # the template's, not a shortened local copy
    assert int(redrive["maxReceiveCount"]) == 5
    log_files = flow.s3_audit.event_source()  # cdk.json's context: the log-file queue is its only source
    assert (log_files.queue_url, log_files.batch_size, log_files.max_concurrency) == (flow.log_file_queue_url, 1, 2)
    assert flow.deliver.event_source().batching_window_s == 5
    assert flow.deliver.event_source().report_batch_item_failures
    table = boto3.client("dynamodb").describe_time_to_live(
        TableName=flow.s3_audit.environment[env_names.IDEMPOTENCY_TABLE_NAME]
    )
    assert table["TimeToLiveDescription"]["AttributeName"] == "expiration"
    notification = boto3.client("s3").get_bucket_notification_configuration(Bucket=flow.log_bucket)
    (queue_configuration,) = notification["QueueConfigurations"]
    rules = {rule["Name"].lower(): rule["Value"] for rule in queue_configuration["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "AWSLogs/", "suffix": ".json.gz"}
    # Each function's role holds its template's statements, resolved to the emulator's ARNs.
    actions = {
        action
        for document in flow.s3_audit.policies.values()
        for statement in document["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    assert {*DYNAMODB_ACTIONS, *QUEUE_CONSUMER_ACTIONS, "s3:GetObject", "secretsmanager:GetSecretValue"} <= actions
    assert set(flow.functions) == {S3_AUDIT, WEBHOOK, DELIVER}


def test_s3_audit_meters_log_files_in_several_chunks_and_inline_events_under_its_role(
    flow: FlowResources, reference_rs: ReferenceOgcRs
) -> None:
    rng = random.Random(1)
    first, records = write_log_file(flow, "first", rng)
    # CloudTrail repeats an event of the first file in the second: the ledger's BatchGetItem finds it delivered.
    second, _ = write_log_file(flow, "second", rng, repeat=records[0])

    pumped = pump_queue(flow.s3_audit)
    inline = flow.s3_audit.invoke(load_event("envelopes/eventbridge_api_call"))

    assert pumped.errors == []
    assert pumped.failed == 0
    assert inline["inline_records"] == 1
    expected = sorted(line(download, "aws_s3") for download in first + second)
    stored = reference_rs.stored_lines()
    assert sorted(text for text in stored if "S2B_MSIL2A_20251026T050649_N0511_R019_T43PGQ" not in text) == expected
    assert len(stored) == len(expected) + 1
    assert queue_depth(flow.log_file_queue_url) == 0


def test_a_failed_delivery_is_retried_and_reaches_the_dead_letter_queue_after_the_templates_receive_count(
    flow: FlowResources, reference_rs: ReferenceOgcRs
) -> None:
    write_log_file(flow, "refused", random.Random(2))
    reference_rs.faults.push("unauthorized", times=100)  # OGC RS refuses every token: a configuration failure

    pumped = pump_queue(flow.s3_audit, idle_rounds=1)

    # Five receives fail (claims released each time), then SQS's redrive policy moves the message to the DLQ.
    assert pumped.failed == 5
    assert all("AccessDenied" not in error for error in pumped.errors)
    assert queue_depth(flow.log_file_queue_url) == 0
    assert queue_depth(flow.log_file_dead_letter_url) == 1
    reference_rs.faults.clear()


def test_webhook_and_deliver_meter_minio_batches_under_their_roles(
    flow: FlowResources, reference_rs: ReferenceOgcRs
) -> None:
    rng = random.Random(3)
    bodies = [minio_batch(rng, size) for size in (1, 5, 7)]
    for body, _ in bodies:
        assert flow.webhook.invoke(webhook_event(body))["statusCode"] == 200
    # One message of the batch fails (OGC RS refuses two tokens in a row), the others are delivered.
    reference_rs.faults.push("unauthorized", times=2)

    pumped = pump_queue(flow.deliver)

    assert pumped.errors == []
    assert pumped.failed >= 1  # partial batch failure, retried on the next receive
    assert sorted(reference_rs.stored_lines()) == sorted(line(d, "minio") for _, downloads in bodies for d in downloads)
    assert queue_depth(flow.delivery_queue_url) == 0
    assert queue_depth(flow.delivery_dead_letter_url) == 0


@pytest.mark.parametrize("function", ["s3_audit", "deliver"])
def test_an_uncertain_request_is_recorded_held_back_and_resolved_under_the_roles(
    emulator: str,
    reference_rs: ReferenceOgcRs,
    flow_templates: Templates,
    function: str,
    output: Callable[[], str],
) -> None:
    """OGC RS commits a request and loses its answer: the ledger records it uncertain, the message is held back
    (ChangeMessageVisibility), and after the grace period (0 here) the next receive leases, resolves and re-sends
    it once: every call under the function's own template policy."""
    flow = create_flow_resources(
        boto3,
        prefix="iam",
        ogc_rs=reference_rs,
        webhook_token=TOKEN,
        local_settings={env_names.BATCH_MAX_LINES: "2", env_names.UNCERTAIN_GRACE_S: "0"},
        templates=flow_templates,
    )
    rng = random.Random(9)
    if function == "s3_audit":
        downloads, _ = write_log_file(flow, "uncertain", rng)
        backend, consumer, queue_url = "aws_s3", flow.s3_audit, flow.log_file_queue_url
    else:
        body, downloads = minio_batch(rng, 5)
        assert flow.webhook.invoke(webhook_event(body))["statusCode"] == 200
        backend, consumer, queue_url = "minio", flow.deliver, flow.delivery_queue_url
    reference_rs.faults.push("ok").push("store_then_drop")

    pumped = pump_queue(consumer)

    printed = output()
    assert "AccessDenied" not in printed
    assert "could not delay" not in printed
    assert pumped.failed >= 1  # the uncertain try
    stored = reference_rs.stored_lines()
    assert sorted(set(stored)) == sorted(line(download, backend) for download in downloads)
    assert len(stored) == len(downloads) + 2  # the lost answer's two lines, sent once more after the grace period
    assert "possible duplicates" in printed
    assert queue_depth(queue_url) == 0


@pytest.fixture(scope="module", params=["aws-managed-encryption", "kmsKey=create"])
def every_source_templates(request: pytest.FixtureRequest) -> Templates:
    """The S3 flow with every AWS source: the trail's log files, the asset bucket's access logs, EventBridge."""
    from testbed.stack_template import synthesized_templates

    key = {"kmsKey": "create"} if request.param == "kmsKey=create" else {}
    return synthesized_templates(awsSource="both", eventBridge=True, enableMinioRelay=False, **key)


def test_s3_audit_meters_access_logs_and_eventbridge_batches_under_its_role(
    emulator: str, reference_rs: ReferenceOgcRs, every_source_templates: Templates
) -> None:
    flow = start_flow(reference_rs, every_source_templates)
    rng = random.Random(7)
    in_trail, _ = write_log_file(flow, "trail", rng)
    # S3 writes the access-log object into the template's access-log bucket; its notification feeds the queue.
    only_in_access_log = [samples.random_download(rng, START) for _ in range(3)]
    lines = [
        samples.access_log_line(in_trail[0]),  # the same S3 request CloudTrail reported: metered once
        *(samples.access_log_line(download) for download in only_in_access_log),
        samples.access_log_line(samples.random_download(rng, START), Variant.FAILED_403),
        samples.access_log_line(samples.random_download(rng, START), Variant.HEADER_SIGNED),
    ]
    key = samples.access_log_key(START, "0A1B2C3D4E5F6A7B")
    boto3.client("s3").put_object(Bucket=flow.access_log_bucket, Key=key, Body="".join(lines).encode())
    # EventBridge: one event the log file holds too, new downloads, one event delivered twice.
    only_in_events = [samples.random_download(rng, START) for _ in range(4)]
    for download in [in_trail[1], *only_in_events, only_in_events[0]]:
        boto3.client("sqs").send_message(
            QueueUrl=flow.event_queue_url, MessageBody=json.dumps(samples.eventbridge_api_call(download))
        )

    events = pump_queue(flow.s3_audit, queue_url=flow.event_queue_url)
    log_files = pump_queue(flow.s3_audit, queue_url=flow.log_file_queue_url)

    assert (events.errors, events.failed, log_files.errors, log_files.failed) == ([], 0, [], 0)
    # One a batch: S3's s3:TestEvent of each bucket's notification (skipped), the log file, the access-log object.
    assert log_files.invocations == 4
    expected = sorted(line(d, "aws_s3") for d in [*in_trail, *only_in_access_log, *only_in_events])
    assert sorted(reference_rs.stored_lines()) == expected
    for url in (flow.event_queue_url, flow.log_file_queue_url, *flow.dead_letter_urls.values()):
        assert queue_depth(url) == 0


# --- One action less: the run fails with AccessDenied ---------------------------------------------------------------


def without_action(templates: Templates, handler: str, action: str) -> dict[str, Any]:
    """The templates with ``action`` taken out of the policy statements of ``handler``'s role."""
    changed = copy.deepcopy(dict(templates))
    for template in changed.values():
        resources = template["Resources"]
        roles = [
            body["Properties"]["Role"]["Fn::GetAtt"][0]
            for body in resources.values()
            if body["Type"] == "AWS::Lambda::Function" and body["Properties"].get("Handler") == handler
        ]
        for body in resources.values():
            if body["Type"] != "AWS::IAM::Policy" or not any(
                {"Ref": role} in body["Properties"]["Roles"] for role in roles
            ):
                continue
            statements = body["Properties"]["PolicyDocument"]["Statement"]
            for statement in statements:
                listed = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
                if action in listed:
                    statement["Action"] = [name for name in listed if name != action]
                    if not statement["Action"]:  # IAM refuses a statement without actions
                        statements.remove(statement)
                    return changed
    raise AssertionError(f"{action} is not in the policy of {handler}: the test would prove nothing")


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """What the functions printed and logged so far (their JSON logs, the errors they logged)."""
    return lambda: capsys.readouterr().out + caplog.text


@pytest.fixture
def flow_without(
    emulator: str, reference_rs: ReferenceOgcRs, flow_templates: Templates
) -> Callable[..., FlowResources]:
    """Starts the flow with one action taken out of one function's template policy: ``(function, action)``, and
    optionally the ``templates`` to take it from (default: cdk.json's)."""

    def start(function: str, action: str, templates: Templates = flow_templates) -> FlowResources:
        return start_flow(reference_rs, without_action(templates, function, action))

    return start


def assert_access_denied(printed: str, action: str) -> None:
    """The failure the function printed or raised is IAM refusing ``action`` (service prefix left out)."""
    assert "AccessDenied" in printed
    assert action.partition(":")[2] in printed


def test_s3_audit_without_batch_get_item_fails_with_access_denied(
    flow_without: FlowWithout, reference_rs: ReferenceOgcRs, output: Callable[[], str]
) -> None:
    flow = flow_without(S3_AUDIT, "dynamodb:BatchGetItem")
    write_log_file(flow, "denied", random.Random(4))

    pumped = pump_queue(flow.s3_audit)

    # Every try fails (what a real account did to every log file with a download, before the grant was fixed).
    assert pumped.failed == 5
    printed = "".join(pumped.errors) + output()
    assert_access_denied(printed, "dynamodb:BatchGetItem")
    # Delivered as read: a retry passes the windows an earlier try left claimed and sends a last one-line window
    # (no BatchGetItem before it), so a line can be stored; never one twice.
    stored = reference_rs.stored_lines()
    assert len(stored) <= 1
    assert len(set(stored)) == len(stored)
    assert queue_depth(flow.log_file_dead_letter_url) == 1


def test_webhook_without_send_message_fails_with_access_denied(
    flow_without: FlowWithout, reference_rs: ReferenceOgcRs, output: Callable[[], str]
) -> None:
    flow = flow_without(WEBHOOK, "sqs:SendMessage")
    body, _ = minio_batch(random.Random(5), 3)

    response = flow.webhook.invoke(webhook_event(body))

    assert response["statusCode"] == 503  # MinIO keeps the body and sends it again
    printed = output()
    assert_access_denied(printed, "sqs:SendMessage")
    assert queue_depth(flow.delivery_queue_url) == 0


def failed_delivery(flow: FlowResources, rng: random.Random, output: Callable[[], str]) -> str:
    """A MinIO batch the webhook queues, on which deliver's one invocation fails whole: what it raised and printed."""
    body, _ = minio_batch(rng, 3)
    assert flow.webhook.invoke(webhook_event(body))["statusCode"] == 200

    pumped = pump_queue(flow.deliver, max_rounds=1)

    assert (pumped.invocations, pumped.succeeded) == (1, 0)
    assert pumped.failed >= 1
    return "".join(pumped.errors) + output()


def test_deliver_without_put_item_fails_with_access_denied(
    flow_without: FlowWithout, reference_rs: ReferenceOgcRs, output: Callable[[], str]
) -> None:
    flow = flow_without(DELIVER, "dynamodb:PutItem")

    printed = failed_delivery(flow, random.Random(6), output)

    assert_access_denied(printed, "dynamodb:PutItem")
    assert reference_rs.row_count() == 0


# --- With the app's key (kmsKey=create): one kms action less, and the service cannot use the key for the role ------


@pytest.fixture
def key_flow_without(flow_without: Callable[..., FlowResources], key_templates: Templates) -> FlowWithout:
    """``flow_without`` over the templates with the app's key (``kmsKey=create``)."""
    return lambda function, action: flow_without(function, action, key_templates)


def assert_kms_denied(printed: str, kms_action: str, call: str) -> None:
    """The failure is KMS refusing the role ``kms_action`` on the app's key, which the service needed for ``call``."""
    assert f"is not authorized to perform: {kms_action} on resource: arn:aws:kms:" in printed
    assert f"(needed by {call})" in printed


def test_with_the_key_every_store_is_under_it_and_kms_calls_are_checked_against_its_arn(
    emulator: str, reference_rs: ReferenceOgcRs, key_templates: Templates
) -> None:
    flow = start_flow(reference_rs, key_templates)
    sqs = boto3.client("sqs")
    key_arn = sqs.get_queue_attributes(QueueUrl=flow.log_file_queue_url, AttributeNames=["KmsMasterKeyId"])[
        "Attributes"
    ]["KmsMasterKeyId"]
    assert boto3.client("kms").describe_key(KeyId=key_arn)["KeyMetadata"]["KeyManager"] == "CUSTOMER"
    for url in flow.queue_urls.values():
        assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["KmsMasterKeyId"])["Attributes"] == {
            "KmsMasterKeyId": key_arn
        }
    table = boto3.client("dynamodb").describe_table(
        TableName=flow.deliver.environment[env_names.IDEMPOTENCY_TABLE_NAME]
    )
    assert table["Table"]["SSEDescription"]["KMSMasterKeyArn"] == key_arn
    for arn in flow.secret_arns.values():
        assert boto3.client("secretsmanager").describe_secret(SecretId=arn)["KmsKeyId"] == key_arn
    flow.put_log_file(boto3.client("s3"), "AWSLogs/written-as-cloudtrail.json.gz", b"{}")
    written = boto3.client("s3").head_object(Bucket=flow.log_bucket, Key="AWSLogs/written-as-cloudtrail.json.gz")
    assert (written["ServerSideEncryption"], written["SSEKMSKeyId"]) == ("aws:kms", key_arn)
    # moto checks kms calls against the key's ARN, which the roles' statements name: granted and not granted.
    kms = flow.s3_audit.session().client("kms")
    assert kms.encrypt(KeyId=key_arn, Plaintext=b"granted")["KeyId"] == key_arn
    with pytest.raises(ClientError, match="kms:DescribeKey"):
        kms.describe_key(KeyId=key_arn)


def test_s3_audit_without_kms_decrypt_can_neither_poll_its_queue_nor_read_a_log_file(
    key_flow_without: FlowWithout, reference_rs: ReferenceOgcRs, output: Callable[[], str]
) -> None:
    flow = key_flow_without(S3_AUDIT, "kms:Decrypt")
    write_log_file(flow, "undecryptable", random.Random(8))

    # Lambda's poller receives with the function's role: SQS cannot decrypt the queue's messages for it.
    with pytest.raises(ClientError) as polling:
        pump_queue(flow.s3_audit)
    # The notifications handed to the function anyway: S3 cannot decrypt the log file for it.
    source = flow.s3_audit.event_source()
    messages = boto3.client("sqs").receive_message(QueueUrl=source.queue_url, MaxNumberOfMessages=10)["Messages"]
    flow.s3_audit.invoke(sqs_event(messages, source.queue_arn))

    assert_kms_denied(str(polling.value), "kms:Decrypt", "sqs:ReceiveMessage")
    assert_kms_denied(output(), "kms:Decrypt", "s3:GetObject")
    assert reference_rs.row_count() == 0


def test_webhook_without_kms_generate_data_key_cannot_send_to_the_encrypted_delivery_queue(
    key_flow_without: FlowWithout, output: Callable[[], str]
) -> None:
    flow = key_flow_without(WEBHOOK, "kms:GenerateDataKey")
    body, _ = minio_batch(random.Random(9), 3)

    response = flow.webhook.invoke(webhook_event(body))

    assert response["statusCode"] == 503  # MinIO keeps the body and sends it again
    assert_kms_denied(output(), "kms:GenerateDataKey", "sqs:SendMessage")
    assert queue_depth(flow.delivery_queue_url) == 0


def test_deliver_without_kms_encrypt_cannot_write_its_ledger_claims(
    key_flow_without: FlowWithout, reference_rs: ReferenceOgcRs, output: Callable[[], str]
) -> None:
    flow = key_flow_without(DELIVER, "kms:Encrypt")

    printed = failed_delivery(flow, random.Random(10), output)

    assert_kms_denied(printed, "kms:Encrypt", "dynamodb:PutItem")
    assert reference_rs.row_count() == 0
