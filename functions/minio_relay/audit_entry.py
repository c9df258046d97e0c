"""The metering rules for one MinIO audit entry (docs/design.md, "What is metered", MinIO column).

An entry is a JSON object as MinIO's ``audit_webhook`` target sends it (madmin-go ``log.Audit``). Releases
since 2021 are accepted: ``api.rx``/``api.tx`` exist since 2021-10 and ``accessKey`` since 2023-02, so
neither is required. Every entry ends as a MeteredDownload or a Skip; wrong types never raise.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping

import msgspec

from metering.line import Backend, MeteredDownload, build_download, check_ids
from metering.outcomes import Reason, Skip

_DOWNLOAD_API = "GetObject"
# Any of these in the query string marks a presigned (query-string authenticated) request,
_PRESIGN_PARAMETERS = ("X-Amz-Signature", "X-Amz-Credential")
# and so do these three together: a SigV2 presigned URL (MinIO accepts those too).
_SIGV2_PRESIGN_PARAMETERS = ("Signature", "AWSAccessKeyId", "Expires")
_ID_PARAMETERS = ("userId", "collectionId", "itemId")
# Keys longer than this are replaced by their hash: a queue message and a ledger key must stay small.
_MAX_KEY_CHARS = 256
# An itemId this long is no STAC id; with it the line could not fit in one SQS message (256 KiB).
MAX_ITEM_ID_CHARS = 32_768


def _malformed(detail: str) -> Skip:
    return Skip.quarantined(Reason.MALFORMED_ENTRY, detail)


@functools.cache
def _not_an_object(kind: str) -> Skip:
    """One Skip per JSON type: a body of two million numbers must not build two million."""
    return _malformed(f"entry is a JSON {kind}, not an object")


def entry_identity(entry: Mapping[str, object]) -> str:
    """What identifies an entry however often MinIO sends it: ``deploymentid:requestID`` (its ``event_id``).

    MinIO re-sends a whole batch it thinks failed, with the same ``requestID`` in each entry. An entry
    without a ``requestID`` gets a hash of its canonical JSON instead, which is just as stable across re-sends.
    """
    request_id = entry.get("requestID")
    deployment = entry.get("deploymentid")
    deployment_text = deployment if isinstance(deployment, str) else ""
    if isinstance(request_id, str) and request_id:
        key = f"{deployment_text}:{request_id}"
    else:
        digest = hashlib.sha256(msgspec.json.encode(entry, order="sorted")).hexdigest()[:32]
        key = f"{deployment_text}:sha256-{digest}"
    if len(key) > _MAX_KEY_CHARS:
        return "sha256-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key


def entry_ledger_key(identity: str) -> str:
    """The delivery-ledger key of the entry with this ``entry_identity``, apart from the keys of other flows."""
    return f"minio:{identity}"


def _sent_bytes(api: Mapping[str, object], entry: Mapping[str, object]) -> object | Skip:
    """``api.tx``; entries older than 2021-10 have none, so the response's Content-Length; else 0."""
    if "tx" in api:
        return api["tx"]
    response_header = entry.get("responseHeader")
    if response_header is None:
        return 0
    if not isinstance(response_header, dict):
        return _malformed("responseHeader is not an object")
    return response_header.get("Content-Length", 0)


def _request_filter(api: Mapping[str, object], query: Mapping[str, object]) -> Skip | None:
    """The rules on the request itself: a successful presigned GetObject."""
    name = api.get("name")
    status = api.get("statusCode")
    if not isinstance(name, str) or not isinstance(status, int) or isinstance(status, bool):
        return _malformed("api.name is not a string or api.statusCode not an integer")
    if name != _DOWNLOAD_API:
        return Skip.filtered(Reason.NOT_GET_OBJECT)
    # 200 and 206 (a range request) count; 304 (not modified) sent no body, 4xx/5xx failed.
    if not 200 <= status <= 299:
        return Skip.filtered(Reason.FAILED_REQUEST)
    if not any(parameter in query for parameter in _PRESIGN_PARAMETERS) and not all(
        parameter in query for parameter in _SIGV2_PRESIGN_PARAMETERS
    ):
        return Skip.filtered(Reason.NOT_PRESIGNED)
    return None


def _parts(entry: object) -> tuple[dict[str, object], dict[str, object]] | Skip:
    """The ``api`` and ``requestQuery`` objects of a client request, or why the entry is not one."""
    if not isinstance(entry, dict):
        return _not_an_object(type(entry).__name__)
    if not entry:
        # Releases before 2024-03 POST a literal {} when the target starts, to see that it is online.
        return Skip.filtered(Reason.STARTUP_PROBE)
    api = entry.get("api", {})
    if not isinstance(api, dict):
        return _malformed("api is not an object")
    if api.get("statusCode") is None:
        # Internal events (ILM expiry, scanner, healing) carry a trigger but no HTTP status.
        return Skip.filtered(Reason.INTERNAL_EVENT)
    query = entry.get("requestQuery") or {}
    if not isinstance(query, dict):
        return _malformed("requestQuery is not an object")
    return api, query


def _id_problem(user_id: object, collection_id: object, item_id: object) -> Skip | None:
    """Wrong types and absurd lengths are quarantined; otherwise the shared id rules decide."""
    if any(value is not None and not isinstance(value, str) for value in (user_id, collection_id, item_id)):
        return _malformed("requestQuery id parameter is not a string")
    if isinstance(item_id, str) and len(item_id) > MAX_ITEM_ID_CHARS:
        return _malformed(f"itemId of {len(item_id)} characters (at most {MAX_ITEM_ID_CHARS})")
    return check_ids(user_id, collection_id, item_id)


def classify_entry(entry: object) -> MeteredDownload | Skip:
    """Apply the MinIO metering rules to one decoded audit entry."""
    parts = _parts(entry)
    if isinstance(parts, Skip):
        return parts
    assert isinstance(entry, dict)
    api, query = parts
    refused = _request_filter(api, query)
    if refused is not None:
        return refused
    user_id, collection_id, item_id = (query.get(name) for name in _ID_PARAMETERS)
    bad_ids = _id_problem(user_id, collection_id, item_id)
    if bad_ids is not None:
        return bad_ids
    assert isinstance(user_id, str) and isinstance(collection_id, str) and isinstance(item_id, str)  # noqa: PT018
    sent = _sent_bytes(api, entry)
    if isinstance(sent, Skip):
        return sent
    return build_download(
        user_id=user_id,
        collection_id=collection_id,
        item_id=item_id,
        timestamp=entry.get("time"),
        bytes_sent=sent,
        backend=Backend.MINIO,
        event_id=entry_identity(entry),
    )
