"""A MinIO audit webhook body -> its entries.

MinIO sends one JSON object (``batch_size`` 1, ``Content-Type: application/json``) or newline-delimited JSON
(``batch_size`` > 1, no Content-Type); people replaying logs by hand also send a JSON array. The form is read
from the bytes, never from the Content-Type. A line that is not JSON is kept aside as a bad line while the
other lines are used: one bad entry never blocks the good ones beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from metering.line import bounded_json_int

# How much of a bad line is kept for the operator's log: enough to recognise it, never a whole body.
EXCERPT_CHARS = 200

_decoder = msgspec.json.Decoder()


def decode_json(data: bytes) -> object:
    """msgspec's decode, with its UnicodeDecodeError (invalid UTF-8) and RecursionError (nesting past ~1000
    levels) turned into the DecodeError every caller handles.

    A number msgspec cannot hold (past 64 bits, or a float past 1e308) is valid JSON: the document is decoded again
    with huge integers kept as text, so only the entry holding one is quarantined by the rules, not its body.
    """
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as error:
        if "out of range" not in str(error):
            raise
        return _decode_huge_numbers(data)
    except (UnicodeDecodeError, RecursionError) as error:
        raise msgspec.DecodeError(f"undecodable JSON: {type(error).__name__}") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _decode_huge_numbers(data: bytes) -> object:
    """The standard library's decoder for the rare document with huge numbers (it is ~5x slower than msgspec)."""
    try:
        return json.loads(data, parse_int=bounded_json_int, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise msgspec.DecodeError(f"invalid JSON: {error}") from None


class BodyError(ValueError):
    """The body holds no usable entry at all; the message says why (it becomes the 400 answer)."""


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of the body that is not JSON."""

    number: int
    """1-based line number in the body."""
    excerpt: str
    """The first 200 characters of the line, decoded leniently."""
    error: str
    """The JSON decoder's message."""


@dataclass(slots=True)
class ParsedBody:
    """The decoded entries of one body, and the lines that could not be decoded."""

    entries: list[object] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)


def excerpt(raw: bytes) -> str:
    """The start of a raw line as text, for a log record."""
    return raw[: EXCERPT_CHARS * 4].decode("utf-8", "replace")[:EXCERPT_CHARS]


def _json_kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _from_document(document: object) -> ParsedBody:
    """Entries of a body that decoded as one JSON document."""
    if isinstance(document, dict):
        return ParsedBody(entries=[document])
    if isinstance(document, list):
        if not document:
            raise BodyError("body is an empty JSON array: no audit entry")
        return ParsedBody(entries=document)
    raise BodyError(f"body is a JSON {_json_kind(document)}; expected an object, an array or NDJSON")


def parse_lines(lines: Iterable[bytes], first_number: int = 1) -> ParsedBody:
    """Entries of newline-delimited JSON lines; undecodable lines are set aside, blank lines skipped."""
    parsed = ParsedBody()
    for number, raw in enumerate(lines, start=first_number):
        line = raw.strip()
        if not line:
            continue
        try:
            parsed.entries.append(decode_json(line))
        except msgspec.DecodeError as error:
            parsed.bad_lines.append(BadLine(number, excerpt(line), str(error)))
    return parsed


def parse_body(body: bytes) -> ParsedBody:
    """Decode a webhook body into entries (any JSON values; the rules judge them) and bad lines.

    Raises BodyError when nothing in the body is a JSON object, so there is no entry to judge.
    """
    text = body.strip()
    if not text:
        raise BodyError("empty body: expected a JSON audit entry")
    if b"\n" not in text:
        try:
            return _checked(_from_document(decode_json(text)))
        except msgspec.DecodeError as error:
            raise BodyError(f"body is not valid JSON: {error}") from None
    lines = text.split(b"\n")
    parsed = parse_lines(lines)
    if parsed.bad_lines and parsed.bad_lines[0].number == 1:
        # The first line alone is not JSON: perhaps one pretty-printed document rather than NDJSON.
        try:
            return _checked(_from_document(decode_json(text)))
        except msgspec.DecodeError:
            pass
    return _checked(parsed)


def _checked(parsed: ParsedBody) -> ParsedBody:
    if not any(isinstance(entry, dict) for entry in parsed.entries):
        if parsed.bad_lines:
            raise BodyError(f"no line of the body is a JSON object ({len(parsed.bad_lines)} lines are not JSON)")
        raise BodyError("body holds no JSON object: no audit entry")
    return parsed
