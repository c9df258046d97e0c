"""Deliver keyed lines so that each key reaches OGC RS once, whatever is retried or re-sent upstream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from metering.errors import DeliveryError
from metering.ledger import DeliveryLedger
from metering.ogc_rs import DeliveryReport, SettledCallback


@dataclass(frozen=True, slots=True)
class KeyedLine:
    """A metering line and the key that identifies its source event (or chunk of events)."""

    key: str
    line: str


@dataclass(slots=True)
class OnceReport:
    """What ``deliver_once`` did: the delivery report plus the lines it did not send again."""

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
    """Send each key's line unless the ledger shows it delivered; record progress as OGC RS confirms it.

    Raises DeliveryError (the input must be retried) after releasing the keys that were not confirmed;
    raises InFlightError after delivering the rest when another sender holds some of the keys.
    """
    unique: dict[str, str] = {}
    for item in items:
        unique.setdefault(item.key, item.line)
    claim = ledger.claim(list(unique))
    to_send = [KeyedLine(key, unique[key]) for key in unique if key in claim.claimed]
    settled: set[str] = set()

    def record(positions: Sequence[int]) -> None:
        keys = [to_send[position].key for position in positions]
        ledger.settle(keys)
        settled.update(keys)

    try:
        delivery = client.deliver([item.line for item in to_send], on_settled=record)
    except BaseException:
        ledger.release([item.key for item in to_send if item.key not in settled])
        raise
    report = OnceReport(delivery, len(claim.delivered), len(items) - len(unique))
    if claim.in_flight:
        raise InFlightError(f"{len(claim.in_flight)} entries are being delivered by another invocation")
    return report
