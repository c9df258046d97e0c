"""Bounded reading: a record over 1 MiB and a file inflating past the bound are refused with a quarantine reason as
soon as the bound is crossed, and the peak memory of ``ogc-audit extract`` and of the s3_audit handler stays under
300 MB for generated inflation bombs (measured as the peak RSS of a subprocess, reported by the process itself)."""

from __future__ import annotations

import copy
import gzip
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from metering.outcomes import Reason, Skip
from s3_audit import log_file
from s3_audit.cloudtrail import CloudTrailRecord
from s3_audit.log_file import MAX_RECORD_BYTES, ReadLimits, read_log_records
from tests import bombs
from tests.events import load_event
from tests.helpers import cli_env
from tests.property.strategies import chunked

PEAK_MB = 300


def presigned(index: int) -> dict[str, Any]:
    record = copy.deepcopy(load_event("cloudtrail/presigned_get"))
    record["eventID"] = f"00000000-0000-4000-8000-{index:012d}"
    record["requestParameters"]["itemId"] = f"item-{index}"
    return record


def reasons(outcomes: list[Any]) -> list[str]:
    return [outcome.reason.value for outcome in outcomes if isinstance(outcome, Skip)]


def test_a_record_over_one_mib_is_refused_and_the_records_beside_it_are_kept() -> None:
    big = presigned(1)
    big["requestParameters"]["padding"] = "a" * (MAX_RECORD_BYTES + 1)
    data = gzip.compress(json.dumps({"Records": [presigned(0), big, presigned(2)]}).encode(), compresslevel=1)

    outcomes = list(read_log_records([data]))

    kept = [record.event_id for record in outcomes if isinstance(record, CloudTrailRecord)]
    assert kept == [presigned(0)["eventID"], presigned(2)["eventID"]]
    assert reasons(outcomes) == [Reason.RECORD_TOO_LARGE.value]


def oversized(index: int, mebibytes: int = 3) -> dict[str, Any]:
    """A record past twice the bound (so it cannot complete in memory), full of what a skipper trips over."""
    record = presigned(index)
    tricky = 'a}],{"b":"\\"[' * 16
    record["requestParameters"]["padding"] = [{"n": i, "s": tricky, "deeper": [[{}], []]} for i in range(16)]
    record["requestParameters"]["bulk"] = tricky * (mebibytes * bombs.MIB // len(tricky))
    return record


def ids_and_reasons(data: bytes, chunk: int) -> tuple[list[str | None], list[str], list[str]]:
    outcomes = list(read_log_records(chunked(data, chunk)))
    kept = [record.event_id for record in outcomes if isinstance(record, CloudTrailRecord)]
    return kept, reasons(outcomes), [outcome.detail for outcome in outcomes if isinstance(outcome, Skip)]


@pytest.mark.parametrize("chunk", [1000, 65_536, 1 << 22])
@pytest.mark.parametrize(
    "layout",
    ["middle", "first", "last", "two-in-a-row", "huge-string-element", "scalars-before"],
)
def test_a_record_past_twice_the_bound_is_skipped_and_the_records_after_it_are_read(chunk: int, layout: str) -> None:
    small = [presigned(n) for n in range(4)]
    huge: Any = oversized(9) if layout != "huge-string-element" else "x\\" * bombs.MIB
    records: list[Any] = {
        "middle": [small[0], small[1], huge, small[2], small[3]],
        "first": [huge, *small],
        "last": [*small, huge],
        "two-in-a-row": [small[0], huge, oversized(8), small[1], small[2], small[3]],
        "huge-string-element": [small[0], small[1], huge, small[2], small[3]],
        "scalars-before": [small[0], 7, small[1], "s", None, huge, small[2], [1], small[3]],
    }[layout]
    data = gzip.compress(json.dumps({"Records": records}, indent=1).encode(), compresslevel=1)

    kept, why, details = ids_and_reasons(data, chunk)

    assert kept == [record["eventID"] for record in small]
    too_large = [detail for detail in details if "skipped unread" in detail]
    assert len(too_large) == why.count(Reason.RECORD_TOO_LARGE.value) == (2 if layout == "two-in-a-row" else 1)
    # Elements that are not objects: each its own malformed entry, in its place.
    assert why.count(Reason.MALFORMED_ENTRY.value) == (4 if layout == "scalars-before" else 0)


def test_a_file_ending_inside_a_skipped_record_keeps_the_records_before_it() -> None:
    text = json.dumps({"Records": [presigned(0), presigned(1), oversized(2)]}).encode()
    data = text[: len(text) - bombs.MIB]

    kept, why, details = ids_and_reasons(data, 65_536)

    assert kept == [presigned(0)["eventID"], presigned(1)["eventID"]]
    assert why == [Reason.BAD_JSON.value]
    assert "inside record 2" in details[0]


def test_a_record_past_the_skip_bound_ends_the_reading_of_its_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_file, "MAX_SKIPPED_RECORD_BYTES", 4 * bombs.MIB)
    records = [presigned(0), oversized(1, mebibytes=6), presigned(2)]
    data = gzip.compress(json.dumps({"Records": records}).encode(), compresslevel=1)

    kept, why, details = ids_and_reasons(data, 65_536)

    assert kept == [presigned(0)["eventID"]]
    assert why == [Reason.RECORD_TOO_LARGE.value]
    assert "the rest of the file is not read" in details[0]


def test_a_record_just_under_one_mib_is_read() -> None:
    big = presigned(1)
    big["requestParameters"]["padding"] = "a" * (MAX_RECORD_BYTES - 4096)
    data = json.dumps({"Records": [presigned(0), big, presigned(2)]}).encode()

    outcomes = list(read_log_records([data]))

    assert reasons(outcomes) == []
    assert len(outcomes) == 3


def test_a_file_inflating_past_the_bound_is_refused_there(tmp_path: Path) -> None:
    path = tmp_path / "many.json.gz"
    bombs.many_records(path, presigned(0), megabytes=8)

    outcomes = list(read_log_records([path.read_bytes()], limits=ReadLimits(max_file_bytes=4 * bombs.MIB)))

    assert reasons(outcomes) == [Reason.FILE_TOO_LARGE.value]
    read = [record for record in outcomes if isinstance(record, CloudTrailRecord)]
    # Everything before the bound was handed out, nothing after it was read.
    assert 0 < len(read) * len(json.dumps(presigned(0), separators=(",", ":"))) <= 4 * bombs.MIB


def test_the_file_bound_comes_from_the_environment() -> None:
    assert ReadLimits.from_env({}).max_file_bytes == 1 << 30
    assert ReadLimits.from_env({"MAX_LOG_FILE_BYTES": "1048576"}).max_file_bytes == 1 << 20
    with pytest.raises(ValueError, match="MAX_LOG_FILE_BYTES"):
        ReadLimits.from_env({"MAX_LOG_FILE_BYTES": "lots"})


def test_a_whole_document_that_is_too_large_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "array.json.gz"
    bombs.huge_document(path, megabytes=16)

    outcomes = list(read_log_records([path.read_bytes()]))

    assert reasons(outcomes) == [Reason.FILE_TOO_LARGE.value]


def run_measured(*arguments: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -m tests.bombs ARGUMENTS`` in a subprocess: its result and its own peak RSS."""
    completed = subprocess.run(
        [sys.executable, "-m", "tests.bombs", *arguments],
        env={**cli_env(), **(env or {})},
        capture_output=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines = completed.stdout.decode().strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    # The handler logs JSON lines before the result: keep its invocation totals.
    for line in lines[:-1]:
        if '"invocation totals"' in line:
            result["totals"] = json.loads(line)["totals"]
    return result


BOMBS = {
    "one_huge_record": (bombs.one_huge_record, Reason.RECORD_TOO_LARGE),
    "huge_document": (bombs.huge_document, Reason.FILE_TOO_LARGE),
    "tiny_objects_document": (bombs.tiny_objects_document, Reason.FILE_TOO_LARGE),
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_extract_of_a_cloudtrail_bomb_stays_under_300_mb(tmp_path: Path, bomb: str) -> None:
    write, reason = BOMBS[bomb]
    path = tmp_path / f"{bomb}.json.gz"
    started = time.monotonic()
    inflated = write(path)
    assert inflated >= 1500 * bombs.MIB
    assert path.stat().st_size < 4 * bombs.MIB
    assert time.monotonic() - started < 10  # generating a bomb stays quick

    result = run_measured("extract", "cloudtrail", str(path))

    print(f"extract cloudtrail {bomb}: inflates to {inflated >> 20} MiB, peak {result['peak_mb']} MB")
    assert result["status"] == 1
    assert result["summary"]["quarantined"] == {reason.value: 1}
    assert result["peak_mb"] < PEAK_MB, result


def test_extract_of_a_file_past_the_bound_stays_under_300_mb(tmp_path: Path) -> None:
    path = tmp_path / "many.json.gz"
    bombs.many_records(path, load_event("cloudtrail/header_signed"), megabytes=96)

    result = run_measured("extract", "cloudtrail", str(path), env={"MAX_LOG_FILE_BYTES": str(64 * bombs.MIB)})

    assert result["summary"]["quarantined"] == {Reason.FILE_TOO_LARGE.value: 1}
    assert result["summary"]["filtered"]["not_presigned"] > 10_000
    assert result["peak_mb"] < PEAK_MB, result


@pytest.mark.parametrize("form", ["long_line", "array"])
def test_extract_of_a_minio_bomb_stays_under_300_mb(tmp_path: Path, form: str) -> None:
    path = tmp_path / f"{form}.ndjson.gz"
    entry = json.dumps(load_event("minio/get_object_presigned"), separators=(",", ":")).encode()
    if form == "long_line":
        bombs.minio_long_line(path, entry)
    else:
        bombs.tiny_objects_document(path)

    result = run_measured("extract", "minio", str(path))

    expected = Reason.RECORD_TOO_LARGE if form == "long_line" else Reason.FILE_TOO_LARGE
    assert result["summary"]["quarantined"] == {expected.value: 1}
    assert result["lines"] == (1 if form == "long_line" else 0)  # the same entry twice is metered once
    assert result["peak_mb"] < PEAK_MB, result


@pytest.mark.parametrize("bomb", ["one_huge_record", "tiny_objects_document"])
def test_the_handler_finishes_a_bomb_as_a_quarantine_under_300_mb(tmp_path: Path, bomb: str) -> None:
    write, reason = BOMBS[bomb]
    path = tmp_path / f"{bomb}.json.gz"
    write(path)

    result = run_measured("handler", str(path))

    # The message succeeded (no batch item failure: SQS does not retry it five times) and the file is quarantined.
    assert result["response"] == {"batchItemFailures": []}
    assert result["totals"]["quarantined"] == {reason.value: 1}
    assert result["peak_mb"] < PEAK_MB, result


@pytest.mark.parametrize("source", ["cloudtrail", "minio"])
def test_the_largest_whole_document_still_read_stays_under_300_mb(tmp_path: Path, source: str) -> None:
    # Just under the 8 MiB bound, ``[{},{},...]`` decodes to the most objects a document can hold.
    path = tmp_path / "tiny.json.gz"
    bombs.tiny_objects_document(path, megabytes=7)

    result = run_measured("extract", source, str(path))

    assert result["summary"]["quarantined"] == {}
    assert result["summary"]["entries"] > 2_000_000
    assert result["peak_mb"] < PEAK_MB, result


# A file of tiny records up to the 1 GiB bound: ``{"Records":[{},{},...]}`` (3 bytes a record) and a Records array of
# scalars (2 bytes, the slowest per record: no boundary to cut at, each value taken alone). Read in full they would
# take minutes of CPU, past the function's 300 s timeout (SQS would retry the file five times, then dead-letter it).
TINY_RECORDS = {
    "empty_objects": (b"{},", b"{}]}"),
    "scalars": (b"1,", b"1]}"),
}
# The function's timeout is 300 s on ~0.6 of a vCPU (1,024 MB): the reading must stay far below.
MAX_CPU_SECONDS = 60


def tiny_records_file(path: Path, shape: str) -> int:
    filler, tail = TINY_RECORDS[shape]
    return bombs.write_gzip_bomb(path, b'{"Records":[', filler * (bombs.MIB // len(filler)), 1023, tail)


def run_timed(*arguments: str) -> tuple[dict[str, Any], float]:
    """``run_measured`` and the CPU seconds (user + system) its subprocess used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_measured(*arguments)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize("shape", sorted(TINY_RECORDS))
def test_a_file_of_tiny_records_up_to_the_bound_is_quarantined_in_bounded_time(tmp_path: Path, shape: str) -> None:
    path = tmp_path / f"{shape}.json.gz"
    inflated = tiny_records_file(path, shape)
    assert ReadLimits().max_file_bytes - 2 * bombs.MIB < inflated <= ReadLimits().max_file_bytes

    result, cpu_seconds = run_timed("extract", "cloudtrail", str(path))

    print(f"extract cloudtrail {shape}: {inflated >> 20} MiB, {cpu_seconds:.1f} CPU-s, peak {result['peak_mb']} MB")
    summary = result["summary"]
    assert summary["quarantined"].pop(Reason.TOO_MANY_RECORDS.value) == 1
    assert summary["entries"] == ReadLimits().max_records + 1  # each record up to the bound, then the file
    assert cpu_seconds < MAX_CPU_SECONDS
    assert result["peak_mb"] < PEAK_MB, result


def test_the_handler_quarantines_a_file_of_tiny_records_instead_of_failing_it(tmp_path: Path) -> None:
    path = tmp_path / "empty_objects.json.gz"
    tiny_records_file(path, "empty_objects")

    result, cpu_seconds = run_timed("handler", str(path))

    print(f"handler on empty objects: {cpu_seconds:.1f} CPU-s, peak {result['peak_mb']} MB")
    assert result["response"] == {"batchItemFailures": []}  # not retried, so never dead-lettered
    assert result["totals"]["quarantined"] == {Reason.TOO_MANY_RECORDS.value: 1}
    assert cpu_seconds < MAX_CPU_SECONDS
