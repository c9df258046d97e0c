"""Deliver lines so that each key reaches OGC RS once, whatever is retried or re-sent upstream.

Two granularities share one mechanism: a key per entry (MinIO ``deploymentid:requestID``: a re-sent entry is
recognised in any later body) and a key per chunk of lines (a CloudTrail log file: one ledger record per
request instead of one per download). A key is settled once OGC RS has answered for all of its lines.

A request whose answer was lost (``UncertainDeliveryError``) is never re-sent on a hunch: its keys become UNCERTAIN
in the ledger with the exact request, and the next try resolves them (``metering.uncertain``) before anything of
theirs is sent again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from metering.errors import DeliveryError, UncertainDeliveryError, UncertainPendingError
from metering.ledger import Claim, DeliveryLedger, UncertainRequest
from metering.ogc_rs import DeliveryReport, SettledCallback, log_unreported_rejections
from metering.uncertain import UncertainResolver


@dataclass(frozen=True, slots=True)
class KeyedLine:
    """A metering line and the key of the source event it came from."""

    key: str
    line: str


@dataclass(frozen=True, slots=True)
class KeyedChunk:
    """Lines delivered and remembered together under one key.

    ``event_keys`` are recorded as delivered with the chunk, so the same events met again in another input
    (CloudTrail repeating an event in a later log file) can be recognised with ``DeliveryLedger.delivered``. When
    there is one per line (aligned with ``lines``, ``""`` for a line without one), a request found stored after
    its answer was lost settles exactly its lines' events.
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


def deliver_once(
    client: LineSender,
    ledger: DeliveryLedger,
    items: Sequence[KeyedLine],
    resolver: UncertainResolver | None = None,
) -> OnceReport:
    """Send each key's line unless the ledger shows it delivered; a key repeated in ``items`` is sent once.

    ``resolver`` resolves keys left uncertain by an earlier try (default: the process's, configured by
    ``UNCERTAIN_GRACE_S`` and ``OGC_RS_DATABASE_URL``: see ``process_resolver``).
    """
    unique: dict[str, str] = {}
    for item in items:
        unique.setdefault(item.key, item.line)
    groups = [KeyedChunk(key, [line]) for key, line in unique.items()]
    report = _deliver_groups(client, ledger, groups, process_resolver(resolver))
    report.repeated_in_input = len(items) - len(unique)
    return report


def deliver_chunks_once(
    client: LineSender,
    ledger: DeliveryLedger,
    chunks: Sequence[KeyedChunk],
    resolver: UncertainResolver | None = None,
) -> OnceReport:
    """Send each chunk unless the ledger shows it delivered; every line of a chunk is sent (they are distinct)."""
    return _deliver_groups(client, ledger, chunks, process_resolver(resolver))


def process_resolver(resolver: UncertainResolver | None = None) -> UncertainResolver:
    """``resolver``, or the process's own (``metering.runtime.uncertain_resolver``): the grace period of
    ``UNCERTAIN_GRACE_S`` and, where ``OGC_RS_DATABASE_URL`` is set (``serve``, the CLI near OGC RS), OGC RS's
    database. A caller that does not choose still never re-sends an uncertain request blindly."""
    if resolver is not None:
        return resolver
    from metering.runtime import uncertain_resolver  # runtime builds clients and ledgers: imported when needed

    return uncertain_resolver()


def claim_resolving(ledger: DeliveryLedger, keys: Collection[str], resolver: UncertainResolver) -> Claim:
    """Claim ``keys``; resolve those an earlier try left uncertain and claim the ones that resolving freed.

    Keys still unresolved stay in ``claim.uncertain`` (with ``claim.retry_after_s``): the caller sends the rest and
    raises UncertainPendingError, so the input is tried again then.
    """
    claim = ledger.claim(keys)
    if not claim.uncertain:
        return claim
    resolution = resolver.resolve(ledger, claim.uncertain)
    again = ledger.claim(resolution.freed) if resolution.freed else Claim()
    retry_after = resolution.retry_after_s if resolution.pending else 0.0
    if again.uncertain:  # made uncertain again by another sender in between: ask again soon
        retry_after = max(retry_after, resolver.ask_again_s)
    return Claim(
        claimed=claim.claimed | again.claimed,
        delivered=claim.delivered | again.delivered,
        in_flight=claim.in_flight | again.in_flight,
        uncertain=resolution.pending | again.uncertain,
        retry_after_s=retry_after,
    )


def raise_if_waiting(claim: Claim, what: str, delivered: DeliveryReport | None = None) -> None:
    """After the rest was delivered: InFlightError for keys another sender holds, UncertainPendingError for keys
    still uncertain (the input is retried; nothing of theirs was sent). The lines ``delivered`` saw refused are
    logged first: the caller never gets that report, and the retry won't send them again."""
    if (claim.in_flight or claim.uncertain) and delivered is not None:
        log_unreported_rejections(delivered)
    if claim.in_flight:
        raise InFlightError(f"{len(claim.in_flight)} {what} are being delivered by another invocation")
    if claim.uncertain:
        raise UncertainPendingError(
            f"{len(claim.uncertain)} {what} wait for an uncertain request to be resolved",
            retry_after_s=claim.retry_after_s,
        )


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


class _ChunkProgress:
    """The lines still to send for the claimed chunks, and which of them OGC RS has answered for so far.

    A chunk's key (and its event keys) is settled as soon as OGC RS has answered for all of its lines; a chunk
    answered only in part records the answered lines behind its progress key, so a retry sends only the rest.
    """

    def __init__(self, ledger: DeliveryLedger, chunks: Sequence[KeyedChunk], done_parts: set[tuple[str, int]]) -> None:
        self._ledger = ledger
        self._chunks = chunks
        self.lines: list[str] = []
        # For each line to send: (position of its chunk in ``chunks``, position of the line in the chunk).
        self._owner: list[tuple[int, int]] = []
        for index, chunk in enumerate(chunks):
            for part, line in enumerate(chunk.lines):
                if (chunk.key, part) not in done_parts:
                    self.lines.append(line)
                    self._owner.append((index, part))
        self._unanswered = [0] * len(chunks)
        for index, _ in self._owner:
            self._unanswered[index] += 1
        self._settled: set[str] = set()
        # (chunk, line) OGC RS has answered for, in this attempt or an earlier one.
        self._answered: set[tuple[int, int]] = {
            (index, part) for index, chunk in enumerate(chunks) for part in range(len(chunk.lines))
        } - set(self._owner)

    def settle_complete(self) -> None:
        """Settle the chunks whose every line an earlier attempt delivered part by part."""
        complete = [index for index, count in enumerate(self._unanswered) if count == 0]
        if complete:
            self._settle(complete)

    def record(self, positions: Sequence[int]) -> None:
        """The client's ``on_settled``: OGC RS answered for the lines at ``positions`` of ``lines``."""
        answered: dict[int, list[int]] = {}
        for position in positions:
            index, part = self._owner[position]
            self._unanswered[index] -= 1
            answered.setdefault(index, []).append(part)
            self._answered.add((index, part))
        # A chunk answered in part records its answered lines, and their events: a retry whose chunks are cut
        # differently (some events settled meanwhile) must still know these requests as delivered.
        partial = [
            key
            for index, parts in answered.items()
            if self._unanswered[index] > 0
            for key in [*self._progress_keys(self._chunks[index].key, parts), *self._event_keys(index, parts)]
        ]
        if partial:
            self._ledger.settle(partial)
        complete = [index for index in answered if self._unanswered[index] == 0]
        if complete:
            self._settle(complete)

    def release_unsettled(self) -> None:
        """Give back the claims of the chunks not settled, so the next try can claim them."""
        self._ledger.release([chunk.key for chunk in self._chunks if chunk.key not in self._settled])

    def mark_uncertain(self, error: UncertainDeliveryError) -> UncertainRequest:
        """Record the request that may have landed: its chunks (and their events) wait as UNCERTAIN with the exact
        lines sent; if it landed, the lines' own keys (a one-line chunk's key, else the chunk's part keys) and their
        events are settled. The other unsettled chunks are released."""
        affected: dict[int, list[int]] = {}
        stored_keys: list[str] = []
        for position in error.positions:
            index, part = self._owner[position]
            affected.setdefault(index, []).append(part)
            chunk = self._chunks[index]
            if len(chunk.lines) == 1:
                stored_keys.append(chunk.key)
            else:
                stored_keys.extend(self._progress_keys(chunk.key, [part]))
            if len(chunk.event_keys) == len(chunk.lines) and chunk.event_keys[part]:
                stored_keys.append(chunk.event_keys[part])
        keys = [self._chunks[index].key for index in affected]
        # The events of lines already answered are settled: only the others wait on this request.
        keys += [
            key
            for index in affected
            for part, key in enumerate(self._chunks[index].event_keys)
            if key and (index, part) not in self._answered
        ]
        request = UncertainRequest.new(error.logs, keys, stored_keys, sent_at=error.sent_at)
        self._ledger.mark_uncertain(request)
        self._settled.update(self._chunks[index].key for index in affected)  # not to be released below
        self.release_unsettled()
        return request

    def _settle(self, indexes: Sequence[int]) -> None:
        """Record whole chunks as delivered, with the event keys they carry."""
        keys = [self._chunks[index].key for index in indexes]
        event_keys = [key for index in indexes for key in self._chunks[index].event_keys if key]
        self._ledger.settle([*keys, *event_keys])
        self._settled.update(keys)

    def _event_keys(self, index: int, parts: Sequence[int]) -> list[str]:
        """The event keys of some lines of a chunk (none when the chunk carries no event per line)."""
        events = self._chunks[index].event_keys
        if len(events) != len(self._chunks[index].lines):
            return []
        return [events[part] for part in parts if events[part]]

    @staticmethod
    def _progress_keys(chunk_key: str, parts: Sequence[int]) -> list[str]:
        """The progress marker of a chunk answered in part, and one key per answered line."""
        return [_progress_key(chunk_key), *(_part_key(chunk_key, part) for part in parts)]


def _deliver_groups(
    client: LineSender, ledger: DeliveryLedger, groups: Sequence[KeyedChunk], resolver: UncertainResolver
) -> OnceReport:
    """Claim the keys, send the lines of the claimed ones, settle each key once all its lines are answered.

    A group answered only in part (split around a refused line) records the answered parts, so a retry sends
    only the rest. Raises DeliveryError (the input must be retried) after releasing the keys that were not
    settled; UncertainDeliveryError after recording the request that may have landed (its keys wait, uncertain);
    InFlightError or UncertainPendingError after delivering the rest when other keys are held by another sender
    or wait for an uncertain request.
    """
    claim = claim_resolving(ledger, [group.key for group in groups], resolver)
    to_send = [group for group in groups if group.key in claim.claimed]
    done_parts = _parts_delivered(ledger, to_send)
    progress = _ChunkProgress(ledger, to_send, done_parts)
    progress.settle_complete()
    try:
        delivery = client.deliver(progress.lines, on_settled=progress.record)
    except UncertainDeliveryError as error:
        resolver.record_uncertain(progress.mark_uncertain(error))
        error.retry_after_s = resolver.first_check_after_s()
        raise
    except BaseException:
        progress.release_unsettled()
        raise
    already = sum(len(group.lines) for group in groups if group.key in claim.delivered) + len(done_parts)
    raise_if_waiting(claim, "keys", delivery)
    return OnceReport(delivery, already_delivered=already)
