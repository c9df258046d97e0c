"""The source of a log object is chosen from the bucket it arrived in as well as its name (registry.LogOrigins):
a CloudTrail-named key in the access-log bucket is refused, and the reverse, and a CloudTrail file of an account
that is neither this one nor a configured one."""

from __future__ import annotations

import pytest

from metering import env_names
from s3_audit.envelopes import LogFileRef, SkippedInput, SkipReason, classify_key, work_in_event
from s3_audit.sources import access_log, cloudtrail
from s3_audit.sources.registry import ANYWHERE, LogOrigins, recognise

THIS_ACCOUNT = "123456789012"
ORG_MEMBER = "444455556666"
TRAIL_BUCKET = "ogcaudits3-logbucket"
ACCESS_LOG_BUCKET = "ogcaudits3-assetaccesslogbucket"
TRAIL_KEY = (
    f"AWSLogs/{THIS_ACCOUNT}/CloudTrail/ap-south-1/2025/10/27/"
    f"{THIS_ACCOUNT}_CloudTrail_ap-south-1_20251027T1015Z_Ab12Cd34Ef56Gh78.json.gz"
)
ACCESS_LOG_KEY = f"access-logs/{THIS_ACCOUNT}/ap-south-1/stac-assets/2025/10/27/2025-10-27-10-15-42-7F48A46E2E37A2F9"
ENVIRONMENT = {
    env_names.CLOUDTRAIL_LOG_BUCKET: TRAIL_BUCKET,
    env_names.ACCESS_LOG_BUCKET: ACCESS_LOG_BUCKET,
    env_names.TRAIL_ACCOUNT_IDS: f"{THIS_ACCOUNT},{ORG_MEMBER}",
}
ORIGINS = LogOrigins.from_environment(ENVIRONMENT)


def test_origins_are_read_from_the_stack_environment() -> None:
    assert (
        LogOrigins(
            {TRAIL_BUCKET: cloudtrail.NAME, ACCESS_LOG_BUCKET: access_log.NAME}, frozenset({THIS_ACCOUNT, ORG_MEMBER})
        )
        == ORIGINS
    )
    assert LogOrigins.from_environment({}) == ANYWHERE


def test_each_bucket_yields_its_own_source() -> None:
    assert classify_key(TRAIL_BUCKET, TRAIL_KEY, ORIGINS) == LogFileRef(TRAIL_BUCKET, TRAIL_KEY, cloudtrail.NAME)
    assert classify_key(ACCESS_LOG_BUCKET, ACCESS_LOG_KEY, ORIGINS) == LogFileRef(
        ACCESS_LOG_BUCKET, ACCESS_LOG_KEY, access_log.NAME
    )


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        (ACCESS_LOG_BUCKET, TRAIL_KEY),  # a CloudTrail-named key in the access-log bucket
        (TRAIL_BUCKET, ACCESS_LOG_KEY),  # an access-log-named key in the trail's bucket
        ("stac-assets", TRAIL_KEY),  # any other bucket
        ("stac-assets", ACCESS_LOG_KEY),
    ],
    ids=["cloudtrail-key-in-access-log-bucket", "access-log-key-in-trail-bucket", "trail-elsewhere", "log-elsewhere"],
)
def test_a_log_file_where_its_source_never_writes_is_refused(bucket: str, key: str) -> None:
    work = classify_key(bucket, key, ORIGINS)
    assert work == SkippedInput(SkipReason.UNEXPECTED_BUCKET, f"s3://{bucket}/{key}")
    # The same name is read without origins (local runs, ogc-audit extract of an archive).
    assert isinstance(classify_key(bucket, key, ANYWHERE), LogFileRef)


def test_only_the_accepted_accounts_cloudtrail_files_are_read() -> None:
    member = TRAIL_KEY.replace(f"AWSLogs/{THIS_ACCOUNT}/", f"AWSLogs/o-a1b2c3d4e5/{ORG_MEMBER}/")
    assert isinstance(classify_key(TRAIL_BUCKET, member, ORIGINS), LogFileRef)
    for stranger in (
        TRAIL_KEY.replace(f"AWSLogs/{THIS_ACCOUNT}/", "AWSLogs/999988887777/"),
        TRAIL_KEY.replace(f"AWSLogs/{THIS_ACCOUNT}/", "AWSLogs/o-a1b2c3d4e5/999988887777/"),
        TRAIL_KEY.replace(f"AWSLogs/{THIS_ACCOUNT}/", f"AWSLogs/x/{THIS_ACCOUNT}/"),  # no account where one belongs
    ):
        assert recognise(stranger, TRAIL_BUCKET, ORIGINS) == (None, "unexpected_account"), stranger
        assert classify_key(TRAIL_BUCKET, stranger, ORIGINS).reason is SkipReason.UNEXPECTED_ACCOUNT  # type: ignore[union-attr]


def test_digest_and_insight_files_keep_their_own_reasons() -> None:
    digest = TRAIL_KEY.replace("/CloudTrail/", "/CloudTrail-Digest/")
    assert classify_key(ACCESS_LOG_BUCKET, digest, ORIGINS).reason is SkipReason.DIGEST_FILE  # type: ignore[union-attr]


def test_the_function_reads_its_origins_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    notification = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": ACCESS_LOG_BUCKET}, "object": {"key": TRAIL_KEY}},
            }
        ]
    }
    (work,) = work_in_event(notification)
    assert work == SkippedInput(SkipReason.UNEXPECTED_BUCKET, f"s3://{ACCESS_LOG_BUCKET}/{TRAIL_KEY}")
    monkeypatch.delenv(env_names.CLOUDTRAIL_LOG_BUCKET)
    monkeypatch.delenv(env_names.ACCESS_LOG_BUCKET)
    monkeypatch.delenv(env_names.TRAIL_ACCOUNT_IDS)
    assert work_in_event(notification) == [LogFileRef(ACCESS_LOG_BUCKET, TRAIL_KEY, cloudtrail.NAME)]
