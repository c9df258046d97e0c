"""The records the extract benchmarks generate: one mix of kinds, drawn alike for a CloudTrail log file and an
S3 server access log.

The mix: presigned successes, the variants of ``testbed.samples.Variant`` that the metering rules refuse, bucket
listings and re-delivered records. The records themselves are ``testbed.samples``'s; the CloudTrail ones are
made as varied as a real log file. The benchmarks import this module only to generate their files, so that the
processes they measure do not pay for it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Literal, TypeVar

from testbed.samples import ACCOUNT, Download, Variant, access_log_line, cloudtrail_record, random_download, utc

SEED = 20251027
START = utc("2025-10-27T10:00:00")
LIST_BUCKET: Literal["list_bucket"] = "list_bucket"  # a listing of the bucket: no object, nothing to meter
DUPLICATE: Literal["duplicate"] = "duplicate"  # a presigned success delivered once more
ASSUME_ROLE: Literal["assume_role"] = "assume_role"  # an STS event in the same trail (CloudTrail only)
Kind = Variant | Literal["list_bucket", "duplicate", "assume_role"]
Mix = dict[Kind, float]

# Share of each kind of record, drawn in this order; the rest of 1.0 is presigned successes.
MIX: Mix = {
    Variant.FAILED_403: 0.08,
    Variant.FAILED_404: 0.04,
    Variant.HEADER_SIGNED: 0.08,
    Variant.HEAD_OBJECT: 0.07,
    Variant.PUT_OBJECT: 0.05,
    LIST_BUCKET: 0.04,
    Variant.MISSING_USER: 0.05,
    Variant.NON_UUID_USER: 0.04,
    DUPLICATE: 0.03,
}
HELD_OUT: Mix = {
    # The held-out file of issue 20 (50,000 records): 39,355 GetObject (28,063 metered), 6,034 HeadObject,
    # 2,559 PutObject, 1,600 ListObjects, 452 AssumeRole; the GetObjects not metered split among the refusals.
    Variant.HEAD_OBJECT: 0.1207,
    Variant.PUT_OBJECT: 0.0512,
    LIST_BUCKET: 0.032,
    ASSUME_ROLE: 0.009,
    Variant.FAILED_403: 0.05,
    Variant.FAILED_404: 0.03,
    Variant.HEADER_SIGNED: 0.06,
    Variant.MISSING_USER: 0.03,
    Variant.NON_UUID_USER: 0.02,
    DUPLICATE: 0.0358,
}
MIXES: dict[str, Mix] = {"held-out": HELD_OUT, "classic": MIX}
"""The mixes a bench can draw, by name: ``held-out`` is shaped like issue 20's file, ``classic`` the earlier one."""
USER_AGENTS = [
    "python-requests/2.32.3",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
    "GDAL/3.9.2 (curl 8.9.1)",
    "QGIS/34000/Ubuntu 24.04.1 LTS",
]
ID_2_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"

Record = TypeVar("Record")


def draw(rng: random.Random, mix: Mix = MIX) -> Kind:
    """The kind of the next record, from one ``rng.random()``."""
    value = rng.random()
    for kind, share in mix.items():
        if value < share:
            return kind
        value -= share
    return Variant.PRESIGNED_GET


def records(rng: random.Random, count: int, make: Callable[[int, Kind], Record], mix: Mix = MIX) -> Iterator[Record]:
    """``count`` records of kinds drawn from ``mix``, ``make(index, kind)`` building each one but the duplicates.

    A duplicate is an earlier presigned success again, the same object; while there is none yet, a presigned
    success is made in its place.
    """
    issued: list[Record] = []
    for index in range(count):
        kind = draw(rng, mix)
        if kind == DUPLICATE:
            if issued:
                yield issued[rng.randrange(len(issued))]
                continue
            kind = Variant.PRESIGNED_GET
        record = make(index, kind)
        if kind is Variant.PRESIGNED_GET:
            issued.append(record)
        yield record


def access_log_lines(count: int) -> Iterator[str]:
    """The lines (with their newlines) of the access log: ``count`` requests within an hour."""
    rng = random.Random(SEED)

    def line(_index: int, kind: Kind) -> str:
        download = random_download(rng, START, spread_s=3600)
        if kind in (LIST_BUCKET, ASSUME_ROLE):  # an access log has no STS events: a listing stands in
            return access_log_line(download).replace("REST.GET.OBJECT", "REST.GET.BUCKET", 1)
        assert isinstance(kind, Variant)
        return access_log_line(download, kind)

    return records(rng, count, line)


def cloudtrail_records(count: int, mix: Mix = MIX) -> Iterator[dict[str, Any]]:
    """The records of the CloudTrail log file: ``count`` events of about 2 KB each, kinds drawn from ``mix``."""
    rng = random.Random(SEED)
    # The held-out file's records are ~2.0 KB: without the two fields the classic file added for size.
    return records(rng, count, _CloudTrailRecords(rng, lean=mix is not MIX).record, mix)


class _CloudTrailRecords:
    """Realistic CloudTrail S3 data events (about 2 KB each): ``testbed.samples`` records made varied by a seeded
    random generator (who, from where, with what, which object of which item, how large)."""

    def __init__(self, rng: random.Random, *, lean: bool = False) -> None:
        self.rng = rng
        self.lean = lean
        self.users = [self.uuid() for _ in range(400)]
        self.collections = [self.uuid() for _ in range(40)]

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def token(self, length: int, alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") -> str:
        return "".join(self.rng.choices(alphabet, k=length))

    def record(self, index: int, kind: Kind) -> dict[str, Any]:
        """The record at ``index`` of the file, of ``kind``."""
        download = self.download(index)
        variant = kind if isinstance(kind, Variant) else Variant.PRESIGNED_GET
        # EventBridge-style floats for a third of the records: the seed printed them as "16384.0".
        record = cloudtrail_record(download, variant, float_bytes=index % 3 == 0)
        record.update(
            userIdentity=self.user_identity(),
            sourceIPAddress=f"203.0.{self.rng.randrange(256)}.{self.rng.randrange(256)}",
            userAgent=self.rng.choice(USER_AGENTS),
        )
        if self.lean:
            del record["tlsDetails"]
        else:
            record["requestParameters"]["response-content-disposition"] = (
                f'attachment; filename="{download.item_id}.tif"'
            )
        record["additionalEventData"]["x-amz-id-2"] = self.token(76, ID_2_ALPHABET)
        if kind == ASSUME_ROLE:  # the presigning role's session being renewed: an STS management event
            return self.assume_role(record)
        if kind == LIST_BUCKET:  # samples has no listing: the same request made a ListObjects of the bucket
            bucket = {name: record["requestParameters"][name] for name in ("bucketName", "Host")}
            record.update(
                eventName="ListObjects",
                requestParameters={**bucket, "list-type": "2", "prefix": "collections/"},
                resources=record["resources"][1:],
            )
        return record

    def assume_role(self, record: dict[str, Any]) -> dict[str, Any]:
        """An ``sts:AssumeRole`` by the presigner, with the identity, address and time of ``record``."""
        session = self.token(16)
        role = f"arn:aws:iam::{ACCOUNT}:role/ogc-rs-presigner"
        return {
            "eventVersion": "1.08",
            "userIdentity": record["userIdentity"],
            "eventTime": record["eventTime"],
            "eventSource": "sts.amazonaws.com",
            "eventName": "AssumeRole",
            "awsRegion": record["awsRegion"],
            "sourceIPAddress": record["sourceIPAddress"],
            "userAgent": record["userAgent"],
            "requestParameters": {"roleArn": role, "roleSessionName": "stac-presigner", "durationSeconds": 3600},
            "responseElements": {
                "credentials": {
                    "accessKeyId": f"ASIA{self.token(16)}",
                    "sessionToken": self.token(300, ID_2_ALPHABET),
                    "expiration": "Oct 27, 2025, 11:58:12 AM",
                },
                "assumedRoleUser": {
                    "assumedRoleId": f"AROAQX2EXAMPLE{session}:stac-presigner",
                    "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/ogc-rs-presigner/stac-presigner",
                },
            },
            "requestID": self.uuid(),
            "eventID": self.uuid(),
            "readOnly": True,
            "resources": [{"accountId": ACCOUNT, "type": "AWS::IAM::Role", "ARN": role}],
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": ACCOUNT,
            "eventCategory": "Management",
        }

    def download(self, index: int) -> Download:
        """One asset of a STAC item, fetched by one of the users about 5 ms after the one before."""
        return Download(
            user_id=self.rng.choice(self.users),
            collection_id=self.rng.choice(self.collections),
            item_id=f"S2B_MSIL2A_20251026T{index:06d}_N0511_R019_T43PGQ",
            asset=f"{self.rng.choice(['B02', 'B03', 'B04', 'B08', 'SCL'])}.tif",
            when=START + timedelta(seconds=index * 5 // 1000),
            size=self.rng.randrange(1024, 250_000_000),
            event_id=self.uuid(),
        )

    def user_identity(self) -> dict[str, Any]:
        """The presigning role's session, as CloudTrail writes it for a presigned URL's requests."""
        session = self.token(16)
        return {
            "type": "AssumedRole",
            "principalId": f"AROAQX2EXAMPLE{session}:stac-presigner",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/ogc-rs-presigner/stac-presigner",
            "accountId": ACCOUNT,
            "accessKeyId": f"ASIA{self.token(16)}",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": f"AROAQX2EXAMPLE{session}",
                    "arn": f"arn:aws:iam::{ACCOUNT}:role/ogc-rs-presigner",
                    "accountId": ACCOUNT,
                    "userName": "ogc-rs-presigner",
                },
                "attributes": {"creationDate": "2025-10-27T09:58:12Z", "mfaAuthenticated": "false"},
            },
        }
