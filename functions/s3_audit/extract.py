"""``ogc-audit extract --source cloudtrail|s3-access-log``: the metered downloads of local files, stdin or an S3 prefix.

A dry run of the s3_audit function's rules: same reader, same rules, nothing sent. boto3 is imported only
for ``s3://`` paths, so extracting a local file starts fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from metering.line import MeteredDownload
from metering.outcomes import OutcomeTally, Reason, Skip
from s3_audit.sources import access_log, cloudtrail
from s3_audit.sources.cloudtrail import EventIdSet
from s3_audit.sources.registry import LogSource, source_named

if TYPE_CHECKING:
    from s3_audit.envelopes import LogFileRef, SkippedInput

READ_SIZE = 1 << 20
_DUPLICATE = Skip.filtered(Reason.DUPLICATE_EVENT)
# Under a prefix named by hand, any JSON file is extracted (hand-made samples need no AWSLogs/ layout).
_EXTRACTABLE_SUFFIXES = (".json.gz", ".json", ".jsonl", ".ndjson")


def extract_downloads(paths: Sequence[str], tally: OutcomeTally) -> Iterator[MeteredDownload]:
    """The metered downloads of CloudTrail log files at each PATH (a file, ``-`` for stdin, or
    ``s3://bucket/prefix``), counting every outcome; a request repeated anywhere in the run is metered once."""
    return _extract(source_named(cloudtrail.NAME), paths, tally)


def extract_access_log_downloads(paths: Sequence[str], tally: OutcomeTally) -> Iterator[MeteredDownload]:
    """The same for S3 server access logs: local files, ``-``, or the access-log objects under an S3 prefix."""
    return _extract(source_named(access_log.NAME), paths, tally)


class LogStream(NamedTuple):
    """The bytes of one log object, its name (a path, ``stdin`` or an ``s3://`` URI) and the source reading it."""

    source: LogSource
    name: str
    chunks: Iterable[bytes]


def downloads_of(
    streams: Iterable[LogStream], tally: OutcomeTally, notes: QuarantineNotes | None = None
) -> Iterator[MeteredDownload]:
    """The metered downloads of log objects of any source, counting every outcome; an S3 request reported twice
    (by the same file, another file, or CloudTrail and an access log: one request key) is metered once.
    ``notes`` names each quarantined record."""
    seen = EventIdSet()
    first_time = seen.first_time
    count = tally.count
    for source, name, chunks in streams:
        for outcome in source.outcomes(chunks):
            if isinstance(outcome, MeteredDownload):
                if first_time(outcome):
                    tally.metered += 1
                    yield outcome
                else:
                    count(_DUPLICATE)
            else:
                count(outcome)
                if notes is not None and outcome.kind == "quarantined":
                    notes.note(name, outcome)


def path_streams(source_name: str, path: str) -> Iterator[LogStream]:
    """The log objects PATH stands for, read by the source ``source_name``: a file, ``-``, or an S3 prefix."""
    source = source_named(source_name)
    return (LogStream(source, name, chunks) for name, chunks in _sources(source, path))


def _extract(source: LogSource, paths: Sequence[str], tally: OutcomeTally) -> Iterator[MeteredDownload]:
    notes = QuarantineNotes()
    streams = (LogStream(source, name, chunks) for path in paths for name, chunks in _sources(source, path))
    yield from downloads_of(streams, tally, notes)
    notes.close()


class QuarantineNotes:
    """Names each quarantined record on stderr, as the MinIO path does: its file, its record (or line) and why.

    The first ``shown`` of a run are written; the rest are counted, and their number written at the end, so a file
    of a million bad records cannot flood the terminal. The per-reason totals are in the summary after them.
    """

    def __init__(self, shown: int = 20) -> None:
        self.shown = shown
        self.noted = 0

    def note(self, name: str, skip: Skip) -> None:
        """One quarantined record of the file ``name``."""
        self.noted += 1
        if self.noted <= self.shown:
            sys.stderr.write(f"quarantined {skip.reason}: {name}: {skip.detail}\n")

    def close(self) -> None:
        """Say how many quarantined records were not named."""
        if self.noted > self.shown:
            sys.stderr.write(f"quarantined: {self.noted - self.shown} more not shown (the first {self.shown} are)\n")


def _sources(source: LogSource, path: str) -> Iterator[tuple[str, Iterable[bytes]]]:
    """The byte streams PATH stands for, each with its name: one for a file or stdin, one per log object under an
    S3 prefix (named by its ``s3://`` URI)."""
    if path == "-":
        yield "stdin", _file_chunks(sys.stdin.buffer)
    elif path.startswith("s3://"):
        yield from _s3_sources(source, path)
    else:
        with open(path, "rb") as file:
            yield path, _file_chunks(file)


def _file_chunks(file: Any) -> Iterator[bytes]:
    while chunk := file.read(READ_SIZE):
        yield chunk


def _s3_sources(source: LogSource, url: str) -> Iterator[tuple[str, Iterable[bytes]]]:
    # Imported here only: boto3 alone takes longer to import than a local file takes to extract.
    import boto3

    from s3_audit.ingest import s3_object_chunks

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    for ref in _log_files_under(s3, source, bucket, prefix):
        yield ref.uri, s3_object_chunks(s3, ref)


def _log_files_under(s3: Any, source: LogSource, bucket: str, prefix: str) -> Iterator[LogFileRef]:
    """The source's log objects under a prefix; digest and Insights files, and other sources' logs, are left out."""
    from s3_audit.envelopes import LogFileRef, SkippedInput, SkipReason, classify_key

    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            key = entry["Key"]
            work = classify_key(bucket, key)
            if isinstance(work, LogFileRef):
                if work.source == source.name:
                    yield work
                else:
                    _note_skipped(SkippedInput(SkipReason.NOT_LOG_FILE, f"{work.uri} ({work.source} log)"))
            elif (
                source.name == cloudtrail.NAME
                and work.reason is SkipReason.NOT_LOG_FILE
                and key.endswith(_EXTRACTABLE_SUFFIXES)
            ):
                yield LogFileRef(bucket, key)
            else:
                _note_skipped(work)


def _note_skipped(skipped: SkippedInput) -> None:
    """Say on stderr which object under the prefix was left out, and why."""
    sys.stderr.write(f"skipped {skipped.detail}: {skipped.reason}\n")
