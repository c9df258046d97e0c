"""The ``eventBridge`` context: rule, event queue, policies, the batched mapping and monitoring, with cdk-nag on
(each synthesis runs AwsSolutions: an unacknowledged finding fails the fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.constants import S3_AUDIT_STACK_NAME
from metering import metric_names as names
from metering.metrics import flow_metrics, record_line_ages, record_lines_by_path
from tests.infra.synth import (
    REPO_ROOT,
    SynthesizedApp,
    as_list,
    function_statements,
    get_att_arn,
    logical_id,
    only_resource,
    resources_of_type,
    synthesize,
)
from tests.infra.test_monitoring import (
    alarm,
    dashboard,
    expected,
    graphed,
    metric_of,
    published_metrics,
    queue_name,
    s3_alarms,
)
from tests.infra.test_s3_audit_stack import AUDIT_FUNCTION

Template = Mapping[str, Any]
EXISTING = ["stac-assets-eu", "stac-thumbnails-eu"]
CONSUME_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueUrl",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
)


@pytest.fixture(scope="module")
def apps(module_tmp: Path) -> dict[str, SynthesizedApp]:
    return {
        "off": synthesize(module_tmp / "off", enableMinioRelay=False),
        "on": synthesize(module_tmp / "on", enableMinioRelay=False, eventBridge=True),
        "existing": synthesize(
            module_tmp / "existing", enableMinioRelay=False, eventBridge="true", awsSource="both", assetBuckets=EXISTING
        ),
        "kms": synthesize(module_tmp / "kms", enableMinioRelay=False, eventBridge=True, kmsKey="create"),
    }


def template(apps: dict[str, SynthesizedApp], name: str) -> Template:
    return apps[name].templates[S3_AUDIT_STACK_NAME]


@pytest.fixture(scope="module")
def on(apps: dict[str, SynthesizedApp]) -> Template:
    return template(apps, "on")


def event_queue(tpl: Template) -> str:
    (name,) = [
        name
        for name in resources_of_type(tpl, "AWS::SQS::Queue")
        if name.startswith("DownloadEventsQueue") and "DeadLetter" not in name
    ]
    return name


def event_dead_letters(tpl: Template) -> str:
    return logical_id(tpl, "AWS::SQS::Queue", "DownloadEventsQueueDeadLetterQueue")


def rule(tpl: Template) -> tuple[str, Mapping[str, Any]]:
    ((name, body),) = resources_of_type(tpl, "AWS::Events::Rule").items()
    return name, body["Properties"]


def queue_policy(tpl: Template, queue: str) -> list[Mapping[str, Any]]:
    (statements,) = [
        body["Properties"]["PolicyDocument"]["Statement"]
        for body in resources_of_type(tpl, "AWS::SQS::QueuePolicy").values()
        if body["Properties"]["Queues"] == [{"Ref": queue}]
    ]
    return list(statements)


def test_nothing_of_the_event_path_without_the_context(apps: dict[str, SynthesizedApp]) -> None:
    off = template(apps, "off")
    assert resources_of_type(off, "AWS::Events::Rule") == {}
    assert len(resources_of_type(off, "AWS::SQS::Queue")) == 2  # the log-file queue and its DLQ
    assert len(resources_of_type(off, "AWS::Lambda::EventSourceMapping")) == 1


def test_rule_on_the_default_bus_matches_successful_presigned_getobject_events_of_the_created_asset_bucket(
    on: Template,
) -> None:
    _, properties = rule(on)
    assert "EventBusName" not in properties  # the default bus: where CloudTrail sends S3 data events
    assert properties["State"] == "ENABLED"
    assert properties["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {
            "eventSource": ["s3.amazonaws.com"],
            "eventName": ["GetObject"],
            # A failed or header-signed GetObject is never metered: no queue message, no invocation for it.
            "errorCode": [{"exists": False}],
            "additionalEventData": {"AuthenticationMethod": ["QueryString"]},
            "requestParameters": {"bucketName": [{"Ref": logical_id(on, "AWS::S3::Bucket", "AssetBucket")}]},
        },
    }


def test_rule_matches_every_existing_asset_bucket_by_name(apps: dict[str, SynthesizedApp]) -> None:
    _, properties = rule(template(apps, "existing"))
    assert properties["EventPattern"]["detail"]["requestParameters"] == {"bucketName": EXISTING}


def test_rule_targets_the_event_queue_and_parks_undeliverable_events_in_its_dead_letter_queue(on: Template) -> None:
    _, properties = rule(on)
    (target,) = properties["Targets"]
    assert target["Arn"] == get_att_arn(event_queue(on))
    assert target["DeadLetterConfig"] == {"Arn": get_att_arn(event_dead_letters(on))}


@pytest.mark.parametrize("queue", [event_queue, event_dead_letters], ids=["queue", "dead-letter-queue"])
@pytest.mark.parametrize("configuration", ["on", "existing", "kms"])
def test_only_this_rule_may_send_to_the_event_queues_and_only_over_tls(
    apps: dict[str, SynthesizedApp], configuration: str, queue: Any
) -> None:
    """The same rule-bound statement with and without the app's key (CDK's own target drops the rule ARN for an
    encrypted queue); tests/infra/test_writers.py evaluates the denies beside it."""
    tpl = template(apps, configuration)
    rule_name, _ = rule(tpl)
    queue_id = queue(tpl)
    deny_plain_http, *others = queue_policy(tpl, queue_id)
    assert deny_plain_http["Effect"] == "Deny"
    assert deny_plain_http["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    (allow,) = [statement for statement in others if statement["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Resource"] == get_att_arn(queue_id)
    assert allow["Condition"] == {
        "ArnEquals": {"aws:SourceArn": get_att_arn(rule_name)},
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }


def test_event_queue_is_encrypted_and_redrives_to_its_dead_letter_queue(on: Template) -> None:
    queue = on["Resources"][event_queue(on)]["Properties"]
    dead_letters = on["Resources"][event_dead_letters(on)]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert dead_letters["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": get_att_arn(event_dead_letters(on)), "maxReceiveCount": 5}
    # Lambda's guidance: visibility at least 6x the function timeout (300 s).
    assert queue["VisibilityTimeout"] >= 6 * 300


def test_s3_audit_consumes_events_in_batches_with_partial_failures(on: Template) -> None:
    (mapping,) = [
        body["Properties"]
        for body in resources_of_type(on, "AWS::Lambda::EventSourceMapping").values()
        if body["Properties"]["EventSourceArn"] == get_att_arn(event_queue(on))
    ]
    assert mapping["FunctionName"] == {"Ref": logical_id(on, "AWS::Lambda::Function", "S3AuditFunction")}
    assert mapping["BatchSize"] > 1
    assert 0 < mapping["MaximumBatchingWindowInSeconds"] <= 5
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}


def test_s3_audit_role_gains_exactly_the_consume_rights_on_the_event_queue(apps: dict[str, SynthesizedApp]) -> None:
    def grants(tpl: Template) -> set[tuple[str, str]]:
        """Every (action, resource) pair the function's policies allow (CDK may merge statements)."""
        return {
            (action, json.dumps(resource))
            for statement in function_statements(tpl, AUDIT_FUNCTION)
            for action in as_list(statement["Action"])
            for resource in as_list(statement["Resource"])
        }

    on, off = template(apps, "on"), template(apps, "off")
    queue = json.dumps(get_att_arn(event_queue(on)))
    assert grants(on) - grants(off) == {(action, queue) for action in CONSUME_ACTIONS}
    assert grants(off) <= grants(on)


def test_outputs_name_the_event_queues(on: Template) -> None:
    outputs = on["Outputs"]
    assert outputs["EventQueueUrl"]["Value"] == {"Ref": event_queue(on)}
    assert outputs["EventDeadLetterQueueUrl"]["Value"] == {"Ref": event_dead_letters(on)}


def test_event_queue_alarms_on_dead_letters_and_on_the_age_of_its_oldest_message(on: Template) -> None:
    assert metric_of(alarm(on, "DownloadEventsQueueDeadLetterAlarm")) == expected(
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        queue_name(on, "DownloadEventsQueueDeadLetterQueue"),
        threshold=1,
        statistic="Maximum",
    )
    assert metric_of(alarm(on, "MonitoringEventsQueueAge")) == expected(
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        [{"Name": "QueueName", "Value": {"Fn::GetAtt": [event_queue(on), "QueueName"]}}],
        threshold=600,
        statistic="Maximum",
    )
    # Only these two are new; every alarm of the log-file path stays.
    assert len(resources_of_type(on, "AWS::CloudWatch::Alarm")) == len(s3_alarms(on)) + 2


def path_lines(tpl: Template) -> list[list[Any]]:
    _, widgets = dashboard(tpl)
    return [line for line in graphed(widgets) if isinstance(line[0], str) and line[0] == names.DEFAULT_NAMESPACE]


def test_dashboard_compares_lines_by_event_with_lines_only_a_log_file_brought(
    apps: dict[str, SynthesizedApp], on: Template
) -> None:
    by_path = {
        (line[1], line[line.index(names.PATH) + 1])
        for line in path_lines(on)
        if names.PATH in line and line.index(names.PATH) % 2 == 0
    }
    assert by_path == {
        (names.LINES_DELIVERED_BY_PATH, names.PATH_EVENT),
        (names.LINES_DELIVERED_BY_PATH, names.PATH_LOG_FILE),
        (names.REQUESTS_ALREADY_DELIVERED, names.PATH_LOG_FILE),
        (names.LINE_AGE, names.PATH_EVENT),
    }
    _, widgets = dashboard(on)
    expressions = [line[0]["expression"] for line in graphed(widgets) if isinstance(line[0], dict)]
    assert any("FILL(logFile, 0) / (FILL(event, 0) + FILL(logFile, 0))" in e for e in expressions)
    assert not [line for line in path_lines(template(apps, "off")) if names.PATH in line]


def test_dashboard_reads_the_path_metrics_with_the_dimensions_the_function_publishes(
    on: Template, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = flow_metrics(names.FLOW_AWS_S3)
    for path in names.DELIVERY_PATHS:
        record_lines_by_path(metrics, path, delivered=1, known_requests=1)
    record_line_ages(
        metrics, names.PATH_EVENT, ["2025-10-27T10:12:30Z"], datetime(2025, 10, 27, 10, 12, 33, tzinfo=UTC)
    )
    published = published_metrics(capsys.readouterr().out)
    graphed_with_path = set()
    for line in path_lines(on):
        if names.PATH in line[2:]:
            pairs = line[2:]
            pairs = pairs[:-1] if isinstance(pairs[-1], dict) else pairs
            dimensions = frozenset(zip(pairs[::2], pairs[1::2], strict=True))
            graphed_with_path.add((line[0], line[1], dimensions))
    assert len(graphed_with_path) == 4
    assert graphed_with_path <= published, sorted(graphed_with_path - published)


def test_event_path_resources_carry_no_cdk_nag_acknowledgement(on: Template) -> None:
    for name, body in on["Resources"].items():
        if name.startswith("DownloadEvents"):
            assert "cdk_nag" not in json.dumps(body.get("Metadata", {})), name


def test_app_refuses_event_bridge_without_a_trail(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({"eventBridge": True, "awsSource": "access-logs"}),
        "CDK_OUTDIR": str(tmp_path),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert result.stderr == (
        'Context key "eventBridge" needs a trail, so "awsSource" must be "cloudtrail" or "both", got "access-logs"\n'
    )


def test_rule_and_queue_are_single(on: Template) -> None:
    only_resource(on, "AWS::Events::Rule")
    assert len(resources_of_type(on, "AWS::SQS::Queue")) == 4


def test_with_the_app_key_the_event_queues_are_under_it_and_only_eventbridge_rules_of_this_account_may_use_it(
    apps: dict[str, SynthesizedApp],
) -> None:
    app = apps["kms"]
    key_stack = next(name for name in app.templates if name != S3_AUDIT_STACK_NAME)
    key_policy = only_resource(app.templates[key_stack], "AWS::KMS::Key")["Properties"]["KeyPolicy"]
    statement = next(s for s in key_policy["Statement"] if s.get("Sid") == "EventBridgeToEventQueue")
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert sorted(as_list(statement["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert json.dumps(statement["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(':rule/*"]]}')
    queues = {
        name: body
        for name, body in resources_of_type(app.templates[S3_AUDIT_STACK_NAME], "AWS::SQS::Queue").items()
        if name.startswith("DownloadEvents")
    }
    assert len(queues) == 2  # the event queue and its dead-letter queue
    for body in queues.values():
        assert "Fn::ImportValue" in body["Properties"]["KmsMasterKeyId"]


def test_without_event_bridge_the_app_key_admits_no_eventbridge(module_tmp: Path) -> None:
    app = synthesize(module_tmp / "kms-off", enableMinioRelay=False, kmsKey="create")
    key_stack = next(name for name in app.templates if name != S3_AUDIT_STACK_NAME)
    key_policy = only_resource(app.templates[key_stack], "AWS::KMS::Key")["Properties"]["KeyPolicy"]
    assert "EventBridgeToEventQueue" not in {s.get("Sid") for s in key_policy["Statement"]}
