"""The metering rules for one CloudTrail S3 data event (docs/design.md, "What is metered").

Records are decoded with msgspec into the small structs below, which name only the fields the rules
read: a 2 KB record decodes without building the rest of its tree. A field of the wrong type makes the
decoder raise ``msgspec.ValidationError``; callers quarantine that record as ``MALFORMED_ENTRY``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from metering.line import Backend, MeteredDownload, build_download, check_ids
from metering.outcomes import Reason, Skip
from s3_audit.seen_requests import SeenRequests
from s3_audit.sources.identity import cloudtrail_event_key, request_key

S3_EVENT_SOURCE = "s3.amazonaws.com"
DOWNLOAD_EVENT = "GetObject"
# The value CloudTrail writes for a request authenticated by query-string (presigned URL) signature.
PRESIGNED_AUTHENTICATION = "QueryString"


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

    @property
    def has_presigned_parameters(self) -> bool:
        """Whether the query string carried SigV4 presigned-URL parameters."""
        return self.x_amz_expires is not None or self.x_amz_signature is not None or self.x_amz_credential is not None


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
        """Whether the request was authenticated by a presigned URL (either CloudTrail marker counts)."""
        extra = self.additional_event_data
        if extra is not None and extra.authentication_method == PRESIGNED_AUTHENTICATION:
            return True
        params = self.request_parameters
        return params is not None and params.has_presigned_parameters


_record_decoder = msgspec.json.Decoder(CloudTrailRecord)
# msgspec's message for a JSON number no int64/float holds, at the byte count: the byte rule's case, not a bad record.
_BYTES_OUT_OF_RANGE = ("out of range", "bytesTransferredOut")
_NO_PARAMETERS = RequestParameters()
# Skips are immutable: one shared instance per reason spares an allocation for each of 50,000 records.
_FILTERED = {reason: Skip.filtered(reason) for reason in Reason}


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

    Duplicates (same S3 request, or same ``eventID``) are not judged here: that needs the events seen before, see
    ``EventIdSet``. The download's ``event_id`` is its request identity (``s3_audit.sources.identity``).
    """
    if record.event_source != S3_EVENT_SOURCE:
        return _FILTERED[Reason.NOT_S3_EVENT]
    if record.event_name != DOWNLOAD_EVENT:
        return _FILTERED[Reason.NOT_GET_OBJECT]
    if record.error_code is not None:
        return _FILTERED[Reason.FAILED_REQUEST]
    if not record.is_presigned:
        return _FILTERED[Reason.NOT_PRESIGNED]
    params = record.request_parameters or _NO_PARAMETERS
    bad_ids = check_ids(params.user_id, params.collection_id, params.item_id)
    if bad_ids is not None:
        return bad_ids
    assert params.user_id is not None and params.collection_id is not None and params.item_id is not None  # noqa: PT018
    extra = record.additional_event_data
    size = extra.bytes_transferred_out if extra is not None else None
    return build_download(
        user_id=params.user_id,
        collection_id=params.collection_id,
        item_id=params.item_id,
        timestamp=record.event_time,
        bytes_sent=0 if size is None else size,
        backend=Backend.AWS_S3,
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
