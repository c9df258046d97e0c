"""Webhook bodies -> entries: one object, NDJSON (MinIO batch_size > 1), a JSON array, and broken bodies."""

from __future__ import annotations

import json

import pytest

from minio_relay.body import EXCERPT_CHARS, BodyError, parse_body, parse_lines
from tests.events import event_bytes


def test_one_object_as_minio_sends_it() -> None:
    entry = json.loads(event_bytes("minio/get_object_presigned.json"))
    body = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
    parsed = parse_body(body)
    assert parsed.entries == [entry]
    assert parsed.bad_lines == []


def test_pretty_printed_object_is_one_entry() -> None:
    parsed = parse_body(event_bytes("minio/get_object_presigned.json"))
    assert len(parsed.entries) == 1
    assert parsed.bad_lines == []


def test_ndjson_batch() -> None:
    parsed = parse_body(event_bytes("minio/batch.ndjson"))
    assert len(parsed.entries) == 7
    assert all(isinstance(entry, dict) for entry in parsed.entries)


def test_ndjson_with_crlf_and_blank_lines() -> None:
    lines = event_bytes("minio/batch.ndjson").splitlines()
    body = b"\r\n\r\n".join(lines) + b"\r\n"
    assert len(parse_body(body).entries) == 7


def test_json_array() -> None:
    assert len(parse_body(event_bytes("minio/batch_array.json")).entries) == 4


def test_startup_probe() -> None:
    assert parse_body(b"{}").entries == [{}]


def test_a_bad_line_is_set_aside_and_the_others_kept() -> None:
    parsed = parse_body(event_bytes("minio/batch_with_bad_line.ndjson"))
    assert len(parsed.entries) == 2
    [bad] = parsed.bad_lines
    assert bad.number == 2
    assert bad.excerpt.startswith('{"version":"1"')
    assert len(bad.excerpt) <= EXCERPT_CHARS
    assert "truncated" in bad.error


def test_first_line_bad_still_keeps_later_lines() -> None:
    lines = event_bytes("minio/batch.ndjson").splitlines()
    parsed = parse_body(b"garbage\n" + b"\n".join(lines[:2]))
    assert len(parsed.entries) == 2
    assert [bad.number for bad in parsed.bad_lines] == [1]


def test_excerpt_is_bounded() -> None:
    parsed = parse_body(b"{}\n" + b"x" * 10_000)
    assert len(parsed.bad_lines[0].excerpt) == EXCERPT_CHARS


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"  \n\n ", "empty body"),
        (b"not json", "not valid JSON"),
        (b'{"version":"1"', "not valid JSON"),
        (b"42", "JSON number"),
        (b'"text"', "JSON string"),
        (b"null", "JSON null"),
        (b"[]", "empty JSON array"),
        (b"[1, 2]", "no JSON object"),
        (b"one\ntwo\nthree", "no line of the body is a JSON object (3 lines are not JSON)"),
        (b"\xff\xfe{}", "not valid JSON"),
    ],
)
def test_no_parseable_entry(body: bytes, message: str) -> None:
    with pytest.raises(BodyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_body(body)


def test_parse_lines_numbers_from_the_given_line() -> None:
    parsed = parse_lines([b"{}", b"bad"], first_number=41)
    assert parsed.bad_lines[0].number == 42
