"""The one registration point of log sources: which source an object name belongs to, and each source by name.

A source module provides ``NAME``, ``recognise(key)`` (``"log_file"``, a skip reason such as ``"digest_file"``,
or None when the key is not its own), ``file_time(key)`` (the period ``ogc-audit replay`` selects on) and
``outcomes(chunks)`` (the metered downloads and skips of one object's bytes, in order). Adding a source means
one module and one line in ``SOURCES``.

Where a log object arrived matters as much as its name (``LogOrigins``): in AWS each source writes to a bucket of
its own, so a CloudTrail-named key in the access-log bucket (or the reverse, or any log in another bucket) is
refused, and so is a CloudTrail file of an account that is neither this one nor a configured one. The bucket
policies already deny such writes (docs/security.md); this is the second lock, and the one local runs can test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from metering import env_names
from metering.line import MeteredDownload
from metering.outcomes import Skip
from s3_audit.sources import access_log, cloudtrail

LOG_FILE = "log_file"
# Skip reasons of a log file that arrived where its source does not write.
UNEXPECTED_BUCKET = "unexpected_bucket"
UNEXPECTED_ACCOUNT = "unexpected_account"


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


@dataclass(frozen=True, slots=True)
class LogOrigins:
    """Which bucket holds which source's log files, and whose CloudTrail files count.

    Empty (local runs, ``ogc-audit extract`` of an archive): any bucket may hold any source, any account counts.
    """

    source_of_bucket: Mapping[str, str] = field(default_factory=dict)
    """Bucket name -> the one source it holds; a bucket not listed holds none (when any is listed)."""
    trail_accounts: frozenset[str] = frozenset()
    """Accounts whose CloudTrail log files are metered; empty: any."""

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> LogOrigins:
        """The origins the stack sets (CLOUDTRAIL_LOG_BUCKET, ACCESS_LOG_BUCKET, TRAIL_ACCOUNT_IDS); unset: any."""
        values = os.environ if env is None else env
        buckets = {
            values.get(variable, "").strip(): source
            for variable, source in (
                (env_names.CLOUDTRAIL_LOG_BUCKET, cloudtrail.NAME),
                (env_names.ACCESS_LOG_BUCKET, access_log.NAME),
            )
        }
        buckets.pop("", None)
        accounts = frozenset(part.strip() for part in values.get(env_names.TRAIL_ACCOUNT_IDS, "").split(","))
        return cls(buckets, accounts - {""})

    def refusal(self, source: LogSource, bucket: str | None, key: str) -> str | None:
        """Why a log file of ``source`` named ``key`` in ``bucket`` is not read, or None when it may be."""
        if self.source_of_bucket and self.source_of_bucket.get(bucket or "") != source.name:
            return UNEXPECTED_BUCKET
        foreign = bool(self.trail_accounts) and cloudtrail.account_of(key) not in self.trail_accounts
        if source.name == cloudtrail.NAME and foreign:
            return UNEXPECTED_ACCOUNT
        return None


ANYWHERE = LogOrigins()


def recognise(
    key: str, bucket: str | None = None, origins: LogOrigins = ANYWHERE
) -> tuple[LogSource | None, str | None]:
    """(the source whose log object ``key`` is, None) or (None, why it is skipped: a source's reason or None).

    With ``origins``, a log file in ``bucket`` is refused (``unexpected_bucket``, ``unexpected_account``) unless
    that bucket holds its source and, for CloudTrail, the account in its name is an accepted one.
    """
    for source in SOURCES:
        verdict = source.recognise(key)
        if verdict == LOG_FILE:
            refused = origins.refusal(source, bucket, key)
            return (None, refused) if refused else (source, None)
        if verdict is not None:
            return None, verdict
    return None, None
