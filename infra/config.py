"""CDK context (cdk.json, overridable with ``-c``) parsed and validated into one typed, frozen object.

A wrong value raises :class:`ConfigError` whose message is one sentence naming the key; ``app.py`` prints
that sentence and exits 1, so a typo never turns into a half-configured deployment.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from metering.settings import DEFAULT_AUTH_ITEM_TYPE, DEFAULT_AUTH_ROLE, DEFAULT_BATCH_MAX_LINES, MAX_BATCH_MAX_LINES

# Defaults used when a key is absent; cdk.json carries the same values (a test keeps them in sync).
DEFAULTS: Mapping[str, Any] = {
    "processApiUrl": "https://ogc.example.org/processes/00000000-0000-4000-8000-000000000000/execution",
    "authUrl": "https://auth.example.org/auth/v1/token",
    "authItemId": "ogc.example.org",
    "authItemType": DEFAULT_AUTH_ITEM_TYPE,
    "authRole": DEFAULT_AUTH_ROLE,
    "clientCredentialsSecretArn": "",
    "assetBuckets": [],
    "enableS3Audit": True,
    "enableMinioRelay": True,
    "logRetentionDays": 365,
    "batchMaxLines": DEFAULT_BATCH_MAX_LINES,
    "alarmEmail": "",
    "webhookTokenSecretArn": "",
    "kmsKey": "",
    "awsSource": "cloudtrail",
    "eventBridge": False,
    "breakGlassRoleArn": "",
    "trailAccountIds": [],
    "minioSourceCidrs": [],
    "webhookWaf": False,
}
# Where the AWS S3 flow learns of downloads: CloudTrail data events, S3 server access logs, or both.
AWS_SOURCES = ("cloudtrail", "access-logs", "both")

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_FORBIDDEN_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_FORBIDDEN_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_SECRET_ARN = re.compile(r"^arn:aws(-[a-z]+)*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$")
# A key ARN, not an alias: IAM grants name the key itself (single-region or multi-Region "mrk-" key ids).
_KMS_KEY_ARN = re.compile(
    r"^arn:aws(-[a-z]+)*:kms:[a-z0-9-]+:\d{12}:key/"
    r"(mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
# An IAM role ARN (with path), e.g. arn:aws:iam::123456789012:role/ops/break-glass.
_ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
_ACCOUNT_ID = re.compile(r"^\d{12}$")
# kmsKey value that makes the app create its own customer managed key.
CREATE_KMS_KEY = "create"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TEXT = re.compile(r"^\S(.*\S)?$")


class ConfigError(ValueError):
    """A context value that cannot be deployed; the message is one sentence naming the key."""


def _describe(value: object) -> str:
    """Render the offending value the way the user typed it."""
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def _fail(key: str, expectation: str, value: object) -> ConfigError:
    return ConfigError(f'Context key "{key}" must be {expectation}, got {_describe(value)}')


def _https_url(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(key, "an https URL", value)
    parts = urlsplit(value.strip())
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value.strip()):
        raise _fail(key, "an https URL", value)
    return value.strip()


def _text(key: str, value: object) -> str:
    if not isinstance(value, str) or not _TEXT.match(value.strip()):
        raise _fail(key, "a non-empty string", value)
    return value.strip()


def _secret_arn(key: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(key, "empty or a Secrets Manager secret ARN", value)
    arn = value.strip()
    if arn and not _SECRET_ARN.match(arn):
        raise _fail(key, "empty or a Secrets Manager secret ARN", value)
    return arn


def _boolean(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    # Values given with -c arrive as strings.
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _fail(key, "true or false", value)


def _integer(key: str, value: object, minimum: int, maximum: int | None) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        number = int(value.strip())
    if number is None or number < minimum or (maximum is not None and number > maximum):
        expectation = (
            f"an integer from {minimum} to {maximum}" if maximum is not None else f"an integer of at least {minimum}"
        )
        raise _fail(key, expectation, value)
    return number


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _bucket_names(key: str, value: object) -> tuple[str, ...]:
    # -c assetBuckets='["a","b"]' and -c assetBuckets=a,b both work.
    names = _string_list(key, value, "a list of S3 bucket names")
    result: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _valid_bucket_name(name.strip()):
            raise ConfigError(f'Context key "{key}" must list valid S3 bucket names, got {_describe(name)}')
        if name.strip() not in result:
            result.append(name.strip())
    return tuple(result)


def _valid_bucket_name(name: str) -> bool:
    return (
        bool(_BUCKET_NAME.match(name))
        and ".." not in name
        and not _is_ip_address(name)
        and not name.startswith(_BUCKET_FORBIDDEN_PREFIXES)
        and not name.endswith(_BUCKET_FORBIDDEN_SUFFIXES)
    )


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _fail(key, "one of " + ", ".join(f'"{choice}"' for choice in choices), value)
    return value


def _email(key: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or (value.strip() and not _EMAIL.match(value.strip())):
        raise _fail(key, "empty or an email address", value)
    return value.strip()


def _kms_key(key: str, value: object) -> str:
    expectation = f'empty, "{CREATE_KMS_KEY}" or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<key id>)'
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(key, expectation, value)
    text = value.strip()
    if text and text != CREATE_KMS_KEY and not _KMS_KEY_ARN.match(text):
        raise _fail(key, expectation, value)
    return text


def _role_arn(key: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or (value.strip() and not _ROLE_ARN.match(value.strip())):
        raise _fail(key, "empty or an IAM role ARN (arn:aws:iam::<account>:role/<name>)", value)
    return value.strip()


def _string_list(key: str, value: object, expectation: str) -> list[object]:
    """A list given as JSON, as ``-c key=a,b`` or as a list: its items, unchecked."""
    if value is None:
        return []
    if isinstance(value, list):
        return list(value)
    if not isinstance(value, str):
        raise _fail(key, expectation, value)
    text = value.strip()
    if not text.startswith("["):
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        raise _fail(key, expectation, value) from None
    if not isinstance(parsed, list):
        raise _fail(key, expectation, value)
    return parsed


def _account_ids(key: str, value: object) -> tuple[str, ...]:
    expectation = "a list of 12-digit AWS account ids"
    result: list[str] = []
    for item in _string_list(key, value, expectation):
        if not isinstance(item, str) or not _ACCOUNT_ID.match(item.strip()):
            raise ConfigError(f'Context key "{key}" must list 12-digit AWS account ids, got {_describe(item)}')
        if item.strip() not in result:
            result.append(item.strip())
    return tuple(result)


def _ipv4_cidrs(key: str, value: object) -> tuple[str, ...]:
    expectation = "a list of IPv4 CIDR blocks"
    result: list[str] = []
    for item in _string_list(key, value, expectation):
        try:
            # strict: 10.0.0.1/24 is a typo for 10.0.0.0/24 or 10.0.0.1/32; API Gateway and WAF want the network.
            network = ipaddress.IPv4Network(item.strip(), strict=True) if isinstance(item, str) else None
        except ValueError:
            network = None
        if network is None:
            raise ConfigError(
                f'Context key "{key}" must list IPv4 CIDR blocks such as 203.0.113.0/24, got {_describe(item)}'
            )
        if network.prefixlen == 0:
            raise ConfigError(f'Context key "{key}" must name MinIO\'s addresses, not the whole internet, got "{item}"')
        if str(network) not in result:
            result.append(str(network))
    return tuple(result)


@dataclass(frozen=True)
class AuditConfig:
    """The deployment's settings, validated; built with :meth:`from_context`."""

    process_api_url: str
    auth_url: str
    auth_item_id: str
    auth_item_type: str
    auth_role: str
    client_credentials_secret_arn: str
    """Empty: the app creates the secret, to be filled in after deployment."""
    asset_buckets: tuple[str, ...]
    """Existing bucket names; empty: the S3 audit stack creates one asset bucket."""
    enable_s3_audit: bool
    enable_minio_relay: bool
    log_retention_days: int
    batch_max_lines: int
    alarm_email: str
    webhook_token_secret_arn: str
    """Empty: the MinIO relay stack creates the token secret with a generated value."""
    kms_key: str
    """Empty: AWS-managed encryption; "create": the app's own customer managed key; otherwise an existing key ARN."""
    aws_source: str = "cloudtrail"
    """``cloudtrail``, ``access-logs`` or ``both``: what feeds the s3_audit function."""
    event_bridge: bool = False
    """True: the trail's GetObject events also reach s3_audit through EventBridge within seconds (needs a trail)."""
    break_glass_role_arn: str = ""
    """Empty: no one but the delivering services may write log objects or send to the queues; otherwise the one IAM
    role that may (repairs, ``ogc-audit redrive``), see docs/security.md."""
    trail_account_ids: tuple[str, ...] = ()
    """Accounts besides this one whose CloudTrail log files (``AWSLogs/[o-id/]<account>/``) s3_audit meters."""
    minio_source_cidrs: tuple[str, ...] = ()
    """Empty: the webhook answers any address; otherwise only these (API Gateway resource policy, WAF when on)."""
    webhook_waf: bool = False
    """True: a WAF web ACL in front of the webhook stage, with a rate-based rule per address."""

    @property
    def uses_cloudtrail(self) -> bool:
        """True when the stack records GetObject data events with a trail."""
        return self.aws_source in {"cloudtrail", "both"}

    @property
    def uses_access_logs(self) -> bool:
        """True when the asset buckets' server access logs feed the function."""
        return self.aws_source in {"access-logs", "both"}

    @classmethod
    def from_context(cls, lookup: Callable[[str], Any]) -> AuditConfig:
        """Read every key with ``lookup`` (e.g. ``app.node.try_get_context``); absent keys take their defaults."""

        def get(key: str) -> Any:
            value = lookup(key)
            return DEFAULTS[key] if value is None else value

        config = cls(
            process_api_url=_https_url("processApiUrl", get("processApiUrl")),
            auth_url=_https_url("authUrl", get("authUrl")),
            auth_item_id=_text("authItemId", get("authItemId")),
            auth_item_type=_text("authItemType", get("authItemType")),
            auth_role=_text("authRole", get("authRole")),
            client_credentials_secret_arn=_secret_arn("clientCredentialsSecretArn", get("clientCredentialsSecretArn")),
            asset_buckets=_bucket_names("assetBuckets", get("assetBuckets")),
            enable_s3_audit=_boolean("enableS3Audit", get("enableS3Audit")),
            enable_minio_relay=_boolean("enableMinioRelay", get("enableMinioRelay")),
            log_retention_days=_integer("logRetentionDays", get("logRetentionDays"), 1, None),
            batch_max_lines=_integer("batchMaxLines", get("batchMaxLines"), 1, MAX_BATCH_MAX_LINES),
            alarm_email=_email("alarmEmail", get("alarmEmail")),
            webhook_token_secret_arn=_secret_arn("webhookTokenSecretArn", get("webhookTokenSecretArn")),
            kms_key=_kms_key("kmsKey", get("kmsKey")),
            aws_source=_choice("awsSource", get("awsSource"), AWS_SOURCES),
            event_bridge=_boolean("eventBridge", get("eventBridge")),
            break_glass_role_arn=_role_arn("breakGlassRoleArn", get("breakGlassRoleArn")),
            trail_account_ids=_account_ids("trailAccountIds", get("trailAccountIds")),
            minio_source_cidrs=_ipv4_cidrs("minioSourceCidrs", get("minioSourceCidrs")),
            webhook_waf=_boolean("webhookWaf", get("webhookWaf")),
        )
        if config.event_bridge and config.enable_s3_audit and not config.uses_cloudtrail:
            # EventBridge receives S3 data events only from a trail that records them.
            raise ConfigError(
                f'Context key "eventBridge" needs a trail, so "awsSource" must be "cloudtrail" or "both", '
                f'got "{config.aws_source}"'
            )
        if not config.enable_s3_audit and not config.enable_minio_relay:
            raise ConfigError(
                'Context keys "enableS3Audit" and "enableMinioRelay" are both false, so there is nothing to deploy'
            )
        return config

    @property
    def creates_client_credentials(self) -> bool:
        """True when no client credentials secret ARN was given and the app creates one."""
        return not self.client_credentials_secret_arn

    @property
    def creates_kms_key(self) -> bool:
        """True when kmsKey is "create": the app deploys its own customer managed key."""
        return self.kms_key == CREATE_KMS_KEY

    @property
    def imported_kms_key_arn(self) -> str:
        """The existing key's ARN when kmsKey names one, else empty."""
        return "" if self.kms_key in ("", CREATE_KMS_KEY) else self.kms_key
