"""CloudTrail log files as a log source: their object names and delivery time, their records, and the metering rules
for one S3 data event (docs/design.md, "What is metered", CloudTrail column).

Records are decoded with msgspec into the small structs below, which name only the fields the rules read: a 2 KB
record decodes without building the rest of its tree. A field of the wrong type makes the decoder raise
``msgspec.ValidationError``; that record is quarantined as ``MALFORMED_ENTRY``. The streamed gzip JSON reading is
``s3_audit.log_file``'s, which decodes these structs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from metering.line import Backend, LineBuilder, MeteredDownload
from metering.outcomes import Reason, Skip
from s3_audit.seen_requests import SeenRequests
from s3_audit.sources.identity import cloudtrail_event_key, request_key

NAME = "cloudtrail"
LOG_FILE_SUFFIX = ".json.gz"
S3_EVENT_SOURCE = "s3.amazonaws.com"
DOWNLOAD_EVENT = "GetObject"
# The value CloudTrail writes for a request authenticated by query-string (presigned URL) signature, SigV4 or SigV2.
PRESIGNED_AUTHENTICATION = "QueryString"
_DIGEST_FOLDER = "/CloudTrail-Digest/"
_INSIGHT_FOLDER = "/CloudTrail-Insight/"
_LOG_FOLDER = "/CloudTrail/"
_LOGS_ROOT = "AWSLogs/"
# AWSLogs/<account>/CloudTrail/ or, for an organisation trail, AWSLogs/<o-id>/<account>/CloudTrail/, after any prefix.
_ACCOUNT = re.compile(r"(?:^|/)AWSLogs/(?:o-[a-z0-9]{10,32}/)?(\d{12})/CloudTrail/")
# CloudTrail names a file <account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<random>.json.gz
_FILE_TIME = re.compile(r"_CloudTrail_[^_/]+_(\d{8}T\d{4}Z)_[^/]*$")


class RequestParameters(msgspec.Struct, frozen=True, gc=False):
    """The fields of ``requestParameters`` the rules read: the metering ids and the presigned-URL markers."""

    # Identity only, not a rule: a value of another type just leaves the request unidentified.
    bucket_name: Any = msgspec.field(default=None, name="bucketName")
    user_id: str | None = msgspec.field(default=None, name="userId")
    collection_id: str | None = msgspec.field(default=None, name="collectionId")
    item_id: str | None = msgspec.field(default=None, name="itemId")
    # Only presence matters; CloudTrail writes them as strings but the rules do not depend on it.
    x_amz_expires: Any = msgspec.field(default=None, name="X-Amz-Expires")
    x_amz_signature: Any = msgspec.field(default=None, name="X-Amz-Signature")
    x_amz_credential: Any = msgspec.field(default=None, name="X-Amz-Credential")
    # A SigV2 presigned URL (AWSAccessKeyId, Expires, Signature); CloudTrail drops signatures, so not Signature.
    expires: Any = msgspec.field(default=None, name="Expires")
    aws_access_key_id: Any = msgspec.field(default=None, name="AWSAccessKeyId")

    @property
    def has_presigned_parameters(self) -> bool:
        """Whether the query string carried presigned-URL parameters: SigV4's, or SigV2's key id with Expires."""
        return (
            self.x_amz_expires is not None
            or self.x_amz_signature is not None
            or self.x_amz_credential is not None
            or (self.expires is not None and self.aws_access_key_id is not None)
        )


class AdditionalEventData(msgspec.Struct, frozen=True, gc=False):
    """The fields of ``additionalEventData`` the rules read."""

    authentication_method: str | None = msgspec.field(default=None, name="AuthenticationMethod")
    # Written as 16384 or 16384.0 (EventBridge turns numbers into floats); normalize_bytes makes it an int.
    bytes_transferred_out: int | float | str | None = msgspec.field(default=None, name="bytesTransferredOut")


class CloudTrailRecord(msgspec.Struct, frozen=True, gc=False):
    """One CloudTrail event, reduced to the fields the metering rules read."""

    event_source: str | None = msgspec.field(default=None, name="eventSource")
    event_name: str | None = msgspec.field(default=None, name="eventName")
    event_time: str | None = msgspec.field(default=None, name="eventTime")
    event_id: str | None = msgspec.field(default=None, name="eventID")
    # The S3 request ID (x-amz-request-id): the access log and EventBridge report the same request with it.
    request_id: Any = msgspec.field(default=None, name="requestID")
    # Present only on failure; any non-null value means the download did not happen.
    error_code: str | None = msgspec.field(default=None, name="errorCode")
    request_parameters: RequestParameters | None = msgspec.field(default=None, name="requestParameters")
    additional_event_data: AdditionalEventData | None = msgspec.field(default=None, name="additionalEventData")

    @property
    def is_presigned(self) -> bool:
        """Whether the request was authenticated by a presigned URL.

        ``AuthenticationMethod`` decides where CloudTrail wrote it (``AuthHeader`` is never presigned, whatever
        the query held); only a record without it is judged by the presigned-URL parameters.
        """
        extra = self.additional_event_data
        if extra is not None and extra.authentication_method is not None:
            return extra.authentication_method == PRESIGNED_AUTHENTICATION
        params = self.request_parameters
        return params is not None and params.has_presigned_parameters


_record_decoder = msgspec.json.Decoder(CloudTrailRecord)
# msgspec's message for a JSON number no int64/float holds, at the byte count: the byte rule's case, not a bad record.
_BYTES_OUT_OF_RANGE = ("out of range", "bytesTransferredOut")
_NO_PARAMETERS = RequestParameters()
# Skips are immutable: one shared instance per reason spares an allocation for each of 50,000 records.
_FILTERED = {reason: Skip.filtered(reason) for reason in Reason}
_NOT_S3_EVENT = _FILTERED[Reason.NOT_S3_EVENT]
_NOT_GET_OBJECT = _FILTERED[Reason.NOT_GET_OBJECT]
_FAILED_REQUEST = _FILTERED[Reason.FAILED_REQUEST]
_NOT_PRESIGNED = _FILTERED[Reason.NOT_PRESIGNED]
# One per process: the ids and times it remembers are valid for every file (EventBridge events too).
_LINES = LineBuilder(Backend.AWS_S3)


def decode_record(raw: bytes | msgspec.Raw) -> CloudTrailRecord | Skip:
    """One JSON-encoded record as a CloudTrailRecord, or a MALFORMED_ENTRY quarantine with the decoder's message."""
    try:
        return _record_decoder.decode(raw)
    # ValidationError is a DecodeError too; msgspec raises UnicodeDecodeError for invalid UTF-8 in a string it
    # keeps and RecursionError for nesting deeper than ~1000 levels.
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
        message = str(error) or type(error).__name__
        if all(part in message for part in _BYTES_OUT_OF_RANGE):
            return Skip.quarantined(Reason.INVALID_BYTES, f"byte count out of range: {message}")
        return Skip.quarantined(Reason.MALFORMED_ENTRY, message)


def record_from_object(value: object) -> CloudTrailRecord | Skip:
    """An already-parsed record (the ``detail`` of an EventBridge event) as a CloudTrailRecord, or a quarantine."""
    try:
        return msgspec.convert(value, CloudTrailRecord)
    except (msgspec.ValidationError, UnicodeEncodeError) as error:  # a key with a lone surrogate cannot be matched
        return Skip.quarantined(Reason.MALFORMED_ENTRY, str(error))


def classify(record: CloudTrailRecord) -> MeteredDownload | Skip:
    """Apply the metering rules in docs/design.md order: the first rule that fails names the reason.

    Most records are refused on their first two fields. Duplicates (same S3 request, or same ``eventID``) are not
    judged here: that needs the events seen before, see ``EventIdSet``. The download's ``event_id`` is its request
    identity (``s3_audit.sources.identity``).
    """
    if record.event_source != S3_EVENT_SOURCE:
        return _NOT_S3_EVENT
    if record.event_name != DOWNLOAD_EVENT:
        return _NOT_GET_OBJECT
    if record.error_code is not None:
        return _FAILED_REQUEST
    if not record.is_presigned:
        return _NOT_PRESIGNED
    params = record.request_parameters or _NO_PARAMETERS
    extra = record.additional_event_data
    size = None if extra is None else extra.bytes_transferred_out
    return _LINES.download(
        params.user_id,
        params.collection_id,
        params.item_id,
        timestamp=record.event_time,
        bytes_sent=0 if size is None else size,
        event_id=request_key(params.bucket_name, record.request_id) or cloudtrail_event_key(record.event_id),
    )


EventIdSet = SeenRequests
"""The request identity of every download metered so far in one input (``s3_audit.seen_requests``), held compactly."""


def meter(record: CloudTrailRecord, seen: EventIdSet) -> MeteredDownload | Skip:
    """Classify a record and drop a repeat of an already metered event as DUPLICATE_EVENT."""
    outcome = classify(record)
    if isinstance(outcome, MeteredDownload) and not seen.first_time(outcome):
        return _FILTERED[Reason.DUPLICATE_EVENT]
    return outcome


# ---- the log files ----------------------------------------------------------------------------------------


def recognise(key: str) -> str | None:
    """``"log_file"`` for a CloudTrail log file key, ``"digest_file"``/``"insight_file"`` for its siblings, else None.

    Keys are ``AWSLogs/<account>/CloudTrail/...`` or ``AWSLogs/<o-id>/<account>/CloudTrail/...``, after any prefix.
    """
    if _DIGEST_FOLDER in key:
        return "digest_file"
    if _INSIGHT_FOLDER in key:
        return "insight_file"
    if _LOGS_ROOT in key and _LOG_FOLDER in key and key.endswith(LOG_FILE_SUFFIX):
        return "log_file"
    return None


def account_of(key: str) -> str | None:
    """The account whose events a log file holds, from its name; None when the name shows none."""
    match = _ACCOUNT.search(key)
    return match.group(1) if match else None


def file_time(key: str) -> datetime | None:
    """The delivery time CloudTrail wrote into a log file's name."""
    match = _FILE_TIME.search(key)
    return datetime.strptime(match.group(1), "%Y%m%dT%H%MZ").replace(tzinfo=UTC) if match else None


def outcomes(chunks: Iterable[bytes]) -> Iterator[MeteredDownload | Skip]:
    """The outcome of every record of a log file (gzip or plain JSON), in order; repeats are judged by the caller."""
    # Imported here: the reader decodes this module's records, so it imports this module.
    from s3_audit.log_file import read_log_pieces

    number = 0
    for piece in read_log_pieces(chunks):
        for record in piece:
            if isinstance(record, CloudTrailRecord):
                outcome = classify(record)
                if isinstance(outcome, Skip) and outcome.kind == "quarantined":
                    # The reader names the records it refuses; a record the rules refuse is named here the same way.
                    outcome = Skip.quarantined(outcome.reason, f"record {number}: {outcome.detail}")
                yield outcome
            else:
                yield record
            number += 1
