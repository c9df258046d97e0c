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
    """Lines delivered and remembered together under one key.

    ``event_keys`` are recorded as delivered with the chunk, so the same events met again in another input
    (CloudTrail repeating an event in a later log file) can be recognised with ``DeliveryLedger.delivered``.
    """

    key: str
    lines: Sequence[str]
    event_keys: Sequence[str] = ()


@dataclass(slots=True)
class OnceReport:
    """What one delivery did: the delivery report plus what it did not send again."""

    delivery: DeliveryReport
    already_delivered: int = 0
    repeated_in_input: int = 0
    known_requests: int = 0
    """Of ``already_delivered``: lines whose request an earlier input delivered (another file, source or path)."""


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


def _part_key(group_key: str, position: int) -> str:
    return f"{group_key}#{position}"


def _progress_key(group_key: str) -> str:
    return f"{group_key}#partial"


def _parts_delivered(ledger: DeliveryLedger, groups: Sequence[KeyedChunk]) -> set[tuple[str, int]]:
    """(key, position) of the lines an earlier, failed attempt delivered from a group it could not finish.

    OGC RS refuses a whole request for one bad line, so the client splits a chunk and stores its good halves
    one request at a time; when a later half fails, the group key is released with part of it stored. Those
    parts are recorded line by line (rare), behind one progress key per group: one extra read per chunk.
    """
    markers = {_progress_key(group.key): group for group in groups if len(group.lines) > 1}
    if not markers:
        return set()
    parts = {
        _part_key(group.key, position): (group.key, position)
        for group in (markers[key] for key in ledger.delivered(list(markers)))
        for position in range(len(group.lines))
    }
    if not parts:
        return set()
    return {parts[key] for key in ledger.delivered(list(parts))}


def _deliver_groups(client: LineSender, ledger: DeliveryLedger, groups: Sequence[KeyedChunk]) -> OnceReport:
    """Claim the keys, send the lines of the claimed ones, settle each key once all its lines are answered.

    A group answered only in part (split around a refused line) records the answered parts, so a retry sends
    only the rest. Raises DeliveryError (the input must be retried) after releasing the keys that were not
    settled; raises InFlightError after delivering the rest when another sender holds some of the keys.
    """
    claim = ledger.claim([group.key for group in groups])
    to_send = [group for group in groups if group.key in claim.claimed]
    done_parts = _parts_delivered(ledger, to_send)
    lines: list[str] = []
    owner: list[tuple[int, int]] = []  # (position of the line's group in to_send, position in the group)
    for index, group in enumerate(to_send):
        for position, line in enumerate(group.lines):
            if (group.key, position) not in done_parts:
                lines.append(line)
                owner.append((index, position))
    unanswered = [0] * len(to_send)
    for index, _ in owner:
        unanswered[index] += 1
    settled: set[str] = set()

    def settle_groups(indexes: Sequence[int]) -> None:
        keys = [to_send[index].key for index in indexes]
        ledger.settle([*keys, *(key for index in indexes for key in to_send[index].event_keys)])
        settled.update(keys)

    finished = [index for index in range(len(to_send)) if unanswered[index] == 0]
    if finished:  # every line was delivered part by part before
        settle_groups(finished)

    def record(positions: Sequence[int]) -> None:
        answered: dict[int, list[int]] = {}
        for position in positions:
            index, part = owner[position]
            unanswered[index] -= 1
            answered.setdefault(index, []).append(part)
        done = [index for index in answered if unanswered[index] == 0]
        partial = [
            key
            for index, parts in answered.items()
            if unanswered[index] > 0
            for key in (_progress_key(to_send[index].key), *(_part_key(to_send[index].key, p) for p in parts))
        ]
        if partial:
            ledger.settle(partial)
        if done:
            settle_groups(done)

    try:
        delivery = client.deliver(lines, on_settled=record)
    except BaseException:
        ledger.release([group.key for group in to_send if group.key not in settled])
        raise
    already = sum(len(g.lines) for g in groups if g.key in claim.delivered) + len(done_parts)
    report = OnceReport(delivery, already_delivered=already)
    if claim.in_flight:
        raise InFlightError(f"{len(claim.in_flight)} keys are being delivered by another invocation")
    return report
