"""Every resource policy that lets an AWS service in binds it to this account or source ARN (confused deputy)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.constants import MINIO_RELAY_STACK_NAME, S3_AUDIT_STACK_NAME
from tests.infra.synth import SynthesizedApp, as_list, logical_id, render, resources_of_type, synthesize

Template = Mapping[str, Any]
ACCOUNT = {"Ref": "AWS::AccountId"}
TRAIL_ARN = "arn:${AWS::Partition}:cloudtrail:${AWS::Region}:${AWS::AccountId}:trail/OgcAuditS3-downloads"
ALARMS_ARN = "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:*"


EXISTING = "stac-assets-existing"


@pytest.fixture(scope="module")
def app(module_tmp: Path) -> SynthesizedApp:
    """Both flows with cdk.json's defaults."""
    return synthesize(module_tmp)


@pytest.fixture(scope="module")
def every_source(module_tmp: Path) -> SynthesizedApp:
    """The S3 flow with every AWS source: trail log files, server access logs of the asset bucket, EventBridge."""
    return synthesize(module_tmp / "every-source", enableMinioRelay=False, awsSource="both", eventBridge=True)


@pytest.fixture(scope="module")
def existing_buckets(module_tmp: Path) -> SynthesizedApp:
    """Access logs of an asset bucket the stack does not create (its owner turns logging on)."""
    return synthesize(module_tmp / "existing", enableMinioRelay=False, awsSource="access-logs", assetBuckets=[EXISTING])


@pytest.fixture(params=["defaults", "every-source", "existing-buckets"])
def template_of_s3_flow(
    request: pytest.FixtureRequest, app: SynthesizedApp, every_source: SynthesizedApp, existing_buckets: SynthesizedApp
) -> Template:
    chosen = {"defaults": app, "every-source": every_source, "existing-buckets": existing_buckets}[request.param]
    return chosen.templates[S3_AUDIT_STACK_NAME]


def service_statements(template: Template) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(resource logical id, service, statement) of every Allow statement whose principal is an AWS service."""
    for name, body in template["Resources"].items():
        properties = body.get("Properties", {})
        document = properties.get("PolicyDocument") if body["Type"] != "AWS::KMS::Key" else properties["KeyPolicy"]
        if not document or body["Type"] in ("AWS::IAM::Policy", "AWS::IAM::Role"):
            continue
        for statement in document["Statement"]:
            principal = statement.get("Principal")
            services = as_list(principal.get("Service", [])) if isinstance(principal, dict) else []
            if statement["Effect"] == "Allow":
                for service in services:
                    yield name, service, statement


def conditions(statement: Mapping[str, Any]) -> dict[str, str]:
    """``{"<operator> <key>": rendered value}`` of a statement's conditions (several values joined with commas)."""
    return {
        f"{operator} {key}": ",".join(render(one) for one in as_list(value))
        for operator, pairs in statement.get("Condition", {}).items()
        for key, value in pairs.items()
    }


def statements_for(template: Template, service: str) -> list[Mapping[str, Any]]:
    return [statement for _, name, statement in service_statements(template) if name == service]


@pytest.mark.parametrize("stack", [S3_AUDIT_STACK_NAME, MINIO_RELAY_STACK_NAME])
def test_no_service_is_let_in_unbound(stack: str, app: SynthesizedApp) -> None:
    found = list(service_statements(app.templates[stack]))
    assert found, "the stack admits no service at all: the test would prove nothing"
    for resource, service, statement in found:
        bound = {key.split(" ", 1)[1] for key in conditions(statement)}
        assert bound & {"aws:SourceArn", "aws:SourceAccount"}, f"{resource} lets {service} in unbound: {statement}"


def test_no_service_is_let_into_any_aws_source_unbound(template_of_s3_flow: Template) -> None:
    found = list(service_statements(template_of_s3_flow))
    assert found, "the stack admits no service at all: the test would prove nothing"
    for resource, service, statement in found:
        bound = {key.split(" ", 1)[1] for key in conditions(statement)}
        assert bound & {"aws:SourceArn", "aws:SourceAccount"}, f"{resource} lets {service} in unbound: {statement}"


@pytest.fixture(scope="module")
def with_key(module_tmp: Path) -> SynthesizedApp:
    """kmsKey=create: the trail then has a fixed name, which the key policy names too."""
    return synthesize(module_tmp / "key", enableMinioRelay=False, kmsKey="create")


@pytest.mark.parametrize("keyed", [False, True], ids=["aws-managed-encryption", "with-key"])
def test_cloudtrail_may_check_the_acl_and_write_only_for_this_trail(
    keyed: bool, app: SynthesizedApp, with_key: SynthesizedApp
) -> None:
    template = (with_key if keyed else app).templates[S3_AUDIT_STACK_NAME]
    by_action = {
        render(statement["Action"]): statement for statement in statements_for(template, "cloudtrail.amazonaws.com")
    }
    log_bucket = "${" + logical_id(template, "AWS::S3::Bucket", "LogBucket") + ".Arn}"
    trail = template["Resources"][logical_id(template, "AWS::CloudTrail::Trail", "DownloadTrail")]
    # With or without a key the trail has a fixed name, and CloudTrail is bound to exactly its ARN: bound to "any
    # trail of the account", anyone allowed to create a trail could deliver log files into the bucket.
    bound = {"StringEquals aws:SourceArn": TRAIL_ARN}

    assert "TrailName" in trail["Properties"]
    assert set(by_action) == {"s3:GetBucketAcl", "s3:PutObject"}
    assert render(by_action["s3:GetBucketAcl"]["Resource"]) == log_bucket
    assert conditions(by_action["s3:GetBucketAcl"]) == bound
    assert render(by_action["s3:PutObject"]["Resource"]) == f"{log_bucket}/AWSLogs/${{AWS::AccountId}}/*"
    assert conditions(by_action["s3:PutObject"]) == {"StringEquals s3:x-amz-acl": "bucket-owner-full-control", **bound}
    # The ARN in the conditions is the trail's: its name is the one the trail resource carries.
    assert TRAIL_ARN.endswith(f":trail/{trail['Properties']['TrailName']}")


def test_s3_may_notify_the_log_file_queue_only_for_the_log_bucket_of_this_account(app: SynthesizedApp) -> None:
    template = app.templates[S3_AUDIT_STACK_NAME]
    (statement,) = statements_for(template, "s3.amazonaws.com")
    log_bucket = logical_id(template, "AWS::S3::Bucket", "LogBucket")
    queue = logical_id(template, "AWS::SQS::Queue", "LogFilesQueue")

    assert as_list(statement["Action"]) == ["sqs:SendMessage"]
    assert statement["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert conditions(statement) == {
        "ArnLike aws:SourceArn": f"${{{log_bucket}.Arn}}",
        "StringEquals aws:SourceAccount": "${AWS::AccountId}",
    }


def test_server_access_logging_is_bound_to_each_logged_bucket_and_this_account(app: SynthesizedApp) -> None:
    template = app.templates[S3_AUDIT_STACK_NAME]
    statements = statements_for(template, "logging.s3.amazonaws.com")
    sources = {conditions(statement)["ArnLike aws:SourceArn"] for statement in statements}

    assert sources == {
        f"${{{logical_id(template, 'AWS::S3::Bucket', name)}.Arn}}" for name in ("LogBucket", "AssetBucket")
    }
    for statement in statements:
        assert conditions(statement)["StringEquals aws:SourceAccount"] == "${AWS::AccountId}"
        assert as_list(statement["Action"]) == ["s3:PutObject"]


@pytest.mark.parametrize("stack", [S3_AUDIT_STACK_NAME, MINIO_RELAY_STACK_NAME])
def test_cloudwatch_may_use_the_alarm_topic_and_its_key_only_for_alarms_of_this_account(
    stack: str, app: SynthesizedApp
) -> None:
    template = app.templates[stack]
    statements = statements_for(template, "cloudwatch.amazonaws.com")
    key = logical_id(template, "AWS::KMS::Key", "AlarmTopicKey")
    owners = {name for name, service, _ in service_statements(template) if service == "cloudwatch.amazonaws.com"}

    assert owners == {key, logical_id(template, "AWS::SNS::TopicPolicy", "AlarmTopicPolicy")}
    assert len(statements) == 2
    for statement in statements:
        assert conditions(statement) == {
            "StringEquals aws:SourceAccount": "${AWS::AccountId}",
            "ArnLike aws:SourceArn": ALARMS_ARN,
        }


def test_s3_may_notify_the_log_file_queue_only_for_the_log_and_access_log_buckets(every_source: SynthesizedApp) -> None:
    template = every_source.templates[S3_AUDIT_STACK_NAME]
    queue = logical_id(template, "AWS::SQS::Queue", "LogFilesQueue")
    sources = set()
    for statement in statements_for(template, "s3.amazonaws.com"):
        assert as_list(statement["Action"]) == ["sqs:SendMessage"]
        assert statement["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
        bound = conditions(statement)
        assert bound["StringEquals aws:SourceAccount"] == "${AWS::AccountId}"
        sources.add(bound["ArnLike aws:SourceArn"])

    assert sources == {
        f"${{{logical_id(template, 'AWS::S3::Bucket', name)}.Arn}}" for name in ("LogBucket", "AssetAccessLogBucket")
    }


def test_access_logs_of_existing_buckets_are_bound_to_those_buckets_and_this_account(
    existing_buckets: SynthesizedApp,
) -> None:
    template = existing_buckets.templates[S3_AUDIT_STACK_NAME]
    access_log_bucket = logical_id(template, "AWS::S3::Bucket", "AssetAccessLogBucket")
    (statement,) = [
        statement
        for statement in statements_for(template, "logging.s3.amazonaws.com")
        if render(statement["Resource"]).startswith(f"${{{access_log_bucket}.Arn}}")
    ]

    assert as_list(statement["Action"]) == ["s3:PutObject"]
    assert render(statement["Resource"]) == f"${{{access_log_bucket}.Arn}}/access-logs/*"
    assert conditions(statement) == {
        "ArnLike aws:SourceArn": f"arn:${{AWS::Partition}}:s3:::{EXISTING}",
        "StringEquals aws:SourceAccount": "${AWS::AccountId}",
    }


def test_eventbridge_may_fill_the_event_queue_and_its_dlq_only_from_the_download_rule(
    every_source: SynthesizedApp,
) -> None:
    template = every_source.templates[S3_AUDIT_STACK_NAME]
    rule = logical_id(template, "AWS::Events::Rule", "DownloadEventsRule")
    owners = {name for name, service, _ in service_statements(template) if service == "events.amazonaws.com"}
    queues = {name for name in resources_of_type(template, "AWS::SQS::Queue") if name.startswith("DownloadEvents")}
    statements = statements_for(template, "events.amazonaws.com")

    assert len(queues) == 2  # the event queue and its DLQ
    assert owners == {
        name for name in resources_of_type(template, "AWS::SQS::QueuePolicy") if name.startswith("DownloadEvents")
    }
    assert {statement["Resource"]["Fn::GetAtt"][0] for statement in statements} == queues
    for statement in statements:  # written by download_events.RuleBoundQueueTarget, key or no key
        assert as_list(statement["Action"]) == ["sqs:SendMessage"]
        assert conditions(statement) == {
            "ArnEquals aws:SourceArn": f"${{{rule}.Arn}}",
            "StringEquals aws:SourceAccount": "${AWS::AccountId}",
        }
