"""Properties of the MinIO side: the audit entry rules (classify_entry) and the body parser (parse_body, with
meter_entries counting outcomes).

Over random and mutated entries: no unhandled exception, every entry ends in exactly one outcome (the one an
independent model of docs/design.md's MinIO rules predicts), and a metered line is one OGC RS accepts.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.line import MeteredDownload, normalize_timestamp
from metering.outcomes import OutcomeTally, Reason, Skip
from minio_relay.audit_entry import MAX_ITEM_ID_CHARS, classify_entry, entry_identity
from minio_relay.body import BodyError, parse_body
from minio_relay.webhook import meter_entries
from tests.property.strategies import (
    BAD_LINES,
    BLANK_IDS,
    BLANK_LINES,
    GENERATED,
    Expected,
    Json,
    Mutation,
    MutationKit,
    Path,
    dropped,
    examples,
    expected_id_outcome,
    expected_in_window,
    min_inputs,
    minio_kits,
    one_change,
    valid_minio_entry,
    valid_minio_kits,
)
from tests.property.test_cloudtrail_properties import (
    STRICT_TIMESTAMP,
    assert_acceptable,
    expected_bytes,
    expected_timestamp,
)

VARIANTS_PER_EXAMPLE = 20


# ---- an independent model of the MinIO rules ------------------------------------------------------


def _timestamp(raw: object) -> str | None:
    when = expected_timestamp(raw)
    if when is None and not (isinstance(raw, str) and STRICT_TIMESTAMP.fullmatch(raw.strip())):
        return normalize_timestamp(raw)  # lenient forms: test_normalize_timestamp checks them
    return when


def _request(entry: dict[str, Any]) -> Expected | tuple[dict[str, Any], dict[str, Any]]:  # noqa: PLR0911 - one per rule
    """The api and requestQuery objects of a client request, or the outcome that ends the entry first."""
    if not entry:
        return ("filtered", Reason.STARTUP_PROBE)  # the literal {} MinIO sends when the target starts
    api = entry.get("api", {})
    if not isinstance(api, dict):
        return ("quarantined", Reason.MALFORMED_ENTRY)
    if api.get("statusCode") is None:
        return ("filtered", Reason.INTERNAL_EVENT)  # ILM, scanner, healing: no HTTP status
    query = entry.get("requestQuery") or {}
    if not isinstance(query, dict):
        return ("quarantined", Reason.MALFORMED_ENTRY)
    name, status = api.get("name"), api.get("statusCode")
    if not isinstance(name, str) or not isinstance(status, int) or isinstance(status, bool):
        return ("quarantined", Reason.MALFORMED_ENTRY)
    if name != "GetObject":
        return ("filtered", Reason.NOT_GET_OBJECT)
    if not 200 <= status <= 299:
        return ("filtered", Reason.FAILED_REQUEST)
    sigv2 = all(name in query for name in ("Signature", "AWSAccessKeyId", "Expires"))
    if "X-Amz-Signature" not in query and "X-Amz-Credential" not in query and not sigv2:
        return ("filtered", Reason.NOT_PRESIGNED)
    return api, query


def expected_outcome(entry: Json) -> Expected:  # noqa: PLR0911 - one return per rule
    """What docs/design.md says becomes of an entry, computed without the code under test's rule functions."""
    if not isinstance(entry, dict):
        return ("quarantined", Reason.MALFORMED_ENTRY)
    request = _request(entry)
    if not isinstance(request[0], dict):
        return request
    api, query = request
    raw_ids = [query.get(name) for name in ("userId", "collectionId", "itemId")]
    if any(value is not None and not isinstance(value, str) for value in raw_ids):
        return ("quarantined", Reason.MALFORMED_ENTRY)
    if isinstance(raw_ids[2], str) and len(raw_ids[2]) > MAX_ITEM_ID_CHARS:  # would not fit an SQS message
        return ("quarantined", Reason.MALFORMED_ENTRY)
    ids_filter = expected_id_outcome(*raw_ids)
    if ids_filter is not None:
        return ids_filter
    user, collection, item = (str(value).strip() for value in raw_ids)
    if "tx" in api:
        size = api["tx"]
    elif entry.get("responseHeader") is None:
        size = 0  # no byte figure at all
    elif not isinstance(entry["responseHeader"], dict):
        return ("quarantined", Reason.MALFORMED_ENTRY)
    else:
        size = entry["responseHeader"].get("Content-Length", 0)  # releases before 2021-10
    when = _timestamp(entry.get("time"))
    if when is None or not expected_in_window(when):
        return ("quarantined", Reason.INVALID_TIMESTAMP)
    count = expected_bytes(size)
    if count is None:
        return ("quarantined", Reason.INVALID_BYTES)
    return ("metered", f"{user}|{collection}|{item}|{when}|{count}|minio")


def actual_outcome(outcome: MeteredDownload | Skip) -> Expected:
    if isinstance(outcome, MeteredDownload):
        assert_acceptable(outcome)
        return ("metered", outcome.to_line())
    assert outcome.kind in ("filtered", "quarantined")
    return (outcome.kind, outcome.reason)


# ---- bodies ---------------------------------------------------------------------------------------


def line_of(entry: Json) -> bytes:
    """An entry as one NDJSON line, as MinIO writes it (lone surrogates JSON-escaped, so refused by msgspec)."""
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def decoded_line(line: bytes) -> tuple[bool, Json]:
    """(True, value) when the line is JSON msgspec decodes; (False, None) for a bad line."""
    try:
        return True, msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False, None


def expected_body(lines: list[bytes]) -> tuple[int, list[str], int] | None:
    """(entries, metered lines in order, duplicates) for an NDJSON body; None when it holds no JSON object.

    Every non-blank line is one entry: a JSON value judged by the rules, or a bad line quarantined as BAD_JSON.
    A download repeated (same ``deploymentid:requestID``) is metered once.
    """
    entries, metered, keys, duplicates, any_object = 0, [], set(), 0, False
    for line in lines:
        if not line.strip():
            continue
        entries += 1
        ok, value = decoded_line(line.strip())
        any_object |= ok and isinstance(value, dict)
        if ok:
            kind, result = expected_outcome(value)
            if kind == "metered":
                key = entry_identity(value)
                if key in keys:
                    duplicates += 1
                else:
                    keys.add(key)
                    metered.append(result)
    return (entries, metered, duplicates) if any_object else None


def check_body(body: bytes, expected: tuple[int, list[str], int] | None) -> None:
    """parse_body + meter_entries: exactly one outcome per entry, metered lines as the model predicts."""
    try:
        parsed = parse_body(body)
    except BodyError:
        assert expected is None
        return
    tally = OutcomeTally()
    downloads = meter_entries(parsed, tally)
    for download in downloads:
        assert_acceptable(download)
    if expected is None:
        # Only when the first line is not JSON but the whole body is one JSON document (pretty-printed).
        assert isinstance(msgspec.json.decode(body), dict | list)
        return
    entries, metered, duplicates = expected
    assert tally.entries == entries
    assert [download.to_line() for download in downloads] == metered
    assert tally.metered == len(metered)
    assert tally.filtered[Reason.DUPLICATE_EVENT] == duplicates


@st.composite
def ndjson(draw: st.DrawFn, entries: list[Json]) -> list[bytes]:
    """The entries as NDJSON lines, with bad and blank lines slipped in (never first: see check_body)."""
    lines = [line_of(entry) for entry in entries]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        lines.insert(draw(st.integers(min_value=1, max_value=len(lines))), draw(st.one_of(BAD_LINES, BLANK_LINES)))
    return lines


@settings(max_examples=examples(0.5))
@given(kit=minio_kits(), data=st.data())
def _check_entries(kit: MutationKit, data: st.DataObject) -> None:
    entries = [entry for entry, _done in kit.variants(VARIANTS_PER_EXAMPLE)] + list(kit.pool[:2]) + [{}]
    lines = [line_of(entry) for entry in entries]
    for line in lines:
        ok, value = decoded_line(line)
        if ok:  # what the webhook hands to the rules: msgspec's reading of the line
            assert actual_outcome(classify_entry(value)) == expected_outcome(value)
    GENERATED.add("minio.classify_entry", len(entries))
    # Each entry alone as a body (MinIO's batch_size 1), then all of them as NDJSON with bad lines, and as an array.
    bodies = [[line + b"\n"] for line in lines]
    bodies.append(data.draw(ndjson(entries)))
    for lines in bodies:
        check_body(b"\n".join(lines), expected_body(lines))
    array = json.dumps(entries).encode("utf-8", "surrogatepass")
    try:
        parsed = parse_body(array)
    except BodyError:
        pass
    else:
        tally = OutcomeTally()
        meter_entries(parsed, tally)
        assert tally.entries == len(entries)
    GENERATED.add("minio.parse_body+meter_entries", len(bodies) + 1)


def test_every_entry_ends_in_exactly_one_outcome() -> None:
    before = GENERATED.counts["minio.classify_entry"], GENERATED.counts["minio.parse_body+meter_entries"]
    _check_entries()
    assert GENERATED.counts["minio.classify_entry"] - before[0] >= min_inputs()
    assert GENERATED.counts["minio.parse_body+meter_entries"] - before[1] >= min_inputs()


@settings(max_examples=examples())
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.lists(st.one_of(BAD_LINES, BLANK_LINES, st.binary(max_size=30)), max_size=5).map(b"\n".join),
        st.sampled_from([b"{}", b"[]", b"[{}]", b"null", b"1", b'"x"', b"[1, 2]", b"{}\n{}", b"\xef\xbb\xbf{}"]),
    )
)
def test_random_bodies_never_raise(body: bytes) -> None:
    try:
        parsed = parse_body(body)
    except BodyError:
        pass
    else:
        tally = OutcomeTally()
        for download in meter_entries(parsed, tally):
            assert_acceptable(download)
        assert tally.entries == len(parsed.entries) + parsed.bad_line_count
    GENERATED.add("minio.parse_body+meter_entries")


_DEEP = b"[" * 1_100 + b"]" * 1_100


@pytest.mark.parametrize(
    "body",
    [_DEEP, b'{"api":' + _DEEP + b"}", b"{}\n" + _DEEP, b'{"time":"\xff"}', b'{"a":1}\n{"time":"\xff"}'],
    ids=["deep-array", "deep-in-object", "deep-ndjson-line", "invalid-utf8", "invalid-utf8-ndjson-line"],
)
def test_undecodable_json_is_refused_or_quarantined_not_raised(body: bytes) -> None:
    try:
        parsed = parse_body(body)
    except BodyError:
        return
    tally = OutcomeTally()
    meter_entries(parsed, tally)
    assert tally.quarantined[Reason.BAD_JSON] == 1


# ---- metamorphic: one presigned GET, mutated -------------------------------------------------------

_RULE_FIELDS = {
    ("api",),
    ("api", "name"),
    ("api", "statusCode"),
    ("api", "tx"),
    ("requestQuery",),
    ("time",),
    *(("requestQuery", name) for name in ("userId", "collectionId", "itemId", "X-Amz-Signature", "X-Amz-Credential")),
}


def _unrelated(path: Path) -> bool:
    # Without api.tx, the response's Content-Length is the byte count.
    return path not in _RULE_FIELDS and path[:1] != ("responseHeader",)


def _decoded(entry: Json) -> Json:
    return msgspec.json.decode(line_of(entry))


@settings(max_examples=examples(0.25))
@given(kit=valid_minio_kits(("tags", "accessKey", "error", "userId", "requestID")))
def test_unrelated_changes_keep_the_line(kit: MutationKit) -> None:
    original = classify_entry(_decoded(kit.base))
    assert isinstance(original, MeteredDownload)
    for mutated, done in kit.variants(VARIANTS_PER_EXAMPLE // 2, _unrelated, 6):
        ok, value = decoded_line(line_of(mutated))
        if not ok:
            continue  # lone surrogates: the whole line is refused as JSON (a bad line, see check_body)
        outcome = classify_entry(value)
        assert isinstance(outcome, MeteredDownload), (outcome, done)
        assert outcome.to_line() == original.to_line()
        GENERATED.add("minio.metamorphic")


_Q = "requestQuery"
_NOT_UUID = st.sampled_from(["user-6f1d2c8e", "6f1d2c8e3b4a4f5e9a7b1c2d3e4f5a6b", "{}", "not a uuid"])


RULE_BREAKERS: list[tuple[st.SearchStrategy[list[Mutation]], str, Reason]] = [
    (
        one_change(("api", "statusCode"), st.sampled_from([304, 403, 404, 500, 199, 300])),
        "filtered",
        Reason.FAILED_REQUEST,
    ),
    (
        one_change(("api", "name"), st.sampled_from(["HeadObject", "PutObject", "getobject"])),
        "filtered",
        Reason.NOT_GET_OBJECT,
    ),
    (st.just([dropped((_Q, "X-Amz-Signature")), dropped((_Q, "X-Amz-Credential"))]), "filtered", Reason.NOT_PRESIGNED),
    (st.just([dropped(("api", "statusCode"))]), "filtered", Reason.INTERNAL_EVENT),
    (one_change((_Q, "userId"), _NOT_UUID), "filtered", Reason.INVALID_USER_ID),
    (one_change((_Q, "collectionId"), _NOT_UUID), "filtered", Reason.INVALID_COLLECTION_ID),
    (one_change((_Q, "itemId"), st.sampled_from(["a|b", "|"])), "filtered", Reason.INVALID_ITEM_ID),
    (
        one_change((_Q, "itemId"), st.sampled_from(["a\x00b", "item\x1f", "\x7fitem", "a\nb"])),
        "filtered",
        Reason.INVALID_ITEM_ID,
    ),
    (one_change((_Q, "userId"), BLANK_IDS), "filtered", Reason.MISSING_USER_ID),
    (st.just([dropped((_Q, "collectionId"))]), "filtered", Reason.MISSING_COLLECTION_ID),
    (one_change((_Q, "itemId"), BLANK_IDS), "filtered", Reason.MISSING_ITEM_ID),
    (one_change(("api", "statusCode"), st.sampled_from(["200", 200.0, True])), "quarantined", Reason.MALFORMED_ENTRY),
    (one_change((_Q,), st.sampled_from([[1], "userId=x", 5])), "quarantined", Reason.MALFORMED_ENTRY),
    (one_change((_Q, "userId"), st.sampled_from([5, [], {}])), "quarantined", Reason.MALFORMED_ENTRY),
    (
        one_change(("time",), st.sampled_from(["yesterday", "2025-10-27T10:12:30", 5, None])),
        "quarantined",
        Reason.INVALID_TIMESTAMP,
    ),
    (
        one_change(("api", "tx"), st.sampled_from([-1, 1.5, "many", 2**63, 10**20, "9" * 20, "9" * 5_000])),
        "quarantined",
        Reason.INVALID_BYTES,
    ),
]


@settings(max_examples=examples(0.3))
@given(base=valid_minio_entry(), data=st.data(), breaker=st.sampled_from(range(len(RULE_BREAKERS))))
def test_breaking_one_rule_names_its_reason(base: Json, data: st.DataObject, breaker: int) -> None:
    changes, kind, reason = RULE_BREAKERS[breaker]
    entry = copy.deepcopy(base)
    entry["api"].setdefault("tx", 0)  # so INVALID_BYTES is about api.tx
    for change in data.draw(changes):
        change.apply(entry)
    outcome = classify_entry(_decoded(entry))
    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason) == (kind, reason)
    GENERATED.add("minio.metamorphic")


@settings(max_examples=examples(0.1))
@given(base=valid_minio_entry(), repeats=st.integers(min_value=2, max_value=4))
def test_a_resent_entry_is_metered_once(base: Json, repeats: int) -> None:
    body = b"".join(line_of(base) + b"\n" for _ in range(repeats))
    tally = OutcomeTally()
    downloads = meter_entries(parse_body(body), tally)
    assert len(downloads) == 1
    assert tally.filtered[Reason.DUPLICATE_EVENT] == repeats - 1
    GENERATED.add("minio.metamorphic", repeats)


def test_json_line_model_matches_minio_time_format() -> None:
    """MinIO writes nanoseconds; the line keeps whole seconds."""
    assert re.fullmatch(r"\S+\|\S+\|\S+\|2025-10-27T10:12:30Z\|\d+\|minio", _line_for("2025-10-27T10:12:30.999999999Z"))


def _line_for(time: str) -> str:
    entry = {
        "time": time,
        "api": {"name": "GetObject", "statusCode": 200, "tx": 5},
        "requestQuery": {
            "X-Amz-Signature": "x",
            "userId": "6f1d2c8e-3b4a-4f5e-9a7b-1c2d3e4f5a6b",
            "collectionId": "0b8e6c1a-9d2f-4e3b-8a7c-5d6e7f8a9b0c",
            "itemId": "i",
        },
    }
    outcome = classify_entry(entry)
    assert isinstance(outcome, MeteredDownload)
    return outcome.to_line()
