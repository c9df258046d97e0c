"""Encryption at rest (context ``kmsKey``): the app's customer managed key, its key policy, and the grants.

- ``""``: AWS-managed encryption (SSE-S3, SSE-SQS, AWS owned/managed keys); the customer-managed-key checks of the
  scanner are skipped with that reason (``customer_managed_key_or_skip``).
- ``"create"``: one key for the whole app in its own stack, ``OgcAuditKey``. The other stacks import it by ARN
  (a CloudFormation export), and its key policy names no resource of another stack (the trail by its fixed name,
  log groups, alarms and buckets by this account and region), so no stack depends on a flow stack: no cycle, and
  removing a flow never touches the key.
- an existing key ARN: imported the same way; the key policy is the owner's (README lists the statements).

Either way the functions' roles get only the kms actions their calls need (``KeyUse``); the key policy lets the
account's principals use the key only through the services that hold the data (``kms:ViaService``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from aws_cdk import Aws, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import IConstruct

from infra.constants import DOWNLOAD_TRAIL_NAME
from infra.review import skip_check

# Construct id of the imported key in each stack that uses it.
IMPORTED_KEY_ID = "AppKey"

# Key administration, without any cryptographic use, named one by one: AWS's default administrator statement has
# kms:Create*, which includes kms:CreateGrant, and a grant would let its grantee use the key beyond the
# kms:ViaService bound below (DynamoDB's own grants have their own, service-bound statement).
KEY_ADMINISTRATION_ACTIONS = (
    "kms:CreateAlias",
    "kms:UpdateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:EnableKeyRotation",
    "kms:DisableKeyRotation",
    "kms:RotateKeyOnDemand",
    "kms:GetKeyPolicy",
    "kms:PutKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListGrants",
    "kms:ListResourceTags",
    "kms:RevokeGrant",
    "kms:RetireGrant",
    "kms:UpdateKeyDescription",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
)
# What a service does with the key for a principal of the account (read, write, create the resource).
SERVICE_USE_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey")
# Services that hold the app's data under the key and call KMS for the caller. S3: CloudTrail's log files.
KEY_SERVICES = ("sqs", "secretsmanager", "dynamodb")
S3_FLOW_KEY_SERVICES = ("s3",)


class KeyUse:
    """The kms actions a function's role needs for each kind of call (AWS service documentation)."""

    # ReceiveMessage on an encrypted queue, GetSecretValue, GetObject of an SSE-KMS object.
    READ = ("kms:Decrypt",)
    # SendMessage to an encrypted queue: SQS makes a data key, and decrypts it when it reuses it.
    SEND_TO_QUEUE = ("kms:GenerateDataKey", "kms:Decrypt")
    # Reading and writing items of a table under the key.
    TABLE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")


AWS_MANAGED_BY_CHOICE = "AWS-managed encryption by choice; deploy with kmsKey=create for a customer-managed key"


def _service_endpoint(service: str) -> str:
    return f"{service}.{Aws.REGION}.{Aws.URL_SUFFIX}"


def _arn(service: str, resource: str, *, region: str = Aws.REGION) -> str:
    return f"arn:{Aws.PARTITION}:{service}:{region}:{Aws.ACCOUNT_ID}:{resource}"


def download_trail_arn() -> str:
    """The ARN the S3 flow's trail has when a key is configured (the trail is then named ``DOWNLOAD_TRAIL_NAME``)."""
    return _arn("cloudtrail", f"trail/{DOWNLOAD_TRAIL_NAME}")


def key_policy_statements(*, s3_flow: bool, trail: bool, event_bridge: bool = False) -> list[iam.PolicyStatement]:
    """Every statement the app's key needs beside its administration: README lists them for an existing key.

    ``s3_flow``: the S3 audit stack is deployed (S3 notifications to its queue); ``trail``: with a trail
    (awsSource cloudtrail or both), whose log files CloudTrail encrypts; ``event_bridge``: the rule of the
    near-real-time path sends the trail's events to the encrypted event queue.
    """
    account = iam.AccountRootPrincipal()
    services = KEY_SERVICES + (S3_FLOW_KEY_SERVICES if s3_flow else ())
    statements = [
        iam.PolicyStatement(
            sid="UseThroughAppServices",
            principals=[account],
            actions=list(SERVICE_USE_ACTIONS),
            resources=["*"],  # in a key policy "*" means this key
            conditions={
                "StringEquals": {
                    "kms:CallerAccount": Aws.ACCOUNT_ID,
                    "kms:ViaService": [_service_endpoint(service) for service in services],
                }
            },
        ),
        # DynamoDB keeps its table key usable through a grant it creates when the table is created.
        iam.PolicyStatement(
            sid="DynamoDBTableGrants",
            principals=[account],
            actions=["kms:CreateGrant"],
            resources=["*"],
            conditions={
                "StringEquals": {"kms:CallerAccount": Aws.ACCOUNT_ID, "kms:ViaService": _service_endpoint("dynamodb")},
                "Bool": {"kms:GrantIsForAWSResource": "true"},
            },
        ),
        iam.PolicyStatement(
            sid="CloudWatchLogsEncryptLogGroups",
            principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.{Aws.URL_SUFFIX}")],
            actions=["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
            resources=["*"],
            conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": _arn("logs", "log-group:*")}},
        ),
        # Alarms publish to the encrypted alarm topic as the CloudWatch service.
        _service_on_behalf_of_account(
            "CloudWatchAlarmsPublish",
            "cloudwatch",
            ["kms:Decrypt", "kms:GenerateDataKey*"],
            _arn("cloudwatch", "alarm:*"),
        ),
    ]
    if trail:
        statements += _cloudtrail_statements()
    if s3_flow:
        # S3 sends the log buckets' event notifications to the encrypted log-file queue as the S3 service.
        statements.append(
            _service_on_behalf_of_account(
                "S3NotificationsToQueues", "s3", KeyUse.SEND_TO_QUEUE, f"arn:{Aws.PARTITION}:s3:::*"
            )
        )
    if event_bridge:
        # EventBridge enqueues the matched download events into the encrypted event queue as the service.
        statements.append(
            _service_on_behalf_of_account(
                "EventBridgeToEventQueue", "events", KeyUse.SEND_TO_QUEUE, _arn("events", "rule/*")
            )
        )
    return statements


def _service_on_behalf_of_account(
    sid: str, service: str, actions: Sequence[str], source_arn_pattern: str
) -> iam.PolicyStatement:
    """Let the AWS ``service`` use the key for ``actions`` only when it acts for a resource of this account whose
    ARN is like ``source_arn_pattern`` (confused-deputy protection: ``aws:SourceAccount`` and ``aws:SourceArn``)."""
    return iam.PolicyStatement(
        sid=sid,
        principals=[iam.ServicePrincipal(f"{service}.amazonaws.com")],
        actions=list(actions),
        resources=["*"],  # in a key policy "*" means this key
        conditions={
            "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
            "ArnLike": {"aws:SourceArn": source_arn_pattern},
        },
    )


def _cloudtrail_statements() -> list[iam.PolicyStatement]:
    trail_arn = download_trail_arn()
    cloudtrail = iam.ServicePrincipal("cloudtrail.amazonaws.com")
    return [
        iam.PolicyStatement(
            sid="CloudTrailEncryptLogFiles",
            principals=[cloudtrail],
            actions=["kms:GenerateDataKey*"],
            resources=["*"],
            conditions={
                "StringEquals": {"aws:SourceArn": trail_arn},
                "StringLike": {"kms:EncryptionContext:aws:cloudtrail:arn": _arn("cloudtrail", "trail/*", region="*")},
            },
        ),
        iam.PolicyStatement(
            sid="CloudTrailDescribeKey",
            principals=[cloudtrail],
            actions=["kms:DescribeKey"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceArn": trail_arn}},
        ),
    ]


def imported_key(scope: IConstruct, key_arn: str | None) -> kms.IKey | None:
    """The app's key as seen from ``scope``'s stack (imported by ARN once per stack), or None without a key."""
    if not key_arn:
        return None
    stack = Stack.of(scope)
    existing = stack.node.try_find_child(IMPORTED_KEY_ID)
    if existing is not None:
        return cast(kms.IKey, existing)
    return kms.Key.from_key_arn(stack, IMPORTED_KEY_ID, key_arn)


def grant_key_use(role: iam.IRole, key: kms.IKey | None, actions: Sequence[str]) -> None:
    """Allow ``role`` exactly ``actions`` on the app's key (nothing without a key)."""
    if key is not None:
        role.add_to_principal_policy(iam.PolicyStatement(actions=list(actions), resources=[key.key_arn]))


def customer_managed_key_or_skip(
    resource: IConstruct, key: kms.IKey | None, check_id: str, aws_managed_encryption: str
) -> None:
    """Without a key, skip the scanner's customer-managed-key check ``check_id`` on ``resource``, saying what
    encrypts it instead (``aws_managed_encryption``); with a key the resource uses it and the check passes."""
    if key is None:
        skip_check(resource, check_id, f"{aws_managed_encryption}. {AWS_MANAGED_BY_CHOICE}.")
