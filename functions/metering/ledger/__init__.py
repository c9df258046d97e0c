"""The delivery ledger: which metering keys OGC RS already has, so nothing is sent twice.

OGC RS does not deduplicate, while SQS, CloudTrail and MinIO all deliver at least once. Before lines are
sent their keys are *claimed* (a conditional write that only one sender can win); once OGC RS has answered
for them they are *settled*; if sending fails before the request reached OGC RS they are *released* for the next
try. A claim left behind by a crashed sender expires after ``in_progress_s``, so the input is retried rather than
lost.

A request whose answer never came (a read timeout, a connection lost after the body was sent, a 500/502/504)
may or may not have been stored: its keys become *uncertain*. The ledger keeps the exact ``logs`` array of that
request beside them (an :class:`UncertainRequest`), so the next try can ask OGC RS's database whether it landed,
or wait out a grace period, instead of re-sending it blindly (``metering.exactly_once``). An uncertain key is
never claimed: one resolver at a time takes the request's *lease*, decides, and releases or settles its keys.

One module per store, the same contract for all (``tests/integration/test_ledger_contract.py``):
``sqlite`` (a file or memory: local runs, the standalone server), ``dynamodb`` (AWS), ``postgres`` (a fleet of
``serve`` instances sharing one ledger).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "COMPLETED",
    "DYNAMODB_ACTIONS",
    "IN_PROGRESS",
    "IN_PROGRESS_S",
    "KEY_ATTRIBUTE",
    "RETENTION_S",
    "TTL_ATTRIBUTE",
    "UNCERTAIN",
    "Claim",
    "DeliveryLedger",
    "DynamoDbLedger",
    "KeyStatus",
    "SqliteLedger",
    "UncertainRequest",
]

# Keys are kept this long after delivery: re-sent MinIO bodies, redelivered SQS messages and replays of
# CloudTrail logs inside this window send nothing twice. An uncertain request is kept as long.
RETENTION_S = 30 * 24 * 3600
# A claim (or a resolver's lease) not settled within this time is considered abandoned (longer than any function
# timeout).
IN_PROGRESS_S = 15 * 60


class KeyStatus(StrEnum):
    """The state of a key in the ledger (absent: never sent, or released)."""

    IN_PROGRESS = "IN_PROGRESS"
    """Claimed by a sender now; claimable again once the claim expires."""
    UNCERTAIN = "UNCERTAIN"
    """Sent in a request whose answer was lost: never claimed until that request is resolved."""
    COMPLETED = "COMPLETED"
    """OGC RS stored it (or refused it for good): never sent again within the retention window."""


IN_PROGRESS = KeyStatus.IN_PROGRESS
UNCERTAIN = KeyStatus.UNCERTAIN
COMPLETED = KeyStatus.COMPLETED


@dataclass(frozen=True, slots=True)
class UncertainRequest:
    """One POST that may or may not have been stored by OGC RS, and what it means for the ledger.

    ``logs`` is the request's ``inputs.logs`` array exactly as sent, in order: OGC RS's ``jobs_table`` keeps the
    same array, which is how its database tells whether this request landed. ``keys`` are the ledger keys marked
    UNCERTAIN because of it; ``stored_keys`` are the keys to settle if it landed (the lines' own keys or chunk
    parts, and the S3 request keys they carry). ``sent_at`` is epoch seconds.
    """

    request_id: str
    logs: tuple[str, ...]
    sent_at: float
    keys: tuple[str, ...]
    stored_keys: tuple[str, ...] = ()

    @classmethod
    def new(
        cls, logs: Sequence[str], keys: Collection[str], stored_keys: Collection[str], sent_at: float
    ) -> UncertainRequest:
        """A new record with a fresh id (the same lines sent again later are another request)."""
        return cls(uuid.uuid4().hex, tuple(logs), float(sent_at), tuple(dict.fromkeys(keys)), tuple(stored_keys))

    def to_json_document(self) -> dict[str, Any]:
        """The record as a JSON-ready mapping, for the stores."""
        return {
            "request_id": self.request_id,
            "logs": list(self.logs),
            "sent_at": self.sent_at,
            "keys": list(self.keys),
            "stored_keys": list(self.stored_keys),
        }

    def to_json(self) -> str:
        """The record as compact JSON."""
        return json.dumps(self.to_json_document(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> UncertainRequest:
        """The record written by :meth:`to_json`."""
        return cls.from_json_document(json.loads(text))

    @classmethod
    def from_json_document(cls, document: dict[str, Any]) -> UncertainRequest:
        """The record from :meth:`to_json_document`'s mapping."""
        return cls(
            str(document["request_id"]),
            tuple(str(line) for line in document["logs"]),
            float(document["sent_at"]),
            tuple(str(key) for key in document["keys"]),
            tuple(str(key) for key in document.get("stored_keys", ())),
        )


@dataclass(slots=True)
class Claim:
    """The outcome of claiming keys: ours to send, already delivered, being sent by someone else now, or
    waiting for an uncertain request to be resolved."""

    claimed: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)
    uncertain: set[str] = field(default_factory=set)
    retry_after_s: float = 0.0
    """For ``uncertain`` keys left unresolved (``metering.exactly_once.claim_resolving``): when to try again."""


class DeliveryLedger(Protocol):
    """Records which keys were delivered to OGC RS, and which wait for an uncertain request to be resolved."""

    def claim(self, keys: Collection[str]) -> Claim:
        """Claim keys for sending; a key delivered, uncertain or claimed by a live sender is not claimed."""
        ...

    def settle(self, keys: Collection[str]) -> None:
        """Record keys as delivered (stored, or refused for good) for the retention window, claimed or not."""
        ...

    def delivered(self, keys: Collection[str]) -> set[str]:
        """Which of ``keys`` are recorded as delivered; reads only."""
        ...

    def release(self, keys: Collection[str]) -> None:
        """Give claimed keys back after a send that provably stored nothing; only IN_PROGRESS keys are touched."""
        ...

    def mark_uncertain(self, request: UncertainRequest) -> None:
        """Keep ``request`` and mark its ``keys`` (this sender's claims) UNCERTAIN until it is resolved."""
        ...

    def uncertain_requests(self, keys: Collection[str]) -> list[UncertainRequest]:
        """The uncertain requests that hold any of ``keys``, each once; reads only."""
        ...

    def lease_uncertain(self, request_id: str) -> bool:
        """Take the sole right to resolve a request for ``in_progress_s``; False when another resolver holds it or
        it is resolved already."""
        ...

    def unlease_uncertain(self, request_id: str) -> None:
        """Give the lease back without resolving (OGC RS still running the request: ask again later)."""
        ...

    def resolve_uncertain(self, request: UncertainRequest, *, stored: bool) -> None:
        """End the request's uncertainty: when ``stored``, settle its ``stored_keys``; then release its keys that are
        still UNCERTAIN because of it (the next claim wins them) and forget the record."""
        ...


# The concrete stores, importable from here as before the package split (sqlite and dynamodb need only the
# standard library at import time: infra/ reads the DynamoDB layout from here at synthesis).
from metering.ledger.dynamodb import DYNAMODB_ACTIONS, KEY_ATTRIBUTE, TTL_ATTRIBUTE, DynamoDbLedger  # noqa: E402
from metering.ledger.sqlite import SqliteLedger  # noqa: E402
