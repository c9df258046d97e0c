"""``ogc-audit extract --source minio``: JSON, NDJSON, arrays, gzip and stdin."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pytest

from metering.outcomes import OutcomeTally
from minio_relay.extract import extract_downloads
from ogc_audit.extract import run_extract
from tests.events import event_bytes, event_path

USER = "6f1d2c8e-3b4a-4f5e-9a7b-1c2d3e4f5a6b"
COLLECTION = "0b8e6c1a-9d2f-4e3b-8a7c-5d6e7f8a9b0c"
ITEM = "S2A_MSIL2A_20251020T050701_N0511_R019_T43PGQ"
BATCH_LINES = [
    f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|1048576|minio",
    f"{USER}|{COLLECTION}|S2B_MSIL2A_20251021T050659_N0511_R019_T43PGQ|2025-10-27T10:12:31Z|2048|minio",
    f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:32Z|4096|minio",
]


def extract(path: str) -> tuple[list[str], OutcomeTally]:
    tally = OutcomeTally()
    return [download.to_line() for download in extract_downloads([path], tally)], tally


def test_ndjson_file() -> None:
    lines, tally = extract(str(event_path("minio/batch.ndjson")))
    assert lines == BATCH_LINES
    assert tally.as_dict()["filtered"] == {
        "duplicate_event": 1,
        "failed_request": 1,
        "internal_event": 1,
        "not_get_object": 1,
    }


def test_pretty_printed_json_and_array() -> None:
    assert extract(str(event_path("minio/get_object_legacy_2021.json")))[0] == [
        f"{USER}|{COLLECTION}|{ITEM}|2021-06-14T08:03:11Z|52428800|minio"
    ]
    assert len(extract(str(event_path("minio/batch_array.json")))[0]) == 3


def test_gzip_and_blocks_keep_duplicates_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("minio_relay.extract._BLOCK_LINES", 2)
    path = tmp_path / "audit.ndjson.gz"
    path.write_bytes(gzip.compress(event_bytes("minio/batch.ndjson") * 2))
    lines, tally = extract(str(path))
    assert lines == BATCH_LINES
    assert tally.entries == 14


def test_bad_lines_are_counted(tmp_path: Path) -> None:
    lines, tally = extract(str(event_path("minio/batch_with_bad_line.ndjson")))
    assert len(lines) == 2
    assert tally.as_dict()["quarantined"] == {"bad_json": 1}
    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is not an audit log\n")
    garbage_lines, garbage_tally = extract(str(garbage))
    assert garbage_lines == []
    assert garbage_tally.as_dict()["quarantined"] == {"bad_json": 1}
    empty = tmp_path / "empty.json"
    empty.write_text("\n\n")
    assert extract(str(empty))[1].entries == 0


def test_stdin_through_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(event_bytes("minio/batch.ndjson")))
    monkeypatch.setattr(sys, "stdin", stdin)
    out, err = io.StringIO(), io.StringIO()
    assert run_extract("minio", ["-", str(event_path("minio/get_object_partial_206.json"))], out, err) == 0
    assert out.getvalue().splitlines() == [*BATCH_LINES, f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|65536|minio"]
    summary = json.loads(err.getvalue())
    assert (summary["source"], summary["entries"], summary["metered"]) == ("minio", 8, 4)


def test_an_entry_repeated_in_another_file_of_the_run_is_metered_once() -> None:
    path = str(event_path("minio/batch.ndjson"))
    tally = OutcomeTally()
    lines = [download.to_line() for download in extract_downloads([path, path], tally)]
    assert lines == BATCH_LINES
    assert tally.filtered["duplicate_event"] == 1 + 4  # its own repeat, then its 4 download entries again
