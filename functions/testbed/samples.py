"""Realistic CloudTrail records, S3 server access log lines and MinIO audit entries for the demo, benchmarks and tests.

Shapes follow docs/contracts.md: a presigned GetObject as CloudTrail and MinIO write it, and the
variations the metering rules must tell apart (failed, header-signed, HEAD, PUT, bad ids, ...).
"""

from __future__ import annotations

import gzip
import json
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from minio_relay.routes import WEBHOOK_PATH

# The emulated account (testbed.stack_template.ACCOUNT): the local runs' trail and buckets are this account's, and
# s3_audit meters CloudTrail files of its own account only (TRAIL_ACCOUNT_IDS).
ACCOUNT = "123456789012"
REGION = "ap-south-1"
ASSET_BUCKET = "stac-assets-prod"
MINIO_DEPLOYMENT = "8f3c1f2e-5b7a-4c1d-9e2f-0a1b2c3d4e5f"


class Variant(StrEnum):
    """Kinds of input entry; only PRESIGNED_GET is metered."""

    PRESIGNED_GET = "presigned_get"
    FAILED_403 = "failed_403"
    FAILED_404 = "failed_404"
    HEADER_SIGNED = "header_signed"
    HEAD_OBJECT = "head_object"
    PUT_OBJECT = "put_object"
    MISSING_USER = "missing_user"
    NON_UUID_USER = "non_uuid_user"


@dataclass(frozen=True, slots=True)
class Download:
    """Who fetched what, when and how many bytes: the facts behind one sample entry."""

    user_id: str
    collection_id: str
    item_id: str
    asset: str
    when: datetime
    size: int
    event_id: str

    @property
    def key(self) -> str:
        """Object key of the asset in the bucket."""
        return f"collections/{self.collection_id}/items/{self.item_id}/{self.asset}"


def random_download(rng: random.Random, start: datetime, spread_s: int = 300) -> Download:
    """A plausible download drawn from ``rng`` within ``spread_s`` seconds after ``start``."""
    tile = f"T{rng.randint(10, 60)}{rng.choice('PQRS')}{rng.choice('FGHK')}{rng.choice('PQRS')}"
    return Download(
        user_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        collection_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        item_id=f"S2{rng.choice('AB')}_MSIL2A_20251026T050649_N0511_R019_{tile}",
        asset=rng.choice(["B04.tif", "B08.tif", "TCI.tif", "SCL.tif", "thumbnail.jpg"]),
        when=start + timedelta(seconds=rng.randrange(spread_s), microseconds=rng.randrange(1_000_000)),
        size=rng.choice([16384, 1_048_576, 52_428_800, rng.randrange(1, 200_000_000)]),
        event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    )


def _ids_for(download: Download, variant: Variant) -> dict[str, str]:
    ids = {"userId": download.user_id, "collectionId": download.collection_id, "itemId": download.item_id}
    if variant is Variant.MISSING_USER:
        del ids["userId"]
    elif variant is Variant.NON_UUID_USER:
        ids["userId"] = "user-" + download.user_id[:8]
    return ids


def cloudtrail_record(
    download: Download, variant: Variant = Variant.PRESIGNED_GET, *, float_bytes: bool = False
) -> dict[str, Any]:
    """A CloudTrail S3 data event record as it appears in a log file."""
    presigned = variant is not Variant.HEADER_SIGNED
    event_name = {Variant.HEAD_OBJECT: "HeadObject", Variant.PUT_OBJECT: "PutObject"}.get(variant, "GetObject")
    host = f"{ASSET_BUCKET}.s3.{REGION}.amazonaws.com"
    request: dict[str, Any] = {"bucketName": ASSET_BUCKET, "Host": host, "key": download.key, "x-id": event_name}
    if presigned:
        request |= {
            "X-Amz-Date": download.when.strftime("%Y%m%dT%H%M%SZ"),
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Expires": "3600",
            "X-Amz-SignedHeaders": "host",
            **_ids_for(download, variant),
        }
    size: float | int = float(download.size) if float_bytes else download.size
    record: dict[str, Any] = {
        "eventVersion": "1.11",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAQX2EXAMPLEPRESIGN",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/stac-presigner",
            "accountId": ACCOUNT,
            "accessKeyId": "AKIAQX2EXAMPLE7ZPR3Q",
            "userName": "stac-presigner",
        },
        "eventTime": download.when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "s3.amazonaws.com",
        "eventName": event_name,
        "awsRegion": REGION,
        "sourceIPAddress": "203.0.113.24",
        "userAgent": "python-requests/2.32.3",
        "requestParameters": request,
        "responseElements": None,
        "additionalEventData": {
            "SignatureVersion": "SigV4",
            "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": 0 if event_name != "PutObject" else download.size,
            "AuthenticationMethod": "QueryString" if presigned else "AuthHeader",
            "x-amz-id-2": "Xq3Zl3v2k0N8yJ6b9mEw1u9p2F4Zc8Qm7Rk2o4Vt0Lp6Yx1Nh5Gs3Dd8Wa2Eb7Cf9Hj4Ik6Ll0=",
            "bytesTransferredOut": size if event_name == "GetObject" else 0,
        },
        "requestID": s3_request_id(download),
        "eventID": download.event_id,
        "readOnly": event_name != "PutObject",
        "resources": [
            {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{ASSET_BUCKET}/{download.key}"},
            {"accountId": ACCOUNT, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{ASSET_BUCKET}"},
        ],
        "eventType": "AwsApiCall",
        "managementEvent": False,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Data",
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": host,
        },
    }
    if variant in (Variant.FAILED_403, Variant.FAILED_404):
        record["errorCode"] = "AccessDenied" if variant is Variant.FAILED_403 else "NoSuchKey"
        record["errorMessage"] = (
            "Access Denied" if variant is Variant.FAILED_403 else "The specified key does not exist."
        )
        record["additionalEventData"]["bytesTransferredOut"] = 243
    return record


def cloudtrail_log_file(records: Iterable[object]) -> bytes:
    """The bytes of a CloudTrail log file holding ``records``: one ``{"Records": [...]}`` document, gzipped."""
    return gzip.compress(json.dumps({"Records": list(records)}).encode())


def eventbridge_api_call(download: Download, variant: Variant = Variant.PRESIGNED_GET) -> dict[str, Any]:
    """The EventBridge event ("AWS API Call via CloudTrail", default bus) that carries ``cloudtrail_record(download)``
    to a rule's target; EventBridge writes byte counts as floats."""
    record = cloudtrail_record(download, variant, float_bytes=True)
    return {
        "version": "0",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"eventbridge:{download.event_id}")),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": record["eventTime"],
        "region": REGION,
        "resources": [],
        "detail": record,
    }


def s3_request_id(download: Download) -> str:
    """The S3 request ID of a download: CloudTrail's ``requestID`` and the access log's Request ID agree on it."""
    return download.event_id[:16].replace("-", "").upper()


_ACCESS_LOG_OPERATION = {
    Variant.HEAD_OBJECT: ("REST.HEAD.OBJECT", "HEAD"),
    Variant.PUT_OBJECT: ("REST.PUT.OBJECT", "PUT"),
}
_ACCESS_LOG_STATUS = {Variant.FAILED_403: ("403", "AccessDenied"), Variant.FAILED_404: ("404", "NoSuchKey")}


def access_log_line(download: Download, variant: Variant = Variant.PRESIGNED_GET) -> str:
    """The S3 server access log record (with its newline) of the same request as ``cloudtrail_record(download)``."""
    operation, method = _ACCESS_LOG_OPERATION.get(variant, ("REST.GET.OBJECT", "GET"))
    status, error = _ACCESS_LOG_STATUS.get(variant, ("200", "-"))
    presigned = variant is not Variant.HEADER_SIGNED
    query = [f"{name}={quote(value, safe='')}" for name, value in _ids_for(download, variant).items()]
    if presigned:
        credential = quote(f"AKIAQX2EXAMPLE7ZPR3Q/{download.when:%Y%m%d}/{REGION}/s3/aws4_request", safe="")
        query = [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            f"X-Amz-Credential={credential}",
            f"X-Amz-Date={download.when:%Y%m%dT%H%M%SZ}",
            "X-Amz-Expires=3600",
            "X-Amz-SignedHeaders=host",
            *query,
            "x-id=GetObject",
            f"X-Amz-Signature={(download.event_id.replace('-', '') * 4)[:64]}",
        ]
    sent = str(download.size) if status == "200" and method == "GET" else ("243" if status == "403" else "-")
    fields = [
        "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be",
        ASSET_BUCKET,
        download.when.strftime("[%d/%b/%Y:%H:%M:%S +0000]"),
        "203.0.113.24",
        f"arn:aws:iam::{ACCOUNT}:user/stac-presigner",
        s3_request_id(download),
        operation,
        download.key,
        f'"{method} /{download.key}?{"&".join(query)} HTTP/1.1"',
        status,
        error,
        sent,
        str(download.size),
        "41",
        "40",
        '"-"',
        '"python-requests/2.32.3"',
        "-",
        "Xq3Zl3v2k0N8yJ6b9mEw1u9p2F4Zc8Qm7Rk2o4Vt0Lp6Yx1Nh5Gs3Dd8Wa2Eb7Cf9Hj4Ik6Ll0=",
        "SigV4",
        "TLS_AES_128_GCM_SHA256",
        "QueryString" if presigned else "AuthHeader",
        f"{ASSET_BUCKET}.s3.{REGION}.amazonaws.com",
        "TLSv1.3",
        "-",
        "-",
    ]
    return " ".join(fields) + "\n"


def access_log_key(when: datetime, suffix: str, prefix: str = "access-logs/") -> str:
    """Where S3 writes an access-log object for ``when`` with date-based partitioning (EventTime)."""
    return f"{prefix}{ACCOUNT}/{REGION}/{ASSET_BUCKET}/{when:%Y/%m/%d}/{when:%Y-%m-%d-%H-%M-%S}-{suffix}"


def cloudtrail_log_key(when: datetime, suffix: str, account: str = ACCOUNT, region: str = REGION) -> str:
    """Where CloudTrail writes a log file for ``when``."""
    return (
        f"AWSLogs/{account}/CloudTrail/{region}/{when:%Y/%m/%d}/"
        f"{account}_CloudTrail_{region}_{when:%Y%m%dT%H%MZ}_{suffix}.json.gz"
    )


_MINIO_STATUS = {
    Variant.FAILED_403: (403, "Forbidden"),
    Variant.FAILED_404: (404, "Not Found"),
}


def minio_entry(
    download: Download, variant: Variant = Variant.PRESIGNED_GET, *, legacy: bool = False
) -> dict[str, Any]:
    """A MinIO audit log entry (current release, or a pre-2021-10 one without ``rx``/``tx``)."""
    api_name = {Variant.HEAD_OBJECT: "HeadObject", Variant.PUT_OBJECT: "PutObject"}.get(variant, "GetObject")
    status_code, status = _MINIO_STATUS.get(variant, (200, "OK"))
    sent = download.size if status_code == 200 and api_name == "GetObject" else 0
    query: dict[str, str] = {}
    if variant is not Variant.HEADER_SIGNED:
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"stacpresigner/{download.when:%Y%m%d}/us-east-1/s3/aws4_request",
            "X-Amz-Date": download.when.strftime("%Y%m%dT%H%M%SZ"),
            "X-Amz-Expires": "3600",
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": uuid.UUID(download.event_id).hex * 2,
            **_ids_for(download, variant),
        }
    api: dict[str, Any] = {
        "name": api_name,
        "bucket": "stac-assets",
        "object": download.key,
        "status": status,
        "statusCode": status_code,
        "timeToResponse": "35.104ms",
    }
    if not legacy:
        api |= {"rx": 412, "tx": sent, "txHeaders": 498, "timeToResponseInNS": "35104000"}
    request_id = uuid.UUID(download.event_id).hex[:16].upper()
    entry: dict[str, Any] = {
        "version": "1",
        "deploymentid": MINIO_DEPLOYMENT,
        "time": download.when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "321Z",
        "trigger": "incoming",
        "api": api,
        "remotehost": "10.0.3.17",
        "requestID": request_id,
        "userAgent": "python-requests/2.32.3",
        "requestPath": f"/stac-assets/{download.key}",
        "requestHost": "minio.example.org:9000",
        "requestQuery": query,
        "requestHeader": {"Accept": "*/*", "User-Agent": "python-requests/2.32.3"},
        "responseHeader": {"Content-Length": str(sent), "Server": "MinIO", "X-Amz-Request-Id": request_id},
        "tags": {},
        "accessKey": "stacpresigner",
        "parentUser": "",
    }
    if variant is Variant.HEADER_SIGNED:
        entry["requestHeader"]["Authorization"] = "AWS4-HMAC-SHA256 Credential=stacpresigner/..."
    return entry


def minio_body(entries: Iterable[Mapping[str, Any]]) -> bytes:
    """An audit webhook body as MinIO's ``audit_webhook`` sends a batch: one JSON entry per line."""
    return b"".join(json.dumps(entry).encode() + b"\n" for entry in entries)


def webhook_post(body: bytes, authorization: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """MinIO's POST of ``body`` to the webhook, as API Gateway's proxy integration hands it to the function (MinIO
    sends NDJSON without a Content-Type; ``headers`` replace the default User-Agent and version)."""
    default = {"User-Agent": "MinIO (linux; amd64)", "x-minio-version": "RELEASE.2025-09-07T16-13-09Z"}
    return {
        "resource": WEBHOOK_PATH,
        "path": WEBHOOK_PATH,
        "httpMethod": "POST",
        "headers": {"Authorization": authorization, **(default if headers is None else headers)},
        "body": body.decode(),
        "isBase64Encoded": False,
    }


def utc(text: str) -> datetime:
    """A UTC datetime from ``YYYY-MM-DDTHH:MM:SS``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
