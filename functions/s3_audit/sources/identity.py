"""The identity of one S3 request, shared by every source that reports it.

The same GetObject can reach the function three ways: a CloudTrail log file, an EventBridge event carrying the
CloudTrail record, and an S3 server access log. All of them name the request by its S3 request ID
(``x-amz-request-id``: CloudTrail ``requestID``, the access log's Request ID), so the key below is what the
delivery ledger remembers: whichever report arrives first is metered, the others find the key delivered.
"""

from __future__ import annotations

REQUEST_KEY_PREFIX = "s3-request:"
# A CloudTrail record without a request ID is still known by its eventID (CloudTrail repeats events with it).
CLOUDTRAIL_EVENT_PREFIX = "cloudtrail-event:"
_UNKNOWN = frozenset({"", "-"})


def request_key(bucket: object, request_id: object) -> str | None:
    """``s3-request:<bucket>/<request ID>``, or None when either is unknown (absent, empty, ``-``, not text).

    The bucket narrows the 16-character request ID to one bucket's requests; bucket names hold no ``/``.
    """
    if type(request_id) is not str or type(bucket) is not str or not bucket or request_id in _UNKNOWN:
        return None  # (type() rather than isinstance: a str subclass is no value a decoder gives; this runs per record)
    return f"{REQUEST_KEY_PREFIX}{bucket}/{request_id}"


def cloudtrail_event_key(event_id: object) -> str:
    """The key of a CloudTrail event known only by its ``eventID`` ("" when it has none)."""
    return f"{CLOUDTRAIL_EVENT_PREFIX}{event_id}" if isinstance(event_id, str) and event_id else ""
