"""Reading CloudTrail log files: gzip or plain, streamed in pieces, damage quarantined with its offset."""

from __future__ import annotations

import copy
import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from metering.outcomes import Reason, Skip
from s3_audit import log_file
from s3_audit.cloudtrail import CloudTrailRecord
from s3_audit.log_file import LogRecord, decompressed, read_log_records
from tests.events import load_event


def make_records(count: int) -> list[dict[str, Any]]:
    """Realistic records with distinct eventIDs and itemIds, mixing metered and filtered ones."""
    fixtures = ["presigned_get", "failed_403", "head_object", "header_signed", "float_bytes", "unicode_item"]
    records = []
    for index in range(count):
        record = copy.deepcopy(load_event(f"cloudtrail/{fixtures[index % len(fixtures)]}"))
        record["eventID"] = f"00000000-0000-4000-8000-{index:012d}"
        record["requestParameters"]["itemId"] = f"item-{index}"
        records.append(record)
    return records


def log_file_json(records: list[dict[str, Any]], indent: int | None = None) -> bytes:
    return json.dumps({"Records": records}, indent=indent, ensure_ascii=False).encode()


def in_chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read_all(data: bytes, *, chunk: int = 1 << 16, piece: int = 1 << 20) -> list[LogRecord]:
    return list(read_log_records(in_chunks(data, chunk), piece_size=piece))


def event_ids(outcomes: list[LogRecord]) -> list[str | None]:
    return [outcome.event_id for outcome in outcomes if isinstance(outcome, CloudTrailRecord)]


def skips(outcomes: list[LogRecord]) -> list[Skip]:
    return [outcome for outcome in outcomes if isinstance(outcome, Skip)]


RECORDS = make_records(40)
EXPECTED_IDS = [record["eventID"] for record in RECORDS]


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_reads_every_record_in_order(compress: bool) -> None:
    data = log_file_json(RECORDS)
    outcomes = read_all(gzip.compress(data) if compress else data)

    assert event_ids(outcomes) == EXPECTED_IDS
    assert skips(outcomes) == []


@pytest.mark.parametrize(("chunk", "piece"), [(1, 1), (7, 64), (100, 3000), (4096, 2500), (1 << 16, 1 << 20)])
def test_records_split_across_chunks_and_pieces(chunk: int, piece: int) -> None:
    # Tiny pieces put cuts inside records, inside resources arrays and inside strings.
    outcomes = read_all(gzip.compress(log_file_json(RECORDS)), chunk=chunk, piece=piece)

    assert event_ids(outcomes) == EXPECTED_IDS
    assert skips(outcomes) == []


@pytest.mark.parametrize("piece", [50, 700, 5000])
def test_whitespace_formatted_json(piece: int) -> None:
    data = log_file_json(RECORDS, indent=4).replace(b"\n", b"\r\n")

    assert event_ids(read_all(data, chunk=333, piece=piece)) == EXPECTED_IDS


@pytest.mark.parametrize("piece", [16, 200, 1500])
def test_strings_holding_record_boundaries(piece: int) -> None:
    records = make_records(6)
    records[1]["userAgent"] = 'evil},{"eventName":"GetObject"} ,  {'
    records[2]["requestParameters"]["itemId"] = "a},{b} , {c"
    records[3]["resources"].append({"type": "AWS::S3::Object", "ARN": "x},{y"})

    outcomes = read_all(log_file_json(records), chunk=10, piece=piece)

    assert event_ids(outcomes) == [record["eventID"] for record in records]
    decoded = [outcome for outcome in outcomes if isinstance(outcome, CloudTrailRecord)]
    assert decoded[2].request_parameters is not None
    assert decoded[2].request_parameters.item_id == "a},{b} , {c"


def test_unicode_is_decoded_across_chunk_edges() -> None:
    records = make_records(3)
    records[1]["requestParameters"]["itemId"] = "東京😀Bänd"

    outcomes = read_all(gzip.compress(log_file_json(records)), chunk=3, piece=20)

    decoded = [outcome for outcome in outcomes if isinstance(outcome, CloudTrailRecord)]
    assert decoded[1].request_parameters is not None
    assert decoded[1].request_parameters.item_id == "東京😀Bänd"


@pytest.mark.parametrize("document", [b'{"Records":[]}', b' {\n "Records" : [ ]\n}\n'])
def test_empty_records_array(document: bytes) -> None:
    assert read_all(document) == []


def test_record_of_wrong_type_is_the_only_one_quarantined() -> None:
    records = make_records(10)
    records[4]["eventName"] = 42
    records[7] = "not a record"  # type: ignore[call-overload]

    outcomes = read_all(log_file_json(records), piece=1500)

    assert event_ids(outcomes) == [r["eventID"] for i, r in enumerate(records) if i not in (4, 7)]
    assert [(skip.kind, skip.reason) for skip in skips(outcomes)] == [("quarantined", Reason.MALFORMED_ENTRY)] * 2
    assert skips(outcomes)[0].detail.startswith("record 4:")
    assert "eventName" in skips(outcomes)[0].detail


def test_single_record_object() -> None:
    record = load_event("cloudtrail/presigned_get")

    assert event_ids(read_all(json.dumps(record).encode())) == [record["eventID"]]


def test_ndjson_of_records_with_a_bad_line() -> None:
    lines = [json.dumps(record) for record in RECORDS[:3]]
    data = "\n".join([lines[0], "", lines[1], "{not json", lines[2]]).encode() + b"\n"

    outcomes = read_all(gzip.compress(data))

    assert event_ids(outcomes) == EXPECTED_IDS[:3]
    assert [skip.reason for skip in skips(outcomes)] == [Reason.BAD_JSON]
    assert skips(outcomes)[0].detail.startswith("line 4:")


def test_json_array_of_records() -> None:
    assert event_ids(read_all(json.dumps(RECORDS[:5]).encode())) == EXPECTED_IDS[:5]


def test_records_key_after_other_keys_uses_the_whole_document() -> None:
    data = json.dumps({"version": 1, "Records": RECORDS[:4]}).encode()

    assert event_ids(read_all(data)) == EXPECTED_IDS[:4]


def test_concatenated_gzip_members_are_one_file() -> None:
    half = len(log_file_json(RECORDS)) // 2
    data = log_file_json(RECORDS)

    outcomes = read_all(gzip.compress(data[:half]) + gzip.compress(data[half:]), chunk=500)

    assert event_ids(outcomes) == EXPECTED_IDS


def only_fault(outcomes: list[LogRecord]) -> Skip:
    found = skips(outcomes)
    assert len(found) == 1
    assert found[0].kind == "quarantined"
    return found[0]


@pytest.mark.parametrize("data", [b"", b"  \n", gzip.compress(b"")], ids=["empty", "blank", "empty-gzip"])
def test_empty_file_is_bad_json(data: bytes) -> None:
    fault = only_fault(read_all(data))

    assert (fault.reason, fault.detail) == (Reason.BAD_JSON, "empty file")


def test_non_json_text_is_bad_json() -> None:
    fault = only_fault(read_all(b"<html>503 Service Unavailable</html>"))

    assert fault.reason is Reason.BAD_JSON


def test_truncated_gzip_keeps_the_records_before_the_break() -> None:
    compressed = gzip.compress(log_file_json(RECORDS))

    outcomes = read_all(compressed[: len(compressed) * 2 // 3], chunk=1000, piece=4000)

    fault = only_fault(outcomes)
    assert fault.reason is Reason.BAD_GZIP
    assert "truncated" in fault.detail
    kept = event_ids(outcomes)
    assert 0 < len(kept) < len(RECORDS)
    assert kept == EXPECTED_IDS[: len(kept)]


def test_corrupt_gzip_keeps_the_records_before_the_damage() -> None:
    data = log_file_json(RECORDS)
    half = data.index(b', {"eventVersion"', len(data) // 2) + 1
    packer = zlib.compressobj(wbits=31)
    # A full flush ends the first half on a byte boundary; 0xFF there is an invalid deflate block type.
    good = packer.compress(data[:half]) + packer.flush(zlib.Z_FULL_FLUSH)
    damaged = good + b"\xff" * 8 + packer.compress(data[half:]) + packer.flush()

    outcomes = read_all(damaged, chunk=256, piece=2000)

    fault = only_fault(outcomes)
    assert fault.reason is Reason.BAD_GZIP
    assert "compressed byte" in fault.detail
    before_damage = len(json.loads(data[: half - 1] + b"]}")["Records"])
    kept = event_ids(outcomes)
    assert 0 < len(kept) <= before_damage
    assert kept == EXPECTED_IDS[: len(kept)]
    if log_file._INFLATE is zlib:
        # zlib drops only the output of the failing call: the records of the last input slice.
        # (python-isal, when installed, holds back more output and so loses more before the damage.)
        assert len(kept) >= before_damage - 2


def test_gzip_with_a_wrong_checksum_is_bad_gzip() -> None:
    compressed = bytearray(gzip.compress(log_file_json(RECORDS)))
    compressed[-8] ^= 0xFF  # CRC-32 of the trailer

    outcomes = read_all(bytes(compressed), chunk=64, piece=2000)

    assert only_fault(outcomes).reason is Reason.BAD_GZIP
    # The check fails at the very end: every whole record was decoded before it.
    assert event_ids(outcomes) == EXPECTED_IDS[:-1]


@pytest.mark.parametrize("piece", [100, 5000, 1 << 20])
def test_bad_json_in_the_middle_keeps_the_records_before_it(piece: int) -> None:
    data = log_file_json(RECORDS)
    damage = data.index(b'"eventTime"', len(data) // 2)
    broken = data[:damage] + b"@@" + data[damage:]

    outcomes = read_all(gzip.compress(broken), chunk=700, piece=piece)

    fault = only_fault(outcomes)
    assert fault.reason is Reason.BAD_JSON
    assert f"decompressed byte {damage}" in fault.detail
    kept = event_ids(outcomes)
    assert kept == EXPECTED_IDS[: len(kept)]
    assert len(kept) == data[:damage].count(b'"eventVersion"') - 1


@pytest.mark.parametrize("cut", [0.3, 0.999])
def test_truncated_plain_json_keeps_whole_records(cut: float) -> None:
    data = log_file_json(RECORDS)

    outcomes = read_all(data[: int(len(data) * cut)], chunk=512, piece=3000)

    fault = only_fault(outcomes)
    assert fault.reason is Reason.BAD_JSON
    kept = event_ids(outcomes)
    assert 0 < len(kept) < len(RECORDS)
    assert kept == EXPECTED_IDS[: len(kept)]


def test_decompressed_blocks_are_bounded() -> None:
    data = log_file_json(RECORDS * 5)

    blocks = list(decompressed([gzip.compress(data)], out_size=4096))

    assert max(len(block) for block in blocks) <= 4096
    assert b"".join(blocks) == data


@pytest.mark.parametrize("piece", [200, 1 << 20])
def test_absurdly_nested_json_is_quarantined_not_raised(piece: int) -> None:
    deep = b'{"eventName":"GetObject","userIdentity":' + b"[" * 5000 + b"]" * 5000 + b"}"
    data = b'{"Records":[' + json.dumps(RECORDS[0]).encode() + b"," + deep + b"]}"

    outcomes = read_all(data, piece=piece)

    # msgspec cannot even skip such a value, so the piece holding it is lost from there on.
    assert event_ids(outcomes) == EXPECTED_IDS[: len(event_ids(outcomes))]
    assert [skip.kind for skip in skips(outcomes)] == ["quarantined"]


def test_absurdly_nested_single_document_is_bad_json() -> None:
    assert only_fault(read_all(b"[" * 5000 + b"]" * 5000)).reason is Reason.BAD_JSON
