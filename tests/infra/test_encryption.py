"""Encryption at rest for the three kmsKey values: "" (AWS managed), "create" (the app's key), an existing key ARN.

moto does not enforce key policies, so the key policy and the roles' kms grants are checked here, in the templates.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.constants import (
    CREDENTIALS_STACK_NAME,
    DOWNLOAD_TRAIL_NAME,
    KEY_STACK_NAME,
    MINIO_RELAY_STACK_NAME,
    S3_AUDIT_STACK_NAME,
)
from infra.encryption import AWS_MANAGED_BY_CHOICE
from tests.infra.synth import (
    REPO_ROOT,
    SynthesizedApp,
    as_list,
    only_resource,
    policy_statements,
    render,
    resources_of_type,
    synthesize,
)

Template = Mapping[str, Any]
KEY_ARN = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# Where each resource type names its key, and the checkov check that wants a customer managed key there.
KEY_PROPERTY = {
    "AWS::SQS::Queue": ("KmsMasterKeyId", "CKV_AWS_27"),
    "AWS::Logs::LogGroup": ("KmsKeyId", "CKV_AWS_158"),
    "AWS::SecretsManager::Secret": ("KmsKeyId", "CKV_AWS_149"),
    "AWS::CloudTrail::Trail": ("KMSKeyId", "CKV_AWS_35"),
    "AWS::DynamoDB::Table": ("SSESpecification.KMSMasterKeyId", "CKV_AWS_119"),
    "AWS::SNS::Topic": ("KmsMasterKeyId", None),
}
CUSTOMER_MANAGED_KEY_CHECKS = {check for _path, check in KEY_PROPERTY.values() if check is not None}
# Resources of each type the default app holds at least (both flows, created secrets), so no loop below is vacuous.
MINIMUM_COUNTS = {
    "AWS::SQS::Queue": 4,
    "AWS::Logs::LogGroup": 4,
    "AWS::SecretsManager::Secret": 2,
    "AWS::CloudTrail::Trail": 1,
    "AWS::DynamoDB::Table": 2,
    "AWS::SNS::Topic": 2,
}
# What each function's calls need from the key (AWS service documentation), and nothing more.
ROLE_KMS_ACTIONS = {
    (S3_AUDIT_STACK_NAME, "S3AuditRole"): {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"},
    (MINIO_RELAY_STACK_NAME, "WebhookRole"): {"kms:Decrypt", "kms:GenerateDataKey"},
    (MINIO_RELAY_STACK_NAME, "DeliverRole"): {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"},
}
ACCOUNT_ROOT = "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"
EXISTING_KEY_POLICY = REPO_ROOT / "docs" / "existing-key-policy.json"
TRAIL_ARN = f"arn:${{AWS::Partition}}:cloudtrail:${{AWS::Region}}:${{AWS::AccountId}}:trail/{DOWNLOAD_TRAIL_NAME}"


@pytest.fixture(scope="module")
def default_app(module_tmp: Path) -> SynthesizedApp:
    return synthesize(module_tmp / "default")


@pytest.fixture(scope="module")
def created_key_app(module_tmp: Path) -> SynthesizedApp:
    return synthesize(module_tmp / "create", kmsKey="create")


@pytest.fixture(scope="module")
def imported_key_app(module_tmp: Path) -> SynthesizedApp:
    return synthesize(module_tmp / "imported", kmsKey=KEY_ARN)


def key_reference(properties: Mapping[str, Any], path: str) -> Any:
    value: Any = properties
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def encrypted_resources(app: SynthesizedApp) -> list[tuple[str, str, str, Any]]:
    """(stack, logical id, type, key reference) of every resource that can name a key."""
    found = []
    for stack, template in app.templates.items():
        for resource_type, (path, _check) in KEY_PROPERTY.items():
            for name, body in resources_of_type(template, resource_type).items():
                found.append((stack, name, resource_type, key_reference(body.get("Properties", {}), path)))
    return found


def checkov_skips(body: Mapping[str, Any]) -> dict[str, str]:
    skips = body.get("Metadata", {}).get("checkov", {}).get("skip", [])
    return {skip["id"]: skip["comment"] for skip in skips}


def key_policy(app: SynthesizedApp) -> dict[str, Mapping[str, Any]]:
    key = only_resource(app.templates[KEY_STACK_NAME], "AWS::KMS::Key")
    return {statement["Sid"]: statement for statement in key["Properties"]["KeyPolicy"]["Statement"]}


def rendered(value: Any) -> Any:
    """Conditions and principals with every Fn::Join/Ref written out, for exact comparison."""
    if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in ("Fn::Join", "Ref", "Fn::GetAtt"):
        return render(value)
    if isinstance(value, Mapping):
        return {key: rendered(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rendered(item) for item in value]
    return value


def kms_grants(template: Template, role_prefix: str) -> list[Mapping[str, Any]]:
    return [
        statement
        for owner, statement in policy_statements(template)
        if owner.startswith(role_prefix) and any(action.startswith("kms:") for action in as_list(statement["Action"]))
    ]


# --- kmsKey=create ---------------------------------------------------------------------------------------------------


def test_create_puts_one_rotated_retained_key_in_a_stack_of_its_own(created_key_app: SynthesizedApp) -> None:
    key = only_resource(created_key_app.templates[KEY_STACK_NAME], "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["Properties"]["PendingWindowInDays"] == 30
    assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"
    others = [s for s, t in created_key_app.templates.items() if s != KEY_STACK_NAME and "AWS::KMS::Key" in str(t)]
    assert others == [], "the alarm topics must use the app's key, not keys of their own"


def test_create_puts_every_queue_log_group_table_secret_topic_and_the_trail_under_the_key(
    created_key_app: SynthesizedApp,
) -> None:
    resources = encrypted_resources(created_key_app)
    counts = dict.fromkeys(MINIMUM_COUNTS, 0)
    for stack, name, resource_type, reference in resources:
        counts[resource_type] += 1
        assert isinstance(reference, Mapping), (stack, name)
        assert set(reference) == {"Fn::ImportValue"}, (stack, name)
        assert reference["Fn::ImportValue"].startswith(f"{KEY_STACK_NAME}:ExportsOutputFnGetAttKey"), (stack, name)
    assert [t for t, minimum in MINIMUM_COUNTS.items() if counts[t] < minimum] == []
    table = only_resource(created_key_app.templates[S3_AUDIT_STACK_NAME], "AWS::DynamoDB::Table")
    assert table["Properties"]["SSESpecification"]["SSEType"] == "KMS"


def test_create_never_makes_the_key_stack_depend_on_another_stack(created_key_app: SynthesizedApp) -> None:
    # The key policy names nothing of the flow stacks: no import, so no dependency cycle is possible.
    assert "Fn::ImportValue" not in str(created_key_app.templates[KEY_STACK_NAME])
    stacks = created_key_app.stacks
    assert stacks.key is not None
    assert stacks.key.dependencies == []
    for dependent in (stacks.credentials, stacks.s3_audit, stacks.minio_relay):
        assert dependent is not None
        assert stacks.key in dependent.dependencies


def test_key_policy_administers_without_using_and_lets_the_account_use_it_only_through_the_app_services(
    created_key_app: SynthesizedApp,
) -> None:
    policy = key_policy(created_key_app)
    administration = policy["KeyAdministration"]
    assert rendered(administration["Principal"]) == {"AWS": ACCOUNT_ROOT}
    assert "kms:*" not in administration["Action"]
    assert not {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"} & set(administration["Action"])
    use = policy["UseThroughAppServices"]
    assert rendered(use["Principal"]) == {"AWS": ACCOUNT_ROOT}
    assert rendered(use["Condition"]) == {
        "StringEquals": {
            "kms:CallerAccount": "${AWS::AccountId}",
            "kms:ViaService": [
                f"{service}.${{AWS::Region}}.${{AWS::URLSuffix}}"
                for service in ("sqs", "secretsmanager", "dynamodb", "s3")
            ],
        }
    }
    grants = policy["DynamoDBTableGrants"]
    assert grants["Action"] == "kms:CreateGrant"
    assert rendered(grants["Condition"])["Bool"] == {"kms:GrantIsForAWSResource": "true"}


def test_only_dynamodb_may_create_grants_on_the_key(created_key_app: SynthesizedApp) -> None:
    """A grant lets its grantee use the key beyond kms:ViaService: no statement may allow kms:CreateGrant (by name
    or by a wildcard such as AWS's default kms:Create*) but DynamoDB's own, bound to the service and AWS resources."""
    granting = {
        sid
        for sid, statement in key_policy(created_key_app).items()
        if statement["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase("kms:CreateGrant", action) for action in as_list(statement["Action"]))
    }
    assert granting == {"DynamoDBTableGrants"}
    grants = key_policy(created_key_app)["DynamoDBTableGrants"]
    assert grants["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}
    administration = as_list(key_policy(created_key_app)["KeyAdministration"]["Action"])
    assert not [action for action in administration if "*" in action]  # listed one by one
    assert "kms:PutKeyPolicy" in administration
    assert "kms:ScheduleKeyDeletion" in administration


def test_key_policy_lets_each_service_in_only_for_this_account(created_key_app: SynthesizedApp) -> None:
    policy = key_policy(created_key_app)
    assert set(policy) == {
        "KeyAdministration",
        "UseThroughAppServices",
        "DynamoDBTableGrants",
        "CloudWatchLogsEncryptLogGroups",
        "CloudWatchAlarmsPublish",
        "CloudTrailEncryptLogFiles",
        "CloudTrailDescribeKey",
        "S3NotificationsToQueues",
    }
    account_arn = "arn:${AWS::Partition}:{service}:${AWS::Region}:${AWS::AccountId}:"
    expected = {
        "CloudTrailEncryptLogFiles": (
            "cloudtrail.amazonaws.com",
            "kms:GenerateDataKey*",
            {
                "StringEquals": {"aws:SourceArn": TRAIL_ARN},
                "StringLike": {
                    "kms:EncryptionContext:aws:cloudtrail:arn": "arn:${AWS::Partition}:cloudtrail:*:${AWS::AccountId}:"
                    "trail/*"
                },
            },
        ),
        "CloudTrailDescribeKey": (
            "cloudtrail.amazonaws.com",
            "kms:DescribeKey",
            {"StringEquals": {"aws:SourceArn": TRAIL_ARN}},
        ),
        "CloudWatchLogsEncryptLogGroups": (
            "logs.${AWS::Region}.${AWS::URLSuffix}",
            ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"],
            {
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": account_arn.replace("{service}", "logs") + "log-group:*"
                }
            },
        ),
        "CloudWatchAlarmsPublish": (
            "cloudwatch.amazonaws.com",
            ["kms:Decrypt", "kms:GenerateDataKey*"],
            {
                "StringEquals": {"aws:SourceAccount": "${AWS::AccountId}"},
                "ArnLike": {"aws:SourceArn": account_arn.replace("{service}", "cloudwatch") + "alarm:*"},
            },
        ),
        "S3NotificationsToQueues": (
            "s3.amazonaws.com",
            ["kms:Decrypt", "kms:GenerateDataKey"],
            {
                "StringEquals": {"aws:SourceAccount": "${AWS::AccountId}"},
                "ArnLike": {"aws:SourceArn": "arn:${AWS::Partition}:s3:::*"},
            },
        ),
    }
    for sid, (service, actions, condition) in expected.items():
        statement = policy[sid]
        assert rendered(statement["Principal"]) == {"Service": service}, sid
        assert sorted(as_list(statement["Action"])) == sorted(as_list(actions)), sid
        assert rendered(statement["Condition"]) == condition, sid
    for statement in policy.values():
        assert statement["Effect"] == "Allow"
        assert statement["Resource"] == "*"  # in a key policy: this key
        assert "*" not in str(statement["Principal"])


def test_trail_is_named_as_the_key_policy_names_it(created_key_app: SynthesizedApp) -> None:
    trail = only_resource(created_key_app.templates[S3_AUDIT_STACK_NAME], "AWS::CloudTrail::Trail")
    assert trail["Properties"]["TrailName"] == DOWNLOAD_TRAIL_NAME
    assert TRAIL_ARN.endswith(f":trail/{trail['Properties']['TrailName']}")


def test_key_policy_of_a_minio_only_app_lets_neither_cloudtrail_nor_s3_in(module_tmp: Path) -> None:
    app = synthesize(module_tmp / "minio-only", kmsKey="create", enableS3Audit="false")
    policy = key_policy(app)
    assert not {"CloudTrailEncryptLogFiles", "CloudTrailDescribeKey", "S3NotificationsToQueues"} & set(policy)
    via = rendered(policy["UseThroughAppServices"]["Condition"])["StringEquals"]["kms:ViaService"]
    assert not [service for service in via if service.startswith("s3.")]


@pytest.mark.parametrize("app_fixture", ["created_key_app", "imported_key_app"])
def test_functions_get_only_the_kms_actions_their_calls_need(app_fixture: str, request: pytest.FixtureRequest) -> None:
    app: SynthesizedApp = request.getfixturevalue(app_fixture)
    for (stack, role), expected in ROLE_KMS_ACTIONS.items():
        grants = kms_grants(app.templates[stack], role)
        assert {action for statement in grants for action in as_list(statement["Action"])} == expected, role
        for statement in grants:
            resource = statement["Resource"]
            if app_fixture == "imported_key_app":
                assert resource == KEY_ARN
            else:
                assert set(resource) == {"Fn::ImportValue"}
                assert resource["Fn::ImportValue"].startswith(f"{KEY_STACK_NAME}:")
    # Nothing else of the app (CDK's notification handler, the alarms) may use the key through IAM.
    for stack, template in app.templates.items():
        for owner, statement in policy_statements(template):
            if any(action.startswith("kms:") for action in as_list(statement["Action"])):
                assert any(owner.startswith(role) and stack == s for (s, role) in ROLE_KMS_ACTIONS), owner


def test_with_a_key_no_customer_managed_key_check_is_skipped(created_key_app: SynthesizedApp) -> None:
    for template in created_key_app.templates.values():
        for name, body in template["Resources"].items():
            assert not CUSTOMER_MANAGED_KEY_CHECKS & set(checkov_skips(body)), name


# --- kmsKey=<existing key ARN> ---------------------------------------------------------------------------------------


def test_existing_key_encrypts_everything_and_no_key_is_created(imported_key_app: SynthesizedApp) -> None:
    assert KEY_STACK_NAME not in imported_key_app.templates
    assert imported_key_app.stacks.key is None
    for stack, template in imported_key_app.templates.items():
        assert not resources_of_type(template, "AWS::KMS::Key"), stack
    resources = encrypted_resources(imported_key_app)
    assert {(stack, name): ref for stack, name, _type, ref in resources if ref != KEY_ARN} == {}
    assert len(resources) >= sum(MINIMUM_COUNTS.values())
    trail = only_resource(imported_key_app.templates[S3_AUDIT_STACK_NAME], "AWS::CloudTrail::Trail")
    assert trail["Properties"]["TrailName"] == DOWNLOAD_TRAIL_NAME


def test_the_statements_documented_for_an_existing_key_are_those_of_the_created_key(
    created_key_app: SynthesizedApp,
) -> None:
    # docs/existing-key-policy.json is what a user pastes into their key's policy: it must never drift.
    placeholders = {
        "${AWS::Partition}": "aws",
        "${AWS::Region}": "<region>",
        "${AWS::AccountId}": "<account>",
        "${AWS::URLSuffix}": "amazonaws.com",
    }
    created = []
    for sid, statement in key_policy(created_key_app).items():
        if sid == "KeyAdministration":
            continue
        text = json.dumps(rendered(statement))
        for token, placeholder in placeholders.items():
            text = text.replace(token, placeholder)
        created.append(json.loads(text))
    documented = json.loads(EXISTING_KEY_POLICY.read_text())
    assert documented == created
    readme = (REPO_ROOT / "README.md").read_text()
    assert "docs/existing-key-policy.json" in readme
    assert [sid for sid in (s["Sid"] for s in documented) if f"`{sid}`" not in readme] == []


# --- kmsKey="" (default) ---------------------------------------------------------------------------------------------


def test_default_keeps_aws_managed_encryption(default_app: SynthesizedApp) -> None:
    assert KEY_STACK_NAME not in default_app.templates
    for stack, name, resource_type, reference in encrypted_resources(default_app):
        if resource_type == "AWS::SNS::Topic":
            # CloudWatch cannot publish to a topic under the AWS managed SNS key: the topic has its own key.
            assert set(reference) == {"Fn::GetAtt"}, (stack, name)
            assert reference["Fn::GetAtt"][0].startswith("AlarmTopicKey"), (stack, name)
        else:
            assert reference is None, (stack, name)
    for stack in (S3_AUDIT_STACK_NAME, MINIO_RELAY_STACK_NAME):
        for queue in resources_of_type(default_app.templates[stack], "AWS::SQS::Queue").values():
            assert queue["Properties"]["SqsManagedSseEnabled"] is True
        for owner, statement in policy_statements(default_app.templates[stack]):
            assert not [a for a in as_list(statement["Action"]) if a.startswith("kms:")], owner
    trail = only_resource(default_app.templates[S3_AUDIT_STACK_NAME], "AWS::CloudTrail::Trail")
    # Named with and without a key: the log bucket policy binds CloudTrail to exactly this trail's ARN.
    assert trail["Properties"]["TrailName"] == DOWNLOAD_TRAIL_NAME


def test_default_skips_the_customer_managed_key_checks_saying_why(default_app: SynthesizedApp) -> None:
    skipped = 0
    for stack, template in default_app.templates.items():
        for resource_type, (_path, check) in KEY_PROPERTY.items():
            if check is None:
                continue
            for name, body in resources_of_type(template, resource_type).items():
                reason = checkov_skips(body).get(check, "")
                assert reason.endswith(f"{AWS_MANAGED_BY_CHOICE}."), (stack, name, check)
                assert len(reason) > len(AWS_MANAGED_BY_CHOICE) + 10, "the reason says what encrypts it instead"
                skipped += 1
    assert skipped >= sum(count for t, count in MINIMUM_COUNTS.items() if t != "AWS::SNS::Topic")


def test_access_log_bucket_stays_sse_s3_whatever_the_key(created_key_app: SynthesizedApp) -> None:
    # S3 server access log delivery cannot write to an SSE-KMS bucket; CloudTrail encrypts each log file itself.
    for name, bucket in resources_of_type(created_key_app.templates[S3_AUDIT_STACK_NAME], "AWS::S3::Bucket").items():
        rule = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}, name
    assert CREDENTIALS_STACK_NAME in created_key_app.templates
