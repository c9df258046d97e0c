"""The CloudTrail record rules, under the name they had before they moved to their source.

They live in ``s3_audit.sources.cloudtrail`` now (a source is one place to read); this module keeps the callers and
tests that import ``s3_audit.cloudtrail`` working.
"""

from __future__ import annotations

from s3_audit.sources.cloudtrail import (
    DOWNLOAD_EVENT,
    PRESIGNED_AUTHENTICATION,
    S3_EVENT_SOURCE,
    AdditionalEventData,
    CloudTrailRecord,
    EventIdSet,
    RequestParameters,
    classify,
    decode_record,
    meter,
    record_from_object,
)

__all__ = [
    "DOWNLOAD_EVENT",
    "PRESIGNED_AUTHENTICATION",
    "S3_EVENT_SOURCE",
    "AdditionalEventData",
    "CloudTrailRecord",
    "EventIdSet",
    "RequestParameters",
    "classify",
    "decode_record",
    "meter",
    "record_from_object",
]
