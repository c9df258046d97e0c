"""``ogc-audit extract --source cloudtrail``: files, stdin and S3 prefixes; lines on stdout, summary on stderr."""

from __future__ import annotations

import copy
import gzip
import io
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from ogc_audit.cli import main
from tests.events import load_event

USER = "3f1c9a52-7a4e-4c1e-9f0b-2d5f8e6a1b7c"
COLLECTION = "8b2d4e6f-1a3c-4b5d-8e7f-9a0b1c2d3e4f"
ITEM = "S2B_MSIL2A_20251026T050649_N0511_R019_T43PGQ"


def fixture(name: str, event_id: str | None = None) -> dict[str, Any]:
    record = copy.deepcopy(load_event(f"cloudtrail/{name}"))
    if event_id is not None:
        record["eventID"] = event_id
    return record


# The seed Lambda's false positives beside two real downloads: it metered the failed, the user-less and the
# non-UUID-user requests, metered the repeated event twice and wrote the float byte count as 16384.0.
MIXED = [
    fixture("presigned_get"),
    fixture("failed_403"),
    fixture("failed_404"),
    fixture("missing_user_id"),
    fixture("non_uuid_user"),
    fixture("presigned_get"),  # the same event delivered twice
    fixture("float_bytes"),
    fixture("header_signed"),
    fixture("head_object"),
]
MIXED_LINES = [
    f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|16384|aws_s3",
    f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|16384|aws_s3",  # float_bytes: another event, same values
]
MIXED_FILTERED = {
    "duplicate_event": 1,
    "failed_request": 2,
    "invalid_user_id": 1,
    "missing_user_id": 1,
    "not_get_object": 1,
    "not_presigned": 1,
}


def extract(capsys: pytest.CaptureFixture[str], *paths: str) -> tuple[int, list[str], dict[str, Any]]:
    status = main(["extract", "--source", "cloudtrail", *paths])
    captured = capsys.readouterr()
    summary = json.loads(captured.err.strip().splitlines()[-1])
    return status, captured.out.splitlines(), summary


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def records_document(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"Records": records}).encode()


def test_gzip_log_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "trail.json.gz", gzip.compress(records_document(MIXED)))

    status, lines, summary = extract(capsys, path)

    assert status == 0
    assert lines == MIXED_LINES
    assert summary == {
        "source": "cloudtrail",
        "entries": 9,
        "metered": 2,
        "filtered": MIXED_FILTERED,
        "quarantined": {},
    }


def test_plain_json_and_ndjson_and_single_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = write(tmp_path / "trail.json", json.dumps({"Records": MIXED[:1]}, indent=2).encode())
    ndjson = write(tmp_path / "records.ndjson", "\n".join(json.dumps(r) for r in MIXED[5:7]).encode())
    single = write(tmp_path / "one.json", json.dumps(fixture("no_bytes")).encode())

    status, lines, summary = extract(capsys, plain, ndjson, single)

    assert status == 0
    assert lines == [*MIXED_LINES, f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|0|aws_s3"]
    assert summary["filtered"] == {"duplicate_event": 1}  # the same eventID in two files of one run


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = gzip.compress(records_document(MIXED))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))

    status, lines, _ = extract(capsys, "-")

    assert status == 0
    assert lines == MIXED_LINES


def test_a_new_run_forgets_the_event_ids_of_the_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "trail.json.gz", gzip.compress(records_document(MIXED[:1])))

    assert extract(capsys, path)[1] == MIXED_LINES[:1]
    assert extract(capsys, path)[1] == MIXED_LINES[:1]


def test_damaged_file_exits_1_and_keeps_the_good_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = gzip.compress(records_document(MIXED))
    damaged = write(tmp_path / "damaged.json.gz", whole[:-12])
    malformed = write(tmp_path / "malformed.json", records_document([fixture("event_name_number")]))

    status, lines, summary = extract(capsys, damaged, malformed)

    assert status == 1
    assert lines == MIXED_LINES
    assert summary["quarantined"] == {"bad_gzip": 1, "malformed_entry": 1}


def test_each_quarantined_record_is_named_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    too_early = fixture("presigned_get", event_id="00000000-0000-4000-8000-000000000002")
    too_early["eventTime"] = "1970-01-01T00:00:00Z"
    records = [fixture("presigned_get"), fixture("event_name_number"), too_early, fixture("negative_bytes")]
    path = write(tmp_path / "trail.json.gz", gzip.compress(records_document(records)))

    status = main(["extract", "--source", "cloudtrail", path])
    notes = capsys.readouterr().err.strip().splitlines()[:-1]

    assert status == 1
    assert [note.split(": ")[:3] for note in notes] == [
        ["quarantined malformed_entry", path, "record 1"],
        ["quarantined invalid_timestamp", path, "record 2"],
        ["quarantined invalid_bytes", path, "record 3"],
    ]
    assert "eventName" in notes[0]
    assert "1970-01-01T00:00:00Z" in notes[1]


def test_a_damaged_file_is_named_with_where_it_broke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "damaged.json.gz", gzip.compress(records_document(MIXED))[:-12])

    main(["extract", "--source", "cloudtrail", path])
    notes = capsys.readouterr().err.strip().splitlines()[:-1]

    assert len(notes) == 1
    assert notes[0].startswith(f"quarantined bad_gzip: {path}: truncated gzip stream")


@pytest.fixture
def log_bucket(mocked_aws: None) -> Any:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="trail-archive")
    return s3


def test_s3_prefix(log_bucket: Any, capsys: pytest.CaptureFixture[str]) -> None:
    day = "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/ap-south-1/2025/10/27"
    log_bucket.put_object(
        Bucket="trail-archive", Key=f"{day}/a_CloudTrail_1.json.gz", Body=gzip.compress(records_document(MIXED[:5]))
    )
    log_bucket.put_object(
        Bucket="trail-archive", Key=f"{day}/b_CloudTrail_2.json.gz", Body=gzip.compress(records_document(MIXED[5:]))
    )
    log_bucket.put_object(
        Bucket="trail-archive",
        Key="AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail-Digest/ap-south-1/2025/10/27/d.json.gz",
        Body=b"{}",
    )
    log_bucket.put_object(Bucket="trail-archive", Key="elsewhere/x.json.gz", Body=b"{}")

    status, lines, summary = extract(capsys, "s3://trail-archive/AWSLogs/o-a1b2c3d4e5/")

    assert status == 0
    assert lines == MIXED_LINES
    assert summary["filtered"] == MIXED_FILTERED
