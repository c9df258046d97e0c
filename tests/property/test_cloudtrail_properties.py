"""Properties of the CloudTrail side: record rules (decode_record, record_from_object, classify, meter), the
metered line (normalize_timestamp, normalize_bytes) and the log file reader (read_log_records).

Over random and mutated records: no unhandled exception, every record ends in exactly one outcome (the one an
independent model of docs/design.md's rules predicts), and a metered line is one OGC RS accepts.
"""

from __future__ import annotations

import copy
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from metering.line import MeteredDownload, is_valid_line, normalize_bytes, normalize_timestamp
from metering.outcomes import OutcomeTally, Reason, Skip
from s3_audit.cloudtrail import CloudTrailRecord, EventIdSet, classify, decode_record, meter, record_from_object
from s3_audit.log_file import MAX_RECORD_BYTES, LogRecord, read_log_records
from testbed.reference_rs import parse_log_line
from testbed.samples import Download, cloudtrail_record
from tests.property.strategies import (
    BLANK_IDS,
    GENERATED,
    HUGE,
    Expected,
    Json,
    Mutation,
    MutationKit,
    Path,
    bit_flips,
    chunked,
    cloudtrail_kits,
    dropped,
    examples,
    expected_id_outcome,
    expected_in_window,
    gzipped,
    json_styles,
    min_inputs,
    one_change,
    replaced,
    sizes,
    timestamps,
    to_json,
    valid_cloudtrail_kits,
    valid_cloudtrail_record,
)

WHOLE_SECOND_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
SURROGATE = re.compile("[\ud800-\udfff]")
VARIANTS_PER_EXAMPLE = 20
TRUNCATIONS_PER_FILE = 20
FILE_LEVEL = {Reason.BAD_GZIP, Reason.BAD_JSON}


# ---- the line OGC RS receives -------------------------------------------------------------------


def assert_acceptable(download: MeteredDownload) -> None:
    """A metered download whose line OGC RS stores: never one its validation would reject."""
    line = download.to_line()
    parse_log_line(line)  # raises LineRejectedError
    assert is_valid_line(line), line
    assert WHOLE_SECOND_UTC.fullmatch(download.timestamp), download.timestamp
    assert type(download.bytes_sent) is int
    assert 0 <= download.bytes_sent <= 2**63 - 1


# ---- an independent model of the CloudTrail rules -----------------------------------------------

_STR_FIELDS = ("eventSource", "eventName", "eventTime", "eventID", "errorCode")
_ID_FIELDS = (
    ("userId", Reason.MISSING_USER_ID, Reason.INVALID_USER_ID),
    ("collectionId", Reason.MISSING_COLLECTION_ID, Reason.INVALID_COLLECTION_ID),
    ("itemId", Reason.MISSING_ITEM_ID, Reason.INVALID_ITEM_ID),
)
_PRESIGN_PARAMETERS = ("X-Amz-Expires", "X-Amz-Signature", "X-Amz-Credential")
_SIGV2_PARAMETERS = ("AWSAccessKeyId", "Expires")  # CloudTrail drops the Signature itself

"""("metered", line) or ("filtered" | "quarantined", reason)."""


def _str_or_null(value: object) -> bool:
    return value is None or isinstance(value, str)


def _wrong_type(record: Json) -> bool:
    """Whether a field the rules read has a type the record decoder refuses."""
    if not isinstance(record, dict) or not all(_str_or_null(record.get(name)) for name in _STR_FIELDS):
        return True
    params, extra = record.get("requestParameters"), record.get("additionalEventData")
    if params is not None and (
        not isinstance(params, dict) or not all(_str_or_null(params.get(name)) for name, *_ in _ID_FIELDS)
    ):
        return True
    if extra is None:
        return False
    if not isinstance(extra, dict) or not _str_or_null(extra.get("AuthenticationMethod")):
        return True
    size = extra.get("bytesTransferredOut")
    return isinstance(size, bool) or not (size is None or isinstance(size, int | float | str))


def expected_outcome(record: Json) -> Expected:  # noqa: PLR0911 - one return per rule
    """What docs/design.md says becomes of a record, computed without the code under test's rule functions."""
    if _wrong_type(record):
        return ("quarantined", Reason.MALFORMED_ENTRY)
    if record.get("eventSource") != "s3.amazonaws.com":
        return ("filtered", Reason.NOT_S3_EVENT)
    if record.get("eventName") != "GetObject":
        return ("filtered", Reason.NOT_GET_OBJECT)
    if record.get("errorCode") is not None:
        return ("filtered", Reason.FAILED_REQUEST)
    params = record.get("requestParameters") or {}
    extra = record.get("additionalEventData") or {}
    if extra.get("AuthenticationMethod") is not None:  # where CloudTrail wrote it, it decides
        presigned = extra["AuthenticationMethod"] == "QueryString"
    else:
        presigned = any(params.get(name) is not None for name in _PRESIGN_PARAMETERS) or all(
            params.get(name) is not None for name in _SIGV2_PARAMETERS
        )
    if not presigned:
        return ("filtered", Reason.NOT_PRESIGNED)
    ids_filter = expected_id_outcome(*(params.get(name) for name, _, _ in _ID_FIELDS))
    if ids_filter is not None:
        return ids_filter
    user, collection, item = (str(params.get(name)).strip() for name, _, _ in _ID_FIELDS)
    when = expected_timestamp(record.get("eventTime"))
    if when is None and not STRICT_TIMESTAMP.fullmatch(str(record.get("eventTime")).strip()):
        when = normalize_timestamp(record.get("eventTime"))  # lenient forms: test_normalize_timestamp checks them
    if when is None or not expected_in_window(when):
        return ("quarantined", Reason.INVALID_TIMESTAMP)
    size = extra.get("bytesTransferredOut")
    count = expected_bytes(0 if size is None else size)
    if count is None:
        return ("quarantined", Reason.INVALID_BYTES)
    return ("metered", f"{user}|{collection}|{item}|{when}|{count}|aws_s3")


_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):?(\d{2})(?::?(\d{2}))?)"
)


# RFC 3339 as OGC RS and CloudTrail/MinIO write it; for these the model below is exact.
STRICT_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")


def expected_timestamp(raw: object) -> str | None:
    """The instant floored to whole seconds in UTC, or None: an RFC 3339 / ISO 8601 reading by hand.

    Accepts what Python's fromisoformat accepts for a date, a time and an offset; None when the instant falls
    outside years 1-9999 in UTC, since no 4-digit year can write it.
    """
    if not isinstance(raw, str):
        return None
    found = _ISO.fullmatch(raw.strip())
    if found is None:
        return None
    year, month, day, hour, minute, second = (int(found.group(index)) for index in range(1, 7))
    try:
        local = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    if found.group(8) is None:
        hours, minutes, seconds = (int(found.group(index) or 0) for index in (10, 11, 12))
        if hours >= 24 or minutes >= 60 or seconds >= 60:
            return None
        shift = timedelta(hours=hours, minutes=minutes, seconds=seconds)
        try:
            local = local - shift if found.group(9) == "+" else local + shift
        except OverflowError:
            return None
    return f"{local.year:04d}-{local:%m-%dT%H:%M:%S}Z"


def expected_bytes(raw: object) -> int | None:
    """A non-negative 64-bit integer from an int, an integral float or decimal text; else None."""
    if isinstance(raw, bool):
        return None
    value: Any = raw
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            if len(text.lstrip("0")) > 19:  # past 2^63-1, however many digits (int() refuses 4,300+)
                return None
            value = int(text)
        else:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and 0 <= value <= 2**63 - 1:
        return value
    return None


def actual_outcome(outcome: MeteredDownload | Skip) -> Expected:
    if isinstance(outcome, MeteredDownload):
        assert_acceptable(outcome)
        return ("metered", outcome.to_line())
    assert outcome.kind in ("filtered", "quarantined")
    return (outcome.kind, outcome.reason)


def judge(decoded: CloudTrailRecord | Skip) -> MeteredDownload | Skip:
    return decoded if isinstance(decoded, Skip) else classify(decoded)


def _msgspec_refuses(value: Json) -> bool:
    """JSON text msgspec rejects although Python's json accepts it: lone surrogates, NaN and infinities."""
    if isinstance(value, str):
        return SURROGATE.search(value) is not None
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_msgspec_refuses(key) or _msgspec_refuses(child) for key, child in value.items())
    if isinstance(value, list):
        return any(_msgspec_refuses(child) for child in value)
    return False


# ---- records --------------------------------------------------------------------------------------


def check_record(
    record: Json, style: dict[str, Any], seen: EventIdSet, metered_ids: set[str]
) -> MeteredDownload | Skip:
    """Both entry points agree with the model; meter() gives exactly one outcome. Returns meter()'s outcome."""
    expected = expected_outcome(record)
    from_object = record_from_object(record)
    assert actual_outcome(judge(from_object)) == expected

    text = to_json(record, **style)
    from_text = decode_record(text)
    if not (isinstance(from_text, Skip) and from_text.reason is Reason.MALFORMED_ENTRY and _msgspec_refuses(record)):
        # (valid for Python's json but refused by msgspec: quarantined, which is also one outcome)
        # The text's own meaning is the model here: JSON joins a surrogate pair written as two escapes into one
        # character, which a Python object holding the two halves does not.
        assert actual_outcome(judge(from_text)) == expected_outcome(json.loads(text))

    outcome = from_object if isinstance(from_object, Skip) else meter(from_object, seen)
    if isinstance(outcome, MeteredDownload):
        assert not outcome.event_id or outcome.event_id not in metered_ids
        metered_ids.add(outcome.event_id)
    elif outcome.reason is Reason.DUPLICATE_EVENT:
        assert expected[0] == "metered"
        assert isinstance(from_object, CloudTrailRecord)
        first = classify(from_object)  # the repeat has the identity (request or event) of a metered download
        assert isinstance(first, MeteredDownload)
        assert first.event_id in metered_ids
    return outcome


@settings(max_examples=examples(0.5))
@given(kit=cloudtrail_kits(), style=json_styles)
def _check_records(kit: MutationKit, style: dict[str, Any]) -> None:
    seen, metered_ids, tally = EventIdSet(), set[str](), OutcomeTally()
    # The kit's mutants, and its pool values as whole records (null, numbers, lists, odd strings...).
    records = [record for record, _done in kit.variants(VARIANTS_PER_EXAMPLE)] + list(kit.pool[:2])
    for record in records:
        outcome = check_record(record, style, seen, metered_ids)
        if isinstance(outcome, MeteredDownload):
            tally.metered += 1
        else:
            tally.count(outcome)
    assert tally.entries == len(records)
    GENERATED.add("cloudtrail.decode_record+classify", len(records))
    GENERATED.add("cloudtrail.record_from_object+meter", len(records))


def test_every_record_ends_in_exactly_one_outcome() -> None:
    before = GENERATED.counts["cloudtrail.decode_record+classify"]
    _check_records()
    assert GENERATED.counts["cloudtrail.decode_record+classify"] - before >= min_inputs()


@settings(max_examples=examples(0.5))
@given(raw=st.one_of(st.binary(max_size=200), st.binary(max_size=20).map(lambda raw: b'{"eventName":' + raw + b"}")))
def test_random_bytes_never_raise(raw: bytes) -> None:
    outcome = decode_record(raw)
    assert isinstance(outcome, CloudTrailRecord) or outcome.reason is Reason.MALFORMED_ENTRY
    actual_outcome(judge(outcome))
    GENERATED.add("cloudtrail.decode_record+classify")


@pytest.mark.parametrize("depth", [1_100, 100_000])
def test_deeply_nested_record_is_quarantined_not_raised(depth: int) -> None:
    nested = b'{"eventName":"GetObject","userIdentity":' + b"[" * depth + b"]" * depth + b"}"
    outcome = decode_record(nested)
    assert isinstance(outcome, Skip)
    assert outcome.reason is Reason.MALFORMED_ENTRY


@pytest.mark.parametrize("record", [{"\ud800": 1}, {"requestParameters": {"\udfff": "x"}}], ids=["top", "nested"])
def test_a_key_with_a_lone_surrogate_is_quarantined_not_raised(record: Json) -> None:
    """json.loads (the Lambda runtime's EventBridge detail) accepts ``"\\ud800"`` in a key; msgspec cannot match it."""
    outcome = record_from_object(record)
    assert isinstance(outcome, Skip)
    assert outcome.reason is Reason.MALFORMED_ENTRY


# ---- metamorphic: one presigned GET, mutated -------------------------------------------------------

# Fields the rules read (and the objects holding them): everything else may change without changing the line.
_RULE_FIELDS = {
    ("eventSource",),
    ("eventName",),
    ("eventTime",),
    ("eventID",),
    ("requestID",),  # with requestParameters.bucketName: the download's identity
    ("errorCode",),
    ("requestParameters",),
    ("additionalEventData",),
    ("additionalEventData", "AuthenticationMethod"),
    ("additionalEventData", "bytesTransferredOut"),
    *(
        ("requestParameters", name)
        for name in ("bucketName", "userId", "collectionId", "itemId", *_PRESIGN_PARAMETERS, *_SIGV2_PARAMETERS)
    ),
}


def _unrelated(path: Path) -> bool:
    return path not in _RULE_FIELDS


def _decoded(record: Json) -> CloudTrailRecord:
    decoded = decode_record(to_json(record))
    assert isinstance(decoded, CloudTrailRecord)
    return decoded


@settings(max_examples=examples(0.25))
@given(kit=valid_cloudtrail_kits(("x-amz-id-2", "eventType", "userAgent", "userId", "errorMessage")))
def test_unrelated_changes_keep_the_line(kit: MutationKit) -> None:
    original = classify(_decoded(kit.base))
    assert isinstance(original, MeteredDownload)
    assert_acceptable(original)
    for mutated, done in kit.variants(VARIANTS_PER_EXAMPLE // 2, _unrelated, 6):
        outcomes = [judge(record_from_object(mutated))]
        if not _msgspec_refuses(mutated):  # else the JSON text is refused as a whole: see check_record
            outcomes.append(judge(decode_record(to_json(mutated))))
        for outcome in outcomes:
            assert isinstance(outcome, MeteredDownload), (outcome, done)
            assert outcome.to_line() == original.to_line()
            assert outcome.event_id == original.event_id
        GENERATED.add("cloudtrail.metamorphic", len(outcomes))


_NOT_UUID = st.sampled_from(["user-6f1d2c8e", "6f1d2c8e3b4a4f5e9a7b1c2d3e4f5a6b", "{}", "not a uuid", "\u0661" * 8])
_PARAMS, _EXTRA = "requestParameters", "additionalEventData"


# (mutations, expected kind, expected reason)
RULE_BREAKERS: list[tuple[st.SearchStrategy[list[Mutation]], str, Reason]] = [
    (one_change(("errorCode",), st.sampled_from(["AccessDenied", "NoSuchKey", ""])), "filtered", Reason.FAILED_REQUEST),
    (
        st.sampled_from(["AuthHeader", "", "querystring"]).map(
            lambda method: [replaced((_EXTRA, "AuthenticationMethod"), method), dropped((_PARAMS, "X-Amz-Expires"))]
        ),
        "filtered",
        Reason.NOT_PRESIGNED,
    ),
    (st.just([dropped((_EXTRA,)), dropped((_PARAMS, "X-Amz-Expires"))]), "filtered", Reason.NOT_PRESIGNED),
    (  # a header-signed request is never presigned, whatever presigned-URL parameters its query held
        st.sampled_from(["AuthHeader", ""]).map(
            lambda method: [
                replaced((_EXTRA, "AuthenticationMethod"), method),
                replaced((_PARAMS, "X-Amz-Credential"), "AKIAQX2EXAMPLE7ZPR3Q/20251027/ap-south-1/s3/aws4_request"),
                replaced((_PARAMS, "AWSAccessKeyId"), "AKIAQX2EXAMPLE7ZPR3Q"),
                replaced((_PARAMS, "Expires"), "1761563550"),
            ]
        ),
        "filtered",
        Reason.NOT_PRESIGNED,
    ),
    (
        one_change(("eventName",), st.sampled_from(["HeadObject", "PutObject", "getobject"])),
        "filtered",
        Reason.NOT_GET_OBJECT,
    ),
    (
        one_change(("eventSource",), st.sampled_from(["kms.amazonaws.com", "", "s3.amazonaws.com "])),
        "filtered",
        Reason.NOT_S3_EVENT,
    ),
    (one_change((_PARAMS, "userId"), _NOT_UUID), "filtered", Reason.INVALID_USER_ID),
    (one_change((_PARAMS, "collectionId"), _NOT_UUID), "filtered", Reason.INVALID_COLLECTION_ID),
    (one_change((_PARAMS, "itemId"), st.sampled_from(["a|b", "|", "item|"])), "filtered", Reason.INVALID_ITEM_ID),
    (
        one_change((_PARAMS, "itemId"), st.sampled_from(["a\x00b", "item\x1f", "\x7fitem", "a\nb"])),
        "filtered",
        Reason.INVALID_ITEM_ID,
    ),
    (one_change((_PARAMS, "userId"), BLANK_IDS), "filtered", Reason.MISSING_USER_ID),
    (st.just([dropped((_PARAMS, "collectionId"))]), "filtered", Reason.MISSING_COLLECTION_ID),
    (one_change((_PARAMS, "itemId"), BLANK_IDS), "filtered", Reason.MISSING_ITEM_ID),
    (one_change(("eventTime",), st.sampled_from([5, True, [], {}])), "quarantined", Reason.MALFORMED_ENTRY),
    (one_change((_PARAMS, "userId"), st.sampled_from([5, [], {}])), "quarantined", Reason.MALFORMED_ENTRY),
    (
        one_change(("eventTime",), st.sampled_from(["yesterday", "2025-10-27T10:12:30", "2025-13-01T00:00:00Z", ""])),
        "quarantined",
        Reason.INVALID_TIMESTAMP,
    ),
    (
        one_change(
            ("eventTime",),
            st.sampled_from(
                ["1970-01-01T00:00:00Z", "2005-12-31T23:59:59Z", "9999-12-31T23:59:59Z", "2999-01-01T00:00:00Z"]
            ),
        ),
        "quarantined",
        Reason.INVALID_TIMESTAMP,
    ),
    (
        one_change(
            (_EXTRA, "bytesTransferredOut"), st.sampled_from([-1, 1.5, "many", 2**63, "-3", "9" * 20, "9" * 5_000])
        ),
        "quarantined",
        Reason.INVALID_BYTES,
    ),
]


@settings(max_examples=examples(0.3))
@given(base=valid_cloudtrail_record(), data=st.data(), breaker=st.sampled_from(range(len(RULE_BREAKERS))))
def test_breaking_one_rule_names_its_reason(base: Json, data: st.DataObject, breaker: int) -> None:
    changes, kind, reason = RULE_BREAKERS[breaker]
    record = copy.deepcopy(base)
    for change in data.draw(changes):
        change.apply(record)
    for outcome in (judge(record_from_object(record)), judge(decode_record(to_json(record)))):
        assert isinstance(outcome, Skip)
        assert (outcome.kind, outcome.reason) == (kind, reason)
    GENERATED.add("cloudtrail.metamorphic", 2)


@settings(max_examples=examples(0.1))
@given(base=valid_cloudtrail_record(), repeats=st.integers(min_value=2, max_value=4))
def test_a_repeated_event_is_metered_once(base: Json, repeats: int) -> None:
    seen = EventIdSet()
    outcomes = [meter(_decoded(base), seen) for _ in range(repeats)]
    assert isinstance(outcomes[0], MeteredDownload)
    assert all(isinstance(outcome, Skip) and outcome.reason is Reason.DUPLICATE_EVENT for outcome in outcomes[1:])
    GENERATED.add("cloudtrail.metamorphic", repeats)


# ---- timestamps and sizes -------------------------------------------------------------------------


@settings(max_examples=examples())
@given(raw=timestamps)
@example("9999-12-31T23:59:59-01:00")  # past year 9999 in UTC: used to raise OverflowError
@example("0001-01-01T00:00:00+01:00")  # before year 1 in UTC: used to raise OverflowError
@example("0005-01-01T00:00:00+00:00")  # used to give "5-01-01T00:00:00Z", which OGC RS rejects
@example("0999-01-01T10:00:00.5Z")
@example("2025-10-27T10:12:30.999999999Z")
@example("2025-10-27 10:12:30+05:30")
def test_normalize_timestamp(raw: Json) -> None:
    result = normalize_timestamp(raw)
    if result is not None:
        assert WHOLE_SECOND_UTC.fullmatch(result), result
        line = f"6f1d2c8e-3b4a-4f5e-9a7b-1c2d3e4f5a6b|0b8e6c1a-9d2f-4e3b-8a7c-5d6e7f8a9b0c|i|{result}|0|aws_s3"
        parse_log_line(line)
        assert is_valid_line(line)
        assert normalize_timestamp(result) == result  # idempotent
    if isinstance(raw, str) and STRICT_TIMESTAMP.fullmatch(raw.strip()):
        assert result == expected_timestamp(raw)
    elif expected_timestamp(raw) is not None:
        assert result == expected_timestamp(raw)  # the model accepts a few more forms; the code must too
    GENERATED.add("metering.normalize_timestamp")


@settings(max_examples=examples())
@given(raw=sizes)
def test_normalize_bytes(raw: Json) -> None:
    result = normalize_bytes(raw)
    assert result == expected_bytes(raw)
    assert result is None or (type(result) is int and result >= 0)
    GENERATED.add("metering.normalize_bytes")


# ---- log files ------------------------------------------------------------------------------------


def log_document(records: list[Json], style: dict[str, Any]) -> bytes:
    return to_json({"Records": records}, **style)


def split(outcomes: list[LogRecord]) -> tuple[list[LogRecord], list[Skip]]:
    """Per-record outcomes, and the file-level quarantines (BAD_GZIP / BAD_JSON), which must come last."""
    file_level = [o for o in outcomes if isinstance(o, Skip) and o.reason in FILE_LEVEL]
    assert len(file_level) <= 1
    if file_level:
        assert outcomes[-1] is file_level[0]
        assert file_level[0].kind == "quarantined"
        return outcomes[:-1], file_level
    return outcomes, []


def comparable(outcome: LogRecord) -> object:
    return (outcome.kind, outcome.reason) if isinstance(outcome, Skip) else outcome


def meter_file(outcomes: list[LogRecord]) -> OutcomeTally:
    """The tally of one file as the handler keeps it; every metered line must be acceptable."""
    tally, seen = OutcomeTally(), EventIdSet()
    for record in outcomes:
        outcome = record if isinstance(record, Skip) else meter(record, seen)
        if isinstance(outcome, MeteredDownload):
            assert_acceptable(outcome)
            tally.metered += 1
        else:
            tally.count(outcome)
    return tally


def file_records(kit: MutationKit) -> list[Json]:
    """Up to 6 records for one file, from a kit (usually a few mutants beside pristine copies)."""
    return [record for record, _done in kit.variants(kit.seed % 7, max_mutations=2)]


@settings(max_examples=examples(0.3))
@given(
    kit=cloudtrail_kits(),
    style=json_styles,
    compress=st.booleans(),
    chunk=st.integers(min_value=1, max_value=4096),
    piece=st.sampled_from([256, 1024, 1 << 20]),
)
def test_a_whole_file_yields_one_outcome_per_record_whatever_the_chunking(
    kit: MutationKit, style: dict[str, Any], compress: bool, chunk: int, piece: int
) -> None:
    records = file_records(kit)
    document = log_document(records, style)
    data = gzipped(document) if compress else document
    reference = list(read_log_records([data]))
    # At most ~100 chunks: tiny chunks of a file holding 100k-character values only cost time.
    outcomes = list(read_log_records(chunked(data, max(chunk, len(data) // 100)), piece_size=piece))
    assert [comparable(o) for o in outcomes] == [comparable(o) for o in reference]
    per_record, file_level = split(outcomes)
    if not any(_msgspec_refuses(record) for record in records):
        assert not file_level
        assert len(per_record) == len(records)
        for record, outcome in zip(records, per_record, strict=True):
            if isinstance(outcome, Skip) and outcome.reason is Reason.RECORD_TOO_LARGE:
                assert len(to_json(record, **style)) > 0.9 * MAX_RECORD_BYTES  # huge values: a 1 MiB+ record
            elif isinstance(outcome, Skip):
                assert outcome.reason is Reason.MALFORMED_ENTRY
                assert expected_outcome(record) == ("quarantined", Reason.MALFORMED_ENTRY)
            else:
                assert actual_outcome(classify(outcome)) == expected_outcome(record)
    tally = meter_file(outcomes)
    assert tally.entries == len(per_record) + len(file_level)
    GENERATED.add("log_file.read_log_records", 2)


def metered_lines(outcomes: list[LogRecord]) -> list[str]:
    downloads = (classify(o) for o in outcomes if isinstance(o, CloudTrailRecord))
    return [download.to_line() for download in downloads if isinstance(download, MeteredDownload)]


@settings(max_examples=examples(0.5))
@given(
    records=st.lists(valid_cloudtrail_record(), min_size=1, max_size=6),
    style=json_styles,
    cuts=st.lists(
        st.floats(min_value=0, max_value=1, exclude_max=True),
        min_size=TRUNCATIONS_PER_FILE,
        max_size=TRUNCATIONS_PER_FILE,
    ),
    piece=st.sampled_from([64, 1024, 1 << 20]),
)
def _check_truncations(records: list[Json], style: dict[str, Any], cuts: list[float], piece: int) -> None:
    data = gzipped(log_document(records, style))
    full = list(read_log_records([data]))
    assert len(full) == len(records)
    full_lines = metered_lines(full)
    assert len(full_lines) == len(records)
    for cut in cuts:
        truncated = data[: int(cut * len(data))]
        outcomes = list(read_log_records(chunked(truncated, 1 + len(truncated) // 3), piece_size=piece))
        per_record, file_level = split(outcomes)
        # The records before the damage, in order, then the file quarantined.
        assert per_record == full[: len(per_record)]
        assert [skip.reason for skip in file_level] in ([Reason.BAD_GZIP], [Reason.BAD_JSON])
        lines = metered_lines(per_record)
        assert lines == full_lines[: len(lines)]
        tally = meter_file(outcomes)
        assert tally.entries == len(per_record) + 1
        assert tally.quarantined.total() == 1
    GENERATED.add("log_file.read_log_records", len(cuts))


def test_any_truncation_of_a_gzip_file_keeps_the_records_before_it() -> None:
    before = GENERATED.counts["log_file.read_log_records"]
    _check_truncations()
    assert GENERATED.counts["log_file.read_log_records"] - before >= min_inputs()


_DEEP = b"[" * 1_100 + b"]" * 1_100


@settings(max_examples=examples(0.3))
@given(data=st.data(), kit=cloudtrail_kits(), compress=st.booleans(), piece=st.sampled_from([64, 1 << 20]))
def test_damaged_files_never_raise(data: st.DataObject, kit: MutationKit, compress: bool, piece: int) -> None:
    document = log_document(file_records(kit), {"ascii_only": True, "indent": None})
    clean = gzipped(document) if compress else document
    damaged = data.draw(
        st.one_of(
            bit_flips(clean),
            st.binary(max_size=300),
            st.binary(max_size=40).map(lambda junk: clean[: len(clean) // 2] + junk + clean[len(clean) // 2 :]),
            st.just(clean + b"trailing"),
            st.just(clean + clean),  # two gzip members (or two documents)
            st.sampled_from([b"", b"\x1f", b"\x1f\x8b", b"{}", b"[]", b"null", b'{"Records": 5}', b'{"Records": [5]}']),
            st.sampled_from([b'{"Records":[' + _DEEP + b"]}", b'{"Records":[{"a":' + _DEEP + b"}]}", _DEEP]),
        )
    )
    outcomes = list(read_log_records(chunked(damaged, 97), piece_size=piece))
    per_record, file_level = split(outcomes)
    tally = meter_file(outcomes)
    assert tally.entries == len(per_record) + len(file_level)
    GENERATED.add("log_file.read_log_records")


def test_huge_string_values_are_read() -> None:
    """A 100k-character value inside a record crosses many pieces; it is decoded like any other."""
    when = datetime(2025, 10, 27, 10, 12, 30, tzinfo=UTC)
    user, collection = "6f1d2c8e-3b4a-4f5e-9a7b-1c2d3e4f5a6b", "0b8e6c1a-9d2f-4e3b-8a7c-5d6e7f8a9b0c"
    record = cloudtrail_record(Download(user, collection, "x" * HUGE, "a", when, 5, "e"))
    data = gzipped(log_document([record, record], {"ascii_only": True, "indent": None}))
    outcomes = list(read_log_records(chunked(data, 1000), piece_size=4096))
    assert len(outcomes) == 2
    assert all(isinstance(o, CloudTrailRecord) and isinstance(classify(o), MeteredDownload) for o in outcomes)
    GENERATED.add("log_file.read_log_records")
