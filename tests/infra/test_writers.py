"""Only the right writers (docs/security.md): in every configuration, the log buckets' policies refuse a log file
from any principal but the delivering service (and the break-glass role), and the queues' policies refuse a message
from anyone but the bucket notification, the EventBridge rule or the webhook role. Each case is evaluated by
``policy_check`` against the synthesized, resolved resource policy, the delivery that belongs there included.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.constants import MINIO_RELAY_STACK_NAME, S3_AUDIT_STACK_NAME
from testbed.stack_template import ACCOUNT, REGION
from tests.infra.policy_check import OTHER_ACCOUNT, Request, decide, resolver, resource_policy, statement_matches
from tests.infra.synth import SynthesizedApp, logical_id, only_resource, resources_of_type, synthesize

EXISTING = ["stac-assets-eu", "stac-thumbnails-eu"]
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
BREAK_GLASS = f"arn:aws:iam::{ACCOUNT}:role/ops/ogc-audit-break-glass"
MINIO_CIDRS = ["203.0.113.0/24", "198.51.100.17/32"]
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "kms-create": {"kmsKey": "create", "eventBridge": True},
    "key-arn": {"kmsKey": KEY_ARN, "awsSource": "both", "eventBridge": True},
    "access-logs": {"awsSource": "access-logs"},
    "existing": {"assetBuckets": EXISTING, "awsSource": "both", "eventBridge": True},
    "break-glass": {
        "breakGlassRoleArn": BREAK_GLASS,
        "awsSource": "both",
        "eventBridge": True,
        "kmsKey": "create",
        "minioSourceCidrs": MINIO_CIDRS,
        "webhookWaf": True,
    },
}
# An ordinary principal of the account with s3:PutObject / sqs:SendMessage rights in its identity policy.
INSIDER = f"arn:aws:iam::{ACCOUNT}:role/data-pipeline"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/Administrator"
Template = Mapping[str, Any]


@pytest.fixture(scope="module")
def apps(module_tmp: Path) -> dict[str, SynthesizedApp]:
    """Every configuration synthesized once, cdk-nag on."""
    return {name: synthesize(module_tmp / name, **context) for name, context in CONFIGURATIONS.items()}


def s3_stack(apps: dict[str, SynthesizedApp], name: str) -> Template:
    return apps[name].templates[S3_AUDIT_STACK_NAME]


def arn_of(template: Template, logical: str) -> str:
    return str(resolver(template).resolve({"Fn::GetAtt": [logical, "Arn"]}))


def uses(name: str, source: str) -> bool:
    aws_source = CONFIGURATIONS[name].get("awsSource", "cloudtrail")
    return aws_source in (source, "both")


def asset_bucket_arns(template: Template, name: str) -> list[str]:
    if "assetBuckets" in CONFIGURATIONS[name]:
        return [f"arn:aws:s3:::{bucket}" for bucket in EXISTING]
    return [arn_of(template, logical_id(template, "AWS::S3::Bucket", "AssetBucket"))]


def outsiders(resource: str, action: str) -> dict[str, Request]:
    """Writers that must be refused whatever their identity policy says."""
    return {
        "insider": Request(action, resource, principal_arn=INSIDER),
        "administrator": Request(action, resource, principal_arn=ADMIN),
        "other account": Request(action, resource, principal_arn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/x"),
        "anonymous": Request(action, resource),
    }


def assert_break_glass(statements: list[Any], request: Request, name: str) -> None:
    """The break-glass role is refused like anyone unless configured; configured, no Deny stands in its way."""
    as_break_glass = Request(request.action, request.resource, principal_arn=BREAK_GLASS)
    expected = "ImplicitDeny" if "breakGlassRoleArn" in CONFIGURATIONS[name] else "Deny"
    assert decide(statements, as_break_glass) == expected


# --------------------------------------------------------------------------------------------------
# The trail's log bucket
# --------------------------------------------------------------------------------------------------

TRAIL_CONFIGURATIONS = [name for name in CONFIGURATIONS if uses(name, "cloudtrail")]


@pytest.mark.parametrize("name", TRAIL_CONFIGURATIONS)
def test_log_bucket_refuses_a_forged_log_file_and_admits_the_trail(apps: dict[str, SynthesizedApp], name: str) -> None:
    template = s3_stack(apps, name)
    bucket = logical_id(template, "AWS::S3::Bucket", "LogBucket")
    statements = resource_policy(template, "AWS::S3::BucketPolicy", "Bucket", bucket)
    log_file = f"{arn_of(template, bucket)}/AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/2025/10/27/{ACCOUNT}_x.json.gz"
    trail = arn_of(template, only_resource_id(template, "AWS::CloudTrail::Trail"))
    delivery = {"aws:SourceArn": trail, "aws:SourceAccount": ACCOUNT, "s3:x-amz-acl": "bucket-owner-full-control"}

    assert decide(statements, cloudtrail_delivery(log_file, delivery)) == "Allow"
    for who, forged in outsiders(log_file, "s3:PutObject").items():
        assert decide(statements, forged) == "Deny", who
    # Any account's folder, not only this one's; multipart uploads and copies are s3:PutObject too.
    other_folder = log_file.replace(f"AWSLogs/{ACCOUNT}/", f"AWSLogs/o-a1b2c3d4e5/{OTHER_ACCOUNT}/")
    assert decide(statements, Request("s3:PutObject", other_folder, principal_arn=INSIDER)) == "Deny"
    other_trail = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/someone-elses-trail"
    foreign_trail = f"arn:aws:cloudtrail:{REGION}:{OTHER_ACCOUNT}:trail/t"
    for forged_source in (
        {**delivery, "aws:SourceArn": other_trail},
        {**delivery, "aws:SourceArn": foreign_trail, "aws:SourceAccount": OTHER_ACCOUNT},
        {**delivery, "aws:SourceAccount": OTHER_ACCOUNT},
    ):
        assert decide(statements, cloudtrail_delivery(log_file, forged_source)) == "Deny", forged_source
    # Another service acting for this very trail is not CloudTrail.
    other_service = Request("s3:PutObject", log_file, service="logging.s3.amazonaws.com", context=delivery)
    assert decide(statements, other_service) == "Deny"
    assert_break_glass(statements, Request("s3:PutObject", log_file), name)
    # Only the log prefix is closed: the deny is not a blanket one.
    elsewhere = Request("s3:PutObject", f"{arn_of(template, bucket)}/notes/readme.txt", principal_arn=INSIDER)
    assert decide(statements, elsewhere) == "ImplicitDeny"


def cloudtrail_delivery(resource: str, context: Mapping[str, str]) -> Request:
    return Request("s3:PutObject", resource, service="cloudtrail.amazonaws.com", context=context)


def only_resource_id(template: Template, resource_type: str) -> str:
    (name,) = resources_of_type(template, resource_type)
    return name


# --------------------------------------------------------------------------------------------------
# The asset buckets' access-log bucket
# --------------------------------------------------------------------------------------------------

ACCESS_LOG_CONFIGURATIONS = [name for name in CONFIGURATIONS if uses(name, "access-logs")]


@pytest.mark.parametrize("name", ACCESS_LOG_CONFIGURATIONS)
def test_access_log_bucket_refuses_a_forged_log_and_admits_log_delivery_for_the_asset_buckets(
    apps: dict[str, SynthesizedApp], name: str
) -> None:
    template = s3_stack(apps, name)
    bucket = logical_id(template, "AWS::S3::Bucket", "AssetAccessLogBucket")
    statements = resource_policy(template, "AWS::S3::BucketPolicy", "Bucket", bucket)
    log_object = f"{arn_of(template, bucket)}/access-logs/{ACCOUNT}/{REGION}/b/2025/10/27/2025-10-27-10-15-42-7F48A4"
    for asset in asset_bucket_arns(template, name):
        delivery = {"aws:SourceArn": asset, "aws:SourceAccount": ACCOUNT}
        assert decide(statements, log_delivery(log_object, delivery)) == "Allow", asset
        assert decide(statements, log_delivery(log_object, {**delivery, "aws:SourceAccount": OTHER_ACCOUNT})) == "Deny"
    other_bucket = {"aws:SourceArn": "arn:aws:s3:::someone-elses-bucket", "aws:SourceAccount": ACCOUNT}
    assert decide(statements, log_delivery(log_object, other_bucket)) == "Deny"
    for who, forged in outsiders(log_object, "s3:PutObject").items():
        assert decide(statements, forged) == "Deny", who
    assert_break_glass(statements, Request("s3:PutObject", log_object), name)


def log_delivery(resource: str, context: Mapping[str, str]) -> Request:
    return Request("s3:PutObject", resource, service="logging.s3.amazonaws.com", context=context)


# --------------------------------------------------------------------------------------------------
# The queues
# --------------------------------------------------------------------------------------------------


def queue_statements(template: Template, prefix: str) -> tuple[str, list[Any]]:
    (queue,) = [
        name
        for name in resources_of_type(template, "AWS::SQS::Queue")
        if name.startswith(prefix) and "DeadLetter" not in name
    ]
    return arn_of(template, queue), resource_policy(template, "AWS::SQS::QueuePolicy", "Queues", queue)


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_log_file_queue_admits_only_the_log_buckets_notifications(apps: dict[str, SynthesizedApp], name: str) -> None:
    template = s3_stack(apps, name)
    queue, statements = queue_statements(template, "LogFilesQueue")
    notifying = []
    if uses(name, "cloudtrail"):
        notifying.append(arn_of(template, logical_id(template, "AWS::S3::Bucket", "LogBucket")))
    if uses(name, "access-logs"):
        notifying.append(arn_of(template, logical_id(template, "AWS::S3::Bucket", "AssetAccessLogBucket")))
    for bucket in notifying:
        notification = {"aws:SourceArn": bucket, "aws:SourceAccount": ACCOUNT}
        assert decide(statements, s3_notification(queue, notification)) == "Allow", bucket
        assert decide(statements, s3_notification(queue, {**notification, "aws:SourceAccount": OTHER_ACCOUNT})) == (
            "Deny"
        )
    # An asset bucket, or any other bucket of the account, cannot notify this queue.
    for bucket in [*asset_bucket_arns(template, name), "arn:aws:s3:::someone-elses-bucket"]:
        assert decide(statements, s3_notification(queue, {"aws:SourceArn": bucket, "aws:SourceAccount": ACCOUNT})) == (
            "Deny"
        )
    for who, forged in outsiders(queue, "sqs:SendMessage").items():
        assert decide(statements, forged) == "Deny", who
    assert_break_glass(statements, Request("sqs:SendMessage", queue), name)


def s3_notification(queue: str, context: Mapping[str, str]) -> Request:
    return Request("sqs:SendMessage", queue, service="s3.amazonaws.com", context=context)


EVENT_CONFIGURATIONS = [name for name in CONFIGURATIONS if CONFIGURATIONS[name].get("eventBridge")]


@pytest.mark.parametrize("name", EVENT_CONFIGURATIONS)
def test_event_queue_admits_only_the_download_rule_with_and_without_a_key(
    apps: dict[str, SynthesizedApp], name: str
) -> None:
    template = s3_stack(apps, name)
    queue, statements = queue_statements(template, "DownloadEventsQueue")
    rule = arn_of(template, only_resource_id(template, "AWS::Events::Rule"))
    delivery = {"aws:SourceArn": rule, "aws:SourceAccount": ACCOUNT}
    assert decide(statements, event_delivery(queue, delivery)) == "Allow"
    # Any other rule of the account (the hole CDK leaves for encrypted queues) is refused.
    other_rule = {"aws:SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/forger", "aws:SourceAccount": ACCOUNT}
    assert decide(statements, event_delivery(queue, other_rule)) == "Deny"
    for who, forged in outsiders(queue, "sqs:SendMessage").items():
        assert decide(statements, forged) == "Deny", who
    assert_break_glass(statements, Request("sqs:SendMessage", queue), name)


def event_delivery(queue: str, context: Mapping[str, str]) -> Request:
    return Request("sqs:SendMessage", queue, service="events.amazonaws.com", context=context)


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_delivery_queue_admits_only_the_webhook_role(apps: dict[str, SynthesizedApp], name: str) -> None:
    template = apps[name].templates[MINIO_RELAY_STACK_NAME]
    queue, statements = queue_statements(template, "DeliveryQueue")
    webhook = arn_of(template, logical_id(template, "AWS::IAM::Role", "WebhookRole"))
    # Its identity policy allows the send; the queue policy does not stand in the way.
    assert decide(statements, Request("sqs:SendMessage", queue, principal_arn=webhook)) == "ImplicitDeny"
    for who, forged in outsiders(queue, "sqs:SendMessage").items():
        assert decide(statements, forged) == "Deny", who
    deliver = arn_of(template, logical_id(template, "AWS::IAM::Role", "DeliverRole"))
    assert decide(statements, Request("sqs:SendMessage", queue, principal_arn=deliver)) == "Deny"
    as_service = {"aws:SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/r", "aws:SourceAccount": ACCOUNT}
    assert decide(statements, event_delivery(queue, as_service)) == "Deny"
    assert_break_glass(statements, Request("sqs:SendMessage", queue), name)
    # Consuming and plain-TLS rules are untouched by the send deny.
    assert decide(statements, Request("sqs:ReceiveMessage", queue, principal_arn=deliver)) == "ImplicitDeny"


# --------------------------------------------------------------------------------------------------
# The webhook's callers
# --------------------------------------------------------------------------------------------------


def test_without_minio_addresses_the_api_has_no_resource_policy_and_no_firewall(
    apps: dict[str, SynthesizedApp],
) -> None:
    template = apps["default"].templates[MINIO_RELAY_STACK_NAME]
    assert "Policy" not in only_resource(template, "AWS::ApiGateway::RestApi")["Properties"]
    assert resources_of_type(template, "AWS::WAFv2::WebACL") == {}


def test_api_resource_policy_admits_only_minio_addresses(apps: dict[str, SynthesizedApp]) -> None:
    template = apps["break-glass"].templates[MINIO_RELAY_STACK_NAME]
    document = resolver(template).resolve(only_resource(template, "AWS::ApiGateway::RestApi")["Properties"]["Policy"])
    statements = document["Statement"]
    method = "execute-api:/prod/POST/auditlogs/processor"
    for address, expected in [
        ("203.0.113.77", "Allow"),
        ("198.51.100.17", "Allow"),
        ("198.51.100.18", "Deny"),
        ("192.0.2.1", "Deny"),
    ]:
        request = Request("execute-api:Invoke", method, context={"aws:SourceIp": address})
        assert decide(statements, request) == expected, address


def test_firewall_blocks_other_addresses_and_limits_each_address(apps: dict[str, SynthesizedApp]) -> None:
    template = apps["break-glass"].templates[MINIO_RELAY_STACK_NAME]
    web_acl_id = only_resource_id(template, "AWS::WAFv2::WebACL")
    web_acl = template["Resources"][web_acl_id]["Properties"]
    ip_set_id = only_resource_id(template, "AWS::WAFv2::IPSet")
    assert template["Resources"][ip_set_id]["Properties"]["Addresses"] == MINIO_CIDRS
    assert web_acl["Scope"] == "REGIONAL"
    assert web_acl["DefaultAction"] == {"Allow": {}}
    minio = {"IPSetReferenceStatement": {"Arn": {"Fn::GetAtt": [ip_set_id, "Arn"]}}}
    block_others, rate = sorted(web_acl["Rules"], key=lambda rule: rule["Priority"])
    assert block_others["Action"] == {"Block": {}}
    assert block_others["Statement"] == {"NotStatement": {"Statement": minio}}
    assert rate["Action"] == {"Block": {}}
    assert rate["Statement"]["RateBasedStatement"] == {
        "AggregateKeyType": "IP",
        "EvaluationWindowSec": 300,
        "Limit": 3000,
        "ScopeDownStatement": {"NotStatement": {"Statement": minio}},
    }
    (association,) = resources_of_type(template, "AWS::WAFv2::WebACLAssociation").values()
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": [web_acl_id, "Arn"]}
    stage_arn = str(resolver(template).resolve(association["Properties"]["ResourceArn"]))
    stage = logical_id(template, "AWS::ApiGateway::Stage", "WebhookApiDeploymentStage")
    api = only_resource_id(template, "AWS::ApiGateway::RestApi")
    assert stage_arn == f"arn:aws:apigateway:{REGION}::/restapis/{api.lower()}/stages/{stage.lower()}"


# --------------------------------------------------------------------------------------------------
# The checker itself
# --------------------------------------------------------------------------------------------------


def test_checker_refuses_what_it_cannot_evaluate() -> None:
    statement = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": "*",
        "Condition": {"ForAnyValue:StringLike": {"aws:TagKeys": "x"}},
    }
    with pytest.raises(ValueError, match="does not know the condition operator"):
        statement_matches(statement, Request("s3:PutObject", "arn:aws:s3:::b/k"))
    with pytest.raises(ValueError, match="does not know the elements"):
        statement_matches({**statement, "NotPrincipal": "*"}, Request("s3:PutObject", "arn:aws:s3:::b/k"))


def test_checker_reads_negated_operators_and_null_as_iam_does() -> None:
    deny_direct_calls = {
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "sqs:Send*",
        "Resource": "arn:aws:sqs:*:*:q",
        "Condition": {"Null": {"aws:SourceArn": "true"}, "ArnNotEquals": {"aws:PrincipalArn": BREAK_GLASS}},
    }
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:q"
    assert decide([deny_direct_calls], Request("sqs:SendMessage", queue, principal_arn=INSIDER)) == "Deny"
    assert decide([deny_direct_calls], Request("sqs:SendMessage", queue, principal_arn=BREAK_GLASS)) == "ImplicitDeny"
    service = Request("sqs:SendMessage", queue, service="s3.amazonaws.com", context={"aws:SourceArn": "arn:aws:s3:::b"})
    assert decide([deny_direct_calls], service) == "ImplicitDeny"
    assert decide([deny_direct_calls], Request("sqs:ReceiveMessage", queue, principal_arn=INSIDER)) == "ImplicitDeny"
