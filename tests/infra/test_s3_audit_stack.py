"""Template assertions for the S3 audit stack: trail selectors, notification filter, queues, buckets, IAM, outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.constants import CREDENTIALS_STACK_NAME, S3_AUDIT_STACK_NAME
from metering.aws_calls import QUEUE_CONSUMER_ACTIONS
from tests.infra.synth import (
    IMPORTED_SECRET_ARN,
    LEDGER_ACTIONS,
    XRAY_ACTIONS,
    SynthesizedApp,
    as_list,
    function,
    function_statements,
    get_att_arn,
    ledger_table,
    logical_id,
    only_resource,
    policy_statements,
    queue_ids,
    resources_of_type,
    role_statements,
    synthesize,
)

Template = Mapping[str, Any]
AUDIT_FUNCTION = "S3AuditFunction"


def getobject_selector(bucket_arn_prefixes: list[Any]) -> list[dict[str, Any]]:
    """The one advanced event selector the trail must have, for the given resources.ARN prefixes."""
    return [
        {
            "Name": "GetObject on asset buckets",
            "FieldSelectors": [
                {"Field": "eventCategory", "Equals": ["Data"]},
                {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                {"Field": "eventName", "Equals": ["GetObject"]},
                {"Field": "resources.ARN", "StartsWith": bucket_arn_prefixes},
            ],
        }
    ]


@pytest.fixture(scope="module")
def default_app(module_tmp: Path) -> SynthesizedApp:
    """cdk.json defaults: the stack creates the asset bucket; the app creates the credentials secret."""
    return synthesize(module_tmp / "default", enableMinioRelay=False)


@pytest.fixture(scope="module")
def s3_template(default_app: SynthesizedApp) -> Template:
    return default_app.templates[S3_AUDIT_STACK_NAME]


@pytest.fixture(scope="module")
def imported_app(module_tmp: Path) -> SynthesizedApp:
    """Existing asset buckets given as a comma-separated -c string, and an existing secret by partial ARN."""
    return synthesize(
        module_tmp / "imported",
        enableMinioRelay="false",
        assetBuckets="stac-assets-a, stac-assets-b",
        clientCredentialsSecretArn=IMPORTED_SECRET_ARN,
    )


@pytest.fixture(scope="module")
def imported_template(imported_app: SynthesizedApp) -> Template:
    return imported_app.templates[S3_AUDIT_STACK_NAME]


def bucket_id(template: Template, prefix: str) -> str:
    return logical_id(template, "AWS::S3::Bucket", prefix)


def audit_function(template: Template) -> Mapping[str, Any]:
    """The properties of the s3_audit function."""
    return function(template, AUDIT_FUNCTION)[1]


# --- Trail ---------------------------------------------------------------------------------------------------------


def test_trail_selects_only_getobject_data_events_on_the_created_asset_bucket(s3_template: Template) -> None:
    trail = only_resource(s3_template, "AWS::CloudTrail::Trail")["Properties"]
    asset_bucket = bucket_id(s3_template, "AssetBucket")
    assert trail["AdvancedEventSelectors"] == getobject_selector([{"Fn::Join": ["", [get_att_arn(asset_bucket), "/"]]}])


def test_trail_selects_imported_asset_buckets_by_partition_aware_arn(imported_template: Template) -> None:
    trail = only_resource(imported_template, "AWS::CloudTrail::Trail")["Properties"]
    assert trail["AdvancedEventSelectors"] == getobject_selector(
        [
            {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::{name}/"]]}
            for name in ("stac-assets-a", "stac-assets-b")
        ]
    )


@pytest.mark.parametrize("template_fixture", ["s3_template", "imported_template"])
def test_trail_has_no_basic_event_selectors_and_no_management_events(
    template_fixture: str, request: pytest.FixtureRequest
) -> None:
    template: Template = request.getfixturevalue(template_fixture)
    trail = only_resource(template, "AWS::CloudTrail::Trail")["Properties"]
    # CloudFormation refuses EventSelectors beside AdvancedEventSelectors; cfn-lint does not notice.
    assert "EventSelectors" not in trail
    categories = [
        value
        for selector in trail["AdvancedEventSelectors"]
        for field in selector["FieldSelectors"]
        if field["Field"] == "eventCategory"
        for value in field["Equals"]
    ]
    assert categories == ["Data"]


@pytest.mark.parametrize("template_fixture", ["s3_template", "imported_template"])
def test_trail_never_selects_its_own_log_bucket(template_fixture: str, request: pytest.FixtureRequest) -> None:
    template: Template = request.getfixturevalue(template_fixture)
    trail = only_resource(template, "AWS::CloudTrail::Trail")["Properties"]
    selectors = json.dumps(trail["AdvancedEventSelectors"])
    assert bucket_id(template, "LogBucket") not in selectors
    assert bucket_id(template, "AccessLogsBucket") not in selectors
    assert trail["S3BucketName"] == {"Ref": bucket_id(template, "LogBucket")}


def test_trail_validates_log_files_and_skips_cloudwatch_logs(s3_template: Template) -> None:
    trail = only_resource(s3_template, "AWS::CloudTrail::Trail")["Properties"]
    assert trail["EnableLogFileValidation"] is True
    assert trail["IsLogging"] is True
    assert trail["IsMultiRegionTrail"] is True
    assert "CloudWatchLogsLogGroupArn" not in trail
    assert "KMSKeyId" not in trail  # SSE-S3: the function needs no kms:Decrypt


# --- Log file notification -> queue -> function ----------------------------------------------------------------------


def test_log_bucket_notifies_the_queue_of_cloudtrail_log_files_only(s3_template: Template) -> None:
    notification = only_resource(s3_template, "Custom::S3BucketNotifications")["Properties"]
    queue, _ = queue_ids(s3_template, "LogFiles")
    assert notification["BucketName"] == {"Ref": bucket_id(s3_template, "LogBucket")}
    assert notification["NotificationConfiguration"] == {
        "QueueConfigurations": [
            {
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {
                    "Key": {
                        "FilterRules": [
                            {"Name": "suffix", "Value": ".json.gz"},
                            {"Name": "prefix", "Value": "AWSLogs/"},
                        ]
                    }
                },
                "QueueArn": get_att_arn(queue),
            }
        ]
    }


def test_function_consumes_the_queue_in_small_batches(s3_template: Template) -> None:
    # Partial batches and the bounded concurrency of every flow: tests/infra/test_flow_stacks.py.
    mapping = only_resource(s3_template, "AWS::Lambda::EventSourceMapping")["Properties"]
    assert 1 <= mapping["BatchSize"] <= 5


def test_function_runs_on_arm64_with_the_newest_python(s3_template: Template) -> None:
    function = audit_function(s3_template)
    assert function["Architectures"] == ["arm64"]
    assert function["Runtime"] == "python3.14"
    assert function["Handler"] == "s3_audit.handler.handler"
    assert function["MemorySize"] == 1024
    assert function["Timeout"] == 300
    log_group = function["LoggingConfig"]["LogGroup"]["Ref"]
    assert s3_template["Resources"][log_group]["Properties"]["RetentionInDays"] > 0


def test_created_secret_holds_a_generated_placeholder_not_a_value(default_app: SynthesizedApp) -> None:
    secret = only_resource(default_app.templates[CREDENTIALS_STACK_NAME], "AWS::SecretsManager::Secret")
    properties = secret["Properties"]
    assert "SecretString" not in properties
    generated = properties["GenerateSecretString"]
    assert generated["GenerateStringKey"] == "clientSecret"
    assert set(json.loads(generated["SecretStringTemplate"])) == {"clientId"}


def test_no_credentials_stack_when_the_secret_is_imported(imported_app: SynthesizedApp) -> None:
    assert CREDENTIALS_STACK_NAME not in imported_app.templates
    assert imported_app.stacks.credentials is None


# --- Buckets ---------------------------------------------------------------------------------------------------------


def bucket_policy_statements(template: Template, bucket: str) -> list[Mapping[str, Any]]:
    return [
        statement
        for body in resources_of_type(template, "AWS::S3::BucketPolicy").values()
        if body["Properties"]["Bucket"] == {"Ref": bucket}
        for statement in body["Properties"]["PolicyDocument"]["Statement"]
    ]


@pytest.mark.parametrize("bucket_prefix", ["LogBucket", "AccessLogsBucket", "AssetBucket"])
def test_buckets_are_encrypted_private_versioned_and_tls_only(s3_template: Template, bucket_prefix: str) -> None:
    bucket = bucket_id(s3_template, bucket_prefix)
    properties = s3_template["Resources"][bucket]["Properties"]
    assert properties["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    }
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert any(
        statement["Effect"] == "Deny"
        and statement["Action"] == "s3:*"
        and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for statement in bucket_policy_statements(s3_template, bucket)
    )


@pytest.mark.parametrize("bucket_prefix", ["LogBucket", "AssetBucket"])
def test_buckets_send_server_access_logs_to_the_access_logs_bucket(s3_template: Template, bucket_prefix: str) -> None:
    logging = s3_template["Resources"][bucket_id(s3_template, bucket_prefix)]["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": bucket_id(s3_template, "AccessLogsBucket")}


def test_log_files_expire_after_the_retention_period(s3_template: Template) -> None:
    rules = s3_template["Resources"][bucket_id(s3_template, "LogBucket")]["Properties"]["LifecycleConfiguration"]
    assert rules["Rules"] == [
        {
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
            "ExpirationInDays": 365,
            "NoncurrentVersionExpiration": {"NoncurrentDays": 365},
            "Status": "Enabled",
        }
    ]


def test_log_bucket_lets_cloudtrail_write_log_files(s3_template: Template) -> None:
    statements = bucket_policy_statements(s3_template, bucket_id(s3_template, "LogBucket"))
    cloudtrail_actions = {
        statement["Action"]
        for statement in statements
        if statement.get("Principal") == {"Service": "cloudtrail.amazonaws.com"} and statement["Effect"] == "Allow"
    }
    assert cloudtrail_actions == {"s3:GetBucketAcl", "s3:PutObject"}


def test_imported_asset_buckets_are_not_created(imported_template: Template) -> None:
    assert not [name for name in resources_of_type(imported_template, "AWS::S3::Bucket") if "Asset" in name]
    assert "AssetBucketName" not in imported_template["Outputs"]


# --- IAM -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template_fixture", ["s3_template", "imported_template"])
def test_no_wildcard_resource_for_s3_or_secrets_manager(template_fixture: str, request: pytest.FixtureRequest) -> None:
    template: Template = request.getfixturevalue(template_fixture)
    for owner, statement in policy_statements(template):
        actions = as_list(statement["Action"])
        if statement["Effect"] == "Allow" and any(a.startswith(("s3:", "secretsmanager:")) for a in actions):
            assert "*" not in as_list(statement["Resource"]), owner


def test_function_may_read_only_the_secret_the_log_files_and_its_queue(s3_template: Template) -> None:
    queue, _ = queue_ids(s3_template, "LogFiles")
    log_group = audit_function(s3_template)["LoggingConfig"]["LogGroup"]["Ref"]
    statements = role_statements(s3_template, AUDIT_FUNCTION)
    secret = statements[("secretsmanager:GetSecretValue",)]
    assert set(secret) == {"Fn::ImportValue"}
    assert statements == {
        ("logs:CreateLogStream", "logs:PutLogEvents"): get_att_arn(log_group),
        XRAY_ACTIONS: "*",
        ("secretsmanager:GetSecretValue",): secret,
        ("s3:GetObject",): {"Fn::Join": ["", [get_att_arn(bucket_id(s3_template, "LogBucket")), "/AWSLogs/*"]]},
        tuple(sorted(QUEUE_CONSUMER_ACTIONS)): get_att_arn(queue),
        tuple(sorted(LEDGER_ACTIONS)): get_att_arn(ledger_table(s3_template)),
    }
    # No AWS managed policy: the role writes only to its own log group.
    role = audit_function(s3_template)["Role"]["Fn::GetAtt"][0]
    assert "ManagedPolicyArns" not in s3_template["Resources"][role]["Properties"]


def test_imported_secret_is_readable_by_partial_or_complete_arn(imported_template: Template) -> None:
    secret_statements = [
        s
        for s in function_statements(imported_template, AUDIT_FUNCTION)
        if s["Action"] == "secretsmanager:GetSecretValue"
    ]
    assert [s["Resource"] for s in secret_statements] == [[IMPORTED_SECRET_ARN, f"{IMPORTED_SECRET_ARN}-??????"]]


# --- Outputs ---------------------------------------------------------------------------------------------------------


def test_outputs_name_the_log_bucket_and_the_asset_bucket(s3_template: Template) -> None:
    outputs = {name: output["Value"] for name, output in s3_template["Outputs"].items() if "Export" not in output}
    assert outputs["LogBucketName"] == {"Ref": bucket_id(s3_template, "LogBucket")}
    assert outputs["AssetBucketName"] == {"Ref": bucket_id(s3_template, "AssetBucket")}


def test_dead_letter_alarm_mails_the_operator_when_configured(module_tmp: Path) -> None:
    app = synthesize(module_tmp / "alarm", enableMinioRelay=False, alarmEmail="ops@example.org")
    template = app.templates[S3_AUDIT_STACK_NAME]
    subscription = only_resource(template, "AWS::SNS::Subscription")["Properties"]
    assert subscription["Protocol"] == "email"
    assert subscription["Endpoint"] == "ops@example.org"
    alarm = template["Resources"][logical_id(template, "AWS::CloudWatch::Alarm", "LogFilesDeadLetterAlarm")][
        "Properties"
    ]
    assert alarm["AlarmActions"] == [{"Ref": logical_id(template, "AWS::SNS::Topic", "AlarmTopic")}]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_ids(template, "LogFiles")[1], "QueueName"]}}
    ]


# --- Delivery ledger -------------------------------------------------------------------------------------------------
