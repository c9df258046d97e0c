"""The S3 server access log source: record parsing, the metering rules per reason, streaming, object names."""

from __future__ import annotations

import random
import re
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from metering.line import MeteredDownload
from metering.outcomes import Skip
from s3_audit.sources import access_log
from s3_audit.sources.access_log import AccessLogRecord, MalformedLine, meter_line, parse_record, read_lines
from s3_audit.sources.registry import recognise
from tests.events import EVENTS_DIR, event_bytes

USER = "3f1c9a52-7a4e-4c1e-9f0b-2d5f8e6a1b7c"
COLLECTION = "8b2d4e6f-1a3c-4b5d-8e7f-9a0b1c2d3e4f"
ITEM = "S2B_MSIL2A_20251026T050649_N0511_R019_T43PGQ"


def fixture_line(name: str) -> str:
    return event_bytes(f"access_log/{name}.log").decode().removesuffix("\n")


def outcome_of(name: str) -> MeteredDownload | Skip:
    return meter_line(fixture_line(name))


@pytest.mark.parametrize(
    ("fixture", "item", "time", "size"),
    [
        ("presigned_get", ITEM, "2025-10-27T10:12:30Z", 16384),
        ("partial_content", ITEM, "2025-10-27T10:12:30Z", 1048576),
        ("legacy_presigned", ITEM, "2025-10-27T10:12:30Z", 16384),
        ("extra_trailing_fields", ITEM, "2025-10-27T10:12:30Z", 16384),
        ("percent_encoded_item", "café item 2", "2025-10-27T10:12:30Z", 16384),
        ("bytes_dash", ITEM, "2025-10-27T10:12:30Z", 0),
        ("offset_time", ITEM, "2025-10-27T10:12:30Z", 16384),
        ("spaces_in_quoted_fields", ITEM, "2025-10-27T10:12:30Z", 16384),
    ],
)
def test_metered_records(fixture: str, item: str, time: str, size: int) -> None:
    outcome = outcome_of(fixture)

    assert isinstance(outcome, MeteredDownload)
    assert outcome.to_line() == f"{USER}|{COLLECTION}|{item}|{time}|{size}|aws_s3"


def test_the_request_id_is_the_download_identity() -> None:
    outcome = outcome_of("presigned_get")

    assert isinstance(outcome, MeteredDownload)
    assert outcome.event_id == "s3-request:stac-assets-prod/7KQ4B1S9XW2M3N5P"


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("failed_403", "failed_request"),
        ("failed_404", "failed_request"),
        ("not_modified", "failed_request"),
        ("head_object", "not_get_object"),
        ("put_object", "not_get_object"),
        ("list_bucket", "not_get_object"),
        ("website_get", "not_get_object"),
        ("header_signed", "not_presigned"),
        ("anonymous", "not_presigned"),
        ("legacy_header_signed", "not_presigned"),
        ("missing_user_id", "missing_user_id"),
        ("empty_user_id", "missing_user_id"),
        ("missing_collection_id", "missing_collection_id"),
        ("missing_item_id", "missing_item_id"),
        ("non_uuid_user", "invalid_user_id"),
        ("non_uuid_collection", "invalid_collection_id"),
        ("item_with_pipe", "invalid_item_id"),
    ],
)
def test_filtered_records(fixture: str, reason: str) -> None:
    outcome = outcome_of(fixture)

    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason.value) == ("filtered", reason)


@pytest.mark.parametrize(
    ("fixture", "reason", "detail"),
    [
        ("bad_bytes", "invalid_bytes", "12x4"),
        ("bad_time", "invalid_timestamp", "27/Okt/2025"),
        ("invalid_percent_encoding", "malformed_entry", "invalid UTF-8"),
        ("truncated", "malformed_entry", "ends before the Referer"),
        ("unclosed_quote", "malformed_entry", "HTTP status"),  # the URI swallows the fields up to the next quote
        ("bad_time_brackets", "malformed_entry", "Time field"),
    ],
)
def test_quarantined_records(fixture: str, reason: str, detail: str) -> None:
    outcome = outcome_of(fixture)

    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason.value) == ("quarantined", reason)
    assert detail in outcome.detail


def test_record_fields_are_read_by_position() -> None:
    record = parse_record(fixture_line("spaces_in_quoted_fields"))

    assert record.bucket == "stac-assets-prod"
    assert record.request_id == "C1B2C3D4E5F60730"
    assert record.operation == "REST.GET.OBJECT"
    assert record.request_uri.startswith("GET /collections/")
    assert record.request_uri.endswith(" HTTP/1.1")
    assert (record.http_status, record.bytes_sent, record.authentication_type) == ("200", "16384", "QueryString")


def test_a_record_older_than_authentication_type_has_none() -> None:
    assert parse_record(fixture_line("legacy_presigned")).authentication_type is None


def test_a_record_ending_at_the_user_agent_is_accepted() -> None:
    line = fixture_line("presigned_get")
    shortest = line[: line.index('"python-requests/2.32.3"') + len('"python-requests/2.32.3"')]

    outcome = meter_line(shortest)

    assert isinstance(outcome, MeteredDownload)


def test_a_quote_inside_a_quoted_field_does_not_end_it() -> None:
    line = fixture_line("presigned_get").replace('"python-requests/2.32.3"', '"agent "quoted"/1.0"')

    assert parse_record(line).authentication_type == "QueryString"


def test_empty_line_is_malformed() -> None:
    with pytest.raises(MalformedLine):
        parse_record("")


# --- streaming -------------------------------------------------------------------------------------------


def mixed_object() -> bytes:
    names = ["presigned_get", "failed_403", "truncated", "partial_content", "head_object", "percent_encoded_item"]
    return b"".join(event_bytes(f"access_log/{name}.log") for name in names)


def outcomes(chunks: list[bytes]) -> list[MeteredDownload | Skip]:
    return list(access_log.outcomes(chunks))


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 1 << 20])
def test_outcomes_do_not_depend_on_where_chunks_are_cut(chunk_size: int) -> None:
    data = mixed_object()
    whole = outcomes([data])

    cut = outcomes([data[start : start + chunk_size] for start in range(0, len(data), chunk_size)])

    assert cut == whole
    assert [type(o).__name__ for o in whole] == [
        "MeteredDownload",
        "Skip",
        "Skip",
        "MeteredDownload",
        "Skip",
        "MeteredDownload",
    ]


def test_a_malformed_line_is_quarantined_alone_with_its_number() -> None:
    skips = [o for o in outcomes([mixed_object()]) if isinstance(o, Skip) and o.kind == "quarantined"]

    assert len(skips) == 1
    assert skips[0].detail.startswith("record 3:")


def test_crlf_line_ends_and_blank_lines_are_accepted() -> None:
    data = event_bytes("access_log/presigned_get.log").replace(b"\n", b"\r\n") + b"\n\n"

    assert [type(o).__name__ for o in outcomes([data])] == ["MeteredDownload"]


def test_last_line_without_newline_is_read() -> None:
    data = event_bytes("access_log/presigned_get.log").rstrip(b"\n")

    assert [type(o).__name__ for o in outcomes([data])] == ["MeteredDownload"]


def test_a_line_over_the_bound_is_quarantined_alone() -> None:
    good = event_bytes("access_log/presigned_get.log")

    lines = list(read_lines([good, b"x" * 900, b"y" * 900, b"z" * 900, b"\n" + good], max_line=2000))

    assert [type(line).__name__ for line in lines] == ["str", "Skip", "str"]
    assert isinstance(lines[1], Skip)
    assert lines[1].detail == "line 2: longer than 2000 bytes, skipped"


def test_a_huge_line_is_skipped_in_bounded_memory() -> None:
    good = event_bytes("access_log/presigned_get.log")
    piece = b"x" * (1 << 20)

    def chunks() -> Iterator[bytes]:
        yield good
        for _ in range(64):  # one 64 MiB line, read 1 MiB at a time
            yield piece
        yield b"\n" + good

    tracemalloc.start()
    try:
        kinds = [type(line).__name__ for line in read_lines(chunks())]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert kinds == ["str", "Skip", "str"]
    assert peak < 4 * (1 << 20)


def test_a_long_line_inside_one_chunk_is_quarantined() -> None:
    good = event_bytes("access_log/presigned_get.log")

    lines = list(read_lines([good + b"q" * 5000 + b"\n" + good], max_line=2000))

    assert [type(line).__name__ for line in lines] == ["str", "Skip", "str"]


def test_invalid_utf8_quarantines_only_its_line() -> None:
    good = event_bytes("access_log/presigned_get.log")

    found = outcomes([good + b"bad \xff\xfe line\n" + good])

    assert [o.reason.value if isinstance(o, Skip) else "metered" for o in found] == [
        "metered",
        "malformed_entry",
        "metered",
    ]


def test_a_gzip_object_is_read_too() -> None:
    import gzip

    found = outcomes([gzip.compress(event_bytes("access_log/presigned_get.log"))])

    assert [type(o).__name__ for o in found] == ["MeteredDownload"]


# --- object names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "2025-10-27-10-15-42-7F48A46E2E37A2F9",
        "access-logs/2025-10-27-10-15-42-7F48A46E2E37A2F9",
        "logs-2025-10-27-10-15-42-7F48A46E2E37A2F9",
        "access-logs/111122223333/ap-south-1/stac-assets-prod/2025/10/27/2025-10-27-10-15-42-7F48A46E2E37A2F9",
        "111122223333/ap-south-1/stac-assets-prod/2025/10/27/2025-10-27-10-15-42-7F48A46E2E37A2F9",
    ],
)
def test_both_access_log_naming_forms_under_any_prefix(key: str) -> None:
    source, reason = recognise(key)

    assert source is not None
    assert (source.name, reason) == ("s3-access-log", None)
    assert source.file_time(key) == datetime(2025, 10, 27, 10, 15, 42, tzinfo=UTC)


@pytest.mark.parametrize(
    "key",
    [
        "access-logs/2025-13-27-10-15-42-7F48A46E2E37A2F9",  # month 13
        "access-logs/2025-10-27-10-15-42-",
        "access-logs/2025-10-27-10-15-42-7F48A46E2E37A2F9.gz",
        "access-logs/notes.txt",
    ],
)
def test_names_that_only_look_like_access_logs_are_not_log_files(key: str) -> None:
    assert recognise(key) == (None, None)


def test_cloudtrail_names_still_go_to_cloudtrail() -> None:
    key = (
        "AWSLogs/111122223333/CloudTrail/ap-south-1/2025/10/27/"
        "111122223333_CloudTrail_ap-south-1_20251027T1005Z_a.json.gz"
    )

    source, _ = recognise(key)

    assert source is not None
    assert source.name == "cloudtrail"


def test_the_one_match_path_and_the_field_path_read_the_same_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.samples import Variant, access_log_line, random_download, utc

    rng = random.Random(5)
    lines = [fixture_line(path.stem) for path in sorted(EVENTS_DIR.glob("access_log/*.log"))]
    lines += [access_log_line(random_download(rng, utc("2025-10-27T10:00:00")), v).rstrip("\n") for v in Variant]
    fast = [_parsed(line) for line in lines]
    monkeypatch.setattr(access_log, "_COMMON_REST", re.compile(r"(?!)"))  # never matches: field by field only

    assert [_parsed(line) for line in lines] == fast


def _parsed(line: str) -> AccessLogRecord | str:
    try:
        return parse_record(line)
    except MalformedLine as error:
        return str(error)


# --- presigned, unambiguously (issue 19: a header-signed GET never becomes presigned) -------------------------

SIGV2_QUERY = "AWSAccessKeyId=AKIAQX2EXAMPLE7ZPR3Q&Expires=1761563550&Signature=dGhpc2lzYXNpZ25hdHVyZQ%3D%3D"
_SIGV4_QUERY = re.compile(r"X-Amz-Algorithm=[^ ]*&(userId=)")


def sigv2(line: str) -> str:
    """A fixture line turned into the same request through a SigV2 presigned URL."""
    line = _SIGV4_QUERY.sub(r"\1", line).replace("&X-Amz-Signature=", "&x-sig=").replace(" SigV4 ", " SigV2 ")
    return line.replace("&x-id=GetObject", f"&x-id=GetObject&{SIGV2_QUERY}")


@pytest.mark.parametrize("fixture", ["presigned_get", "legacy_presigned"])
def test_a_sigv2_presigned_url_is_presigned(fixture: str) -> None:
    line = sigv2(fixture_line(fixture))
    assert "X-Amz-" not in line

    outcome = meter_line(line)

    assert isinstance(outcome, MeteredDownload)
    assert outcome.to_line() == f"{USER}|{COLLECTION}|{ITEM}|2025-10-27T10:12:30Z|16384|aws_s3"


@pytest.mark.parametrize("missing", ["AWSAccessKeyId", "Expires", "Signature"])
def test_an_old_record_needs_all_three_sigv2_parameters(missing: str) -> None:
    line = re.sub(rf"&{missing}=[^& ]*", "", sigv2(fixture_line("legacy_presigned")))

    assert outcome_of_line(line) == ("filtered", "not_presigned")


def test_a_header_signed_get_with_presigned_parameters_is_not_presigned() -> None:
    line = fixture_line("header_signed").replace("&x-id=GetObject", f"&x-id=GetObject&{SIGV2_QUERY}&X-Amz-Signature=ab")

    assert outcome_of_line(line) == ("filtered", "not_presigned")


def outcome_of_line(line: str) -> tuple[str, str]:
    outcome = meter_line(line)
    assert isinstance(outcome, Skip)
    return outcome.kind, outcome.reason.value


# A User-Agent written to shift the fields after it: read up to its first '" ', the record would say QueryString.
FORGED_AGENT = '"curl" - x SigV4 TLS_AES_128_GCM_SHA256 QueryString h TLSv1.3 - - "x"'


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("User-Agent", FORGED_AGENT),
        ("Referer", '"a" "b" - x SigV4 TLS_AES_128_GCM_SHA256 QueryString h TLSv1.3 - - "c"'),
        ("User-Agent", '"curl" - x SigV4 TLS_AES_128_GCM_SHA256 QueryString h"'),
    ],
    ids=["user-agent", "referer", "user-agent-ending-in-a-quote"],
)
def test_a_header_signed_get_never_reads_as_presigned_through_a_quote(field: str, value: str) -> None:
    line = fixture_line("header_signed")
    line = line.replace('"python-requests/2.32.3"', value) if field == "User-Agent" else line.replace('"-"', value, 1)

    outcome = meter_line(line)

    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason.value) == ("quarantined", "malformed_entry")
    assert "ambiguous" in outcome.detail


def test_a_quote_that_changes_nothing_leaves_the_record_readable() -> None:
    # Whichever quote ends the User-Agent, this presigned GET is presigned: nothing to be unsure about.
    line = fixture_line("presigned_get").replace('"python-requests/2.32.3"', '"agent" x/1.0"')

    outcome = meter_line(line)

    assert isinstance(outcome, MeteredDownload)


def test_an_authentication_type_s3_never_writes_is_quarantined() -> None:
    line = fixture_line("presigned_get").replace(" QueryString ", " querystring ")

    outcome = meter_line(line)

    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason.value) == ("quarantined", "malformed_entry")
    assert "Authentication Type 'querystring'" in outcome.detail


@pytest.mark.parametrize(
    "time", ["01/Jan/1970:00:00:00 +0000", "31/Dec/2005:23:59:59 +0000", "31/Dec/9999:23:59:59 +0000"]
)
def test_a_time_outside_the_sane_window_is_quarantined(time: str) -> None:
    line = fixture_line("presigned_get").replace("27/Oct/2025:10:12:30 +0000", time)

    outcome = meter_line(line)

    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason.value) == ("quarantined", "invalid_timestamp")


def test_too_many_lines_end_the_reading_of_an_object() -> None:
    from s3_audit.log_file import ReadLimits

    good = event_bytes("access_log/presigned_get.log")
    limits = ReadLimits(max_file_bytes=3 * 512)  # three lines at most

    found = list(access_log.access_log_outcomes([good + b"x\n" * 5], limits))

    assert [o.reason.value if isinstance(o, Skip) else "metered" for o in found] == [
        "metered",
        "malformed_entry",
        "malformed_entry",
        "too_many_records",
    ]


def test_a_line_full_of_quotes_is_quarantined_quickly() -> None:
    import time

    line = fixture_line("header_signed").replace('"python-requests/2.32.3"', '"' + 'a" ' * 200_000 + '"')
    started = time.process_time()

    outcome = meter_line(line)

    assert time.process_time() - started < 2
    assert isinstance(outcome, Skip)
    assert "too many quotes" in outcome.detail
