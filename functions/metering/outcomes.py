"""Every input entry ends in exactly one outcome: metered, filtered (with a reason) or quarantined."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class Reason(StrEnum):
    """Why an entry was not metered. Names appear in logs, metrics and the CLI summary."""

    # filtered: a well-formed entry that is not a metered download
    NOT_S3_EVENT = "not_s3_event"
    NOT_GET_OBJECT = "not_get_object"
    FAILED_REQUEST = "failed_request"
    NOT_PRESIGNED = "not_presigned"
    MISSING_USER_ID = "missing_user_id"
    MISSING_COLLECTION_ID = "missing_collection_id"
    MISSING_ITEM_ID = "missing_item_id"
    INVALID_USER_ID = "invalid_user_id"
    INVALID_COLLECTION_ID = "invalid_collection_id"
    INVALID_ITEM_ID = "invalid_item_id"
    DUPLICATE_EVENT = "duplicate_event"
    INTERNAL_EVENT = "internal_event"
    STARTUP_PROBE = "startup_probe"
    # quarantined: malformed input an operator has to look at
    MALFORMED_ENTRY = "malformed_entry"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_BYTES = "invalid_bytes"
    BAD_GZIP = "bad_gzip"
    BAD_JSON = "bad_json"
    RECORD_TOO_LARGE = "record_too_large"
    FILE_TOO_LARGE = "file_too_large"
    TOO_MANY_RECORDS = "too_many_records"
    REJECTED_BY_OGC_RS = "rejected_by_ogc_rs"


OutcomeKind = Literal["filtered", "quarantined"]


@dataclass(frozen=True, slots=True)
class Skip:
    """An entry that is not metered, and why."""

    kind: OutcomeKind
    reason: Reason
    detail: str = ""

    @classmethod
    def filtered(cls, reason: Reason) -> Skip:
        """A well-formed entry that the metering rules leave out."""
        return cls("filtered", reason)

    @classmethod
    def quarantined(cls, reason: Reason, detail: str = "") -> Skip:
        """A malformed entry, kept for an operator with a short description of the fault."""
        return cls("quarantined", reason, detail)


@dataclass(slots=True)
class OutcomeTally:
    """Counts of outcomes per reason, for logs, metrics and the CLI summary."""

    metered: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)

    def count(self, skip: Skip, times: int = 1) -> None:
        """Record a filtered or quarantined entry."""
        (self.filtered if skip.kind == "filtered" else self.quarantined)[skip.reason.value] += times

    def merge(self, other: OutcomeTally) -> None:
        """Add another tally into this one."""
        self.metered += other.metered
        self.filtered.update(other.filtered)
        self.quarantined.update(other.quarantined)

    @property
    def entries(self) -> int:
        """How many entries were seen in all."""
        return self.metered + self.filtered.total() + self.quarantined.total()

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary with reasons sorted by name."""
        return {
            "entries": self.entries,
            "metered": self.metered,
            "filtered": dict(sorted(self.filtered.items())),
            "quarantined": dict(sorted(self.quarantined.items())),
        }
