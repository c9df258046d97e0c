"""``serve``'s counters and gauges, rendered as Prometheus text on ``GET /metrics``.

Names follow the project's metric vocabulary (``metering.metric_names``) in Prometheus form: ``Metered`` becomes
``ogc_audit_metered_total``. Counters count since this process started; the spool gauges are read from the store,
so every instance of a fleet reports the fleet's spool.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from metering.exactly_once import OnceReport
from metering.metric_names import DELIVERY_FAILURE_KINDS
from metering.outcomes import OutcomeTally
from metering.uncertain import UncertainTally
from ogc_audit.serve.spool import SpoolStats


@dataclass(frozen=True, slots=True)
class SpoolState:
    """The spool as last measured, and whether it accepts bodies."""

    stats: SpoolStats
    accepting: bool
    reason: str
    """Why it does not accept ('' when it does)."""
    measured: bool = True
    """False until the first measurement (or when the store could not be read)."""


class ServeMetrics:
    """Thread-safe counters of one ``serve`` process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._bodies: Counter[int] = Counter()

    def body(self, status: int, tally: OutcomeTally | None) -> None:
        """One webhook answer, and the outcomes of its entries when it was accepted."""
        with self._lock:
            self._bodies[status] += 1
            if tally is not None:
                self._counts["entries_seen"] += tally.entries
                self._counts["metered"] += tally.metered
                self._counts["filtered"] += tally.filtered.total()
                self._counts["quarantined"] += tally.quarantined.total()

    def spooled(self, lines: int) -> None:
        """Lines committed to the spool."""
        with self._lock:
            self._counts["lines_spooled"] += lines

    def spool_refusal(self) -> None:
        """A body answered 503 because the spool was full or unavailable."""
        with self._lock:
            self._counts["spool_refusals"] += 1

    def delivered(self, report: OnceReport) -> None:
        """One delivery round that completed."""
        with self._lock:
            self._counts["lines_delivered"] += report.delivery.delivered
            self._counts["lines_rejected"] += len(report.delivery.rejected)
            self._counts["lines_already_delivered"] += report.already_delivered
            self._counts["delivery_requests"] += report.delivery.requests

    def resolved(self, tally: UncertainTally) -> None:
        """What resolving uncertain requests did in one round."""
        with self._lock:
            self._counts["lines_uncertain"] += tally.uncertain
            self._counts["lines_found_stored"] += tally.found_stored
            self._counts["lines_found_not_stored"] += tally.found_not_stored
            self._counts["lines_possibly_duplicated"] += tally.possible_duplicates

    def delivery_failure(self, kind: str) -> None:
        """One delivery round that left lines in the spool, by failure kind."""
        with self._lock:
            self._failures[kind] += 1

    def render(self, spool: SpoolState, auth_failures: int) -> str:
        """The Prometheus text exposition of every metric."""
        with self._lock:
            counts = dict(self._counts)
            failures = dict(self._failures)
            bodies = dict(self._bodies)
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP ogc_audit_{name} {help_text}")
            out.append(f"# TYPE ogc_audit_{name} {kind}")
            out.extend(f"ogc_audit_{name}{labels} {value:g}" for labels, value in samples)

        metric("spool_depth", "gauge", "Lines spooled and not yet delivered.", [("", spool.stats.depth)])
        metric(
            "spool_oldest_age_seconds",
            "gauge",
            "Age of the oldest spooled line (0 when empty).",
            [("", round(spool.stats.oldest_age_s, 3))],
        )
        metric("spool_accepting", "gauge", "1 when the spool accepts bodies, 0 when full.", [("", spool.accepting)])
        metric(
            "spool_refusals_total",
            "counter",
            "Bodies answered 503 because the spool was full or unavailable.",
            [("", counts.get("spool_refusals", 0))],
        )
        metric(
            "webhook_bodies_total",
            "counter",
            "Webhook answers by HTTP status.",
            [(f'{{status="{status}"}}', count) for status, count in sorted(bodies.items())],
        )
        for name, help_text in (
            ("entries_seen", "Audit entries received in accepted bodies."),
            ("metered", "Entries metered (a line each)."),
            ("filtered", "Entries filtered out (not a metered download, or a repeat)."),
            ("quarantined", "Entries quarantined as malformed."),
            ("lines_spooled", "Lines committed to the spool."),
            ("lines_delivered", "Lines OGC RS stored."),
            ("lines_rejected", "Lines OGC RS refused for good (quarantined, logged)."),
            ("lines_already_delivered", "Spooled lines not sent because the ledger had them delivered."),
            ("delivery_requests", "Requests sent to OGC RS."),
            ("lines_uncertain", "Lines of requests whose answer was lost (or whose round was cut short)."),
            ("lines_found_stored", "Uncertain lines OGC RS's database showed stored: settled, not sent again."),
            ("lines_found_not_stored", "Uncertain lines OGC RS's database showed not stored: sent once more."),
            ("lines_possibly_duplicated", "Uncertain lines sent again after the grace period: reconcile them."),
        ):
            metric(f"{name}_total", "counter", help_text, [("", counts.get(name, 0))])
        metric(
            "delivery_failures_total",
            "counter",
            "Delivery rounds that left lines spooled, by kind.",
            [(f'{{kind="{kind}"}}', failures.get(kind, 0)) for kind in DELIVERY_FAILURE_KINDS],
        )
        metric(
            "webhook_auth_failures_total", "counter", "Requests with a missing or wrong token.", [("", auth_failures)]
        )
        return "\n".join(out) + "\n"
