"""cdk-nag AwsSolutions: every configuration synthesizes with no unacknowledged finding, and the check is live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

from tests.infra.synth import IMPORTED_SECRET_ARN, synthesize

WEBHOOK_SECRET_ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:ogc-audit/webhook-token-Xy12Ab"

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "s3-audit-only": {"enableMinioRelay": "false"},
    "minio-relay-only": {"enableS3Audit": "false"},
    "existing-buckets-and-secrets": {
        "assetBuckets": ["stac-assets-a", "stac-assets-b"],
        "clientCredentialsSecretArn": IMPORTED_SECRET_ARN,
        "webhookTokenSecretArn": WEBHOOK_SECRET_ARN,
    },
    "alarm-email": {"alarmEmail": "ops@example.org"},
    "kms-create": {"kmsKey": "create"},
    "kms-create-minio-only": {"kmsKey": "create", "enableS3Audit": "false"},
    "kms-existing-key": {"kmsKey": "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
    # Every writer control: both sources, the event path, a break-glass role, the webhook's addresses and WAF.
    "writers": {
        "awsSource": "both",
        "eventBridge": "true",
        "breakGlassRoleArn": "arn:aws:iam::123456789012:role/ops/break-glass",
        "trailAccountIds": "444455556666",
        "minioSourceCidrs": "203.0.113.0/24,198.51.100.7/32",
        "webhookWaf": "true",
    },
    "waf-without-addresses": {"webhookWaf": "true", "enableS3Audit": "false"},
}


@pytest.mark.parametrize("context", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_synthesis_has_no_unacknowledged_finding(context: dict[str, Any], tmp_path: Path) -> None:
    # app.synth() raises RuntimeError("ValidationFailed ...") on any unacknowledged cdk-nag finding.
    synthesized = synthesize(tmp_path, **context)
    assert synthesized.templates


def test_the_check_is_live_an_unencrypted_bucket_fails_synthesis(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path))
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    s3.Bucket(Stack(app, "Careless"), "PlainBucket")
    with pytest.raises(RuntimeError, match="ValidationFailed") as raised:
        app.synth()
    assert "AwsSolutions-S1" in str(raised.value)
    assert "AwsSolutions-S10" in str(raised.value)
