"""Context parsing: defaults, values as typed with -c, and one sentence naming the key for every wrong value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.config import DEFAULTS, AuditConfig, ConfigError
from infra.secure_defaults import RELIED_ON_FEATURE_FLAGS
from tests.infra.synth import REPO_ROOT, cdk_json_context, synthesize

SECRET_ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:ogc/client-AbCdEf"
KEY_ARN = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def config_from(**overrides: Any) -> AuditConfig:
    context = {**cdk_json_context(), **overrides}
    return AuditConfig.from_context(context.get)


def test_cdk_json_carries_every_default_of_the_code() -> None:
    context = cdk_json_context()
    assert {key: context[key] for key in DEFAULTS} == dict(DEFAULTS)
    # Synthesis must work out of the box, and keep the CLI offline.
    assert json.loads((REPO_ROOT / "cdk.json").read_text())["notices"] is False
    assert context["cli-telemetry"] is False


def test_defaults_apply_when_keys_are_absent() -> None:
    config = AuditConfig.from_context(lambda _key: None)
    assert config == config_from()
    assert config.asset_buckets == ()
    assert config.creates_client_credentials
    assert config.webhook_token_secret_arn == ""
    assert (config.log_retention_days, config.batch_max_lines) == (365, 500)


def test_values_typed_on_the_command_line_are_accepted() -> None:
    config = config_from(
        enableS3Audit="false",
        enableMinioRelay="TRUE",
        logRetentionDays="30",
        batchMaxLines="5000",
        assetBuckets="stac-assets, stac.thumbnails,stac-assets",
        clientCredentialsSecretArn=SECRET_ARN,
        alarmEmail="ops@example.org",
    )
    assert config.enable_s3_audit is False
    assert config.enable_minio_relay is True
    assert config.log_retention_days == 30
    assert config.batch_max_lines == 5000
    assert config.asset_buckets == ("stac-assets", "stac.thumbnails")
    assert not config.creates_client_credentials
    assert config.alarm_email == "ops@example.org"


@pytest.mark.parametrize(
    ("value", "kms_key", "creates", "imported"),
    [
        ("", "", False, ""),
        (" create ", "create", True, ""),
        (KEY_ARN, KEY_ARN, False, KEY_ARN),
        (
            "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            False,
            "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        ),
    ],
)
def test_kms_key_is_empty_create_or_a_key_arn(value: str, kms_key: str, creates: bool, imported: str) -> None:
    config = config_from(kmsKey=value)
    assert (config.kms_key, config.creates_kms_key, config.imported_kms_key_arn) == (kms_key, creates, imported)


def test_asset_buckets_accept_a_json_list_string() -> None:
    assert config_from(assetBuckets='["a-bucket", "b-bucket"]').asset_buckets == ("a-bucket", "b-bucket")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("processApiUrl", "http://ogc.example.org/x", 'Context key "processApiUrl" must be an https URL, got "http://'),
        ("processApiUrl", "", 'Context key "processApiUrl" must be an https URL, got ""'),
        ("authUrl", "ftp://x", 'Context key "authUrl" must be an https URL, got "ftp://x"'),
        ("authUrl", "https://", 'Context key "authUrl" must be an https URL'),
        ("authUrl", 42, 'Context key "authUrl" must be an https URL, got 42'),
        ("authItemId", "", 'Context key "authItemId" must be a non-empty string, got ""'),
        ("authItemType", "  ", 'Context key "authItemType" must be a non-empty string'),
        ("authRole", ["admin"], 'Context key "authRole" must be a non-empty string, got ["admin"]'),
        ("clientCredentialsSecretArn", "my-secret", 'Context key "clientCredentialsSecretArn" must be empty or a'),
        ("clientCredentialsSecretArn", "arn:aws:s3:::bucket", 'Context key "clientCredentialsSecretArn" must be'),
        ("webhookTokenSecretArn", "token", 'Context key "webhookTokenSecretArn" must be empty or a Secrets'),
        ("assetBuckets", "Bad_Bucket", 'Context key "assetBuckets" must list valid S3 bucket names, got "Bad_Bucket"'),
        ("assetBuckets", ["ok-bucket", "ab"], 'Context key "assetBuckets" must list valid S3 bucket names, got "ab"'),
        ("assetBuckets", ["192.168.1.1"], 'Context key "assetBuckets" must list valid S3 bucket names'),
        ("assetBuckets", ["a..b"], 'Context key "assetBuckets" must list valid S3 bucket names'),
        ("assetBuckets", {"name": "x"}, 'Context key "assetBuckets" must be a list of S3 bucket names'),
        ("assetBuckets", "[not json", 'Context key "assetBuckets" must be a list of S3 bucket names'),
        ("enableS3Audit", "yes", 'Context key "enableS3Audit" must be true or false, got "yes"'),
        ("enableMinioRelay", 1, 'Context key "enableMinioRelay" must be true or false, got 1'),
        ("logRetentionDays", -1, 'Context key "logRetentionDays" must be an integer of at least 1, got -1'),
        ("logRetentionDays", 0, 'Context key "logRetentionDays" must be an integer of at least 1, got 0'),
        ("logRetentionDays", "ten", 'Context key "logRetentionDays" must be an integer of at least 1, got "ten"'),
        ("logRetentionDays", 1.5, 'Context key "logRetentionDays" must be an integer of at least 1, got 1.5'),
        ("logRetentionDays", True, 'Context key "logRetentionDays" must be an integer of at least 1, got true'),
        ("batchMaxLines", 0, 'Context key "batchMaxLines" must be an integer from 1 to 5000, got 0'),
        ("batchMaxLines", "5001", 'Context key "batchMaxLines" must be an integer from 1 to 5000, got "5001"'),
        ("alarmEmail", "ops-at-example", 'Context key "alarmEmail" must be empty or an email address'),
        ("kmsKey", "yes", 'Context key "kmsKey" must be empty, "create" or a KMS key ARN (arn:aws:kms:<region>:'),
        ("kmsKey", "alias/ogc-audit", 'Context key "kmsKey" must be empty, "create" or a KMS key ARN'),
        ("kmsKey", f"{KEY_ARN.rsplit(':', 1)[0]}:alias/ogc", 'Context key "kmsKey" must be empty, "create" or a KMS'),
        ("kmsKey", KEY_ARN.replace(":kms:", ":s3:"), 'Context key "kmsKey" must be empty, "create" or a KMS key'),
        ("kmsKey", KEY_ARN[:-1], 'Context key "kmsKey" must be empty, "create" or a KMS key ARN'),
        ("kmsKey", True, 'Context key "kmsKey" must be empty, "create" or a KMS key ARN (arn:aws:kms:<region>'),
        ("eventBridge", "on", 'Context key "eventBridge" must be true or false, got "on"'),
        ("eventBridge", 1, 'Context key "eventBridge" must be true or false, got 1'),
        ("breakGlassRoleArn", "break-glass", 'Context key "breakGlassRoleArn" must be empty or an IAM role ARN'),
        ("breakGlassRoleArn", "arn:aws:iam::123456789012:user/bob", 'Context key "breakGlassRoleArn" must be empty'),
        ("breakGlassRoleArn", 7, 'Context key "breakGlassRoleArn" must be empty or an IAM role ARN'),
        ("trailAccountIds", ["12345"], 'Context key "trailAccountIds" must list 12-digit AWS account ids, got "12345"'),
        ("trailAccountIds", "[1]", 'Context key "trailAccountIds" must list 12-digit AWS account ids, got 1'),
        ("trailAccountIds", {"a": 1}, 'Context key "trailAccountIds" must be a list of 12-digit AWS account ids'),
        ("minioSourceCidrs", ["10.0.0.1/24"], 'Context key "minioSourceCidrs" must list IPv4 CIDR blocks such as'),
        ("minioSourceCidrs", "minio.example.org", 'Context key "minioSourceCidrs" must list IPv4 CIDR blocks'),
        ("minioSourceCidrs", ["0.0.0.0/0"], 'Context key "minioSourceCidrs" must name MinIO\'s addresses, not the'),
        ("minioSourceCidrs", ["2001:db8::/32"], 'Context key "minioSourceCidrs" must list IPv4 CIDR blocks'),
        ("webhookWaf", "maybe", 'Context key "webhookWaf" must be true or false, got "maybe"'),
    ],
)
def test_wrong_value_names_the_key_in_one_sentence(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from(**{key: value})
    text = str(raised.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_writer_and_caller_restrictions_are_read_from_lists_or_the_command_line() -> None:
    config = config_from(
        breakGlassRoleArn=" arn:aws:iam::123456789012:role/ops/break-glass ",
        trailAccountIds="444455556666, 777788889999,444455556666",
        minioSourceCidrs='["203.0.113.0/24", "198.51.100.7/32"]',
        webhookWaf="true",
    )
    assert config.break_glass_role_arn == "arn:aws:iam::123456789012:role/ops/break-glass"
    assert config.trail_account_ids == ("444455556666", "777788889999")
    assert config.minio_source_cidrs == ("203.0.113.0/24", "198.51.100.7/32")
    assert config.webhook_waf is True
    defaults = config_from()
    assert (defaults.break_glass_role_arn, defaults.trail_account_ids, defaults.minio_source_cidrs) == ("", (), ())
    assert defaults.webhook_waf is False


def test_switching_both_flows_off_is_refused() -> None:
    with pytest.raises(ConfigError, match='"enableS3Audit" and "enableMinioRelay" are both false'):
        config_from(enableS3Audit=False, enableMinioRelay="false")


def test_event_bridge_is_off_by_default_and_accepted_from_the_command_line() -> None:
    assert config_from().event_bridge is False
    assert config_from(eventBridge="true").event_bridge is True
    assert config_from(eventBridge=True, awsSource="both").event_bridge is True


def test_event_bridge_without_a_trail_is_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        config_from(eventBridge="true", awsSource="access-logs")
    assert str(raised.value) == (
        'Context key "eventBridge" needs a trail, so "awsSource" must be "cloudtrail" or "both", got "access-logs"'
    )


def test_event_bridge_is_ignored_without_the_s3_flow() -> None:
    config = config_from(eventBridge=True, awsSource="access-logs", enableS3Audit=False)
    assert config.event_bridge is True
    assert not config.enable_s3_audit


def test_app_prints_only_the_sentence_and_exits_1(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({"authUrl": "ftp://x"}),
        "CDK_OUTDIR": str(tmp_path),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert result.stderr == 'Context key "authUrl" must be an https URL, got "ftp://x"\n'
    assert result.stdout == ""


@pytest.mark.parametrize("flag", RELIED_ON_FEATURE_FLAGS)
def test_a_feature_flag_the_templates_rely_on_stops_synthesis_when_changed(flag: str, tmp_path: Path) -> None:
    assert str(cdk_json_context()[flag]).lower() == str(RELIED_ON_FEATURE_FLAGS[flag][0]).lower()
    with pytest.raises(ConfigError) as raised:
        synthesize(tmp_path, **{flag: "off"})
    assert str(raised.value).startswith(f'Feature flag "{flag}" must be ')
    assert str(raised.value).endswith(', got "off"')


def test_a_relied_on_flag_typed_on_the_command_line_is_accepted(tmp_path: Path) -> None:
    flag = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"
    assert synthesize(tmp_path, **{flag: "true"}).templates
