"""The one registration point of log sources: which source an object name belongs to, and each source by name.

A source module provides ``NAME``, ``recognise(key)`` (``"log_file"``, a skip reason such as ``"digest_file"``,
or None when the key is not its own), ``file_time(key)`` (the period ``ogc-audit replay`` selects on) and
``outcomes(chunks)`` (the metered downloads and skips of one object's bytes, in order). Adding a source means
one module and one line in ``SOURCES``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from metering.line import MeteredDownload
from metering.outcomes import Skip
from s3_audit.sources import access_log, cloudtrail

LOG_FILE = "log_file"


@dataclass(frozen=True, slots=True)
class LogSource:
    """A kind of log object the function reads."""

    name: str
    recognise: Callable[[str], str | None]
    file_time: Callable[[str], datetime | None]
    outcomes: Callable[[Iterable[bytes]], Iterator[MeteredDownload | Skip]]


# Order matters only for names two sources could both claim; CloudTrail's (AWSLogs/.../*.json.gz) come first.
SOURCES: tuple[LogSource, ...] = (
    LogSource(cloudtrail.NAME, cloudtrail.recognise, cloudtrail.file_time, cloudtrail.outcomes),
    LogSource(access_log.NAME, access_log.recognise, access_log.file_time, access_log.outcomes),
)
_BY_NAME = {source.name: source for source in SOURCES}
SOURCE_NAMES = tuple(_BY_NAME)


def source_named(name: str) -> LogSource:
    """The source called ``name`` (``cloudtrail``, ``s3-access-log``); KeyError for an unknown one."""
    return _BY_NAME[name]


def recognise(key: str) -> tuple[LogSource | None, str | None]:
    """(the source whose log object ``key`` is, None) or (None, why it is skipped: a source's reason or None)."""
    for source in SOURCES:
        verdict = source.recognise(key)
        if verdict == LOG_FILE:
            return source, None
        if verdict is not None:
            return None, verdict
    return None, None
