"""The MinIO metering rules (docs/design.md table) on realistic audit entries from tests/events/minio/."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from metering.line import Backend, MeteredDownload
from metering.outcomes import Reason, Skip
from minio_relay.audit_entry import classify_entry, entry_identity
from tests.events import load_event

USER = "6f1d2c8e-3b4a-4f5e-9a7b-1c2d3e4f5a6b"
COLLECTION = "0b8e6c1a-9d2f-4e3b-8a7c-5d6e7f8a9b0c"
ITEM = "S2A_MSIL2A_20251020T050701_N0511_R019_T43PGQ"
DEPLOYMENT = "8f3c1f2e-5b7a-4c1d-9e2f-0a1b2c3d4e5f"


def current() -> dict[str, Any]:
    return load_event("minio/get_object_presigned")


def line(timestamp: str, size: int, item: str = ITEM) -> str:
    return f"{USER}|{COLLECTION}|{item}|{timestamp}|{size}|minio"


@pytest.mark.parametrize(
    ("fixture", "expected_line"),
    [
        # current release, nanosecond time truncated to whole seconds, api.tx
        ("get_object_presigned.json", line("2025-10-27T10:12:30Z", 1048576)),
        # a range request: 206 counts with the bytes actually sent
        ("get_object_partial_206.json", line("2025-10-27T10:12:30Z", 65536)),
        # before 2021-10 there is no api.tx: the response's Content-Length
        ("get_object_legacy_2021.json", line("2021-06-14T08:03:11Z", 52428800)),
        # before 2023-02 there is no accessKey: not needed
        ("get_object_no_access_key_2022.json", line("2022-09-05T16:45:02Z", 20480)),
    ],
)
def test_metered_entries(fixture: str, expected_line: str) -> None:
    outcome = classify_entry(load_event(f"minio/{fixture}"))
    assert isinstance(outcome, MeteredDownload)
    assert outcome.to_line() == expected_line
    assert outcome.backend is Backend.MINIO


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("get_object_not_modified_304.json", Reason.FAILED_REQUEST),
        ("head_object.json", Reason.NOT_GET_OBJECT),
        ("put_object.json", Reason.NOT_GET_OBJECT),
        ("get_object_signature_mismatch_403.json", Reason.FAILED_REQUEST),
        ("get_object_not_found_404.json", Reason.FAILED_REQUEST),
        ("get_object_not_presigned.json", Reason.NOT_PRESIGNED),
        ("ilm_expiry_internal.json", Reason.INTERNAL_EVENT),
        ("startup_probe.json", Reason.STARTUP_PROBE),
    ],
)
def test_filtered_entries(fixture: str, reason: Reason) -> None:
    assert classify_entry(load_event(f"minio/{fixture}")) == Skip.filtered(reason)


def test_event_id_is_deployment_and_request_id() -> None:
    outcome = classify_entry(current())
    assert isinstance(outcome, MeteredDownload)
    assert outcome.event_id == f"{DEPLOYMENT}:18727B6F2D3A9C41"


def test_event_key_without_request_id_is_a_stable_hash() -> None:
    entry = current()
    del entry["requestID"]
    reordered = dict(reversed(list(copy.deepcopy(entry).items())))
    assert entry_identity(entry) == entry_identity(reordered)
    assert entry_identity(entry).startswith(f"{DEPLOYMENT}:sha256-")
    other = copy.deepcopy(entry)
    other["time"] = "2025-10-27T10:12:31Z"
    assert entry_identity(other) != entry_identity(entry)


@pytest.mark.parametrize(("status", "metered"), [(200, True), (206, True), (299, True), (300, False), (304, False)])
def test_success_is_2xx(status: int, metered: bool) -> None:
    entry = current()
    entry["api"]["statusCode"] = status
    assert isinstance(classify_entry(entry), MeteredDownload) is metered


@pytest.mark.parametrize("marker", ["X-Amz-Signature", "X-Amz-Credential"])
def test_either_signature_parameter_marks_presigned(marker: str) -> None:
    entry = current()
    for name in ("X-Amz-Signature", "X-Amz-Credential"):
        if name != marker:
            del entry["requestQuery"][name]
    assert isinstance(classify_entry(entry), MeteredDownload)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"userId": None}, Reason.MISSING_USER_ID),
        ({"collectionId": None}, Reason.MISSING_COLLECTION_ID),
        ({"itemId": None}, Reason.MISSING_ITEM_ID),
        ({"itemId": "  "}, Reason.MISSING_ITEM_ID),
        ({"userId": "alice"}, Reason.INVALID_USER_ID),
        # a repeated parameter is joined with "," by MinIO: never a UUID
        ({"userId": f"{USER},{USER}"}, Reason.INVALID_USER_ID),
        ({"collectionId": "sentinel-2"}, Reason.INVALID_COLLECTION_ID),
        ({"itemId": "a|b"}, Reason.INVALID_ITEM_ID),
    ],
)
def test_id_rules(changes: dict[str, str | None], reason: Reason) -> None:
    entry = current()
    for name, value in changes.items():
        if value is None:
            del entry["requestQuery"][name]
        else:
            entry["requestQuery"][name] = value
    assert classify_entry(entry) == Skip.filtered(reason)


def test_no_byte_figure_at_all_counts_zero() -> None:
    entry = load_event("minio/get_object_legacy_2021.json")
    del entry["responseHeader"]["Content-Length"]
    outcome = classify_entry(entry)
    assert isinstance(outcome, MeteredDownload)
    assert outcome.bytes_sent == 0


def test_time_with_offset_is_converted_to_utc() -> None:
    entry = current()
    entry["time"] = "2025-10-27T15:42:30.999999999+05:30"
    outcome = classify_entry(entry)
    assert isinstance(outcome, MeteredDownload)
    assert outcome.timestamp == "2025-10-27T10:12:30Z"


def test_entry_without_query_is_not_presigned() -> None:
    entry = current()
    del entry["requestQuery"]
    assert classify_entry(entry) == Skip.filtered(Reason.NOT_PRESIGNED)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.update(api=["GetObject"]), Reason.MALFORMED_ENTRY),
        (lambda e: e["api"].update(statusCode="200"), Reason.MALFORMED_ENTRY),
        (lambda e: e["api"].update(statusCode=True), Reason.MALFORMED_ENTRY),
        (lambda e: e["api"].update(name=7), Reason.MALFORMED_ENTRY),
        (lambda e: e.update(requestQuery=["userId"]), Reason.MALFORMED_ENTRY),
        (lambda e: e["requestQuery"].update(userId=42), Reason.MALFORMED_ENTRY),
        (lambda e: e.update(responseHeader="x"), None),
        (lambda e: e["api"].update(tx="lots"), Reason.INVALID_BYTES),
        (lambda e: e["api"].update(tx=-1), Reason.INVALID_BYTES),
        (lambda e: e.update(time="yesterday"), Reason.INVALID_TIMESTAMP),
        (lambda e: e.update(time=1761559950), Reason.INVALID_TIMESTAMP),
        (lambda e: e.update(time="2025-10-27T10:12:30"), Reason.INVALID_TIMESTAMP),
    ],
)
def test_wrong_types_are_quarantined_never_raised(mutate: Any, reason: Reason | None) -> None:
    entry = current()
    mutate(entry)
    outcome = classify_entry(entry)
    if reason is None:  # a bad responseHeader is harmless while api.tx is there
        assert isinstance(outcome, MeteredDownload)
        return
    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason) == ("quarantined", reason)


def test_bad_response_header_without_tx_is_quarantined() -> None:
    entry = load_event("minio/get_object_legacy_2021.json")
    entry["responseHeader"] = "Content-Length: 5"
    assert classify_entry(entry) == Skip.quarantined(Reason.MALFORMED_ENTRY, "responseHeader is not an object")


@pytest.mark.parametrize("entry", [None, 7, "GetObject", [current()]])
def test_non_object_entry_is_quarantined(entry: object) -> None:
    outcome = classify_entry(entry)
    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason) == ("quarantined", Reason.MALFORMED_ENTRY)


def sigv2_entry(*, drop: str = "") -> dict[str, Any]:
    """The presigned GetObject entry, its URL signed the SigV2 way (AWSAccessKeyId, Expires, Signature)."""
    entry = copy.deepcopy(current())
    query = {name: value for name, value in entry["requestQuery"].items() if not name.startswith("X-Amz-")}
    query |= {"AWSAccessKeyId": "stacpresigner", "Expires": "1761563550", "Signature": "dGhpc2lzYXNpZ25hdHVyZQ=="}
    query.pop(drop, None)
    entry["requestQuery"] = query
    return entry


def test_a_sigv2_presigned_url_is_presigned() -> None:
    outcome = classify_entry(sigv2_entry())

    assert isinstance(outcome, MeteredDownload)
    assert outcome.to_line() == line("2025-10-27T10:12:30Z", 1048576)


@pytest.mark.parametrize("missing", ["AWSAccessKeyId", "Expires", "Signature"])
def test_sigv2_needs_all_three_parameters(missing: str) -> None:
    assert classify_entry(sigv2_entry(drop=missing)) == Skip.filtered(Reason.NOT_PRESIGNED)


@pytest.mark.parametrize("when", ["1970-01-01T00:00:00Z", "2005-12-31T23:59:59.999Z", "9999-12-31T23:59:59Z"])
def test_a_time_outside_the_sane_window_is_quarantined(when: str) -> None:
    entry = copy.deepcopy(current())
    entry["time"] = when

    outcome = classify_entry(entry)

    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason) == ("quarantined", Reason.INVALID_TIMESTAMP)
