"""``ogc-audit extract --source minio``: metered downloads of saved MinIO audit bodies (a dry run).

A PATH is a file holding one JSON entry, a JSON array of entries or NDJSON (what MinIO POSTs, or a log
collected from it), optionally gzip-compressed, or ``-`` for stdin. NDJSON is read in blocks, so a large log
never becomes one parse tree.
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
from minio_relay.body import BodyError, parse_body, parse_lines
from minio_relay.webhook import meter_entries

logger = logging.getLogger(__name__)

_BLOCK_LINES = 10_000
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
        return isinstance(msgspec.json.decode(first_line), dict)
    except msgspec.DecodeError:
        return False


def _whole_document(text: bytes, path: str, tally: OutcomeTally, seen: set[str]) -> Iterator[MeteredDownload]:
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
        lines = iter(stream)
        leading: list[bytes] = []
        for line in lines:
            leading.append(line)
            if line.strip():
                break
        if not leading or not leading[-1].strip():
            return  # an empty file holds no entry
        if not _is_ndjson(leading[-1]):
            yield from _whole_document(b"".join(leading) + stream.read(), path, tally, seen)
            return
        number = 1
        block = leading
        while block:
            yield from meter_entries(parse_lines(block, first_number=number), tally, seen)
            number += len(block)
            block = list(itertools.islice(lines, _BLOCK_LINES))
