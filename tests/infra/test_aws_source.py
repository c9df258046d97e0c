"""The ``awsSource`` context: cloudtrail (default), access-logs and both, synthesized with cdk-nag on."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.config import AuditConfig, ConfigError
from infra.constants import S3_AUDIT_STACK_NAME
from tests.infra.synth import SynthesizedApp, as_list, policy_statements, render, resources_of_type, synthesize

Template = Mapping[str, Any]
EXISTING = "stac-assets-existing"


@pytest.fixture(scope="module")
def apps(module_tmp: Path) -> dict[str, SynthesizedApp]:
    """One app per mode (cdk-nag runs in each synthesis: an unacknowledged finding fails it), and one with an
    existing asset bucket in access-logs mode."""
    return {
        mode: synthesize(module_tmp / mode, enableMinioRelay=False, awsSource=mode)
        for mode in ("cloudtrail", "access-logs", "both")
    } | {
        "existing": synthesize(
            module_tmp / "existing", enableMinioRelay=False, awsSource="access-logs", assetBuckets=[EXISTING]
        )
    }


def template(apps: dict[str, SynthesizedApp], mode: str) -> Template:
    return apps[mode].templates[S3_AUDIT_STACK_NAME]


def notification_prefixes(tpl: Template) -> list[str]:
    prefixes = []
    for notifications in resources_of_type(tpl, "Custom::S3BucketNotifications").values():
        for queue in notifications["Properties"]["NotificationConfiguration"].get("QueueConfigurations", []):
            rules = queue["Filter"]["Key"]["FilterRules"]
            prefixes += [rule["Value"] for rule in rules if rule["Name"] == "prefix"]
    return sorted(prefixes)


@pytest.mark.parametrize(("mode", "trails"), [("cloudtrail", 1), ("access-logs", 0), ("both", 1)])
def test_a_trail_only_when_cloudtrail_is_a_source(apps: dict[str, SynthesizedApp], mode: str, trails: int) -> None:
    assert len(resources_of_type(template(apps, mode), "AWS::CloudTrail::Trail")) == trails


@pytest.mark.parametrize(
    ("mode", "prefixes"),
    [("cloudtrail", ["AWSLogs/"]), ("access-logs", ["access-logs/"]), ("both", ["AWSLogs/", "access-logs/"])],
)
def test_each_source_notifies_the_log_file_queue(
    apps: dict[str, SynthesizedApp], mode: str, prefixes: list[str]
) -> None:
    assert notification_prefixes(template(apps, mode)) == prefixes


def asset_bucket_logging(tpl: Template) -> Mapping[str, Any]:
    (bucket,) = [b for name, b in resources_of_type(tpl, "AWS::S3::Bucket").items() if name.startswith("AssetBucket")]
    logging: Mapping[str, Any] = bucket["Properties"]["LoggingConfiguration"]
    return logging


@pytest.mark.parametrize("mode", ["access-logs", "both"])
def test_asset_bucket_logs_to_its_access_log_bucket_partitioned_by_date(
    apps: dict[str, SynthesizedApp], mode: str
) -> None:
    logging = asset_bucket_logging(template(apps, mode))

    assert logging["DestinationBucketName"] == {"Ref": _logical("AssetAccessLogBucket", template(apps, mode))}
    assert logging["LogFilePrefix"] == "access-logs/"
    assert logging["TargetObjectKeyFormat"] == {"PartitionedPrefix": {"PartitionDateSource": "EventTime"}}


def _logical(prefix: str, tpl: Template) -> str:
    (name,) = [name for name in resources_of_type(tpl, "AWS::S3::Bucket") if name.startswith(prefix)]
    return name


def test_access_log_bucket_is_sse_s3_expires_like_trail_logs_and_admits_only_the_asset_bucket(
    apps: dict[str, SynthesizedApp],
) -> None:
    tpl = template(apps, "access-logs")
    name = _logical("AssetAccessLogBucket", tpl)
    bucket = resources_of_type(tpl, "AWS::S3::Bucket")[name]["Properties"]
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 365
    (policy,) = [
        p
        for p in resources_of_type(tpl, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": name}
    ]
    logging = [
        s
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Principal") == {"Service": "logging.s3.amazonaws.com"}
    ]
    assert logging
    for statement in logging:
        conditions = json.dumps(statement["Condition"])
        assert "aws:SourceArn" in conditions
        assert "aws:SourceAccount" in conditions


def test_function_reads_only_the_prefixes_of_its_sources(apps: dict[str, SynthesizedApp]) -> None:
    def readable(mode: str) -> str:
        return " ".join(
            render(resource)
            for _, statement in policy_statements(template(apps, mode))
            if "s3:GetObject" in json.dumps(statement.get("Action"))
            for resource in as_list(statement["Resource"])
        )

    assert "access-logs/*" in readable("access-logs")
    assert "AWSLogs/*" not in readable("access-logs")
    assert "AWSLogs/*" in readable("cloudtrail")
    assert "access-logs/*" not in readable("cloudtrail")
    assert "AWSLogs/*" in readable("both")
    assert "access-logs/*" in readable("both")


def test_existing_asset_buckets_get_a_policy_and_the_exact_command(apps: dict[str, SynthesizedApp]) -> None:
    tpl = template(apps, "existing")
    statements = [s for _, s in policy_statements(tpl) if s.get("Sid") == "S3ServerAccessLogsFromAssetBuckets"]
    policies = resources_of_type(tpl, "AWS::S3::BucketPolicy")
    text = json.dumps(policies)
    assert "S3ServerAccessLogsFromAssetBuckets" in text
    assert EXISTING in text
    command = render(tpl["Outputs"]["EnableAccessLogs0"]["Value"])
    assert f"aws s3api put-bucket-logging --bucket {EXISTING}" in command
    assert '"TargetPrefix":"access-logs/"' in command
    assert '"PartitionDateSource":"EventTime"' in command
    assert statements == [] or all(s["Principal"] == {"Service": "logging.s3.amazonaws.com"} for s in statements)


@pytest.mark.parametrize(("mode", "alarm"), [("cloudtrail", "TrailSilent"), ("access-logs", "AccessLogsSilent")])
def test_the_silent_source_alarm_fits_the_mode(apps: dict[str, SynthesizedApp], mode: str, alarm: str) -> None:
    alarms = {
        name: value["Properties"]
        for name, value in resources_of_type(template(apps, mode), "AWS::CloudWatch::Alarm").items()
    }
    matching = [props for name, props in alarms.items() if alarm in name]
    other = "AccessLogsSilent" if alarm == "TrailSilent" else "TrailSilent"
    assert len(matching) == 1
    assert not [name for name in alarms if other in name]
    if mode == "access-logs":
        assert matching[0]["EvaluationPeriods"] == 24


def test_a_wrong_aws_source_stops_synthesis_with_one_sentence() -> None:
    with pytest.raises(ConfigError, match='Context key "awsSource" must be one of "cloudtrail", "access-logs", "both"'):
        AuditConfig.from_context(lambda key: "kinesis" if key == "awsSource" else None)
