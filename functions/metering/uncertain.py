"""Resolving uncertain requests: did a POST whose answer was lost reach OGC RS's ``metering`` table?

A request is uncertain when OGC RS's answer never came (read timeout, connection lost after sending) or was a
500/502/504 (``metering.ogc_rs``). Its keys wait in the ledger as UNCERTAIN, with the exact ``logs`` array sent
(``metering.ledger.UncertainRequest``). The next try of the same input (SQS redelivery, a MinIO re-send, a replay)
meets them and resolves them here, never re-sending blindly:

- With read access to OGC RS's database (``OGC_RS_DATABASE_URL``): every execution first writes a ``jobs_table``
  row holding the whole ``logs`` input, so the database tells whether that exact request landed. STORED settles
  the keys without sending; NOT_STORED frees them to be sent once; PENDING (still running) asks again later.
- Without it: the request is left alone for a grace period longer than any synchronous run (``UNCERTAIN_GRACE_S``,
  default 15 min); then its keys are freed to be sent once, and its lines counted as *possible duplicates*
  (metric ``LinesPossiblyDuplicated``, a WARNING log naming the request, an alarm) for ``ogc-audit reconcile``.

One resolver at a time holds a request (the ledger's lease), so two tries never both send it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from metering import env_names
from metering.ledger import DeliveryLedger, UncertainRequest
from metering.ogc_rs_database import RequestLanding  # one definition (psycopg is imported only to open a URL)
from metering.settings import SettingsError

__all__ = [
    "DEFAULT_UNCERTAIN_GRACE_S",
    "LandingCheck",
    "Resolution",
    "UncertainResolver",
    "UncertainTally",
]

logger = logging.getLogger(__name__)

DEFAULT_UNCERTAIN_GRACE_S = 15 * 60.0
"""Longer than any synchronous run of the process (OGC RS fails a run past ~30 s) and any client read timeout."""
# A NOT_STORED answer is trusted only once the request is this old: a request still travelling (a proxy's buffer)
# could otherwise land after the check.
DEFAULT_NOT_STORED_AFTER_S = 60.0
# How soon to ask again when OGC RS is still running the request, or another resolver holds it.
DEFAULT_ASK_AGAIN_S = 60.0


class LandingCheck(Protocol):
    """Read-only access to OGC RS's database, as far as resolving needs it."""

    def landing(self, logs: Sequence[str]) -> RequestLanding:
        """Whether the request with exactly this ``logs`` array landed (``OgcRsDatabase.landing``)."""
        ...


@dataclass(slots=True)
class UncertainTally:
    """What resolving did, in lines, for metrics (read and reset by the handlers once per invocation)."""

    uncertain: int = 0
    """Lines of requests that became uncertain (answer lost, or 500/502/504)."""
    found_stored: int = 0
    """Lines found stored by OGC RS's database: settled without sending."""
    found_not_stored: int = 0
    """Lines found not stored by OGC RS's database: sent once more, no duplicate possible."""
    possible_duplicates: int = 0
    """Lines sent again after the grace period, without a database to ask: each may now be stored twice."""

    def take(self) -> UncertainTally:
        """The counts so far, and zero them."""
        taken = UncertainTally(self.uncertain, self.found_stored, self.found_not_stored, self.possible_duplicates)
        self.uncertain = self.found_stored = self.found_not_stored = self.possible_duplicates = 0
        return taken


@dataclass(slots=True)
class Resolution:
    """The outcome of resolving some uncertain keys."""

    freed: set[str] = field(default_factory=set)
    """Keys whose request was resolved: settled ones read as delivered, the others can be claimed and sent."""
    pending: set[str] = field(default_factory=set)
    """Keys still uncertain: the input must be tried again after ``retry_after_s``."""
    retry_after_s: float = 0.0


class UncertainResolver:
    """Resolves uncertain requests through OGC RS's database when given one, else by the grace period.

    ``database`` is anything with ``landing(logs)`` (``metering.ogc_rs_database.open_ogc_rs_database(url)``);
    ``serve`` and the CLI near OGC RS pass one, Lambda functions do not (they cannot reach OGC RS's VPC).
    """

    def __init__(
        self,
        database: LandingCheck | None = None,
        *,
        grace_s: float = DEFAULT_UNCERTAIN_GRACE_S,
        not_stored_after_s: float = DEFAULT_NOT_STORED_AFTER_S,
        ask_again_s: float = DEFAULT_ASK_AGAIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.grace_s = grace_s
        self.not_stored_after_s = not_stored_after_s
        self.ask_again_s = ask_again_s
        self.tally = UncertainTally()
        self._clock = clock

    @classmethod
    def from_env(cls, env: Mapping[str, str], database: LandingCheck | None = None) -> UncertainResolver:
        """The resolver configured by ``UNCERTAIN_GRACE_S`` (seconds, default 900), with ``database`` if given."""
        raw = env.get(env_names.UNCERTAIN_GRACE_S, "").strip()
        grace = DEFAULT_UNCERTAIN_GRACE_S
        if raw:
            try:
                grace = float(raw)
            except ValueError:
                grace = -1.0
            if not 0 <= grace <= 12 * 3600:
                raise SettingsError(
                    f"environment variable {env_names.UNCERTAIN_GRACE_S} must be seconds from 0 to 43200, got {raw!r}"
                )
        return cls(database, grace_s=grace)

    def first_check_after_s(self) -> float:
        """How long a new uncertain request should wait before its input is tried again."""
        return self.not_stored_after_s if self.database is not None else self.grace_s

    def record_uncertain(self, request: UncertainRequest) -> None:
        """Count and log a request that just became uncertain."""
        self.tally.uncertain += len(request.logs)
        logger.warning(
            "uncertain request %s: %d lines may or may not be stored (%d keys); resolved on the next try",
            request.request_id,
            len(request.logs),
            len(request.keys),
            extra={"uncertain_request": request.request_id, "lines": len(request.logs), "keys": len(request.keys)},
        )

    def resolve(self, ledger: DeliveryLedger, keys: Collection[str]) -> Resolution:
        """Resolve the requests that hold ``keys`` (UNCERTAIN keys of a claim); never sends anything itself."""
        resolution = Resolution()
        wanted = set(keys)
        for request in ledger.uncertain_requests(wanted):
            mine = wanted.intersection(request.keys)
            wait = self._resolve_one(ledger, request)
            if wait is None:
                resolution.freed |= mine
            else:
                resolution.pending |= mine
                resolution.retry_after_s = max(resolution.retry_after_s, wait)
        # A key resolved by someone else between the claim and this read: claimable again.
        resolution.freed |= wanted - resolution.pending - resolution.freed
        return resolution

    def _resolve_one(self, ledger: DeliveryLedger, request: UncertainRequest) -> float | None:
        """None when resolved (keys settled or freed); else the seconds to wait before asking again."""
        if not ledger.lease_uncertain(request.request_id):
            return self.ask_again_s  # another try is resolving it now
        age = self._clock() - request.sent_at
        landing = self._landing(request)
        wait = self._wait(landing, age)
        if wait is not None:
            ledger.unlease_uncertain(request.request_id)
            return wait
        ledger.resolve_uncertain(request, stored=landing == RequestLanding.STORED)
        lines = len(request.logs)
        if landing == RequestLanding.STORED:
            self.tally.found_stored += lines
            logger.info("uncertain request %s was stored: %d lines settled", request.request_id, lines)
        elif landing == RequestLanding.NOT_STORED:
            self.tally.found_not_stored += lines
            logger.info("uncertain request %s was not stored: its %d lines are sent again", request.request_id, lines)
        else:
            self.tally.possible_duplicates += lines
            logger.warning(
                "possible duplicates: uncertain request %s sent %.0f s ago is sent again after the grace period; "
                "its %d lines (%d keys) may now be stored twice: ogc-audit reconcile confirms",
                request.request_id,
                age,
                lines,
                len(request.keys),
                extra={
                    "possible_duplicates": lines,
                    "uncertain_request": request.request_id,
                    "keys": list(request.keys[:20]),
                    "sent_at": request.sent_at,
                },
            )
        return None

    def _wait(self, landing: RequestLanding | None, age: float) -> float | None:
        """None when the request can be resolved now; else how long to wait."""
        if landing == RequestLanding.STORED:
            return None
        if landing == RequestLanding.PENDING:
            return self.ask_again_s
        threshold = self.not_stored_after_s if landing == RequestLanding.NOT_STORED else self.grace_s
        return None if age >= threshold else max(1.0, threshold - age)

    def _landing(self, request: UncertainRequest) -> RequestLanding | None:
        """The database's answer, or None without a database (or when it cannot be asked now: the grace rule)."""
        if self.database is None:
            return None
        try:
            return self.database.landing(request.logs)
        except Exception as error:  # an unreachable database must not stop delivery: the grace period applies
            logger.warning(
                "OGC RS's database could not be asked about request %s (%s): the grace period applies",
                request.request_id,
                type(error).__name__,
            )
            return None
