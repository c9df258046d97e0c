"""Reading a CloudTrail log file (gzip or plain JSON) as a stream of records, in bounded memory.

A log file is ``{"Records": [ ... ]}`` and reaches 100 MB of JSON, so it is never decoded as one tree.
The decompressed bytes are cut into pieces of whole records and each piece is decoded by msgspec into
``CloudTrailRecord`` structs holding only the fields the rules read.

Cutting: a candidate boundary between two records is ``}`` ws ``,`` ws ``{``. The same bytes also occur
inside a record (``resources`` arrays, string values), but ``[`` + bytes up to the candidate + ``]`` is
valid JSON only when the candidate is a real top-level boundary (a proper prefix of a JSON object is
never valid JSON). So candidates are tried from the end of the buffer, and a failed try just means
"not this one". A syntax error *before* the appended ``]`` cannot come from the cut: it is a damaged
file, reported with its byte offset, after the records before the damage have been handed out.

A file that does not start with ``{"Records":[`` (a single record, NDJSON, a JSON array) is decoded as
one document; that path holds the whole file and is meant for the command line.

Memory stays bounded whatever arrives (a 1.5 MB gzip can inflate to 1.5 GB): a record larger than 1 MiB
(CloudTrail's own records stay under 256 KB) is RECORD_TOO_LARGE: skipped unread (``value_skipper``) and the records
after it read, up to MAX_SKIPPED_RECORD_BYTES, past which the rest of the file is refused. A whole document past
MAX_DOCUMENT_BYTES and a file that inflates past ``MAX_LOG_FILE_BYTES`` are FILE_TOO_LARGE, each refused as soon as
the bound is crossed, after the records before it have been handed out.

Time stays bounded too: a file of tiny records (``{"Records":[{},{},...]}``, 3 bytes a record) would make 1 GiB
hold 358 million of them, each costing its Python work. Past ``ReadLimits.max_records`` records (one per
MIN_RECORD_BYTES of the file bound: 2,097,152 for 1 GiB, twice what real records of ~1 KB or more can fill it
with) the rest of the file is refused as TOO_MANY_RECORDS, within seconds of CPU.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import os
import re
import zlib
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from metering import env_names
from metering.outcomes import Reason, Skip
from metering.settings import positive_int
from s3_audit.sources.cloudtrail import CloudTrailRecord, decode_record
from s3_audit.value_skipper import ValueSkipper

# Decompressed bytes decoded at once: big enough to amortize a call, small enough to bound memory, and half the record
# bound, so a piece longer than MAX_RECORD_BYTES (then checked record by record) is rare in a real file.
PIECE_SIZE = 512 << 10
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 31  # zlib's gzip-only mode: checks the header, the CRC-32 and the length trailer
_RECORDS_START = re.compile(rb'(?:\xef\xbb\xbf)?\s*\{\s*"Records"\s*:\s*\[')
_INFLATE_INPUT = 16 * 1024  # compressed bytes per zlib call
# Inflated bytes per zlib call: zlib (and isal) grow a call's output in blocks of 32 KiB and more, then join them into
# one bytes object; output that fits one block is never copied again. 512 KiB per call took twice the time to inflate.
INFLATE_OUTPUT = 64 << 10
_START_PEEK = 4096  # bytes read before deciding between streaming the Records array and the whole-document path
_WHITESPACE = b" \t\r\n"
_COMMA, _OPEN_BRACE, _CLOSE_BRACE = ord(","), ord("{"), ord("}")
_OPEN_BRACKET, _CLOSE_BRACKET = ord("["), ord("]")
_ERROR_BYTE = re.compile(r"\(byte (\d+)\)")
# Candidates tried per cut while more input can still arrive; a record larger than a piece just waits.
_CUT_TRIES = 16
# Candidates tried when the input broke off: each try decodes the buffer, so hostile input must not make it quadratic.
_SALVAGE_TRIES = 256
_DOCUMENT_BATCH = 4096  # records of a whole document handed out at once
MAX_RECORD_BYTES = 1 << 20
"""A record larger than this is refused (RECORD_TOO_LARGE): CloudTrail's records stay under 256 KB."""
MAX_SKIPPED_RECORD_BYTES = 64 << 20
"""A record too large is skipped up to this size, the records after it still read; a larger one ends the reading of
its file (the skip is fast inside strings, a bracket at a time between them: this bounds the time)."""
MAX_LOG_FILE_BYTES_ENV = env_names.MAX_LOG_FILE_BYTES
DEFAULT_MAX_LOG_FILE_BYTES = 1 << 30
"""Inflated bytes read from one log file before it is refused (FILE_TOO_LARGE). CloudTrail starts a new file about
every 5 minutes per region and the busiest trails write files of ~100 MB of JSON: 1 GiB leaves 10x headroom. Measured
on the shared 2-core development machine (load 8-16), ``ogc-audit extract`` reads 100 MB of real records in 0.7-0.8
CPU-s, so 1 GiB in ~8 CPU-s (bench/README.md). A file of tiny records stops at ``max_records``: 3.2 CPU-s for
``{"Records":[{},{},...]}`` up to the bound, 20 CPU-s for a Records array of scalars, the slowest per record
(tests/integration/test_bounded_reading.py, load 11). Memory does not depend on it (the file is streamed); time does."""
MIN_RECORD_BYTES = 512
"""Bytes of JSON per record that a real log file never goes below on average (CloudTrail's S3 data events are ~1-2 KB,
an access-log line ~300-500 bytes): the file bound divided by it is the most records a file may hold."""
MAX_DOCUMENT_BYTES = 8 << 20
"""A file that is not a Records document (a hand-made sample, NDJSON for the command line) is held whole: up to this
size. Decoded, it takes up to ~20 times that (a Raw per element), so this bounds memory as well."""


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """How much of a log file and of one record is read before it is refused."""

    max_record_bytes: int = MAX_RECORD_BYTES
    max_file_bytes: int = DEFAULT_MAX_LOG_FILE_BYTES

    @property
    def max_records(self) -> int:
        """Records (or access-log lines) read from one file before the rest is refused (TOO_MANY_RECORDS)."""
        return max(1, self.max_file_bytes // MIN_RECORD_BYTES)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReadLimits:
        """``MAX_LOG_FILE_BYTES`` (optional, 1 MiB to 64 GiB); SettingsError naming it when invalid."""
        env = os.environ if env is None else env
        return cls(max_file_bytes=positive_int(env, MAX_LOG_FILE_BYTES_ENV, DEFAULT_MAX_LOG_FILE_BYTES, 1 << 36))


@functools.cache
def read_limits() -> ReadLimits:
    """The limits of this process, read from the environment once (Lambda cold start, CLI start)."""
    return ReadLimits.from_env()


_piece_decoder = msgspec.json.Decoder(list[CloudTrailRecord])
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_document_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw] | list[msgspec.Raw])

LogRecord = CloudTrailRecord | Skip


def _inflate_library() -> tuple[Any, tuple[type[Exception], ...]]:
    """python-isal's zlib when it is installed (inflates ~3x faster, same API), else the standard zlib."""
    try:
        isal_zlib = importlib.import_module("isal.isal_zlib")
    except ImportError:
        return zlib, (zlib.error,)
    return isal_zlib, (zlib.error, isal_zlib.error)


_INFLATE, _INFLATE_ERRORS = _inflate_library()


class LogFileFault(Exception):
    """The byte stream of a log file cannot be read past some point (bad or truncated gzip)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def too_many_records(max_records: int, what: str = "records") -> Skip:
    """The quarantine that ends the reading of a file holding more than ``max_records`` records."""
    return Skip.quarantined(
        Reason.TOO_MANY_RECORDS,
        f"the log file holds more than {max_records} {what} (one per {MIN_RECORD_BYTES} bytes of "
        f"{MAX_LOG_FILE_BYTES_ENV}); the rest of it is not read",
    )


def decompressed(
    chunks: Iterable[bytes], out_size: int = INFLATE_OUTPUT, max_bytes: int | None = None
) -> Iterator[bytes]:
    """The bytes of a log file, gunzipped when they start with the gzip magic, in blocks of at most ``out_size``.

    Raises LogFileFault (BAD_GZIP) after yielding everything decoded before a corrupt or truncated stream, and
    LogFileFault (FILE_TOO_LARGE) instead of yielding the block that would take the total past ``max_bytes``.
    """
    blocks = _decompressed(chunks, out_size)
    if max_bytes is None:
        yield from blocks
        return
    total = 0
    for block in blocks:
        total += len(block)
        if total > max_bytes:
            raise LogFileFault(
                Reason.FILE_TOO_LARGE,
                f"the log file inflates past {max_bytes} bytes ({MAX_LOG_FILE_BYTES_ENV}); refused there",
            )
        yield block


def _decompressed(chunks: Iterable[bytes], out_size: int) -> Iterator[bytes]:
    stream = iter(chunks)
    head = b""
    for chunk in stream:
        head += chunk
        if len(head) >= len(_GZIP_MAGIC):
            break
    if not head.startswith(_GZIP_MAGIC):
        # Plain JSON in blocks of out_size too: the reader's bounds then hold however the input was chunked.
        for chunk in _chain(head, stream):
            for start in range(0, len(chunk), out_size):
                yield chunk[start : start + out_size]
        return
    yield from _gunzip(head, stream, out_size)


def _gunzip(head: bytes, rest: Iterator[bytes], out_size: int) -> Iterator[bytes]:
    inflater = _INFLATE.decompressobj(_GZIP_WBITS)
    member_started = False
    compressed_offset = 0
    for chunk in _slices(_chain(head, rest)):
        data: bytes | memoryview = chunk
        while data:
            member_started = True
            try:
                block = inflater.decompress(data, out_size)
            except _INFLATE_ERRORS as error:
                raise _bad_gzip(compressed_offset, error) from error
            if block:
                yield block
            if inflater.eof:
                # Concatenated gzip members are one valid gzip file.
                data = inflater.unused_data
                inflater = _INFLATE.decompressobj(_GZIP_WBITS)
                member_started = False
            else:
                data = inflater.unconsumed_tail
        compressed_offset += len(chunk)
    if member_started:
        try:
            tail = inflater.flush()
        except _INFLATE_ERRORS as error:
            raise _bad_gzip(compressed_offset, error) from error
        if tail:
            yield tail
        if not inflater.eof:
            raise LogFileFault(
                Reason.BAD_GZIP, f"truncated gzip stream: it ends after {compressed_offset} compressed bytes"
            )


def _bad_gzip(compressed_offset: int, error: Exception) -> LogFileFault:
    return LogFileFault(Reason.BAD_GZIP, f"bad gzip data near compressed byte {compressed_offset}: {error}")


def _chain(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest


def _slices(chunks: Iterator[bytes]) -> Iterator[memoryview]:
    """Input in small slices: zlib drops the output of a call that fails, so a fault loses at most one slice."""
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), _INFLATE_INPUT):
            yield view[start : start + _INFLATE_INPUT]


def read_log_records(
    chunks: Iterable[bytes], *, piece_size: int = PIECE_SIZE, limits: ReadLimits | None = None
) -> Iterator[LogRecord]:
    """Every record of a log file in order, as a CloudTrailRecord or a MALFORMED_ENTRY quarantine.

    A damaged file yields the records decoded before the damage and then one quarantine (BAD_GZIP or
    BAD_JSON) whose detail names the byte offset; so does a file past the ``limits`` (RECORD_TOO_LARGE,
    FILE_TOO_LARGE, TOO_MANY_RECORDS), refused as soon as the bound is crossed. ``limits`` default to
    ``read_limits()``.
    """
    return itertools.chain.from_iterable(read_log_pieces(chunks, piece_size=piece_size, limits=limits))


def read_log_pieces(
    chunks: Iterable[bytes], *, piece_size: int = PIECE_SIZE, limits: ReadLimits | None = None
) -> Iterator[list[LogRecord]]:
    """``read_log_records`` a list at a time (the records of a piece, in order): a loop over each list costs less
    per record than a generator's step, which tells at 50,000 records a file."""
    limits = read_limits() if limits is None else limits
    splitter = _RecordSplitter(piece_size, limits.max_record_bytes, limits.max_records)
    blocks = decompressed(chunks, out_size=min(piece_size, INFLATE_OUTPUT), max_bytes=limits.max_file_bytes)
    try:
        for block in blocks:
            yield from splitter.feed(block)
            if splitter.fault is not None:
                break
        else:
            yield from splitter.finish()
    except LogFileFault as fault:
        yield from splitter.salvage()
        yield [Skip.quarantined(fault.reason, fault.detail)]
        return
    if splitter.fault is not None:
        # Damaged gzip data often inflates to invalid JSON first; the gzip fault is then the one to report.
        yield [(_gzip_fault(blocks) if splitter.fault.reason is Reason.BAD_JSON else None) or splitter.fault]


def _gzip_fault(blocks: Iterator[bytes]) -> Skip | None:
    """Read the rest of the stream (up to the file bound) only to learn whether the gzip layer is damaged too."""
    try:
        for _ in blocks:
            pass
    except LogFileFault as fault:
        return Skip.quarantined(fault.reason, fault.detail) if fault.reason is Reason.BAD_GZIP else None
    return None


class _Corrupt(Exception):
    """A piece holds a JSON syntax error that is not explained by where it was cut."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position


@dataclass(slots=True)
class _OversizedRecord:
    """A record past the bound, skipped as its bytes arrive: its number, where it starts, how long it is so far."""

    number: int
    start: int
    length: int = 0
    scanner: ValueSkipper = field(default_factory=ValueSkipper)


class _RecordSplitter:
    """Accumulates decompressed bytes and hands out decoded records piece by piece.

    While streaming, ``buffer[0]`` is a spare byte (the ``[`` of the Records array, or the comma or space
    before the next record): a piece is decoded in place by writing ``[`` there and ``]`` after its last
    record, so a 1 MB piece is never copied.
    """

    def __init__(self, piece_size: int, max_record_bytes: int = MAX_RECORD_BYTES, max_records: int = 1 << 62) -> None:
        self.piece_size = piece_size
        self.max_record_bytes = max_record_bytes
        self.max_records = max_records
        self.buffer = bytearray()
        self.offset = 0  # decompressed offset of buffer[0], for error details
        self.records = 0  # records handed out, to number malformed ones
        self.streaming: bool | None = None  # None until the start of the document has been seen
        self.fault: Skip | None = None  # set when the JSON is damaged; nothing after it is decoded
        self.skipping: _OversizedRecord | None = None  # the record too large being skipped, while it lasts
        self.after_skip = False  # the bytes after a skipped record: its comma is still to come

    def feed(self, block: bytes) -> Iterator[list[LogRecord]]:
        """Take more bytes; hand out the whole records they complete once a piece is full."""
        if self.skipping is not None:
            block = yield from self._skip(block)
            if self.skipping is not None or self.fault is not None:
                return
        if self.after_skip:
            block = self._resume_after_skip(block)
        self.buffer += block
        if self.streaming is None:
            self._detect_start(final=False)
        if self.streaming and len(self.buffer) >= self.piece_size:
            yield from self._emit_complete(max_tries=_CUT_TRIES)
            # What is left is the record in progress (after a piece that found no cut): past the bound, skip it.
            # A record between the bound and twice it still completes, then is refused alone (as any chunking does).
            bound = max(2 * self.max_record_bytes, self.max_record_bytes + self.piece_size)
            if self.fault is None and len(self.buffer) > bound:
                yield from self._take_values()
        elif self.streaming is False and len(self.buffer) > MAX_DOCUMENT_BYTES:
            self._refuse(
                Reason.FILE_TOO_LARGE,
                f"a file that is not a CloudTrail Records document is read whole, up to {MAX_DOCUMENT_BYTES} bytes",
            )

    def _take_values(self) -> Iterator[list[LogRecord]]:
        """No record boundary in more than the bound: take the buffer's values one at a time. A record too large is
        skipped (to its end if it is in the buffer, else as the bytes arrive); a small value is decoded (a value
        that is not an object leaves no ``},{`` to cut at); the rest goes back to the buffer once it is short."""
        data, base, position = bytes(self.buffer), self.offset, 1  # data[0] is the spare byte
        self.buffer = bytearray()
        while True:
            if self.records >= self.max_records:  # a Records array of scalars has no boundary to cut at
                self._refuse_count()
                return
            scanner = ValueSkipper()
            end = scanner.end_in(memoryview(data)[position:])
            if end is None:  # the record goes on: skip it as it arrives
                self.skipping = _OversizedRecord(self.records, base + position, len(data) - position, scanner)
                self.offset = base + len(data)
                return
            value = data[position : position + end]
            if not value.strip():
                self._refuse(Reason.BAD_JSON, f"invalid JSON at decompressed byte {base + position}: no value")
                return
            yield [self._value_taken(value, base + position)]
            after = _skip_whitespace(data, position + end)
            if after == len(data):
                self.after_skip, self.offset = True, base + after
                return
            if data[after] != _COMMA or len(data) - after <= self.max_record_bytes:
                # Its comma is the spare byte; anything else (the end of the array, damage) gets a spare before it.
                spare = after if data[after] == _COMMA else after - 1
                self.buffer = bytearray(data[spare:]) if spare == after else bytearray(b" " + data[after:])
                self.offset = base + spare
                return
            position = after + 1

    def _value_taken(self, value: bytes, start: int) -> LogRecord:
        """A value taken whole from the buffer: decoded when small, else quarantined unread."""
        number = self.records
        self.records += 1
        if len(value) <= self.max_record_bytes:
            return _numbered(decode_record(value), number)
        return _skipped(number, start, len(value), self.max_record_bytes)

    def _skip(self, block: bytes) -> Generator[list[LogRecord], None, bytes]:
        """Pass the bytes of the record being skipped; once it ends, quarantine it and return the bytes after it."""
        skipping = self.skipping
        assert skipping is not None
        end = skipping.scanner.end_in(block)
        if end is None:
            skipping.length += len(block)
            self.offset += len(block)
            if skipping.length > MAX_SKIPPED_RECORD_BYTES:
                self.skipping = None
                self._refuse(
                    Reason.RECORD_TOO_LARGE,
                    f"record {skipping.number} (at decompressed byte {skipping.start}) is larger than "
                    f"{MAX_SKIPPED_RECORD_BYTES} bytes: the rest of the file is not read",
                )
            return b""
        skipping.length += end
        self.offset += end
        self.skipping = None
        self.after_skip = True
        self.records += 1
        yield [_skipped(skipping.number, skipping.start, skipping.length, self.max_record_bytes)]
        return block[end:]

    def _resume_after_skip(self, block: bytes) -> bytes:
        """Drop the white space after a skipped record; its comma (or the closing bracket) becomes the spare byte."""
        stripped = block.lstrip(_WHITESPACE)
        self.offset += len(block) - len(stripped)
        if not stripped:
            return b""
        self.after_skip = False
        if stripped[0] == _COMMA:
            return stripped
        self.offset -= 1
        return b" " + stripped  # the end of the array: a spare byte before it

    def _refuse_count(self) -> None:
        self.buffer = bytearray()
        self.fault = too_many_records(self.max_records)

    def _refuse(self, reason: Reason, detail: str) -> None:
        """Stop reading: the rest of the buffer is dropped at once, so memory stays bounded."""
        self.buffer = bytearray()
        self.fault = Skip.quarantined(reason, detail)

    def finish(self) -> Iterator[list[LogRecord]]:
        """The input ended normally: hand out the rest, or quarantine what cannot be decoded."""
        if self.skipping is not None:
            self.fault = Skip.quarantined(
                Reason.BAD_JSON,
                f"JSON ends at decompressed byte {self.offset} inside record {self.skipping.number}, "
                f"a record larger than {self.max_record_bytes} bytes",
            )
            return
        if self.streaming is None:
            self._detect_start(final=True)
        if not self.streaming:
            # In lists of a bounded length: a document of 8 MiB can hold 2.8 million tiny records.
            records = decode_document(bytes(self.buffer), self.max_record_bytes)
            while batch := list(itertools.islice(records, _DOCUMENT_BATCH)):
                yield batch
            return
        closing = self._closing_bracket()
        if closing is not None:
            try:
                yield self._decode_in_place(closing)
                return
            except _Corrupt as corrupt:
                yield from self._fail_at(corrupt)
                return
            except ValueError:
                pass  # the closing brackets are there but the records before them are cut short
        yield from self.salvage()
        if self.fault is None:
            self.fault = Skip.quarantined(
                Reason.BAD_JSON,
                f"JSON ends at decompressed byte {self.offset + len(self.buffer)} before the Records array is closed",
            )

    def salvage(self) -> Iterator[list[LogRecord]]:
        """The input broke off: hand out the whole records still in the buffer (a whole document is lost)."""
        if self.streaming and self.skipping is None:
            yield from self._emit_complete(max_tries=_SALVAGE_TRIES)

    def _detect_start(self, *, final: bool) -> None:
        if len(self.buffer) < _START_PEEK and not final:
            return
        match = _RECORDS_START.match(self.buffer)
        self.streaming = match is not None
        if match is not None:
            spare = match.end() - 1  # keep the ``[``
            del self.buffer[:spare]
            self.offset += spare

    def _closing_bracket(self) -> int | None:
        """Index of the ``]`` of ``]`` ``}`` ending the document, or None when it does not end that way."""
        end = len(self.buffer.rstrip(_WHITESPACE))
        if end < 2 or self.buffer[end - 1] != _CLOSE_BRACE:
            return None
        end = len(self.buffer[: end - 1].rstrip(_WHITESPACE))
        return end - 1 if end >= 2 and self.buffer[end - 1] == _CLOSE_BRACKET else None

    def _emit_complete(self, max_tries: int | None) -> Iterator[list[LogRecord]]:
        """Decode the records up to the last real boundary in the buffer and drop them from it."""
        for tries, (end, next_start) in enumerate(_boundaries_backwards(self.buffer), 1):
            try:
                decoded = self._decode_in_place(end)
            except _Corrupt as corrupt:
                yield from self._fail_at(corrupt)
                return
            except ValueError:
                if max_tries is not None and tries >= max_tries:
                    return
                continue
            del self.buffer[: next_start - 1]  # the byte before the next record becomes the spare
            self.offset += next_start - 1
            yield decoded
            return

    def _fail_at(self, corrupt: _Corrupt) -> Iterator[list[LogRecord]]:
        """Hand out the records before a syntax error, then quarantine the file at its offset."""
        damage = corrupt.position
        message = _ERROR_BYTE.sub("", str(corrupt)).strip()  # its byte counts from the piece, not the file
        detail = f"invalid JSON at decompressed byte {self.offset + damage}: {message}"
        del self.buffer[damage:]
        yield from self._emit_complete(max_tries=_SALVAGE_TRIES)
        self.fault = Skip.quarantined(Reason.BAD_JSON, detail)

    def _decode_in_place(self, end: int) -> list[LogRecord]:
        """The records in ``buffer[1:end]``, decoded as ``[`` ... ``]`` in the buffer itself, which is then restored.

        Raises ValueError when ``end`` is not a real boundary and _Corrupt on damage.
        """
        buffer = self.buffer
        rest = buffer[end:]  # usually a part of one record: the cut is near the end
        del buffer[end:]
        buffer[0] = _OPEN_BRACKET
        buffer.append(_CLOSE_BRACKET)
        try:
            return self._decode_piece(buffer)
        finally:
            del buffer[end:]
            buffer += rest

    def _decode_piece(self, piece: bytearray) -> list[LogRecord]:
        if len(piece) > self.max_record_bytes:
            # One of its records may be too large: only the record-by-record path sees each one's size.
            checked = self._decode_one_by_one(piece)
            if self.records + len(checked) > self.max_records:
                del checked[self.max_records - self.records :]
                self._refuse_count()
            self.records += len(checked)
            return checked
        try:
            records: list[LogRecord] = list(_piece_decoder.decode(piece))
        except (msgspec.ValidationError, UnicodeDecodeError):
            # Some record has a wrong type or invalid UTF-8 (or the cut is wrong): decode one by one to find out.
            records = self._decode_one_by_one(piece)
        except msgspec.DecodeError as error:
            raise _syntax_fault(error, len(piece)) from None
        except RecursionError:
            raise _too_deep() from None
        if self.records + len(records) > self.max_records:  # the records past the bound are dropped unread
            del records[self.max_records - self.records :]
            self._refuse_count()
        self.records += len(records)
        return records

    def _decode_one_by_one(self, piece: bytearray) -> list[LogRecord]:
        try:
            raws = _raw_list_decoder.decode(piece)
        except msgspec.DecodeError as error:
            raise _syntax_fault(error, len(piece)) from None
        except RecursionError:
            raise _too_deep() from None
        return [
            Skip.quarantined(
                Reason.RECORD_TOO_LARGE, f"record {self.records + index}: larger than {self.max_record_bytes} bytes"
            )
            if len(raw) > self.max_record_bytes
            else _numbered(decode_record(raw), self.records + index)
            for index, raw in enumerate(raws)
        ]


def _too_deep() -> _Corrupt:
    """JSON nested deeper than msgspec decodes: the file is quarantined from this piece on."""
    return _Corrupt(1, "JSON nested too deeply to decode")


def _syntax_fault(error: msgspec.DecodeError, piece_length: int) -> Exception:
    """_Corrupt for damage inside a piece; ValueError when the error sits where the piece was cut."""
    found = _ERROR_BYTE.search(str(error))
    if found is not None and int(found.group(1)) < piece_length - 1:
        return _Corrupt(int(found.group(1)), str(error))
    return ValueError("not a record boundary")


def _boundaries_backwards(buffer: bytearray) -> Iterator[tuple[int, int]]:
    """Candidate record boundaries, last first: (end of the record before, start of the record after)."""
    end = len(buffer)
    while True:
        brace = buffer.rfind(b"}", 0, end)
        if brace < 0:
            return
        comma = _skip_whitespace(buffer, brace + 1)
        if comma < len(buffer) and buffer[comma] == _COMMA:
            opening = _skip_whitespace(buffer, comma + 1)
            # A comma at the very end also closes a record: it matters when the stream breaks right there.
            if opening == len(buffer) or buffer[opening] == _OPEN_BRACE:
                yield brace + 1, opening
        end = brace


def _skip_whitespace(buffer: bytes | bytearray, position: int) -> int:
    while position < len(buffer) and buffer[position] in _WHITESPACE:
        position += 1
    return position


def _skipped(number: int, start: int, length: int, bound: int) -> Skip:
    return Skip.quarantined(
        Reason.RECORD_TOO_LARGE,
        f"record {number} (at decompressed byte {start}): {length} bytes, larger than {bound}; skipped unread",
    )


def _numbered(outcome: LogRecord, index: int) -> LogRecord:
    """Name the record's position in a quarantine detail, so an operator can find it in the file."""
    if isinstance(outcome, Skip):
        return Skip.quarantined(outcome.reason, f"record {index}: {outcome.detail}")
    return outcome


def decode_document(document: bytes, max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[LogRecord]:
    """The records of a whole document: ``{"Records": [...]}``, a JSON array of records, one record, or NDJSON.

    A record larger than ``max_record_bytes`` is quarantined as RECORD_TOO_LARGE; the others are kept.
    """
    yield from _decode_document(document, allow_lines=True, max_record_bytes=max_record_bytes)


def _decode_document(document: bytes, *, allow_lines: bool, max_record_bytes: int) -> Iterator[LogRecord]:
    if not document.strip(_WHITESPACE):
        yield Skip.quarantined(Reason.BAD_JSON, "empty file")
        return
    try:
        top = _document_decoder.decode(document)
    except (UnicodeDecodeError, RecursionError) as error:  # invalid UTF-8 in a key; nesting too deep
        yield Skip.quarantined(Reason.BAD_JSON, f"invalid JSON: {type(error).__name__}")
        return
    except msgspec.ValidationError as error:
        yield Skip.quarantined(Reason.BAD_JSON, f"not a JSON object or array of records: {error}")
        return
    except msgspec.DecodeError as error:
        if allow_lines and "trailing characters" in str(error):
            yield from _decode_lines(document, max_record_bytes)
        else:
            yield Skip.quarantined(Reason.BAD_JSON, f"invalid JSON: {error}")
        return
    if isinstance(top, dict) and "Records" in top:
        try:
            raws = _raw_list_decoder.decode(top["Records"])
        except msgspec.ValidationError as error:
            yield Skip.quarantined(Reason.BAD_JSON, f"Records is not an array: {error}")
            return
    else:
        raws = top if isinstance(top, list) else [msgspec.Raw(document)]
    for index, raw in enumerate(raws):
        if len(raw) > max_record_bytes:
            yield Skip.quarantined(Reason.RECORD_TOO_LARGE, f"record {index}: larger than {max_record_bytes} bytes")
        else:
            yield _numbered(decode_record(raw), index)


def _decode_lines(document: bytes, max_record_bytes: int) -> Iterator[LogRecord]:
    """NDJSON: each line is a record (or a Records document); a bad line does not hide the others."""
    for number, line in enumerate(document.split(b"\n"), 1):
        if not line.strip(_WHITESPACE):
            continue
        for outcome in _decode_document(line, allow_lines=False, max_record_bytes=max_record_bytes):
            if isinstance(outcome, Skip) and outcome.reason is Reason.BAD_JSON:
                yield Skip.quarantined(Reason.BAD_JSON, f"line {number}: {outcome.detail}")
            else:
                yield outcome
