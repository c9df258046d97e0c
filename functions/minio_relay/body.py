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
# Bad lines kept (with excerpt and error) per parse; the others are only counted. A 4 MiB body holds two million
# 2-byte bad lines: keeping each would cost ~600 MB on a 512 MB function.
MAX_BAD_LINES_KEPT = 10

_decoder = msgspec.json.Decoder()
# First bytes of a line that no JSON value starts with, even after ``bytes.strip`` (which also removes \v and \f).
_NEVER_FIRST = frozenset(bytes([code]) for code in range(256)) - {
    bytes([code]) for code in b' \t\r\n\v\f{["-0123456789tfn'
}
_NOT_A_VALUE = "not JSON: no JSON value starts with this character"


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
    """The decoded entries of one body, and the lines that could not be decoded (the first few kept, all counted)."""

    entries: list[object] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    """The first ``MAX_BAD_LINES_KEPT`` bad lines."""
    bad_line_count: int = 0
    """Every bad line, kept or not."""

    def add_bad_line(self, number: int, raw: bytes, error: object) -> None:
        """Count a line that is not JSON; keep it (with ``str(error)``) while fewer than ``MAX_BAD_LINES_KEPT`` are."""
        self.bad_line_count += 1
        if len(self.bad_lines) < MAX_BAD_LINES_KEPT:
            self.bad_lines.append(BadLine(number, excerpt(raw), str(error)))


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
    """Entries of newline-delimited JSON lines; undecodable lines are set aside, blank lines skipped.

    A body can hold two million short lines: a line is decoded as it is (JSON allows the white space around it),
    and only a line that fails is looked at again (blank, or framed by white space JSON does not know). A line whose
    first byte cannot start a JSON value is bad without asking the decoder (its exception costs more than the rest
    of the line's work).
    """
    parsed = ParsedBody()
    entries = parsed.entries
    for number, raw in enumerate(lines, start=first_number):
        if raw[:1] in _NEVER_FIRST:
            parsed.add_bad_line(number, raw.strip(), _NOT_A_VALUE)
            continue
        try:
            entries.append(_decoder.decode(raw))
            continue
        except (msgspec.ValidationError, UnicodeDecodeError, RecursionError):
            failure: Exception | None = None  # a huge number, invalid UTF-8, deep nesting: decode_json's cases
        except msgspec.DecodeError as error:
            failure = error
        line = raw.strip()
        if not line:
            continue
        if failure is not None and line is raw:  # nothing stripped (bytes.strip returns the same object): bad
            parsed.add_bad_line(number, line, failure)
            continue
        try:
            entries.append(decode_json(line))
        except msgspec.DecodeError as error:
            parsed.add_bad_line(number, line, error)
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
            raise BodyError(f"no line of the body is a JSON object ({parsed.bad_line_count} lines are not JSON)")
        raise BodyError("body holds no JSON object: no audit entry")
    return parsed
