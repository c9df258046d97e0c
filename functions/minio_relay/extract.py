"""``ogc-audit extract --source minio``: metered downloads of saved MinIO audit bodies (a dry run).

A PATH is a file holding one JSON entry, a JSON array of entries or NDJSON (what MinIO POSTs, or a log
collected from it), optionally gzip-compressed, or ``-`` for stdin. NDJSON is read in blocks, so a large log
never becomes one parse tree. Memory stays bounded whatever the file inflates to: a line longer than 1 MiB is
quarantined (RECORD_TOO_LARGE) without being held, and a whole document past 8 MiB (FILE_TOO_LARGE).
"""

from __future__ import annotations

import gzip
import itertools
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import BinaryIO

import msgspec

from metering.line import MeteredDownload
from metering.outcomes import OutcomeTally, Reason, Skip
from minio_relay.body import BodyError, decode_json, parse_body, parse_lines
from minio_relay.webhook import meter_entries

logger = logging.getLogger(__name__)

_BLOCK_LINES = 10_000
# Decoded entries take several times their JSON size: a block holds at most this much JSON.
_BLOCK_BYTES = 4 << 20
MAX_LINE_BYTES = 1 << 20
"""An entry (one NDJSON line) larger than this is refused: MinIO's entries are a few KB."""
MAX_DOCUMENT_BYTES = 8 << 20
"""A file that is not NDJSON (one pretty-printed entry, a JSON array) is held whole: up to this size, twice the
webhook's body limit. Decoded, JSON takes up to 25 times its size (``[{},{},...]``), so this bounds memory too."""
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: str, stack: ExitStack) -> BinaryIO:
    """The decompressed bytes of PATH; files are closed with ``stack``, stdin is left open."""
    raw: BinaryIO = sys.stdin.buffer if path == "-" else stack.enter_context(open(path, "rb"))  # noqa: SIM115
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == _GZIP_MAGIC:
        return stack.enter_context(gzip.GzipFile(fileobj=raw))  # type: ignore[return-value]
    return raw


def _is_ndjson(first_line: bytes) -> bool:
    """NDJSON when the first non-blank line is a whole JSON object on its own."""
    try:
        return isinstance(decode_json(first_line), dict)
    except msgspec.DecodeError:
        return False


def _bounded_lines(stream: BinaryIO, tally: OutcomeTally, path: str) -> Iterator[bytes]:
    """The lines of ``stream``; a line longer than MAX_LINE_BYTES is counted RECORD_TOO_LARGE and skipped unread."""
    number = 0
    while line := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass  # the rest of the line is read in bounded steps and dropped
        tally.count(Skip.quarantined(Reason.RECORD_TOO_LARGE))
        logger.warning(
            "quarantined %s: %s: line %d is longer than %d bytes", Reason.RECORD_TOO_LARGE, path, number, MAX_LINE_BYTES
        )
        yield b"\n"  # keeps the line numbers of the entries after it


def _blocks(lines: Iterator[bytes]) -> Iterator[list[bytes]]:
    """Lines in blocks of at most _BLOCK_LINES lines and about _BLOCK_BYTES bytes."""
    block: list[bytes] = []
    size = 0
    for line in lines:
        block.append(line)
        size += len(line)
        if len(block) >= _BLOCK_LINES or size >= _BLOCK_BYTES:
            yield block
            block, size = [], 0
    if block:
        yield block


def _whole_document(text: bytes, path: str, tally: OutcomeTally, seen: set[str]) -> Iterator[MeteredDownload]:
    if len(text) > MAX_DOCUMENT_BYTES:
        tally.count(Skip.quarantined(Reason.FILE_TOO_LARGE))
        logger.warning("quarantined %s: %s: larger than %d bytes", Reason.FILE_TOO_LARGE, path, MAX_DOCUMENT_BYTES)
        return
    try:
        parsed = parse_body(text)
    except BodyError as error:
        tally.count(Skip.quarantined(Reason.BAD_JSON))
        logger.warning("quarantined %s: %s: %s", Reason.BAD_JSON, path, error)
        return
    yield from meter_entries(parsed, tally, seen)


def extract_downloads(paths: Sequence[str], tally: OutcomeTally) -> Iterator[MeteredDownload]:
    """Yield the metered downloads of every PATH, counting every entry's outcome in ``tally``; an entry repeated
    anywhere in the run (MinIO re-sent it) is metered once."""
    seen: set[str] = set()
    for path in paths:
        yield from _extract_path(path, tally, seen)


def _extract_path(path: str, tally: OutcomeTally, seen: set[str]) -> Iterator[MeteredDownload]:
    with ExitStack() as stack:
        stream = _open(path, stack)
        leading: list[bytes] = []
        # Up to the first entry a line may be a whole document on one line (a JSON array): read it up to that bound.
        while line := stream.readline(MAX_DOCUMENT_BYTES + 1):
            leading.append(line)
            if line.strip():
                break
        if not leading or not leading[-1].strip():
            return  # an empty file holds no entry
        if not _is_ndjson(leading[-1]):
            head = b"".join(leading)
            # One byte past the bound is enough to know the document is too large: the rest is never read.
            rest = stream.read(max(0, MAX_DOCUMENT_BYTES + 1 - len(head)))
            yield from _whole_document(head + rest, path, tally, seen)
            return
        if len(leading[-1]) > MAX_LINE_BYTES:
            tally.count(Skip.quarantined(Reason.RECORD_TOO_LARGE))
            logger.warning(
                "quarantined %s: %s: the first entry is longer than %d bytes",
                Reason.RECORD_TOO_LARGE,
                path,
                MAX_LINE_BYTES,
            )
            leading[-1] = b"\n"
        number = 1
        for block in _blocks(itertools.chain(leading, _bounded_lines(stream, tally, path))):
            yield from meter_entries(parse_lines(block, first_number=number), tally, seen)
            number += len(block)
