"""``ogc-audit extract --source s3-access-log`` and ``ogc-audit replay`` over access logs: files, stdin, S3."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from ogc_audit.cli import main
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import access_log_key, access_log_line, utc
from tests.events import event_bytes
from tests.helpers import log_file_entries, replay_emulator, run_replay

USER = "3f1c9a52-7a4e-4c1e-9f0b-2d5f8e6a1b7c"
COLLECTION = "8b2d4e6f-1a3c-4b5d-8e7f-9a0b1c2d3e4f"
ITEM = "S2B_MSIL2A_20251026T050649_N0511_R019_T43PGQ"
NAMES = ["presigned_get", "failed_403", "head_object", "header_signed", "non_uuid_user", "partial_content"]
LINES = [
    f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|16384|aws_s3",
    f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|1048576|aws_s3",
]
FILTERED = {"failed_request": 1, "invalid_user_id": 1, "not_get_object": 1, "not_presigned": 1}


def mixed() -> bytes:
    return b"".join(event_bytes(f"access_log/{name}.log") for name in NAMES)


def extract(capsys: pytest.CaptureFixture[str], *paths: str) -> tuple[int, list[str], dict[str, Any]]:
    status = main(["extract", "--source", "s3-access-log", *paths])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), json.loads(captured.err.strip().splitlines()[-1])


def test_local_access_log_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "2025-10-27-10-15-42-7F48A46E2E37A2F9"
    path.write_bytes(mixed())

    status, lines, summary = extract(capsys, str(path))

    assert status == 0
    assert lines == LINES
    assert summary == {"source": "s3-access-log", "entries": 6, "metered": 2, "filtered": FILTERED, "quarantined": {}}


def test_stdin_and_a_request_repeated_across_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(mixed())))
    again = tmp_path / "again"
    again.write_bytes(event_bytes("access_log/presigned_get.log"))  # the same request in a second object

    status, lines, summary = extract(capsys, "-", str(again))

    assert status == 0
    assert lines == LINES
    assert summary["filtered"] == {**FILTERED, "duplicate_event": 1}


def test_a_quarantined_line_sets_the_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "log"
    path.write_bytes(event_bytes("access_log/truncated.log") + event_bytes("access_log/presigned_get.log"))

    status, lines, summary = extract(capsys, str(path))

    assert status == 1
    assert lines == LINES[:1]
    assert summary["quarantined"] == {"malformed_entry": 1}


def test_each_quarantined_line_is_named_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "log"
    good = event_bytes("access_log/presigned_get.log")
    path.write_bytes(good + event_bytes("access_log/truncated.log") + good + event_bytes("access_log/bad_time.log"))

    main(["extract", "--source", "s3-access-log", str(path)])
    notes = capsys.readouterr().err.strip().splitlines()[:-1]

    assert notes == [
        f"quarantined malformed_entry: {path}: record 2: the record ends before the Referer",
        f"quarantined invalid_timestamp: {path}: record 4: timestamp '27/Okt/2025:10:12:30 +0000'",
    ]


def test_the_first_20_quarantined_lines_are_named_and_the_rest_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"".join(f"bad line {number}\n".encode() for number in range(1, 26)))

    status = main(["extract", "--source", "s3-access-log", str(path)])
    notes = capsys.readouterr().err.strip().splitlines()

    assert status == 1
    assert len(notes) == 22  # 20 named, one line for the other 5, the summary
    assert notes[0].startswith(f"quarantined malformed_entry: {path}: record 1: ")
    assert notes[19].startswith(f"quarantined malformed_entry: {path}: record 20: ")
    assert notes[20] == "quarantined: 5 more not shown (the first 20 are)"
    assert json.loads(notes[21])["quarantined"] == {"malformed_entry": 25}


def test_s3_prefix_reads_only_access_log_objects(mocked_aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="access-archive")
    s3.put_object(Bucket="access-archive", Key=access_log_key(utc("2025-10-27T10:00:00"), "A1"), Body=mixed())
    s3.put_object(Bucket="access-archive", Key="access-logs/2025-10-27-11-00-00-B2", Body=mixed())
    s3.put_object(Bucket="access-archive", Key="access-logs/README.txt", Body=b"not a log")

    status = main(["extract", "--source", "s3-access-log", "s3://access-archive/access-logs/"])
    captured = capsys.readouterr()

    assert status == 0
    assert captured.out.splitlines() == LINES  # the second object repeats the same requests
    summary = json.loads(captured.err.strip().splitlines()[-1])
    assert (summary["metered"], summary["filtered"]["duplicate_event"]) == (2, 2)
    assert "skipped s3://access-archive/access-logs/README.txt: not_log_file" in captured.err


# --- replay over access logs ---------------------------------------------------------------------------------

BUCKET = "replay-access-logs"


@pytest.fixture
def access_logs() -> Iterator[list[str]]:
    """A moto server with three access-log objects (10:00, 10:20, 12:00), each with 2 downloads among 4 records."""
    rng = random.Random(11)
    start = utc("2025-10-27T10:00:00")
    with replay_emulator(BUCKET) as s3:
        expected: list[str] = []
        for offset in (0, 20, 120):
            when = start + timedelta(minutes=offset)
            entries, metered = log_file_entries(rng, when - timedelta(hours=1))  # records older than their object
            lines = [access_log_line(download, variant) for download, variant in entries]
            lines.append(lines[0])  # delivered twice
            s3.put_object(Bucket=BUCKET, Key=access_log_key(when, f"R{offset}"), Body="".join(lines).encode())
            expected += metered if offset < 120 else []
        yield expected


def replay(rs: ReferenceOgcRs, *args: str) -> tuple[int, list[dict[str, object]]]:
    return run_replay(rs, f"s3://{BUCKET}/access-logs/", *args)


def test_replay_of_an_access_log_period_sends_each_request_once(
    access_logs: list[str], reference_rs: ReferenceOgcRs
) -> None:
    period = ("--since", "2025-10-27T10:00Z", "--until", "2025-10-27T11:00")

    status, first = replay(reference_rs, *period)
    assert status == 0
    assert (first[-1]["files"], first[-1]["delivered"], first[-1]["already_delivered"]) == (2, 4, 0)
    assert first[-1]["filtered"] == {"duplicate_event": 2, "failed_request": 2, "not_get_object": 2}
    stored = sorted(reference_rs.stored_lines())
    assert [line.rsplit("|", 3)[0] + "|" for line in stored] == sorted(access_logs)

    status, second = replay(reference_rs, *period)
    assert status == 0
    assert (second[-1]["delivered"], second[-1]["already_delivered"]) == (0, 4)
