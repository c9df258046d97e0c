"""The metered line: id rules, timestamp and byte normalisation, and the pre-send check."""

from __future__ import annotations

import pytest

from metering.line import (
    Backend,
    MeteredDownload,
    build_download,
    check_ids,
    is_valid_line,
    normalize_bytes,
    normalize_timestamp,
)
from metering.outcomes import OutcomeTally, Reason, Skip

USER = "8f1c2a4e-5b6d-4e7f-9a0b-1c2d3e4f5a6b"
COLLECTION = "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-10-27T10:12:30Z", "2025-10-27T10:12:30Z"),
        ("2025-10-27T10:12:30.999Z", "2025-10-27T10:12:30Z"),
        ("2025-10-27T10:12:30.123456789Z", "2025-10-27T10:12:30Z"),
        ("2025-10-27T15:42:30.5+05:30", "2025-10-27T10:12:30Z"),
        ("2025-10-27T05:12:30-05:00", "2025-10-27T10:12:30Z"),
        ("2025-10-27t10:12:30z", "2025-10-27T10:12:30Z"),
    ],
)
def test_timestamps_become_whole_utc_seconds(raw: str, expected: str) -> None:
    assert normalize_timestamp(raw) == expected


@pytest.mark.parametrize(
    "raw", ["2025-10-27T10:12:30", "2025-10-27", "yesterday", "", None, 1761559950, "2025-13-01T00:00:00Z"]
)
def test_timestamps_without_an_instant_are_refused(raw: object) -> None:
    assert normalize_timestamp(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(16384, 16384), (16384.0, 16384), ("16384", 16384), ("16384.0", 16384), (0, 0), ("  7 ", 7), ("0" * 30 + "7", 7)],
)
def test_byte_counts_become_integers(raw: object, expected: int) -> None:
    assert normalize_bytes(raw) == expected


@pytest.mark.parametrize(
    "raw", [-1, "-5", 12.5, "abc", True, None, [], float("inf"), float("nan"), 2**63, "1e400", "7" * 20, "7" * 100_000]
)
def test_invalid_byte_counts_are_refused(raw: object) -> None:
    assert normalize_bytes(raw) is None


@pytest.mark.parametrize(
    ("user", "collection", "item", "reason"),
    [
        (None, COLLECTION, "item-1", Reason.MISSING_USER_ID),
        ("  ", COLLECTION, "item-1", Reason.MISSING_USER_ID),
        (USER, "", "item-1", Reason.MISSING_COLLECTION_ID),
        (USER, COLLECTION, None, Reason.MISSING_ITEM_ID),
        (USER, COLLECTION, 42, Reason.MISSING_ITEM_ID),
        ("user-123", COLLECTION, "item-1", Reason.INVALID_USER_ID),
        (USER, "8f1c2a4e5b6d4e7f9a0b1c2d3e4f5a6b", "item-1", Reason.INVALID_COLLECTION_ID),
        (USER, COLLECTION, "a|b", Reason.INVALID_ITEM_ID),
    ],
)
def test_id_rules_name_the_failing_id(user: object, collection: object, item: object, reason: Reason) -> None:
    assert check_ids(user, collection, item) == Skip.filtered(reason)


def test_valid_ids_pass() -> None:
    assert check_ids(USER, COLLECTION.upper(), "S2A_MSIL2A_20251027/B04.tif") is None


def test_build_download_makes_the_exact_line() -> None:
    download = build_download(
        user_id=f" {USER} ",
        collection_id=COLLECTION,
        item_id="item-1",
        timestamp="2025-10-27T10:12:30.999Z",
        bytes_sent="16384.0",
        backend=Backend.AWS_S3,
        event_id="e-1",
    )
    assert isinstance(download, MeteredDownload)
    assert download.to_line() == f"{USER}|{COLLECTION}|item-1|2025-10-27T10:12:30Z|16384|aws_s3"
    assert is_valid_line(download.to_line())


@pytest.mark.parametrize(
    ("timestamp", "size", "reason"),
    [("2025-10-27T10:12:30", 1, Reason.INVALID_TIMESTAMP), ("2025-10-27T10:12:30Z", -3, Reason.INVALID_BYTES)],
)
def test_build_download_quarantines_bad_values(timestamp: str, size: int, reason: Reason) -> None:
    result = build_download(
        user_id=USER,
        collection_id=COLLECTION,
        item_id="i",
        timestamp=timestamp,
        bytes_sent=size,
        backend=Backend.MINIO,
        event_id="x",
    )
    assert isinstance(result, Skip)
    assert (result.kind, result.reason) == ("quarantined", reason)


@pytest.mark.parametrize(
    "line",
    [
        f"{USER}|{COLLECTION}|item|2025-10-27T10:12:30Z|12|minio|extra",
        f"{USER}|{COLLECTION}|item|2025-10-27T10:12:30Z|12",
        f"{USER}|{COLLECTION}||2025-10-27T10:12:30Z|12|minio",
        f"{USER}|{COLLECTION}|item|2025-10-27T10:12:30|12|minio",
        f"{USER}|{COLLECTION}|item|2025-10-27T10:12:30Z|12.0|minio",
        f"{USER}|{COLLECTION}|item|2025-10-27T10:12:30Z|-1|minio",
        f"nobody|{COLLECTION}|item|2025-10-27T10:12:30Z|12|minio",
        "",
        None,
    ],
)
def test_lines_ogc_rs_would_reject_are_invalid(line: object) -> None:
    assert not is_valid_line(line)


def test_tally_counts_each_outcome_once() -> None:
    tally = OutcomeTally()
    tally.metered += 2
    tally.count(Skip.filtered(Reason.NOT_PRESIGNED))
    tally.count(Skip.quarantined(Reason.BAD_JSON, "byte 3"), times=2)
    other = OutcomeTally(metered=1)
    other.count(Skip.filtered(Reason.NOT_PRESIGNED))
    tally.merge(other)
    assert tally.as_dict() == {
        "entries": 7,
        "metered": 3,
        "filtered": {"not_presigned": 2},
        "quarantined": {"bad_json": 2},
    }


@pytest.mark.parametrize(
    "raw",
    ["9" * 20, "9" * 5_000, "0." + "1" * 40, 10**20, 10**5_000, "1" * 4_301, "16384.5", "12 KB", "0x10"],
    ids=[
        "20-digits",
        "5000-digits",
        "fraction-text",
        "int-20-digits",
        "int-5000-digits",
        "4301-digits",
        "half",
        "text",
        "hex",
    ],
)
def test_poisoned_byte_counts_are_refused_without_raising(raw: object) -> None:
    # A 4,300+-digit string used to raise ValueError (Python's int-from-str digit limit) and spoil its whole file.
    assert normalize_bytes(raw) is None
    outcome = build_download(
        user_id=USER,
        collection_id=COLLECTION,
        item_id="item-1",
        timestamp="2025-10-27T10:12:30Z",
        bytes_sent=raw,
        backend=Backend.AWS_S3,
        event_id="e1",
    )
    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason) == ("quarantined", Reason.INVALID_BYTES)


def test_largest_java_long_is_still_a_byte_count() -> None:
    assert normalize_bytes(str(2**63 - 1)) == 2**63 - 1
    assert normalize_bytes("0000000000000000000016384") == 16384


@pytest.mark.parametrize("control", [*(chr(code) for code in range(0x20)), "\x7f"])
def test_item_ids_with_a_control_character_are_invalid(control: str) -> None:
    # PostgreSQL refuses NUL, so OGC RS would reject the whole batch around such a line.
    assert check_ids(USER, COLLECTION, f"S2A{control}B04.tif") == Skip.filtered(Reason.INVALID_ITEM_ID)
    assert not is_valid_line(f"{USER}|{COLLECTION}|S2A{control}B04.tif|2025-10-27T10:12:30Z|1|aws_s3")
