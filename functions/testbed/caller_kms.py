"""AWS services that use a customer managed key in the caller's context, emulated in moto's IAM check.

In AWS, SQS, S3, DynamoDB and Secrets Manager call KMS *on behalf of the caller* when the data is under a customer
managed key: a role allowed ``sqs:ReceiveMessage`` but not ``kms:Decrypt`` on the queue's key gets a KMS
AccessDenied, and so does every message the function would have read. moto never calls KMS for these services, so
the same role reads the queue locally and fails only in the account.

``check_key_use`` runs in moto's IAM check once the call itself is allowed (``local_aws`` installs it): it finds
the customer managed key of the resource the call touches (the queue's ``KmsMasterKeyId``, the table's
``SSESpecification``, the secret's ``KmsKeyId``, the object's SSE-KMS key), and fails the call with AccessDenied
naming the first kms action the service needs for it (``KMS_ACTIONS_OF_CALL``, from the services' documentation)
that the caller's identity policies do not allow on the key's ARN.

Limits: only identity policies are evaluated, as for every other call in moto: key policies and grants are not
(``key_stack``'s policy and its ``kms:ViaService`` conditions are checked by the infra tests, not here). AWS managed
keys (``aws/sqs``, ...) are not checked: their key policies let every principal of the account use them through the
service. Calls absent from the table (PutObject with SSE-KMS, DynamoDB transactions, ...) are not checked: no
function makes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DECRYPT = ("kms:Decrypt",)
# DynamoDB decrypts the table key with the caller's credentials for any item access; for writes the AWS guidance
# on customer managed keys lists kms:Encrypt and kms:GenerateDataKey as well: the emulation takes that stricter
# reading (what ``infra.encryption.KeyUse.TABLE`` grants).
_TABLE_WRITE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")
# The kms actions each call needs on the resource's customer managed key, by the IAM action of the call.
KMS_ACTIONS_OF_CALL: dict[str, tuple[str, ...]] = {
    # SQS producers need a data key, and decrypt it when SQS reuses it (KmsDataKeyReusePeriodSeconds).
    "sqs:SendMessage": ("kms:GenerateDataKey", "kms:Decrypt"),
    "sqs:ReceiveMessage": DECRYPT,
    "s3:GetObject": DECRYPT,
    "secretsmanager:GetSecretValue": DECRYPT,
    "dynamodb:GetItem": DECRYPT,
    "dynamodb:BatchGetItem": DECRYPT,
    "dynamodb:Query": DECRYPT,
    "dynamodb:Scan": DECRYPT,
    "dynamodb:PutItem": _TABLE_WRITE,
    "dynamodb:UpdateItem": _TABLE_WRITE,
    "dynamodb:DeleteItem": _TABLE_WRITE,
    "dynamodb:BatchWriteItem": _TABLE_WRITE,
}


def _queue_key(account: str, region: str, arn: str) -> str | None:
    from moto.sqs.models import sqs_backends

    queue = sqs_backends[account][region].queues.get(arn.rpartition(":")[2])
    return getattr(queue, "kms_master_key_id", None)


def _table_key(account: str, region: str, arn: str) -> str | None:
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[account][region].tables.get(arn.partition(":table/")[2])
    sse = (table.sse_specification if table else None) or {}
    return sse.get("KMSMasterKeyId") if sse.get("Enabled") and sse.get("SSEType") == "KMS" else None


def _secret_key(account: str, region: str, arn: str) -> str | None:
    from moto.secretsmanager.models import secretsmanager_backends

    secret = secretsmanager_backends[account][region].secrets.get(arn)
    return getattr(secret, "kms_key_id", None)


def _object_key(account: str, region: str, arn: str) -> str | None:
    from moto.s3.models import s3_backends

    bucket, _, name = arn.partition(":::")[2].partition("/")
    try:
        stored = s3_backends[account]["aws"].get_object(bucket, name)
    except Exception:  # no such bucket or object: S3 answers that, not KMS
        return None
    return getattr(stored, "kms_key_id", None) if getattr(stored, "encryption", None) == "aws:kms" else None


_KEY_OF_RESOURCE: dict[str, Callable[[str, str, str], str | None]] = {
    "sqs": _queue_key,
    "dynamodb": _table_key,
    "secretsmanager": _secret_key,
    "s3": _object_key,
}


def customer_key_arn(account: str, region: str, key_id: str) -> str | None:
    """The ARN of the customer managed key ``key_id`` (id, ARN or alias) names; None for an AWS managed key."""
    from moto.kms.models import kms_backends

    try:
        key = kms_backends[account][region].describe_key(key_id)
    except Exception:  # a key moto does not hold: check the caller against the ARN the resource names
        return key_id if key_id.startswith("arn:") else None
    return str(key.arn) if key.key_manager == "CUSTOMER" else None


def kms_actions_missing(
    account: str, region: str, action: str, resource: str, is_allowed: Callable[[str, str], bool]
) -> tuple[str, list[str]]:
    """(key ARN, kms actions ``is_allowed(kms_action, key_arn)`` refuses) of the call ``action`` on ``resource``.

    Empty when the call needs no customer managed key (no such call in the table, no key on the resource).
    """
    needed = KMS_ACTIONS_OF_CALL.get(action)
    if not needed or resource == "*":
        return "", []
    key_id = _KEY_OF_RESOURCE[action.partition(":")[0]](account, region, resource)
    key_arn = customer_key_arn(account, region, key_id) if key_id else None
    if key_arn is None:
        return "", []
    return key_arn, [kms_action for kms_action in needed if not is_allowed(kms_action, key_arn)]


def check_key_use(request: Any, resource: str) -> None:
    """Refuse the call moto's IAM ``request`` allowed on ``resource`` when the caller may not use the resource's
    customer managed key as the service needs to for that call."""
    from moto.core.exceptions import AccessDeniedError
    from moto.iam.access_control import IAMPolicy, PermissionResult, S3IAMRequest
    from moto.s3.exceptions import S3ClientError

    policies = [IAMPolicy(policy) for policy in request._access_key.collect_policies()]

    def is_allowed(kms_action: str, key_arn: str) -> bool:
        results = {policy.is_action_permitted(kms_action, key_arn) for policy in policies}
        return PermissionResult.PERMITTED in results and PermissionResult.DENIED not in results

    key_arn, missing = kms_actions_missing(request.account_id, request._region, request._action, resource, is_allowed)
    if missing:
        # AWS passes KMS's refusal on: "<caller> is not authorized to perform: kms:... on resource: <key>".
        refused = f"{missing[0]} on resource: {key_arn} (needed by {request._action})"
        if isinstance(request, S3IAMRequest):  # S3's own error shape
            raise S3ClientError(
                "AccessDenied", f"User: {request._access_key.arn} is not authorized to perform: {refused}"
            )
        raise AccessDeniedError(user_arn=request._access_key.arn, action=refused)
