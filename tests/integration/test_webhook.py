"""The webhook: authentication, body forms, counts, status codes; the Lambda handler against a moto SQS queue."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from metering.line import MeteredDownload
from metering.settings import SettingsError
from minio_relay import handler
from minio_relay.delivery_queue import QueueUnavailable, decode_message, enqueue, pack_messages
from minio_relay.webhook import (
    MAX_LOGGED_ENTRIES,
    DownstreamUnavailable,
    Webhook,
    WebhookRequest,
    WebhookSettings,
    authenticate,
)
from testbed.local_aws import lambda_context
from tests.events import event_bytes
from tests.helpers import compact_entry

TOKEN = "s3cr3t-minio-audit-token"
USER = "6f1d2c8e-3b4a-4f5e-9a7b-1c2d3e4f5a6b"
COLLECTION = "0b8e6c1a-9d2f-4e3b-8a7c-5d6e7f8a9b0c"
ITEM = "S2A_MSIL2A_20251020T050701_N0511_R019_T43PGQ"
CONTEXT = lambda_context("minio-webhook", memory_mb=256)


class ListSink:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.calls = 0

    def __call__(self, downloads: Sequence[MeteredDownload]) -> None:
        self.calls += 1
        self.lines.extend(download.to_line() for download in downloads)


def post(webhook: Webhook, body: bytes, authorization: str | None = TOKEN, method: str = "POST") -> Any:
    headers = {"x-minio-version": "RELEASE.2025-09-07T16-13-09Z", "user-agent": "MinIO (linux; amd64)"}
    if authorization is not None:
        headers["authorization"] = authorization
    return webhook.handle(WebhookRequest(method, "/auditlogs/processor", headers, body))


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def webhook(sink: ListSink) -> Webhook:
    return Webhook(token=lambda: TOKEN, sink=sink)


# ---- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "presented", "accepted"),
    [
        (TOKEN, TOKEN, True),
        (TOKEN, f"Bearer {TOKEN}", True),
        (TOKEN, f"bearer  {TOKEN}", True),
        (f"Bearer {TOKEN}", f"Bearer {TOKEN}", True),
        (f"Bearer {TOKEN}", TOKEN, True),
        (TOKEN, None, False),
        (TOKEN, "", False),
        (TOKEN, "Bearer ", False),
        (TOKEN, TOKEN + "x", False),
        (TOKEN, f"Basic {TOKEN}", False),
        (TOKEN, "Bearer wrong", False),
        ("", "", False),
        (TOKEN, "tökén", False),
    ],
)
def test_authenticate(configured: str, presented: str | None, accepted: bool) -> None:
    assert authenticate(presented, configured) is accepted


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token"])
def test_wrong_or_missing_token_is_401_nothing_passed_on_and_never_logged(
    webhook: Webhook, sink: ListSink, authorization: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = post(webhook, compact_entry("get_object_presigned"), authorization)
    assert response.status == 401
    assert sink.calls == 0
    assert webhook.auth_failures == 1
    assert "authentication failed" in caplog.text
    assert "not-the-token" not in caplog.text
    assert TOKEN not in caplog.text


def test_token_unavailable_is_503(sink: ListSink) -> None:
    def broken() -> str:
        raise ConnectionError("secrets manager unreachable")

    assert post(Webhook(token=broken, sink=sink), b"{}").status == 503


# ---- bodies and counts ------------------------------------------------------------------------


def test_single_entry_is_metered(webhook: Webhook, sink: ListSink) -> None:
    response = post(webhook, compact_entry("get_object_presigned"))
    assert response.status == 200
    assert json.loads(response.body()) == {"entries": 1, "metered": 1, "filtered": 0, "quarantined": 0}
    assert sink.lines == [f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|1048576|minio"]


def test_put_is_accepted_like_post(webhook: Webhook, sink: ListSink) -> None:
    assert post(webhook, compact_entry("get_object_presigned"), method="PUT").status == 200
    assert len(sink.lines) == 1


def test_ndjson_batch_counts_and_duplicate_metered_once(webhook: Webhook, sink: ListSink) -> None:
    response = post(webhook, event_bytes("minio/batch.ndjson"))
    assert response.status == 200
    # 7 entries: 3 downloads, HeadObject, 404, the first download again (MinIO re-send), an ILM event
    assert response.document == {"entries": 7, "metered": 3, "filtered": 4, "quarantined": 0}
    assert len(sink.lines) == len(set(sink.lines)) == 3


def test_json_array(webhook: Webhook, sink: ListSink) -> None:
    assert post(webhook, event_bytes("minio/batch_array.json")).document == {
        "entries": 4,
        "metered": 3,
        "filtered": 1,
        "quarantined": 0,
    }


@pytest.mark.parametrize(
    "fixture",
    [
        "startup_probe.json",
        "head_object.json",
        "put_object.json",
        "get_object_not_modified_304.json",
        "get_object_signature_mismatch_403.json",
        "get_object_not_found_404.json",
        "get_object_not_presigned.json",
        "ilm_expiry_internal.json",
    ],
)
def test_filtered_only_bodies_get_200_and_pass_nothing_on(webhook: Webhook, sink: ListSink, fixture: str) -> None:
    response = post(webhook, compact_entry(fixture))
    assert response.status == 200
    assert response.document == {"entries": 1, "metered": 0, "filtered": 1, "quarantined": 0}
    assert sink.calls == 0


def test_some_malformed_lines_good_ones_kept_bad_ones_logged(
    webhook: Webhook, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    body = event_bytes("minio/batch_with_bad_line.ndjson") + compact_entry("get_object_wrong_types")
    response = post(webhook, body)
    assert response.status == 200
    assert response.document == {"entries": 4, "metered": 2, "filtered": 0, "quarantined": 2}
    assert len(sink.lines) == 2
    quarantined = [record.getMessage() for record in caplog.records if record.getMessage().startswith("quarantined")]
    assert len(quarantined) == 2
    assert "bad_json: body line 2" in quarantined[0]
    assert "malformed_entry" in quarantined[1]
    # excerpts only, and never the headers an entry carries
    assert all(len(message) < 400 for message in quarantined)
    assert "requestHeader" not in caplog.text


def test_a_body_of_many_bad_entries_logs_a_sample_and_one_count_by_reason(
    webhook: Webhook, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    body = compact_entry("get_object_presigned") + b"x\n" * 500 + b"{\n" * 200 + b"7\n" * 300

    response = post(webhook, body)

    assert response.status == 200
    assert response.document == {"entries": 1001, "metered": 1, "filtered": 0, "quarantined": 1000}
    assert len(sink.lines) == 1
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == MAX_LOGGED_ENTRIES + 1
    assert all(message.startswith("quarantined bad_json: body line") for message in warnings[:MAX_LOGGED_ENTRIES])
    assert warnings[-1] == (
        "quarantined 990 more entries of this body, not logged one by one: {'bad_json': 690, 'malformed_entry': 300}"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"this is not json", "not valid JSON"),
        (b"line one\nline two\n", "no line of the body is a JSON object"),
        (b"[]", "empty JSON array"),
    ],
)
def test_no_parseable_entry_is_400_with_a_specific_message(
    webhook: Webhook, sink: ListSink, body: bytes, message: str
) -> None:
    response = post(webhook, body)
    assert response.status == 400
    assert message in str(response.document["error"])
    assert sink.calls == 0


def test_body_over_the_limit_is_413(sink: ListSink) -> None:
    webhook = Webhook(token=lambda: TOKEN, sink=sink, max_body_bytes=1000)
    assert post(webhook, compact_entry("get_object_presigned")).status == 413
    declared = WebhookRequest("POST", "/auditlogs/processor", {"authorization": TOKEN}, b"", declared_length=5000)
    assert webhook.handle(declared).status == 413
    assert sink.calls == 0


def test_downstream_unavailable_is_503(webhook: Webhook) -> None:
    def down(downloads: Sequence[MeteredDownload]) -> None:
        raise DownstreamUnavailable("queue gone")

    webhook.sink = down
    response = post(webhook, compact_entry("get_object_presigned"))
    assert response.status == 503
    # a filtered-only body needs no downstream at all
    assert post(webhook, compact_entry("head_object")).status == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "", 200),
        ("GET", "/auditlogs/processor", 405),
        ("DELETE", "/", 405),
        ("GET", "/x", 404),
    ],
)
def test_routes(webhook: Webhook, method: str, path: str, status: int) -> None:
    response = webhook.handle(WebhookRequest(method, path, {}, b""))
    assert response.status == status
    if status == 200:
        assert json.loads(response.body()) == {"status": "ok"}


# ---- settings ---------------------------------------------------------------------------------


def test_settings_name_the_missing_variable() -> None:
    with pytest.raises(SettingsError, match="WEBHOOK_TOKEN_SECRET_ARN"):
        WebhookSettings.from_env({})
    with pytest.raises(SettingsError, match="MAX_BODY_BYTES"):
        WebhookSettings.from_env({"WEBHOOK_TOKEN": "t", "MAX_BODY_BYTES": "lots"})
    settings = WebhookSettings.from_env({"WEBHOOK_TOKEN": "super-secret-value"})
    assert settings.max_body_bytes == 5 * 1024 * 1024
    assert "super-secret-value" not in repr(settings)


# ---- the SQS side ----------------------------------------------------------------------------


@pytest.fixture
def aws_region() -> str:
    """The queue and the token secret are in eu-west-1, as in the deployment this suite models."""
    return "eu-west-1"


@pytest.fixture
def queue_url(relay_aws: None, monkeypatch: pytest.MonkeyPatch) -> str:
    url: str = boto3.client("sqs").create_queue(QueueName="minio-delivery")["QueueUrl"]
    monkeypatch.setenv("DELIVERY_QUEUE_URL", url)
    monkeypatch.setenv("WEBHOOK_TOKEN", TOKEN)
    monkeypatch.delenv("WEBHOOK_TOKEN_SECRET_ARN", raising=False)
    return url


def api_event(
    body: bytes,
    *,
    method: str = "POST",
    resource: str = "/auditlogs/processor",
    headers: dict[str, str] | None = None,
    base64_encoded: bool = False,
) -> dict[str, Any]:
    return {
        "resource": resource,
        "path": resource,
        "httpMethod": method,
        "headers": headers if headers is not None else {"Authorization": f"Bearer {TOKEN}"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "requestContext": {"stage": "prod", "httpMethod": method, "resourcePath": resource},
        "body": base64.b64encode(body).decode() if base64_encoded else body.decode(),
        "isBase64Encoded": base64_encoded,
    }


def queued_lines(url: str) -> list[str]:
    sqs = boto3.client("sqs")
    lines: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return lines
        for message in messages:
            lines.extend(queued.line for queued in decode_message(message["Body"]).lines)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_handler_enqueues_metered_lines(queue_url: str) -> None:
    response = handler.webhook(api_event(event_bytes("minio/batch.ndjson")), CONTEXT)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["metered"] == 3
    assert len(queued_lines(queue_url)) == 3


def test_handler_headers_any_case_and_base64_body(queue_url: str) -> None:
    event = api_event(
        compact_entry("get_object_presigned"),
        headers={"AUTHORIZATION": TOKEN, "X-Minio-Version": "RELEASE.2021-06-17T00-10-46Z"},
        base64_encoded=True,
    )
    assert handler.webhook(event, CONTEXT)["statusCode"] == 200
    assert len(queued_lines(queue_url)) == 1


def test_handler_wrong_token_enqueues_nothing(queue_url: str) -> None:
    event = api_event(compact_entry("get_object_presigned"), headers={"authorization": "Bearer nope"})
    assert handler.webhook(event, CONTEXT)["statusCode"] == 401
    assert queued_lines(queue_url) == []


def test_handler_health(queue_url: str) -> None:
    response = handler.webhook(api_event(b"", method="GET", resource="/", headers={}), CONTEXT)
    assert (response["statusCode"], json.loads(response["body"])) == (200, {"status": "ok"})


def test_handler_payload_limit(queue_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "4096")
    handler._webhook.cache_clear()
    assert handler.webhook(api_event(event_bytes("minio/batch.ndjson")), CONTEXT)["statusCode"] == 413
    assert handler.webhook(api_event(compact_entry("get_object_presigned")), CONTEXT)["statusCode"] == 200


def test_handler_queue_deleted_is_503(queue_url: str) -> None:
    boto3.client("sqs").delete_queue(QueueUrl=queue_url)
    response = handler.webhook(api_event(compact_entry("get_object_presigned")), CONTEXT)
    assert response["statusCode"] == 503


def test_handler_reads_token_from_secrets_manager(queue_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    arn = boto3.client("secretsmanager").create_secret(Name="minio-webhook-token", SecretString="rotating-token-0001")[
        "ARN"
    ]
    monkeypatch.setenv("WEBHOOK_TOKEN_SECRET_ARN", arn)
    monkeypatch.delenv("WEBHOOK_TOKEN")
    handler._webhook.cache_clear()
    ok = api_event(compact_entry("get_object_presigned"), headers={"Authorization": "rotating-token-0001"})
    assert handler.webhook(ok, CONTEXT)["statusCode"] == 200
    assert handler.webhook(api_event(b"{}"), CONTEXT)["statusCode"] == 401


# ---- enqueue details --------------------------------------------------------------------------


def downloads(count: int) -> list[MeteredDownload]:
    from metering.line import Backend

    return [
        MeteredDownload(USER, COLLECTION, f"item-{i}", "2025-10-27T10:12:30Z", i, Backend.MINIO, f"dep:req-{i}")
        for i in range(count)
    ]


def test_messages_hold_at_most_batch_max_lines_and_carry_keys() -> None:
    messages = pack_messages(downloads(25), max_lines=10)
    assert [len(decode_message(message).lines) for message in messages] == [10, 10, 5]
    first = decode_message(messages[0]).lines[0]
    assert (first.key, first.line) == ("dep:req-0", f"{USER}|{COLLECTION}|item-0|2025-10-27T10:12:30Z|0|minio")


def test_send_message_batch_groups_of_ten(queue_url: str) -> None:
    sent = enqueue(downloads(25), sqs=boto3.client("sqs"), queue_url=queue_url, max_lines=1)
    assert sent == 25
    assert sorted(queued_lines(queue_url)) == sorted(d.to_line() for d in downloads(25))


def test_fifo_queue_messages_carry_deduplication_ids(relay_aws: None) -> None:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="minio-delivery.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    enqueue(downloads(3), sqs=sqs, queue_url=url)
    enqueue(downloads(3), sqs=sqs, queue_url=url)  # MinIO re-sent the same body
    assert len(queued_lines(url)) == 3


class StubSqs:
    """An SQS client whose answers are scripted: an exception, or a response with Failed entries."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[list[dict[str, str]]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> Any:
        self.calls.append(Entries)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue"}}, "SendMessageBatch"),
        EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com"),
    ],
)
def test_queue_errors_raise_queue_unavailable(error: Exception) -> None:
    with pytest.raises(QueueUnavailable):
        enqueue(downloads(1), sqs=StubSqs(error), queue_url="https://sqs/q")


def test_failed_entries_are_retried_once_then_refused() -> None:
    failed = {"Failed": [{"Id": "0", "SenderFault": False, "Code": "InternalError"}], "Successful": []}
    stub = StubSqs(failed, {"Successful": [{"Id": "0"}]})
    assert enqueue(downloads(1), sqs=stub, queue_url="https://sqs/q") == 1
    assert len(stub.calls) == 2
    with pytest.raises(QueueUnavailable, match="InternalError"):
        enqueue(downloads(1), sqs=StubSqs(failed, failed), queue_url="https://sqs/q")
    sender = {"Failed": [{"Id": "0", "SenderFault": True, "Code": "InvalidMessageContents"}]}
    stub = StubSqs(sender)
    with pytest.raises(QueueUnavailable):
        enqueue(downloads(1), sqs=stub, queue_url="https://sqs/q")
    assert len(stub.calls) == 1


def test_handler_answers_503_when_sqs_fails(queue_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = StubSqs(ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessageBatch"))
    monkeypatch.setattr(handler, "sqs_client", lambda: stub)
    handler._webhook.cache_clear()
    response = handler.webhook(api_event(compact_entry("get_object_presigned")), CONTEXT)
    assert response["statusCode"] == 503
    assert json.loads(response["body"]) == {"error": "metering backend unavailable; retry later"}


def test_handler_publishes_outcomes_and_auth_failures(queue_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    handler.webhook(api_event(event_bytes("minio/batch.ndjson")), CONTEXT)
    handler.webhook(api_event(event_bytes("minio/batch.ndjson"), headers={"Authorization": "Bearer nope"}), CONTEXT)
    documents = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{") and '"_aws"' in x]
    totals = [d for d in documents if "reason" not in d]
    assert [(d.get("Metered"), d.get("WebhookAuthFailures")) for d in totals] == [([3.0], None), (None, [1.0])]
    assert all((d["flow"], d["service"]) == ("minio", "minio_relay") for d in documents)


# ---- weak token configuration -------------------------------------------------------------------


@pytest.mark.parametrize("weak", ["Bearer ", "bearer", "Bearer  short-token", "fifteen-chars-x"])
def test_weak_local_token_is_refused_at_start_up(weak: str) -> None:
    with pytest.raises(SettingsError, match="WEBHOOK_TOKEN must hold at least 16 characters") as raised:
        WebhookSettings.from_env({"WEBHOOK_TOKEN": weak})
    assert "short-token" not in str(raised.value)  # the token itself is never echoed


def test_sixteen_characters_are_enough() -> None:
    assert WebhookSettings.from_env({"WEBHOOK_TOKEN": "Bearer sixteen-chars-xy"}).local_token is not None


@pytest.mark.parametrize("weak", ["Bearer ", "Bearer short"])
def test_weak_secret_refuses_every_request_and_is_alarmed(
    queue_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    weak: str,
) -> None:
    arn = boto3.client("secretsmanager").create_secret(Name="weak-webhook-token", SecretString=weak)["ARN"]
    monkeypatch.setenv("WEBHOOK_TOKEN_SECRET_ARN", arn)
    monkeypatch.delenv("WEBHOOK_TOKEN")
    handler._webhook.cache_clear()
    capsys.readouterr()

    # "Authorization: Bearer" used to match a token that is empty after "Bearer ".
    for presented in (weak, weak.strip(), "Bearer"):
        event = api_event(compact_entry("get_object_presigned"), headers={"Authorization": presented})
        assert handler.webhook(event, CONTEXT)["statusCode"] == 503

    out = capsys.readouterr().out
    assert "configuration error: the webhook token secret must hold at least 16 characters" in caplog.text
    failures = [json.loads(line) for line in out.splitlines() if '"kind"' in line and "DeliveryFailures" in line]
    assert [document["kind"] for document in failures] == ["configuration"] * 3
    assert boto3.client("sqs").receive_message(QueueUrl=queue_url).get("Messages") is None


def test_weak_local_token_in_the_lambda_refuses_every_request_and_is_alarmed(
    queue_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WEBHOOK_TOKEN", "Bearer ")
    handler._webhook.cache_clear()
    capsys.readouterr()

    response = handler.webhook(
        api_event(compact_entry("get_object_presigned"), headers={"Authorization": "Bearer"}), CONTEXT
    )

    assert response["statusCode"] == 503
    out = capsys.readouterr().out
    assert "WEBHOOK_TOKEN must hold at least 16 characters" in caplog.text
    assert any('"kind": "configuration"' in line or '"kind":"configuration"' in line for line in out.splitlines())
