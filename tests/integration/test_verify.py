"""``ogc-audit verify`` against the emulator, with the log delivery played by the test: moto server S3 (asset
bucket, log bucket), a real presigned download, the real s3_audit handler, a ledger and the reference OGC RS."""

from __future__ import annotations

import copy
import http.server
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config

from metering.ledger import SqliteLedger
from ogc_audit.verify import Marker, Waiting, download, places_for, print_report, verify
from s3_audit.handler import handler
from testbed.local_aws import local_aws
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import cloudtrail_log_file
from tests.events import event_bytes, load_event
from tests.helpers import client_for
from tests.integration.test_s3_audit_handler import CONTEXT, use

ASSETS = "verify-assets"
LOGS = "verify-trail-logs"
ACCESS_LOGS = "verify-access-logs"
OLD_TRAIL_KEY = (
    "AWSLogs/111122223333/CloudTrail/ap-south-1/2025/10/27/111122223333_CloudTrail_ap-south-1_20251027T1015Z_v.json.gz"
)


def trail_key() -> str:
    """Where CloudTrail writes a log file now (after the download)."""
    now = datetime.now(UTC)
    return (
        f"AWSLogs/111122223333/CloudTrail/ap-south-1/{now:%Y/%m/%d}/"
        f"111122223333_CloudTrail_ap-south-1_{now:%Y%m%dT%H%MZ}_v.json.gz"
    )


def access_key() -> str:
    """Where S3 log delivery writes an access log now, date-partitioned under the stack's prefix."""
    now = datetime.now(UTC)
    return f"access-logs/111122223333/ap-south-1/{ASSETS}/{now:%Y/%m/%d}/{now:%Y-%m-%d-%H-%M-%S}-7F48A46E2E37A2F9"


FAST = Waiting(cloudtrail_s=3, access_logs_s=3, delivery_s=3, poll_s=0.1)


@pytest.fixture
def s3() -> Iterator[Any]:
    # The operator runs verify, no function role: and moto's IAM check cannot read a presigned URL's query-string
    # signature (it looks for an Authorization header: KeyError, HTTP 500), so this emulator does not enforce IAM.
    with local_aws(enforce_iam=False):
        client = boto3.client("s3", config=Config(signature_version="s3v4"))
        for bucket in (ASSETS, LOGS, ACCESS_LOGS):
            client.create_bucket(Bucket=bucket)
        yield client


def trail_file(marker: Marker) -> bytes:
    """CloudTrail's record of the marker request, without the custom parameters (CloudTrail filtering them)."""
    record = copy.deepcopy(load_event("cloudtrail/presigned_get"))
    record["requestID"] = marker.request_id
    params = record["requestParameters"]
    params["bucketName"], params["key"] = marker.bucket, marker.key
    for name in ("userId", "collectionId", "itemId"):
        del params[name]
    return cloudtrail_log_file([record])


def access_log(marker: Marker) -> bytes:
    """The access log's record of the marker request: the whole query string, the same request ID."""
    line = event_bytes("access_log/presigned_get.log").decode()
    line = line.replace("7KQ4B1S9XW2M3N5P", marker.request_id).replace(" stac-assets-prod ", f" {marker.bucket} ")
    line = line.replace("3f1c9a52-7a4e-4c1e-9f0b-2d5f8e6a1b7c", marker.user_id)
    line = line.replace("8b2d4e6f-1a3c-4b5d-8e7f-9a0b1c2d3e4f", marker.collection_id)
    return line.replace("S2B_MSIL2A_20251026T050649_N0511_R019_T43PGQ", marker.item_id).encode()


def notification(bucket: str, key: str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("envelopes/s3_notification"))
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    event["Records"][0]["s3"]["object"]["key"] = key
    return event


def run(s3: Any, source: str, ledger: SqliteLedger, deliver: Any) -> tuple[int, str]:
    out = io.StringIO()
    report = verify(
        s3,
        asset_bucket=ASSETS,
        places=places_for(source, LOGS, ACCESS_LOGS, FAST),
        ledger=ledger,
        waiting=FAST,
        out=out,
        on_downloaded=deliver,
    )
    status = print_report(report, out)
    return status, out.getvalue()


@pytest.fixture
def function(monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs) -> SqliteLedger:
    """The s3_audit handler wired to the emulator's S3, the reference OGC RS and a ledger verify reads too."""
    ledger = SqliteLedger()
    use(monkeypatch, s3, client_for(reference_rs), ledger)
    return ledger


def test_both_sources_name_cloudtrail_dropping_the_ids(
    s3: Any, function: SqliteLedger, reference_rs: ReferenceOgcRs
) -> None:
    def deliver(marker: Marker) -> None:  # plays CloudTrail and S3 log delivery, then S3's notifications
        trail, access = trail_key(), access_key()
        s3.put_object(Bucket=LOGS, Key=trail, Body=trail_file(marker))
        s3.put_object(Bucket=ACCESS_LOGS, Key=access, Body=access_log(marker))
        handler(notification(LOGS, trail), CONTEXT)
        handler(notification(ACCESS_LOGS, access), CONTEXT)

    status, text = run(s3, "both", function, deliver)

    assert status == 1, text
    assert "ok     presigned download: HTTP 200" in text
    assert "FAILED cloudtrail ids: userId, collectionId, itemId recorded: no; rules: missing_user_id" in text
    assert "ok     access-logs ids: userId, collectionId, itemId recorded: yes; rules: metered" in text
    assert "ok     delivery: ledger key s3-request:verify-assets/" in text
    assert text.endswith(
        "verify: failed at step 'cloudtrail ids': CloudTrail dropped the custom parameters: "
        "deploy with awsSource=access-logs\n"
    )
    (stored,) = reference_rs.stored_lines()
    assert "|ogc-audit-verify-" in stored


def test_access_logs_alone_pass_every_step(s3: Any, function: SqliteLedger) -> None:
    def deliver(marker: Marker) -> None:
        access = access_key()
        s3.put_object(Bucket=ACCESS_LOGS, Key=access, Body=access_log(marker))
        handler(notification(ACCESS_LOGS, access), CONTEXT)

    status, text = run(s3, "access-logs", function, deliver)

    assert status == 0, text
    assert "verify: every step passed" in text
    # The marker is gone once downloaded: verify leaves nothing in the asset bucket.
    assert "ok     remove marker: s3://verify-assets/ogc-audit-verify/marker.txt deleted" in text
    assert s3.list_objects_v2(Bucket=ASSETS).get("Contents", []) == []


def test_a_record_that_never_arrives_fails_with_progress_and_advice(s3: Any, function: SqliteLedger) -> None:
    status, text = run(s3, "access-logs", function, lambda _marker: None)

    assert status == 1
    assert "waiting for the access-logs record:" in text
    assert "verify: failed at step 'access-logs record': no access-log record of the request arrived" in text


def test_a_record_not_delivered_fails_at_the_delivery_step(s3: Any, function: SqliteLedger) -> None:
    def deliver(marker: Marker) -> None:  # the log arrives but the function never runs
        s3.put_object(Bucket=ACCESS_LOGS, Key=access_key(), Body=access_log(marker))

    status, text = run(s3, "access-logs", function, deliver)

    assert status == 1
    assert "verify: failed at step 'delivery': the record is in the log bucket but no line reached" in text


def test_an_unwritable_asset_bucket_fails_first(s3: Any, function: SqliteLedger) -> None:
    out = io.StringIO()
    report = verify(s3, asset_bucket="no-such-bucket", places=[], ledger=function, waiting=FAST, out=out)

    assert print_report(report, out) == 1
    assert "failed at step 'upload marker'" in out.getvalue()


def test_only_the_folders_of_the_days_since_the_download_are_listed(
    s3: Any, function: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed: list[dict[str, Any]] = []
    paginate = s3.get_paginator("list_objects_v2").paginate

    class Recording:
        def paginate(self, **parameters: Any) -> Any:
            listed.append(parameters)
            return paginate(**parameters)

    monkeypatch.setattr(s3, "get_paginator", lambda name: Recording())

    def deliver(marker: Marker) -> None:  # the record lands in a folder of another day: it is not looked at
        s3.put_object(Bucket=LOGS, Key=OLD_TRAIL_KEY, Body=trail_file(marker))
        for old in range(30):  # what a busy bucket holds from before the download
            s3.put_object(Bucket=LOGS, Key=OLD_TRAIL_KEY.replace("_v.json", f"_{old}.json"), Body=b"{}")

    status, text = run(s3, "cloudtrail", function, deliver)

    assert status == 1
    assert "failed at step 'cloudtrail record'" in text
    assert listed
    today = f"{datetime.now(UTC):%Y/%m/%d}/"
    for parameters in listed:  # folder names only, or one day's folder from the download's time on
        assert parameters.get("Delimiter") == "/" or parameters["Prefix"].endswith(today), parameters
        assert "2025/10/27" not in parameters["Prefix"]


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """Answers /signed with a redirect to /elsewhere, and counts the requests that reach /elsewhere."""

    followed = 0

    def do_GET(self) -> None:
        if self.path.startswith("/elsewhere"):
            type(self).followed += 1
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"marker")
            return
        self.send_response(307)
        self.send_header("Location", "/elsewhere?X-Amz-Signature=copied")
        self.send_header("x-amz-request-id", "REDIRECTED0000001")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_presigned_download_never_follows_a_redirect() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, request_id = download(f"http://127.0.0.1:{server.server_port}/signed?X-Amz-Signature=s")
    finally:
        server.shutdown()
        server.server_close()

    assert (status, request_id) == (307, "REDIRECTED0000001")
    assert _Redirecting.followed == 0
