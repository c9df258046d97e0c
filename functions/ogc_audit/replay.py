"""``ogc-audit replay``: re-send a period of log files (backfill after an outage), never twice.

The location holds CloudTrail log files, S3 server access logs, or both; each object is read by the source its
name belongs to, and the period is the time in the object names (CloudTrail's delivery minute, the access log's
write time: access-log records can be hours older than their object, so extend ``--since`` accordingly).

Each log file goes through the same ingestion as the ``s3_audit`` function, with the same chunking and the same
delivery ledger (IDEMPOTENCY_TABLE_NAME, the S3 stack's table), so chunks OGC RS already has are skipped and
replaying a period twice sends nothing the second time. Run it with the function's environment and the same
BATCH_MAX_LINES as the deployed stack: chunk keys depend on the chunk size.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from metering.outcomes import OutcomeTally
from s3_audit.envelopes import LogFileRef, classify_key
from s3_audit.sources.registry import recognise


class ReplayError(ValueError):
    """A bad argument to replay, said in one sentence."""


def parse_instant(text: str, name: str) -> datetime:
    """``2025-10-27``, ``2025-10-27T10:00`` or with an offset; UTC when none is given."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(f"--{name} must be an ISO 8601 date or date-time, got {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def log_file_time(key: str) -> datetime | None:
    """The time its source wrote into a log file's name; None for an object that is no log file."""
    source, _ = recognise(key)
    return source.file_time(key) if source is not None else None


def log_files_in_period(s3: Any, url: str, since: datetime, until: datetime) -> Iterator[LogFileRef]:
    """Log files (any source) under ``s3://bucket/prefix`` named with a time in [since, until), in key order."""
    if not url.startswith("s3://"):
        raise ReplayError(f"the location must be s3://bucket/prefix, got {url!r}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            work = classify_key(bucket, entry["Key"])
            when = log_file_time(entry["Key"])
            if isinstance(work, LogFileRef) and when is not None and since <= when < until:
                yield work


@dataclass(slots=True)
class ReplayTotals:
    """What a replay did, printed at its end."""

    files: int = 0
    delivered: int = 0
    already_delivered: int = 0
    rejected: int = 0
    tally: OutcomeTally = field(default_factory=OutcomeTally)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "files": self.files,
            "delivered": self.delivered,
            "already_delivered": self.already_delivered,
            "rejected": self.rejected,
            **self.tally.as_dict(),
        }


def run_replay(url: str, since_text: str, until_text: str, *, dry_run: bool, err: TextIO | None = None) -> int:
    """Replay the period; one JSON line per file and a total on stderr. Exit 2 on a bad argument."""
    import boto3

    from metering.errors import DeliveryError
    from metering.runtime import delivery_ledger, ogc_rs_client, uncertain_resolver
    from s3_audit.ingest import ingest_log_file, meter_log_file, s3_object_chunks

    err = sys.stderr if err is None else err
    try:
        since, until = parse_instant(since_text, "since"), parse_instant(until_text, "until")
        if since >= until:
            raise ReplayError("--since must be before --until")
        s3 = boto3.client("s3")
        totals = ReplayTotals()
        client = None if dry_run else ogc_rs_client()
        ledger = None if dry_run else delivery_ledger()
        # Near OGC RS, OGC_RS_DATABASE_URL lets a replay resolve requests an earlier try left uncertain.
        resolver = None if dry_run else uncertain_resolver()
        for ref in log_files_in_period(s3, url, since, until):
            totals.files += 1
            if client is None:
                batch = meter_log_file(ref, s3_object_chunks(s3, ref))
                totals.tally.merge(batch.tally)
                err.write(json.dumps({"input": ref.uri, "dry_run": True, **batch.tally.as_dict()}) + "\n")
                continue
            result = ingest_log_file(ref, s3=s3, sink=client, ledger=ledger, resolver=resolver)
            totals.tally.merge(result.tally)
            totals.delivered += result.delivered
            totals.already_delivered += result.already_delivered
            totals.rejected += len(result.rejected)
            err.write(
                json.dumps(
                    {"input": ref.uri, "delivered": result.delivered, "already_delivered": result.already_delivered}
                )
                + "\n"
            )
    except ReplayError as error:
        err.write(f"ogc-audit replay: {error}\n")
        return 2
    except DeliveryError as error:
        err.write(f"ogc-audit replay: stopped, OGC RS unavailable ({error}); run it again to resume\n")
        return 1
    err.write(json.dumps({"replay": "dry run" if dry_run else "done", **totals.as_dict()}) + "\n")
    return 0
