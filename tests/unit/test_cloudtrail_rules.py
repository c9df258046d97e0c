"""The metering rules for CloudTrail records (docs/design.md, "What is metered"), one test per rule and reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metering.line import Backend, MeteredDownload
from metering.outcomes import Reason, Skip
from s3_audit.cloudtrail import EventIdSet, classify, decode_record, meter, record_from_object
from tests.events import load_event

USER = "3f1c9a52-7a4e-4c1e-9f0b-2d5f8e6a1b7c"
COLLECTION = "8b2d4e6f-1a3c-4b5d-8e7f-9a0b1c2d3e4f"
ITEM = "S2B_MSIL2A_20251026T050649_N0511_R019_T43PGQ"


def outcome_of(fixture: str) -> MeteredDownload | Skip:
    """Decode a fixture record the way the log file reader does, then classify it."""
    record = decode_record(json.dumps(load_event(f"cloudtrail/{fixture}")).encode())
    return record if isinstance(record, Skip) else classify(record)


def test_presigned_get_is_metered_as_one_line() -> None:
    outcome = outcome_of("presigned_get")

    assert isinstance(outcome, MeteredDownload)
    assert outcome.to_line() == f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|16384|aws_s3"
    assert outcome.backend is Backend.AWS_S3
    assert outcome.event_id == "s3-request:stac-assets-prod/7KQ4B1S9XW2M3N5P"


@pytest.mark.parametrize(
    "fixture",
    [
        "presigned_get_query_string_only",  # AuthenticationMethod QueryString alone
        "presigned_get_expires_only",  # X-Amz-Expires alone
        "presigned_get_credential_only",  # X-Amz-Credential alone
    ],
)
def test_either_presigned_marker_is_enough(fixture: str) -> None:
    assert isinstance(outcome_of(fixture), MeteredDownload)


@pytest.mark.parametrize(
    "fixture",
    [
        "presigned_get_sigv2",  # what CloudTrail writes: SignatureVersion SigV2, AuthenticationMethod QueryString
        "presigned_get_sigv2_parameters_only",  # no AuthenticationMethod: AWSAccessKeyId with Expires
    ],
)
def test_a_sigv2_presigned_url_is_presigned(fixture: str) -> None:
    outcome = outcome_of(fixture)

    assert isinstance(outcome, MeteredDownload)
    assert outcome.to_line() == f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|16384|aws_s3"


def test_authentication_by_header_is_never_presigned_whatever_the_query_held() -> None:
    # AuthHeader with X-Amz-Expires and X-Amz-Credential in requestParameters: the header decides.
    assert outcome_of("header_signed_with_presign_parameters") == Skip.filtered(Reason.NOT_PRESIGNED)


@pytest.mark.parametrize("method", ["AuthHeader", "", "querystring", "QUERYSTRING"])
def test_any_authentication_method_but_query_string_is_not_presigned(method: str) -> None:
    record: dict[str, Any] = load_event("cloudtrail/presigned_get")
    record["additionalEventData"]["AuthenticationMethod"] = method

    decoded = record_from_object(record)

    assert not isinstance(decoded, Skip)
    assert classify(decoded) == Skip.filtered(Reason.NOT_PRESIGNED)


def test_sigv2_parameters_need_both_the_key_id_and_expires() -> None:
    record: dict[str, Any] = load_event("cloudtrail/presigned_get_sigv2_parameters_only")
    del record["requestParameters"]["Expires"]

    decoded = record_from_object(record)

    assert not isinstance(decoded, Skip)
    assert classify(decoded) == Skip.filtered(Reason.NOT_PRESIGNED)


@pytest.mark.parametrize(
    "when",
    ["1970-01-01T00:00:00Z", "2005-12-31T23:59:59Z", "9999-12-31T23:59:59Z", "2006-01-01T00:30:00+01:00", "future"],
)
def test_a_time_outside_the_sane_window_is_quarantined(when: str) -> None:
    from datetime import UTC, datetime, timedelta

    if when == "future":
        when = f"{datetime.now(UTC) + timedelta(days=1, minutes=5):%Y-%m-%dT%H:%M:%SZ}"
    record: dict[str, Any] = load_event("cloudtrail/presigned_get")
    record["eventTime"] = when

    outcome = outcome_of_record(record)

    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason) == ("quarantined", Reason.INVALID_TIMESTAMP)
    assert "before 2006-01-01" in outcome.detail


@pytest.mark.parametrize("when", ["2006-01-01T00:00:00Z", "2006-01-01T05:30:00+05:30", "soon"])
def test_a_time_inside_the_window_is_metered(when: str) -> None:
    from datetime import UTC, datetime, timedelta

    if when == "soon":  # a clock a little ahead of this one
        when = f"{datetime.now(UTC) + timedelta(hours=23):%Y-%m-%dT%H:%M:%SZ}"
    record: dict[str, Any] = load_event("cloudtrail/presigned_get")
    record["eventTime"] = when

    assert isinstance(outcome_of_record(record), MeteredDownload)


def outcome_of_record(record: dict[str, Any]) -> MeteredDownload | Skip:
    decoded = decode_record(json.dumps(record).encode())
    return decoded if isinstance(decoded, Skip) else classify(decoded)


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("kms_decrypt", Reason.NOT_S3_EVENT),
        ("head_object", Reason.NOT_GET_OBJECT),
        ("put_object", Reason.NOT_GET_OBJECT),
        ("list_objects", Reason.NOT_GET_OBJECT),
        ("failed_403", Reason.FAILED_REQUEST),
        ("failed_404", Reason.FAILED_REQUEST),
        ("failed_signature", Reason.FAILED_REQUEST),
        ("header_signed", Reason.NOT_PRESIGNED),
        ("missing_user_id", Reason.MISSING_USER_ID),
        ("empty_user_id", Reason.MISSING_USER_ID),
        ("missing_collection_id", Reason.MISSING_COLLECTION_ID),
        ("missing_item_id", Reason.MISSING_ITEM_ID),
        ("non_uuid_user", Reason.INVALID_USER_ID),
        ("non_uuid_collection", Reason.INVALID_COLLECTION_ID),
        ("item_with_pipe", Reason.INVALID_ITEM_ID),
    ],
)
def test_filtered_with_its_reason(fixture: str, reason: Reason) -> None:
    assert outcome_of(fixture) == Skip.filtered(reason)


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("request_parameters_string", Reason.MALFORMED_ENTRY),
        ("event_name_number", Reason.MALFORMED_ENTRY),
        ("negative_bytes", Reason.INVALID_BYTES),
        ("bad_event_time", Reason.INVALID_TIMESTAMP),
    ],
)
def test_malformed_records_are_quarantined_not_raised(fixture: str, reason: Reason) -> None:
    outcome = outcome_of(fixture)

    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason) == ("quarantined", reason)
    assert outcome.detail


def test_malformed_detail_names_the_field() -> None:
    outcome = outcome_of("event_name_number")

    assert isinstance(outcome, Skip)
    assert "eventName" in outcome.detail


def test_float_byte_count_becomes_an_integer() -> None:
    outcome = outcome_of("float_bytes")

    assert isinstance(outcome, MeteredDownload)
    assert outcome.bytes_sent == 16384
    assert outcome.to_line().split("|")[4] == "16384"


def test_absent_byte_count_is_zero() -> None:
    outcome = outcome_of("no_bytes")

    assert isinstance(outcome, MeteredDownload)
    assert outcome.bytes_sent == 0


def test_unicode_item_id_is_kept_as_sent() -> None:
    outcome = outcome_of("unicode_item")

    assert isinstance(outcome, MeteredDownload)
    assert outcome.item_id == "Bänd_04 \u2013 東京 ✓"


def metered_twice(fixture: str, *, drop: str = "") -> tuple[MeteredDownload | Skip, MeteredDownload | Skip]:
    """A fixture record (less its field ``drop``) metered twice against one set of seen ids, as in one log file."""
    value = load_event(f"cloudtrail/{fixture}")
    value.pop(drop, None)
    record = decode_record(json.dumps(value).encode())
    assert not isinstance(record, Skip)
    seen = EventIdSet()
    return meter(record, seen), meter(record, seen)


@pytest.mark.parametrize(
    ("fixture", "drop", "identity"),
    [
        ("missing_event_id", "", "s3-request:stac-assets-prod/7KQ4B1S9XW2M00FF"),
        ("presigned_get", "requestID", "cloudtrail-event:5c0e3f0a-9d1b-4e8f-a2c3-6b7d8e9f0a1b"),
    ],
    ids=["no-event-id-known-by-request-id", "no-request-id-known-by-event-id"],
)
def test_a_record_is_known_by_the_id_it_has_and_metered_once(fixture: str, drop: str, identity: str) -> None:
    first, second = metered_twice(fixture, drop=drop)

    assert isinstance(first, MeteredDownload)
    assert first.event_id == identity
    assert second == Skip.filtered(Reason.DUPLICATE_EVENT)


def test_record_without_any_id_is_still_metered_every_time() -> None:
    outcomes = metered_twice("missing_event_id", drop="requestID")

    assert all(isinstance(outcome, MeteredDownload) for outcome in outcomes)


def test_duplicate_event_id_is_metered_once() -> None:
    first, second = metered_twice("presigned_get")

    assert isinstance(first, MeteredDownload)
    assert second == Skip.filtered(Reason.DUPLICATE_EVENT)


def test_repeated_filtered_event_keeps_its_own_reason() -> None:
    assert list(metered_twice("failed_403")) == [Skip.filtered(Reason.FAILED_REQUEST)] * 2


def test_eventbridge_detail_with_float_bytes_is_metered() -> None:
    # EventBridge turns every number into a float, so the parsed detail carries 16384.0.
    detail: dict[str, Any] = load_event("cloudtrail/presigned_get")
    detail["additionalEventData"]["bytesTransferredOut"] = 16384.0

    outcome = record_from_object(detail)

    assert not isinstance(outcome, Skip)
    download = classify(outcome)
    assert isinstance(download, MeteredDownload)
    assert download.bytes_sent == 16384


@pytest.mark.parametrize("detail", ["a string", 42, None, {"requestParameters": ["x"]}])
def test_parsed_detail_of_wrong_shape_is_quarantined(detail: object) -> None:
    outcome = record_from_object(detail)

    assert isinstance(outcome, Skip)
    assert outcome.reason is Reason.MALFORMED_ENTRY


def test_null_request_parameters_on_presigned_get_is_missing_user_id() -> None:
    record: dict[str, Any] = load_event("cloudtrail/presigned_get")
    record["requestParameters"] = None
    decoded = record_from_object(record)

    assert not isinstance(decoded, Skip)
    assert classify(decoded) == Skip.filtered(Reason.MISSING_USER_ID)


class TestSeedBaselineFalsePositives:
    """Entries the original sample Lambda metered wrongly; none of them may become a line."""

    @pytest.mark.parametrize("fixture", ["failed_403", "failed_404", "failed_signature"])
    def test_failed_requests(self, fixture: str) -> None:
        assert outcome_of(fixture) == Skip.filtered(Reason.FAILED_REQUEST)

    def test_missing_user_id(self) -> None:
        # The seed checked only collectionId and itemId and wrote "None" as the user.
        assert outcome_of("missing_user_id") == Skip.filtered(Reason.MISSING_USER_ID)

    def test_non_uuid_user_id(self) -> None:
        assert outcome_of("non_uuid_user") == Skip.filtered(Reason.INVALID_USER_ID)

    def test_float_bytes_are_not_written_with_a_decimal_point(self) -> None:
        outcome = outcome_of("float_bytes")
        assert isinstance(outcome, MeteredDownload)
        assert "16384.0" not in outcome.to_line()


def test_absurdly_nested_record_is_quarantined_not_raised() -> None:
    nested = b'{"eventName":"GetObject","userIdentity":' + b"[" * 5000 + b"]" * 5000 + b"}"

    outcome = decode_record(nested)

    assert isinstance(outcome, Skip)
    assert outcome.reason is Reason.MALFORMED_ENTRY
