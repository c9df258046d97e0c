"""Deliver lines so that each key reaches OGC RS once, whatever is retried or re-sent upstream.

Two granularities share one mechanism: a key per entry (MinIO ``deploymentid:requestID``: a re-sent entry is
recognised in any later body) and a key per chunk of lines (a CloudTrail log file: one ledger record per
request instead of one per download). A key is settled once OGC RS has answered for all of its lines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from metering.errors import DeliveryError
from metering.ledger import DeliveryLedger
from metering.ogc_rs import DeliveryReport, SettledCallback


@dataclass(frozen=True, slots=True)
class KeyedLine:
    """A metering line and the key of the source event it came from."""

    key: str
    line: str


@dataclass(frozen=True, slots=True)
class KeyedChunk:
    """Lines delivered and remembered together under one key."""

    key: str
    lines: Sequence[str]


@dataclass(slots=True)
class OnceReport:
    """What one delivery did: the delivery report plus what it did not send again."""

    delivery: DeliveryReport
    already_delivered: int = 0
    repeated_in_input: int = 0


class LineSender(Protocol):
    """What exactly-once delivery needs of the OGC RS client."""

    def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
        """Deliver lines, reporting settled positions; raise DeliveryError when OGC RS stays unavailable."""
        ...


class InFlightError(DeliveryError):
    """Some keys are being sent by another invocation right now; try the input again later."""


def deliver_once(client: LineSender, ledger: DeliveryLedger, items: Sequence[KeyedLine]) -> OnceReport:
    """Send each key's line unless the ledger shows it delivered; a key repeated in ``items`` is sent once."""
    unique: dict[str, str] = {}
    for item in items:
        unique.setdefault(item.key, item.line)
    report = _deliver_groups(client, ledger, [KeyedChunk(key, [line]) for key, line in unique.items()])
    report.repeated_in_input = len(items) - len(unique)
    return report


def deliver_chunks_once(client: LineSender, ledger: DeliveryLedger, chunks: Sequence[KeyedChunk]) -> OnceReport:
    """Send each chunk unless the ledger shows it delivered; every line of a chunk is sent (they are distinct)."""
    return _deliver_groups(client, ledger, chunks)


def chunk_key(prefix: str, event_ids: Sequence[str]) -> str:
    """A stable key for a chunk: the same events in the same order give the same key, on any retry or replay."""
    digest = hashlib.sha256("\n".join(event_ids).encode()).hexdigest()
    return f"{prefix}:{digest}"


def _deliver_groups(client: LineSender, ledger: DeliveryLedger, groups: Sequence[KeyedChunk]) -> OnceReport:
    """Claim the keys, send the lines of the claimed ones, settle each key once all its lines are answered.

    Raises DeliveryError (the input must be retried) after releasing the keys that were not settled;
    raises InFlightError after delivering the rest when another sender holds some of the keys.
    """
    claim = ledger.claim([group.key for group in groups])
    to_send = [group for group in groups if group.key in claim.claimed]
    lines: list[str] = []
    owner: list[int] = []  # position of each line's group in to_send
    for index, group in enumerate(to_send):
        lines.extend(group.lines)
        owner.extend([index] * len(group.lines))
    unanswered = [len(group.lines) for group in to_send]
    settled: set[str] = set()

    def record(positions: Sequence[int]) -> None:
        done = []
        for position in positions:
            group = owner[position]
            unanswered[group] -= 1
            if unanswered[group] == 0:
                done.append(to_send[group].key)
        if done:
            ledger.settle(done)
            settled.update(done)

    try:
        delivery = client.deliver(lines, on_settled=record)
    except BaseException:
        ledger.release([group.key for group in to_send if group.key not in settled])
        raise
    report = OnceReport(delivery, already_delivered=sum(len(g.lines) for g in groups if g.key in claim.delivered))
    if claim.in_flight:
        raise InFlightError(f"{len(claim.in_flight)} keys are being delivered by another invocation")
    return report
