"""Whether the spool accepts another body: its depth and its oldest line's age against the configured bounds.

Counting a large table on every request would cost more than the request, so one thread measures the spool every
second (the whole fleet's spool, for PostgreSQL) and this process adds what it spooled since. A full spool answers
503: MinIO keeps the body and re-sends it, and nothing is dropped here.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from ogc_audit.serve.metrics import SpoolState
from ogc_audit.serve.settings import SpoolLimits
from ogc_audit.serve.spool import Spool, SpoolStats

logger = logging.getLogger(__name__)

MEASURE_EVERY_S = 1.0
# A full spool is said in the log at most this often (MinIO re-sends every body every few seconds).
_REFUSAL_LOG_EVERY_S = 10.0


class Admission:
    """The spool's state as last measured, plus local appends; the accept/refuse decision."""

    def __init__(self, spool: Spool, limits: SpoolLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._spool = spool
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._state = SpoolState(SpoolStats(0, 0.0), accepting=True, reason="", measured=False)
        self._added_since = 0
        self._measured_at = clock()
        self._refused_since_log = 0
        self._logged_at = float("-inf")
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._measure_loop, name="spool-measure", daemon=True)

    def start(self) -> None:
        """Measure once now (start-up fails loudly if the store is unreadable), then every second."""
        self.measure()
        self._thread.start()

    def stop(self) -> None:
        """Stop measuring."""
        self._stopped.set()

    def measure(self) -> SpoolState:
        """Read the spool's depth and age now and decide whether it accepts."""
        stats = self._spool.stats()
        with self._lock:
            self._added_since = 0
            self._measured_at = self._clock()
            self._state = self._judge(stats)
            return self._state

    def _measure_loop(self) -> None:
        while not self._stopped.wait(MEASURE_EVERY_S):
            try:
                self.measure()
            except Exception as error:  # keep the last decision; the store's own errors answer 503 on append
                logger.warning("could not measure the spool: %s", error)

    def _judge(self, stats: SpoolStats) -> SpoolState:
        if stats.depth >= self._limits.max_lines:
            return SpoolState(stats, False, f"spool full: {stats.depth} lines (limit {self._limits.max_lines})")
        if stats.oldest_age_s > self._limits.max_age_s:
            return SpoolState(
                stats,
                False,
                f"spool too old: its oldest line waits {stats.oldest_age_s:.0f} s "
                f"(limit {self._limits.max_age_s:.0f} s)",
            )
        return SpoolState(stats, True, "")

    def added(self, lines: int) -> None:
        """This process spooled ``lines``: counted against the bound until the next measurement."""
        with self._lock:
            self._added_since += lines
            if self._state.accepting:
                measured = self._state.stats
                judged = self._judge(SpoolStats(measured.depth + self._added_since, measured.oldest_age_s))
                self._state = dataclasses.replace(judged, stats=measured)

    @property
    def state(self) -> SpoolState:
        """The last decision, with the depth including this process's appends since it was measured."""
        with self._lock:
            stats = self._state.stats
            age = stats.oldest_age_s + (self._clock() - self._measured_at if stats.depth else 0.0)
            return SpoolState(
                SpoolStats(stats.depth + self._added_since, age),
                self._state.accepting,
                self._state.reason,
                self._state.measured,
            )

    def refusal(self) -> str | None:
        """Why a body must be refused now (logged at most every ten seconds with the count); None to accept."""
        with self._lock:
            if self._state.accepting:
                return None
            reason = self._state.reason
            self._refused_since_log += 1
            now = self._clock()
            if now - self._logged_at < _REFUSAL_LOG_EVERY_S:
                return reason
            refused, self._refused_since_log, self._logged_at = self._refused_since_log, 0, now
        logger.error(
            "%s; answering 503 (MinIO keeps the bodies): %d bodies refused since the last report", reason, refused
        )
        return reason
