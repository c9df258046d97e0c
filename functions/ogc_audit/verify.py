"""``ogc-audit verify``: prove in the user's account that a presigned download becomes a metered line, per source.

For the first hour after a deploy: it uploads a small marker object to an asset bucket, presigns a GET carrying
marker ``userId``/``collectionId``/``itemId``, downloads it, then waits (with progress, a timeout per source) for
that S3 request in each configured source: a CloudTrail log file under ``AWSLogs/`` of the log bucket, an access
log under ``access-logs/`` of the access-log bucket. For each record found it says whether the three ids were
recorded and what the metering rules make of it, then waits for the request's key in the delivery ledger (the
function delivered its line). The exit status is 0 only when every step passed; otherwise the first failed step
is named with advice. The marker download is a real download: it becomes one metering row with the marker ids.
"""

from __future__ import annotations

import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from metering.ledger import DeliveryLedger
from metering.line import MeteredDownload
from metering.outcomes import Skip
from s3_audit.sources.identity import request_key

MARKER_KEY = "ogc-audit-verify/marker.txt"
CLOUDTRAIL_PREFIX = "AWSLogs/"
ACCESS_LOG_PREFIX = "access-logs/"
SOURCES = ("cloudtrail", "access-logs", "both")


@dataclass(frozen=True, slots=True)
class Marker:
    """The ids written into the presigned URL, and the S3 request that downloaded it."""

    user_id: str
    collection_id: str
    item_id: str
    bucket: str
    key: str
    request_id: str = ""

    @property
    def query(self) -> str:
        """The custom query parameters, as OGC RS appends them."""
        return f"userId={self.user_id}&collectionId={self.collection_id}&itemId={self.item_id}"


@dataclass(frozen=True, slots=True)
class Sighting:
    """The record a source wrote for the marker request: which ids it kept, and what the rules made of it."""

    source: str
    where: str
    ids_recorded: bool
    outcome: str  # "metered" or the reason it was not


@dataclass(slots=True)
class VerifyReport:
    """Each step's result in order; ``failed`` is the first failed step and its advice."""

    steps: list[tuple[str, bool, str]] = field(default_factory=list)
    failed: tuple[str, str] | None = None

    def record(self, step: str, ok: bool, detail: str, advice: str = "") -> bool:
        """Add a step; the first failure is kept with its advice."""
        self.steps.append((step, ok, detail))
        if not ok and self.failed is None:
            self.failed = (step, advice or detail)
        return ok


@dataclass(frozen=True, slots=True)
class Waiting:
    """How long to wait for each source, and how often to look."""

    cloudtrail_s: float = 20 * 60
    access_logs_s: float = 3 * 3600
    delivery_s: float = 10 * 60
    poll_s: float = 30.0


def new_marker(bucket: str, key: str = MARKER_KEY) -> Marker:
    """Fresh marker ids: UUIDs for user and collection, a recognisable item id."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Marker(str(uuid.uuid4()), str(uuid.uuid4()), f"ogc-audit-verify-{stamp}-{uuid.uuid4().hex[:8]}", bucket, key)


def presigned_url(s3: Any, marker: Marker, expires_s: int = 600) -> str:
    """A presigned GET of the marker object whose signed query also carries the marker ids (as OGC RS's do)."""

    def add_ids(request: Any, **_: Any) -> None:
        request.url += ("&" if "?" in request.url else "?") + marker.query

    s3.meta.events.register("before-sign.s3.GetObject", add_ids)
    try:
        url: str = s3.generate_presigned_url(
            "get_object", Params={"Bucket": marker.bucket, "Key": marker.key}, ExpiresIn=expires_s
        )
    finally:
        s3.meta.events.unregister("before-sign.s3.GetObject", add_ids)
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is the answer, never followed: a presigned GET that redirects is a fault to report (a wrong region
    endpoint, a proxy), and following it would send the signed URL to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Follow nothing: urllib then raises the 3xx as an HTTPError."""


_OPENER = urllib.request.build_opener(_NoRedirect)


def download(url: str) -> tuple[int, str]:
    """GET the URL without following redirects; (HTTP status, S3 request ID). The emulator names the header
    ``x-amzn-requestid``."""
    try:
        with _OPENER.open(url, timeout=30) as response:
            response.read()
            headers = response.headers
            return response.status, headers.get("x-amz-request-id") or headers.get("x-amzn-requestid") or ""
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("x-amz-request-id", "")


@dataclass(frozen=True, slots=True)
class Listing:
    """One narrow listing of a log bucket: a folder of one day, from the first name that can hold the marker."""

    prefix: str
    start_after: str = ""
    folder_only: bool = False  # the objects directly in ``prefix``, not those of its sub-folders


# Log objects are named after the time they were written, which can trail the download by this much clock skew.
_NAME_MARGIN = timedelta(minutes=15)


def _folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The sub-folders of ``prefix`` (``Delimiter`` listing: one name per folder, not every object in it)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    return [folder["Prefix"] for page in pages for folder in page.get("CommonPrefixes", [])]


def _days(since: datetime) -> list[datetime]:
    """Each UTC day from the earliest name the marker can be in (since less the margin) to today."""
    first = (since - _NAME_MARGIN).replace(hour=0, minute=0, second=0, microsecond=0)
    return [first + timedelta(days=offset) for offset in range((datetime.now(UTC) - first).days + 1)]


def _last_name(folder: str) -> str:
    return folder.rstrip("/").rsplit("/", 1)[-1]


def cloudtrail_listings(s3: Any, bucket: str, prefix: str, since: datetime, asset_bucket: str) -> Iterator[Listing]:
    """The day folders of every trail region under ``AWSLogs/<account>/`` (or ``AWSLogs/<o-id>/<account>/``) for
    the days since the download, each from the first file name written after it: never the whole ``AWSLogs/``."""
    start = since - _NAME_MARGIN
    for top in _folders(s3, bucket, prefix):
        accounts = _folders(s3, bucket, top) if _last_name(top).startswith("o-") else [top]
        for account_folder in accounts:
            account = _last_name(account_folder)
            for region_folder in _folders(s3, bucket, f"{account_folder}CloudTrail/"):
                region = _last_name(region_folder)
                for day in _days(since):
                    folder = f"{region_folder}{day:%Y/%m/%d}/"
                    first = f"{folder}{account}_CloudTrail_{region}_{start:%Y%m%dT%H%MZ}"
                    yield Listing(folder, first if day.date() == start.date() else "")


def access_log_listings(s3: Any, bucket: str, prefix: str, since: datetime, asset_bucket: str) -> Iterator[Listing]:
    """The access logs written since the download: in the simple form (``prefix`` + time + unique string) and in the
    date-partitioned form (``prefix<account>/<region>/<asset bucket>/YYYY/mm/DD/`` + time), from that time on."""
    start = since - _NAME_MARGIN
    stamp = f"{start:%Y-%m-%d-%H-%M-%S}"
    yield Listing(prefix, f"{prefix}{stamp}", folder_only=True)
    for account_folder in _folders(s3, bucket, prefix):
        for region_folder in _folders(s3, bucket, account_folder):
            for day in _days(since):
                folder = f"{region_folder}{asset_bucket}/{day:%Y/%m/%d}/"
                yield Listing(folder, f"{folder}{stamp}" if day.date() == start.date() else "")


def _new_objects(s3: Any, place: Place, marker: Marker, since: datetime, seen: set[str]) -> Iterator[str]:
    for listing in place.listings(s3, place.bucket, place.prefix, since, marker.bucket):
        parameters = {"Bucket": place.bucket, "Prefix": listing.prefix}
        if listing.start_after:
            parameters["StartAfter"] = listing.start_after
        if listing.folder_only:
            parameters["Delimiter"] = "/"
        for page in s3.get_paginator("list_objects_v2").paginate(**parameters):
            for entry in page.get("Contents", []):
                if entry["Key"] not in seen and entry["LastModified"] >= since.replace(microsecond=0):
                    seen.add(entry["Key"])
                    yield entry["Key"]


def _chunks(s3: Any, bucket: str, key: str) -> Iterable[bytes]:
    from s3_audit.envelopes import LogFileRef
    from s3_audit.ingest import s3_object_chunks

    return s3_object_chunks(s3, LogFileRef(bucket, key))


def _outcome_name(outcome: MeteredDownload | Skip) -> str:
    return "metered" if isinstance(outcome, MeteredDownload) else outcome.reason.value


def find_in_cloudtrail(chunks: Iterable[bytes], marker: Marker, where: str) -> Sighting | None:
    """The marker request's record in a CloudTrail log file, by request ID (or by the marker item id)."""
    from s3_audit.cloudtrail import CloudTrailRecord, classify
    from s3_audit.log_file import read_log_records

    for record in read_log_records(chunks):
        if not isinstance(record, CloudTrailRecord):
            continue
        params = record.request_parameters
        item = params.item_id if params is not None else None
        if record.request_id != marker.request_id and item != marker.item_id:
            continue
        recorded = params is not None and (params.user_id, params.collection_id, item) == (
            marker.user_id,
            marker.collection_id,
            marker.item_id,
        )
        return Sighting("cloudtrail", where, recorded, _outcome_name(classify(record)))
    return None


def find_in_access_log(chunks: Iterable[bytes], marker: Marker, where: str) -> Sighting | None:
    """The marker request's record in an access-log object, by Request ID (or by the marker item id)."""
    from s3_audit.sources.access_log import (
        MalformedLine,
        classify,
        parse_record,
        query_parameter,
        query_string,
        read_lines,
    )

    for line in read_lines(chunks):
        if isinstance(line, Skip):
            continue
        try:
            record = parse_record(line)
        except MalformedLine:
            continue
        query = query_string(record.request_uri)
        try:
            ids = tuple(query_parameter(query, name) for name in ("userId", "collectionId", "itemId"))
        except UnicodeDecodeError:
            continue
        if record.request_id != marker.request_id and ids[2] != marker.item_id:
            continue
        recorded = ids == (marker.user_id, marker.collection_id, marker.item_id)
        return Sighting("access-logs", where, recorded, _outcome_name(classify(record)))
    return None


_ADVICE_NOT_FOUND = {
    "cloudtrail": "no CloudTrail record of the request arrived: check that the trail is logging and that its data "
    "event selector covers GetObject on this asset bucket (CloudTrail delivers about every 5 minutes)",
    "access-logs": "no access-log record of the request arrived: check that server access logging is on for the "
    "asset bucket (stack output EnableAccessLogs<n>) into the access-log bucket under access-logs/; delivery can "
    "take hours, run verify again with a longer --timeout-access-logs",
}
_ADVICE_IDS = {
    "cloudtrail": "CloudTrail dropped the custom parameters: deploy with awsSource=access-logs",
    "access-logs": "the access log has the request without the marker ids: the query string did not reach S3",
}


@dataclass(frozen=True, slots=True)
class Place:
    """Where a source's log objects are: the source, its bucket and prefix, and how to find the marker in one."""

    source: str
    bucket: str
    prefix: str
    find: Callable[[Iterable[bytes], Marker, str], Sighting | None]
    timeout_s: float
    listings: Callable[[Any, str, str, datetime, str], Iterator[Listing]] = cloudtrail_listings
    """The narrow listings that can hold the marker's record: (s3, bucket, prefix, since, asset bucket)."""


def wait_for_record(
    s3: Any, place: Place, marker: Marker, since: datetime, *, waiting: Waiting, out: TextIO
) -> Sighting | None:
    """Poll the source's objects written since the download until the marker's record shows up, or time runs out."""
    seen: set[str] = set()
    started = time.monotonic()
    while True:
        for key in _new_objects(s3, place, marker, since, seen):
            sighting = place.find(_chunks(s3, place.bucket, key), marker, f"s3://{place.bucket}/{key}")
            if sighting is not None:
                return sighting
        waited = time.monotonic() - started
        if waited >= place.timeout_s:
            return None
        out.write(f"  waiting for the {place.source} record: {waited:.0f} s of {place.timeout_s:.0f} s\n")
        out.flush()
        time.sleep(min(waiting.poll_s, place.timeout_s - waited))


def wait_for_delivery(ledger: DeliveryLedger, marker: Marker, waiting: Waiting, out: TextIO) -> bool:
    """Whether the request's ledger key is recorded as delivered before the delivery timeout."""
    key = request_key(marker.bucket, marker.request_id)
    if key is None:
        return False
    started = time.monotonic()
    while not ledger.delivered([key]):
        waited = time.monotonic() - started
        if waited >= waiting.delivery_s:
            return False
        out.write(f"  waiting for the delivery ledger: {waited:.0f} s of {waiting.delivery_s:.0f} s\n")
        out.flush()
        time.sleep(waiting.poll_s)
    return True


def verify(
    s3: Any,
    *,
    asset_bucket: str,
    places: Sequence[Place],
    ledger: DeliveryLedger | None,
    waiting: Waiting,
    out: TextIO,
    on_downloaded: Callable[[Marker], None] | None = None,
) -> VerifyReport:
    """Run every step; a failed step stops the steps that depend on it (a missing download stops everything)."""
    report = VerifyReport()
    marker = new_marker(asset_bucket)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.put_object(Bucket=asset_bucket, Key=marker.key, Body=b"ogc-audit verify marker\n")
    except (BotoCoreError, ClientError) as error:  # a refusal is the answer to report
        report.record("upload marker", False, str(error), f"cannot write s3://{asset_bucket}/{marker.key}: {error}")
        return report
    report.record("upload marker", True, f"s3://{asset_bucket}/{marker.key}")
    since = datetime.now(UTC)
    try:
        status, request_id = download(presigned_url(s3, marker))
    except BaseException:
        _remove_marker(s3, marker, report)
        raise
    marker = Marker(marker.user_id, marker.collection_id, marker.item_id, marker.bucket, marker.key, request_id)
    advice = f"the presigned GET answered HTTP {status}: check the presigning credentials and the bucket policy"
    if 300 <= status <= 399:
        advice = f"the presigned GET answered HTTP {status}, a redirect (not followed): check the bucket's region"
    downloaded = report.record(
        "presigned download",
        status == 200,
        f"HTTP {status}, request ID {request_id or '?'}, itemId {marker.item_id}",
        advice,
    )
    _remove_marker(s3, marker, report)  # the request is made (and logged): the object is no longer needed
    if not downloaded:
        return report
    if on_downloaded is not None:
        on_downloaded(marker)
    usable = False
    for place in places:
        out.write(f"{place.source}: looking under s3://{place.bucket}/{place.prefix}\n")
        sighting = wait_for_record(s3, place, marker, since, waiting=waiting, out=out)
        if sighting is None:
            report.record(f"{place.source} record", False, "not found in time", _ADVICE_NOT_FOUND[place.source])
            continue
        report.record(f"{place.source} record", True, f"found in {sighting.where}")
        ok = sighting.ids_recorded and sighting.outcome == "metered"
        usable = usable or ok
        report.record(
            f"{place.source} ids",
            ok,
            f"userId, collectionId, itemId recorded: {'yes' if sighting.ids_recorded else 'no'}; "
            f"rules: {sighting.outcome}",
            _ADVICE_IDS[place.source] if not sighting.ids_recorded else f"the record was {sighting.outcome}",
        )
    if ledger is None:
        report.record("delivery", True, "not checked: IDEMPOTENCY_TABLE_NAME is not set")
    elif usable:
        report.record(
            "delivery",
            wait_for_delivery(ledger, marker, waiting, out),
            f"ledger key {request_key(marker.bucket, marker.request_id)}",
            "the record is in the log bucket but no line reached the delivery ledger: check the log-file queue, its "
            "dead-letter queue and the s3_audit function's logs",
        )
    return report


def _remove_marker(s3: Any, marker: Marker, report: VerifyReport) -> None:
    """Delete the marker object once downloaded (its record is written by then): verify leaves nothing behind."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.delete_object(Bucket=marker.bucket, Key=marker.key)
    except (BotoCoreError, ClientError) as error:
        report.record(
            "remove marker",
            False,
            str(error),
            f"cannot delete s3://{marker.bucket}/{marker.key} ({error}): delete it by hand",
        )
        return
    report.record("remove marker", True, f"s3://{marker.bucket}/{marker.key} deleted")


def places_for(source: str, log_bucket: str, access_log_bucket: str, waiting: Waiting) -> list[Place]:
    """The places to watch for ``awsSource`` = ``source``."""
    places = []
    if source in {"cloudtrail", "both"}:
        places.append(Place("cloudtrail", log_bucket, CLOUDTRAIL_PREFIX, find_in_cloudtrail, waiting.cloudtrail_s))
    if source in {"access-logs", "both"}:
        places.append(
            Place(
                "access-logs",
                access_log_bucket,
                ACCESS_LOG_PREFIX,
                find_in_access_log,
                waiting.access_logs_s,
                access_log_listings,
            )
        )
    return places


def print_report(report: VerifyReport, out: TextIO) -> int:
    """Each step as ok/FAILED, then the first failure with its advice; the exit status."""
    for step, ok, detail in report.steps:
        out.write(f"{'ok    ' if ok else 'FAILED'} {step}: {detail}\n")
    if report.failed is None:
        out.write("verify: every step passed\n")
        return 0
    step, advice = report.failed
    out.write(f"verify: failed at step '{step}': {advice}\n")
    return 1


def run_verify(args: Any, out: TextIO | None = None) -> int:
    """The command: build the clients from the environment and run ``verify``."""
    import os

    import boto3
    from botocore.config import Config

    out = sys.stdout if out is None else out
    waiting = Waiting(args.timeout_cloudtrail, args.timeout_access_logs, args.timeout_delivery, args.poll)
    ledger = None
    if os.environ.get("IDEMPOTENCY_TABLE_NAME"):
        from metering.runtime import delivery_ledger

        ledger = delivery_ledger()
    s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
    report = verify(
        s3,
        asset_bucket=args.asset_bucket,
        places=places_for(args.source, args.log_bucket, args.access_log_bucket or args.log_bucket, waiting),
        ledger=ledger,
        waiting=waiting,
        out=out,
    )
    return print_report(report, out)
