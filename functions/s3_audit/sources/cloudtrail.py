"""CloudTrail log files as a log source: their object names, their records, their delivery time.

The record rules live in ``s3_audit.cloudtrail`` and the streamed gzip JSON reading in ``s3_audit.log_file``;
this module is what the registry needs to know about them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from metering.line import MeteredDownload
from metering.outcomes import Skip
from s3_audit.cloudtrail import classify
from s3_audit.log_file import read_log_records

NAME = "cloudtrail"
LOG_FILE_SUFFIX = ".json.gz"
_DIGEST_FOLDER = "/CloudTrail-Digest/"
_INSIGHT_FOLDER = "/CloudTrail-Insight/"
_LOG_FOLDER = "/CloudTrail/"
_LOGS_ROOT = "AWSLogs/"
# AWSLogs/<account>/CloudTrail/ or, for an organisation trail, AWSLogs/<o-id>/<account>/CloudTrail/, after any prefix.
_ACCOUNT = re.compile(r"(?:^|/)AWSLogs/(?:o-[a-z0-9]{10,32}/)?(\d{12})/CloudTrail/")
# CloudTrail names a file <account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<random>.json.gz
_FILE_TIME = re.compile(r"_CloudTrail_[^_/]+_(\d{8}T\d{4}Z)_[^/]*$")


def recognise(key: str) -> str | None:
    """``"log_file"`` for a CloudTrail log file key, ``"digest_file"``/``"insight_file"`` for its siblings, else None.

    Keys are ``AWSLogs/<account>/CloudTrail/...`` or ``AWSLogs/<o-id>/<account>/CloudTrail/...``, after any prefix.
    """
    if _DIGEST_FOLDER in key:
        return "digest_file"
    if _INSIGHT_FOLDER in key:
        return "insight_file"
    if _LOGS_ROOT in key and _LOG_FOLDER in key and key.endswith(LOG_FILE_SUFFIX):
        return "log_file"
    return None


def account_of(key: str) -> str | None:
    """The account whose events a log file holds, from its name; None when the name shows none."""
    match = _ACCOUNT.search(key)
    return match.group(1) if match else None


def file_time(key: str) -> datetime | None:
    """The delivery time CloudTrail wrote into a log file's name."""
    match = _FILE_TIME.search(key)
    return datetime.strptime(match.group(1), "%Y%m%dT%H%MZ").replace(tzinfo=UTC) if match else None


def outcomes(chunks: Iterable[bytes]) -> Iterator[MeteredDownload | Skip]:
    """The outcome of every record of a log file (gzip or plain JSON), in order; repeats are judged by the caller."""
    for record in read_log_records(chunks):
        yield record if isinstance(record, Skip) else classify(record)
