"""The metered download and the one definition of a metering line sent to OGC RS.

A line is ``userId|collectionId|itemId|timestamp|bytes|backend``. OGC RS rejects a whole request when
one line is invalid, so every value is checked here before a line can exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import msgspec

from metering.outcomes import Reason, Skip

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# CloudTrail writes whole seconds in UTC; this shape needs no parsing at all.
_PLAIN_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_FIELD_SEPARATOR = "|"
# Largest respSize OGC RS accepts (Java long, bigint column).
_MAX_BYTES = 2**63 - 1
# Digits of _MAX_BYTES: a longer digit string is out of range without converting it (int() of 4,300+ digits raises).
_MAX_BYTES_DIGITS = len(str(_MAX_BYTES))
# PostgreSQL refuses NUL in text, so OGC RS rejects the whole batch around such a line; the other C0 controls and
# DEL have no place in a STAC item id either.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# What java.lang.String.trim() removes: OGC RS finds a field made only of these empty.
_JAVA_BLANK = "".join(chr(code) for code in range(0x21))
EARLIEST_TIMESTAMP = "2006-01-01T00:00:00Z"
"""No download happened before S3 opened (2006-03): an earlier time is damage or forgery, and is quarantined."""
FUTURE_TOLERANCE = timedelta(days=1)
"""A time later than now plus this is quarantined too (clock skew between hosts stays far below a day)."""


class Backend(StrEnum):
    """Storage backend written in the sixth field of a line."""

    AWS_S3 = "aws_s3"
    MINIO = "minio"


class MeteredDownload(msgspec.Struct, frozen=True, gc=False):
    """One successful presigned download of a STAC asset, ready to be metered.

    ``event_id`` identifies the source event (CloudTrail ``eventID``, MinIO deployment and ``requestID``)
    so a repeated event is metered once; it is not part of the line. A msgspec Struct: a log file builds tens
    of thousands of these, and it constructs in a third of a frozen dataclass's time.
    """

    user_id: str
    collection_id: str
    item_id: str
    timestamp: str
    bytes_sent: int
    backend: Backend
    event_id: str

    def to_line(self) -> str:
        """The line OGC RS stores: ``userId|collectionId|itemId|timestamp|bytes|backend``."""
        return f"{self.user_id}|{self.collection_id}|{self.item_id}|{self.timestamp}|{self.bytes_sent}|{self.backend}"


def check_ids(user_id: object, collection_id: object, item_id: object) -> Skip | None:
    """The id rules shared by every source: present, UUIDs for user and collection, no ``|`` and no control
    character (U+0000-U+001F, U+007F) in the item."""
    for value, missing in (
        (user_id, Reason.MISSING_USER_ID),
        (collection_id, Reason.MISSING_COLLECTION_ID),
        (item_id, Reason.MISSING_ITEM_ID),
    ):
        if not isinstance(value, str) or not value.strip().strip(_JAVA_BLANK):
            return Skip.filtered(missing)
    assert isinstance(user_id, str) and isinstance(collection_id, str) and isinstance(item_id, str)  # noqa: PT018
    if not _UUID.fullmatch(user_id.strip()):
        return Skip.filtered(Reason.INVALID_USER_ID)
    if not _UUID.fullmatch(collection_id.strip()):
        return Skip.filtered(Reason.INVALID_COLLECTION_ID)
    if _FIELD_SEPARATOR in item_id or _CONTROL_CHARACTER.search(item_id):
        return Skip.filtered(Reason.INVALID_ITEM_ID)
    return None


def normalize_timestamp(raw: object) -> str | None:
    """RFC 3339 UTC with whole seconds and ``Z``; fractions are truncated. None when not a dated instant.

    A timestamp without an offset is refused: OGC RS needs one and guessing the zone would shift the row.
    """
    if not isinstance(raw, str):
        return None
    if _PLAIN_UTC.fullmatch(raw):
        # The common CloudTrail shape needs no conversion, only a calendar check.
        return raw if _parse_instant(raw) is not None else None
    instant = _parse_instant(raw.strip())
    if instant is None:
        return None
    try:  # isoformat: strftime writes year 999 as "999", which OGC RS rejects
        return instant.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"
    except OverflowError:  # the instant falls before year 1 or after year 9999 in UTC
        return None


def _parse_instant(text: str) -> datetime | None:
    """A timezone-aware datetime from ISO 8601 text with a date, a time and an offset."""
    if len(text) < 20 or text[10] not in "Tt ":
        return None
    try:
        # fromisoformat truncates digits past microseconds, so nanosecond MinIO times parse as they are.
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _integral(raw: object) -> int | None:
    """An integer written as int, integral float or decimal text; None otherwise (never raises)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        raw = _number_in_text(raw.strip())
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return raw if isinstance(raw, int) else None


def _number_in_text(text: str) -> int | float | None:
    """Decimal digits as an int, other numeric text as a float; None for anything else or too long to be a count."""
    if text.isascii() and text.isdigit():
        significant = text.lstrip("0")
        # Out of range anyway, and int() refuses more than 4,300 digits with ValueError.
        return int(significant or "0") if len(significant) <= _MAX_BYTES_DIGITS else None
    if len(text) > 64:  # no byte count is written this long; float() would take 5,000 digits as inf
        return None
    try:
        return float(text)
    except ValueError:
        return None


def normalize_bytes(raw: object) -> int | None:
    """A byte count as an integer from 0 to 2^63-1; ``16384.0`` and ``"16384"`` are accepted. None when invalid
    (a fraction, a number out of range however many digits it has, text): the entry is then quarantined."""
    value = _integral(raw)
    if value is not None and 0 <= value <= _MAX_BYTES:
        return value
    return None


def bounded_json_int(text: str) -> int | str:
    """``parse_int`` for ``json.loads``: an integer of up to 19 digits, else its digits as text.

    The standard library raises ValueError past 4,300 digits, which would spoil a whole message; kept as text, the
    number reaches the rules, and the byte rule quarantines only the entry that holds it.
    """
    return int(text) if len(text.lstrip("-")) <= _MAX_BYTES_DIGITS else text


def _excerpt(value: object) -> str:
    """The start of a value for a quarantine detail; str() of a 4,300+-digit int would raise."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return str(value)[:64]


def build_download(
    *,
    user_id: str,
    collection_id: str,
    item_id: str,
    timestamp: object,
    bytes_sent: object,
    backend: Backend,
    event_id: str,
) -> MeteredDownload | Skip:
    """A MeteredDownload from checked ids and raw time and size, or the quarantine reason for bad values (a time
    that is no instant or lies outside ``timestamp_in_window``, a byte count that is no integer of 0 to 2^63-1)."""
    when = normalize_timestamp(timestamp)
    if when is None:
        return Skip.quarantined(Reason.INVALID_TIMESTAMP, f"timestamp {str(timestamp)[:64]!r}")
    if not timestamp_in_window(when):
        return Skip.quarantined(Reason.INVALID_TIMESTAMP, _window_detail(timestamp, when))
    size = normalize_bytes(bytes_sent)
    if size is None:
        return Skip.quarantined(Reason.INVALID_BYTES, f"byte count {_excerpt(bytes_sent)!r}")
    return MeteredDownload(
        user_id=user_id.strip(),
        collection_id=collection_id.strip(),
        item_id=item_id.strip(),
        timestamp=when,
        bytes_sent=size,
        backend=backend,
        event_id=event_id,
    )


def timestamp_in_window(when: str) -> bool:
    """Whether a normalized timestamp (``normalize_timestamp``'s text) lies between 2006-01-01 and now plus a day.

    The text compares as the instant does: four-digit years, fixed width, UTC.
    """
    if when < EARLIEST_TIMESTAMP:
        return False
    horizon = datetime.now(UTC) + FUTURE_TOLERANCE
    return when <= f"{horizon:%Y-%m-%dT%H:%M:%S}Z"


def _window_detail(timestamp: object, when: str) -> str:
    return f"timestamp {str(timestamp)[:64]!r} ({when}) is before {EARLIEST_TIMESTAMP} or more than a day ahead"


def is_valid_line(line: object) -> bool:
    """The check OGC RS applies to a line, so nothing it would reject is ever sent."""
    if not isinstance(line, str):
        return False
    fields = [field.strip() for field in line.split(_FIELD_SEPARATOR)]
    if len(fields) != 6:
        return False
    user_id, collection_id, item_id, timestamp, size, _backend = fields
    if check_ids(user_id, collection_id, item_id) is not None:
        return False
    if normalize_timestamp(timestamp) != timestamp:
        return False
    return size.isascii() and size.isdigit() and normalize_bytes(size) is not None


class LineBuilder:
    """``check_ids`` then ``build_download`` for the downloads of one source, remembering what it validated.

    Users, collections and timestamps repeat across a log file (a few hundred users, one timestamp per second),
    so a UUID or a timestamp seen valid is not checked again (a new UUID costs one regular-expression match); an
    itemId is checked with one C-level ``isprintable`` (which no control character passes) unless that is
    inconclusive; anything not plainly valid goes through ``check_ids`` itself. Whatever is remembered, the
    outcome is exactly the one ``check_ids`` and ``build_download`` give (a property test holds them equal).
    Memory: at most ``max_remembered`` values of each kind; then it forgets them all and starts again.
    ``time_text`` turns a source's own time text into RFC 3339 before ``normalize_timestamp`` sees it.
    """

    def __init__(
        self, backend: Backend, time_text: Callable[[str], str] | None = None, max_remembered: int = 1 << 16
    ) -> None:
        self.backend = backend
        self.time_text = time_text
        self.max_remembered = max_remembered
        self._uuids: dict[str, str] = {}  # the user and collection ids found to be UUIDs
        self._times: dict[str, str] = {}  # a time as written -> its normalized text, inside the window

    def download(
        self,
        user_id: str | None,
        collection_id: str | None,
        item_id: str | None,
        *,
        timestamp: object,
        bytes_sent: object,
        event_id: str,
    ) -> MeteredDownload | Skip:
        """The download of these raw values, or the skip ``check_ids``/``build_download`` give for them."""
        uuids = self._uuids
        user = uuids.get(user_id) if type(user_id) is str else None
        if user is None and type(user_id) is str and _UUID.fullmatch(user_id):
            user = self._remember(user_id)  # a UUID as it is: nothing to trim
        collection = uuids.get(collection_id) if type(collection_id) is str else None
        if collection is None and type(collection_id) is str and _UUID.fullmatch(collection_id):
            collection = self._remember(collection_id)
        item = item_id.strip() if type(item_id) is str and item_id.isprintable() and "|" not in item_id else ""
        if user is None or collection is None or not item:
            # Not plainly valid: the shared rules decide, and name the reason (padded UUIDs pass, trimmed).
            bad_ids = check_ids(user_id, collection_id, item_id)
            if bad_ids is not None:
                return bad_ids
            assert user_id is not None and collection_id is not None and item_id is not None  # noqa: PT018
            user, collection, item = user_id.strip(), collection_id.strip(), item_id.strip()
        when = self._times.get(timestamp) if type(timestamp) is str else None
        if when is None:
            when_or_skip = self._timestamp(timestamp)
            if isinstance(when_or_skip, Skip):
                return when_or_skip
            when = when_or_skip
        if type(bytes_sent) is int and 0 <= bytes_sent <= _MAX_BYTES:
            size = bytes_sent
        elif type(bytes_sent) is float and bytes_sent.is_integer() and 0 <= bytes_sent <= _MAX_BYTES:
            size = int(bytes_sent)  # 16384.0: how EventBridge (and a third of some log files) write it
        elif type(bytes_sent) is str and bytes_sent.isdigit() and bytes_sent.isascii() and len(bytes_sent) < 19:
            size = int(bytes_sent)  # plain digits of fewer than 19: always in range
        else:
            normalized = normalize_bytes(bytes_sent)
            if normalized is None:
                return Skip.quarantined(Reason.INVALID_BYTES, f"byte count {_excerpt(bytes_sent)!r}")
            size = normalized
        return MeteredDownload(user, collection, item, when, size, self.backend, event_id)

    def _remember(self, uuid: str) -> str:
        if len(self._uuids) >= self.max_remembered:
            self._uuids.clear()
        self._uuids[uuid] = uuid
        return uuid

    def _timestamp(self, timestamp: object) -> str | Skip:
        """The normalized time, remembered when valid; else the quarantine ``build_download`` gives."""
        raw = self.time_text(timestamp) if self.time_text is not None and type(timestamp) is str else timestamp
        when = normalize_timestamp(raw)
        if when is None:
            return Skip.quarantined(Reason.INVALID_TIMESTAMP, f"timestamp {str(raw)[:64]!r}")
        if not timestamp_in_window(when):
            return Skip.quarantined(Reason.INVALID_TIMESTAMP, _window_detail(raw, when))
        # Remembered only once valid: a time that is too far ahead now can be in the window later.
        if type(timestamp) is str:
            if len(self._times) >= self.max_remembered:
                self._times.clear()
            self._times[timestamp] = when
        return when
