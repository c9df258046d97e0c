"""S3 server access logs: one record per line, their metering rules and request ID (docs/design.md, access-log column).

A record is space-separated, ``-`` for an empty field, the Time in brackets (``[09/May/2024:08:05:01 +0000]``,
two tokens), Request-URI, Referer and User-Agent in double quotes (they hold spaces). Fields are read by
position; AWS appends new ones at the end over the years, so extra trailing fields are ignored and an older,
shorter record is accepted as long as it reaches the User-Agent. Fields in order (AWS S3 user guide, "Amazon S3
server access log format"): Bucket Owner, Bucket, Time, Remote IP, Requester, Request ID, Operation, Key,
Request-URI, HTTP status, Error Code, Bytes Sent, Object Size, Total Time, Turn-Around Time, Referer,
User-Agent, Version Id, Host Id, Signature Version, Cipher Suite, Authentication Type, Host Header, ...

S3 writes the Referer and User-Agent as sent, quotes included: a ``"`` followed by a space inside them could end the
field early and shift the fields after it (a header-signed GET would then read as Authentication Type
``QueryString``). A record whose later fields read differently depending on where those fields end, so that
whether it is presigned depends on the reading, is quarantined, never reinterpreted.

Objects are plain text (a gzipped copy, e.g. given to ``ogc-audit extract``, is inflated by the same bounded layer
as CloudTrail files), read as a stream of lines in bounded memory: a line longer than ``MAX_LINE_BYTES`` is
quarantined and skipped without being held whole, and a malformed line is quarantined alone. At most
``max_records`` lines of an object are judged (``ReadLimits``): the rest of a hostile object of tiny lines is
refused as TOO_MANY_RECORDS, so its reading stays within the function's time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from urllib.parse import unquote_plus

import msgspec

from metering.line import Backend, LineBuilder, MeteredDownload
from metering.outcomes import Reason, Skip
from s3_audit.log_file import LogFileFault, ReadLimits, decompressed, read_limits, too_many_records
from s3_audit.sources.identity import request_key

NAME = "s3-access-log"
DOWNLOAD_OPERATION = "REST.GET.OBJECT"
SUCCESS_STATUSES = frozenset({"200", "206"})
# The Authentication Type S3 writes for a request signed in its query string (a presigned URL).
PRESIGNED_AUTHENTICATION = "QueryString"
# Records written before the Authentication Type field existed: a SigV4 presigned URL carries this parameter,
PRESIGNED_PARAMETER = "X-Amz-Signature"
# and a SigV2 one all of these.
SIGV2_PRESIGNED_PARAMETERS = ("Signature", "AWSAccessKeyId", "Expires")
# The values S3 writes in the Authentication Type field; any other value there means the fields are shifted.
_AUTHENTICATION_TYPES = frozenset({"AuthHeader", PRESIGNED_AUTHENTICATION, "-"})
# Readings tried for a line whose Referer or User-Agent hold quotes: beyond this many, it is quarantined.
_MAX_READINGS = 64
MAX_LINE_BYTES = 1 << 20  # a record is a few hundred bytes; a longer line is damage or hostile input
# Authentication Type is the 5th field after the User-Agent (Version Id, Host Id, Signature Version, Cipher Suite).
_AUTHENTICATION_AFTER_USER_AGENT = 4
_MONTHS = {
    name: f"{number:02d}"
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_FILTERED = {reason: Skip.filtered(reason) for reason in Reason}
_NOT_GET_OBJECT = _FILTERED[Reason.NOT_GET_OBJECT]
_NEWLINE = b"\n"
# [prefix]YYYY-mm-DD-HH-MM-SS-UniqueString, or with date-based partitioning
# [prefix]<account>/<region>/<bucket>/YYYY/mm/DD/YYYY-mm-DD-HH-MM-SS-UniqueString: both end the same way.
_OBJECT_NAME = re.compile(r"(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})-[0-9A-Za-z]{1,64}$")


# After the Operation: Key, "Request-URI", HTTP status, Error Code, Bytes Sent, Object Size, Total Time,
# Turn-Around Time, "Referer", "User-Agent", then optionally Version Id, Host Id, Signature Version, Cipher Suite,
# Authentication Type. Quoted fields without inner quotes only: such a record parses the same both ways.
_COMMON_REST = re.compile(
    r'[^ ]* "([A-Z]+ [^ ?"]*(?:\?[^ "]*)? HTTP/[0-9.]+)" (\d+|-) [^ ]* ([^ ]*) [^ ]* [^ ]* [^ ]* (?:"[^"]*"|-) '
    r'(?:"[^"]*"|-)(?: [^ ]* [^ ]* [^ ]* [^ ]* ([^ ]*))?(?: |$)'
)


class AccessLogRecord(msgspec.Struct, frozen=True, gc=False):
    """One access-log record, reduced to the fields the metering rules read."""

    bucket: str
    time: str  # as written between the brackets: ``09/May/2024:08:05:01 +0000``
    request_id: str
    operation: str
    request_uri: str
    http_status: str
    bytes_sent: str
    authentication_type: str | None  # None: a record older than the field


class MalformedLine(ValueError):
    """A line that is not an access-log record; the message says which part is wrong."""


def parse_record(line: str) -> AccessLogRecord:
    """The record of one line (without its newline). Raises MalformedLine."""
    return _record(_head(line))


def _head(line: str) -> list[str]:
    """The fields up to the Operation, and the rest of the line; the Time is two tokens."""
    parts = line.split(" ", 8)
    if len(parts) < 9:
        raise MalformedLine(f"{len(parts)} space-separated tokens, a record has at least 18 fields")
    if parts[2][:1] != "[" or parts[3][-1:] != "]":
        raise MalformedLine("the Time field is not [dd/Mon/yyyy:HH:MM:SS +zzzz]")
    return parts


def _record(parts: list[str]) -> AccessLogRecord:
    # The common shape in one C-level match; anything else (quotes inside a field, a short or odd record) takes
    # the field-by-field path below, which also names what is wrong. A quote after the match may mean that the
    # Referer or User-Agent held one: the field-by-field path decides whether the reading is ambiguous.
    rest = parts[8]
    common = _COMMON_REST.match(rest)
    if common is not None and rest.find('"', common.end()) < 0:
        uri, status, sent, authentication_type = common.groups()
        if authentication_type is None or authentication_type in _AUTHENTICATION_TYPES:
            return _from_fields(parts, uri, status, sent, authentication_type)
    key_end = rest.find(" ")
    if key_end < 0:
        raise MalformedLine("the record ends after the Key")
    request_uri, rest = _quoted(rest[key_end + 1 :], "Request-URI")
    fields = rest.split(" ", 6)
    if len(fields) < 7:
        raise MalformedLine("the record ends before the Referer")
    http_status = fields[0]
    if not (http_status.isdigit() or http_status == "-"):
        raise MalformedLine(f"HTTP status {http_status[:16]!r} is not a number")
    readings = _tail_readings(fields[6])
    authentication = readings[0]
    if any(_presigned(other, request_uri) != _presigned(authentication, request_uri) for other in readings[1:]):
        raise MalformedLine(
            "the Referer or User-Agent holds a quote and a space: the fields after it read as Authentication Type "
            f"{' or '.join(sorted({str(reading) for reading in readings}))}, so whether it is presigned is ambiguous"
        )
    return _from_fields(parts, request_uri, http_status, fields[2], authentication)


def _tail_readings(text: str) -> list[str | None]:
    """The Authentication Type (None: a record older than it) of each way to read the Referer, the User-Agent and
    the fields after them from ``text`` that gives a record; the reading that ends each quoted field at its first
    ``" `` comes first when it is one.

    Raises MalformedLine (the first reading's fault) when no reading gives a record.
    """
    readings: list[str | None] = []
    first_error: MalformedLine | None = None
    tries = 0
    for referer_end in _closing_quotes(text, last=False):
        try:
            _referer, after_referer = _quoted(text, "Referer", end=referer_end)
        except MalformedLine as error:
            first_error = first_error or error
            continue
        for agent_end in _closing_quotes(after_referer, last=True):
            tries += 1
            if tries > _MAX_READINGS:  # each try costs a split of the line: hostile quotes must not make it quadratic
                raise MalformedLine("the Referer and User-Agent hold too many quotes to be read unambiguously")
            try:
                _agent, tail = _quoted(after_referer, "User-Agent", last=True, end=agent_end)
                readings.append(_authentication_type(tail))
            except MalformedLine as error:
                first_error = first_error or error
    if not readings:
        assert first_error is not None
        raise first_error
    return readings


def _closing_quotes(text: str, *, last: bool) -> Iterator[int | None]:
    """Where a quoted field at the start of ``text`` may end: each ``" `` after its opening quote, first to last
    (and the final quote of the line for the last field); a single None when the field is not quoted."""
    if text[:1] != '"':
        yield None
        return
    position = text.find('" ', 1)
    if position < 0:
        yield None  # _quoted names the fault, or takes the line's last quote
        return
    while position >= 0:
        yield position
        position = text.find('" ', position + 1)
    if last and len(text) > 1 and text[-1] == '"':
        yield len(text) - 1


def _authentication_type(tail: str) -> str | None:
    """The Authentication Type of the fields after the User-Agent (None when the record ends before it).

    Raises MalformedLine when the field holds a value S3 never writes there: the fields are shifted.
    """
    if not tail:
        return None
    fields = tail.split(" ", _AUTHENTICATION_AFTER_USER_AGENT + 1)
    if len(fields) <= _AUTHENTICATION_AFTER_USER_AGENT:
        return None
    authentication = fields[_AUTHENTICATION_AFTER_USER_AGENT]
    if authentication not in _AUTHENTICATION_TYPES:
        raise MalformedLine(f"Authentication Type {authentication[:32]!r} is not one S3 writes: the fields are shifted")
    return authentication


def _from_fields(
    head: list[str], request_uri: str, http_status: str, bytes_sent: str, authentication_type: str | None
) -> AccessLogRecord:
    """The record from the fields up to the Operation (``_head``) and the later ones the rules read."""
    return AccessLogRecord(
        bucket=head[1],
        time=f"{head[2][1:]} {head[3][:-1]}",
        request_id=head[6],
        operation=head[7],
        request_uri=request_uri,
        http_status=http_status,
        bytes_sent=bytes_sent,
        authentication_type=authentication_type,
    )


def _quoted(text: str, name: str, *, last: bool = False, end: int | None = None) -> tuple[str, str]:
    """A field in double quotes (or ``-``) at the start of ``text``, and the text after it and its space.

    The closing quote is the first one followed by a space (or ending the line) unless ``end`` names another.
    """
    if text[:1] == '"':
        if end is None:
            end = text.find('" ', 1)
        if end < 0 or end == len(text) - 1:
            if last and len(text) > 1 and text[-1] == '"':
                return text[1:-1], ""
            raise MalformedLine(f"the {name} field has no closing quote")
        return text[1:end], text[end + 2 :]
    value, _, rest = text.partition(" ")
    if value != "-":
        raise MalformedLine(f"the {name} field is neither quoted nor -")
    if not rest and not last:
        raise MalformedLine(f"the record ends after the {name}")
    return "", rest


def rfc3339(time: str) -> str:
    """``09/May/2024:08:05:01 +0000`` as ``2024-05-09T08:05:01Z``; odd text is left for the rules to refuse."""
    month = _MONTHS.get(time[3:6])
    if month is None or len(time) != 26 or time[2] != "/" or time[6] != "/" or time[11] != ":" or time[20] != " ":
        return time
    stamp = f"{time[7:11]}-{month}-{time[:2]}T{time[12:20]}"
    zone = time[21:]
    if zone == "+0000":
        return stamp + "Z"
    return f"{stamp}{zone[:3]}:{zone[3:]}"


def query_string(request_uri: str) -> str:
    """The query string of ``GET /key?query HTTP/1.1``: from the first ``?`` to the protocol."""
    start = request_uri.find("?")
    if start < 0:
        return ""
    end = request_uri.rfind(" ")
    return request_uri[start + 1 : end] if end > start else request_uri[start + 1 :]


def query_parameter(query: str, name: str) -> str | None:
    """The first value of ``name`` in a query string, percent-decoded (``+`` is a space); None when absent.

    Raises UnicodeDecodeError when the value percent-decodes to invalid UTF-8.
    """
    marker = name + "="
    position = query.find(marker)
    while position > 0 and query[position - 1] != "&":  # "xuserId=" is another parameter
        position = query.find(marker, position + 1)
    if position < 0:
        return None
    start = position + len(marker)
    end = query.find("&", start)
    value = query[start:] if end < 0 else query[start:end]
    return unquote_plus(value, errors="strict") if ("%" in value or "+" in value) else value


def is_presigned(record: AccessLogRecord, query: str) -> bool:
    """Authentication Type QueryString (SigV4 or SigV2 alike); a record older than that field: ``X-Amz-Signature``
    in the query, or a SigV2 presigned URL's ``Signature``, ``AWSAccessKeyId`` and ``Expires``."""
    if record.authentication_type is None:
        return _presigned_query(query)
    return record.authentication_type == PRESIGNED_AUTHENTICATION


def _presigned_query(query: str) -> bool:
    if query_parameter(query, PRESIGNED_PARAMETER) is not None:
        return True
    return all(query_parameter(query, name) is not None for name in SIGV2_PRESIGNED_PARAMETERS)


def _presigned(authentication_type: str | None, request_uri: str) -> bool:
    """``is_presigned`` of a reading of a record (invalid percent-encoding in the query reads as not presigned)."""
    if authentication_type is not None:
        return authentication_type == PRESIGNED_AUTHENTICATION
    try:
        return _presigned_query(query_string(request_uri))
    except UnicodeDecodeError:
        return False


_LINES = LineBuilder(Backend.AWS_S3, time_text=rfc3339)


def classify(record: AccessLogRecord) -> MeteredDownload | Skip:
    """Apply the metering rules in docs/design.md order: the first rule that fails names the reason."""
    if record.operation != DOWNLOAD_OPERATION:
        return _NOT_GET_OBJECT
    if record.http_status not in SUCCESS_STATUSES:
        return _FILTERED[Reason.FAILED_REQUEST]
    query = query_string(record.request_uri)
    try:
        if not is_presigned(record, query):
            return _FILTERED[Reason.NOT_PRESIGNED]
        user_id = query_parameter(query, "userId")
        collection_id = query_parameter(query, "collectionId")
        item_id = query_parameter(query, "itemId")
    except UnicodeDecodeError:
        return Skip.quarantined(Reason.MALFORMED_ENTRY, "a query parameter percent-decodes to invalid UTF-8")
    return _LINES.download(
        user_id,
        collection_id,
        item_id,
        timestamp=record.time,
        bytes_sent=0 if record.bytes_sent == "-" else record.bytes_sent,
        event_id=request_key(record.bucket, record.request_id) or "",
    )


def meter_line(line: str) -> MeteredDownload | Skip:
    """One line's outcome: a metered download, a filtered record, or a MALFORMED_ENTRY quarantine.

    A record that is no download is judged on the fields up to its Operation (as a CloudTrail record is judged
    on the fields the rules read): the rest of it is not parsed.
    """
    try:
        parts = _head(line)
        if parts[7] != DOWNLOAD_OPERATION:
            return _NOT_GET_OBJECT
        return classify(_record(parts))
    except MalformedLine as error:
        return Skip.quarantined(Reason.MALFORMED_ENTRY, str(error))


def read_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[str | Skip]:
    """The lines of an access-log object (without newlines, blank ones left out), streamed from its bytes.

    A line longer than ``max_line`` bytes is quarantined and skipped up to its newline without being kept; a
    line that is not UTF-8 is quarantined alone. Memory holds at most one bound plus one chunk.
    """
    pending = b""
    number = 0  # lines read so far, to name a quarantined one
    skipping = False  # inside a line that is over the bound
    for chunk in chunks:
        data = chunk
        if skipping:
            newline = data.find(_NEWLINE)
            if newline < 0:
                continue
            data, skipping = data[newline + 1 :], False
        if pending:
            data = pending + data
        cut = data.rfind(_NEWLINE)
        if cut < 0:
            pending = data
        else:
            pending = data[cut + 1 :]
            yield from _block_lines(data[:cut], number, max_line)
            number += data.count(_NEWLINE, 0, cut + 1)
        if len(pending) > max_line:
            number += 1
            yield _too_long(number, max_line)
            pending, skipping = b"", True
    if pending and not skipping:
        yield from _block_lines(pending, number, max_line)


def _block_lines(block: bytes, number: int, max_line: int) -> Iterator[str | Skip]:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        yield from _lines_one_by_one(block, number)
        return
    if "\r" in text:  # CRLF line ends (the block holds no newline after its last line)
        text = text.replace("\r\n", "\n").removesuffix("\r")
    lines = text.split("\n")
    if max(map(len, lines)) * 4 <= max_line:  # no line can be over the bound (at most 4 bytes a character)
        yield from filter(None, lines)  # blank lines are no records
        return
    for offset, line in enumerate(lines, number + 1):
        if len(line.encode()) > max_line:
            yield _too_long(offset, max_line)
        elif line:
            yield line


def _lines_one_by_one(block: bytes, number: int) -> Iterator[str | Skip]:
    """A block with invalid UTF-8: decode each line alone, so only the bad line is quarantined."""
    for offset, raw in enumerate(block.split(_NEWLINE), number + 1):
        try:
            line = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as error:
            yield Skip.quarantined(Reason.MALFORMED_ENTRY, f"line {offset}: not UTF-8 ({error.reason})")
            continue
        if line:
            yield line


def _too_long(number: int, max_line: int) -> Skip:
    return Skip.quarantined(Reason.MALFORMED_ENTRY, f"line {number}: longer than {max_line} bytes, skipped")


def access_log_outcomes(chunks: Iterable[bytes], limits: ReadLimits | None = None) -> Iterator[MeteredDownload | Skip]:
    """The outcome of every line of an access-log object, in order (repeats are judged by the caller).

    Past ``limits.max_records`` lines (default ``read_limits()``) the rest of the object is refused: one
    TOO_MANY_RECORDS quarantine, after the outcomes of the lines before it.
    """
    max_records = (read_limits() if limits is None else limits).max_records
    try:
        for number, line in enumerate(read_lines(decompressed(chunks)), 1):
            if number > max_records:
                yield too_many_records(max_records, "lines")
                return
            if isinstance(line, Skip):
                yield line
                continue
            outcome = meter_line(line)
            if isinstance(outcome, Skip) and outcome.kind == "quarantined":
                outcome = Skip.quarantined(outcome.reason, f"record {number}: {outcome.detail}")
            yield outcome
    except LogFileFault as fault:  # a damaged gzip copy: the lines before the damage were handed out
        yield Skip.quarantined(fault.reason, fault.detail)


def recognise(key: str) -> str | None:
    """``"log_file"`` when the key is named like an access-log object (either naming form, any prefix), else None."""
    match = _OBJECT_NAME.search(key)
    return "log_file" if match is not None and file_time(key) is not None else None


def file_time(key: str) -> datetime | None:
    """The time S3 wrote into an access-log object's name (the hour its records belong to, roughly)."""
    match = _OBJECT_NAME.search(key)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC)
    except ValueError:  # 2024-13-45-...: a name that only looks like one
        return None


def outcomes(chunks: Iterable[bytes]) -> Iterator[MeteredDownload | Skip]:
    """The outcome of every line of an access-log object, in order (repeats are judged by the caller)."""
    return access_log_outcomes(chunks)
