"""The delivery loop: drains the spool into OGC RS through metering's exactly-once rules.

Each round claims a batch of spooled lines (a lease), hands them to ``deliver_once`` with their ledger keys, then
removes from the spool every line the ledger now records as delivered (stored now, stored before by any instance,
or refused for good) and defers the others with a growing back-off. The ledger alone decides what is sent, so a line
spooled twice (a body MinIO re-sent to another instance), a lease taken over from a dead instance, or a round cut
short is never sent again on a hunch; what the client could not confirm stays in the ledger's hands until resolved.
No time limit binds a round: OGC RS may take as long as the client's timeouts allow, MinIO has its answer already.

A round cut short (its instance killed while its request was on the way, or stalled past its lease) leaves its keys
claimed in the ledger. Whoever takes its lines over first hands them to the ledger as one *uncertain* request, with
the lines that round was sending in the order it sent them (``SpoolRound``); ``deliver_once`` then resolves it
through OGC RS's database (``OGC_RS_DATABASE_URL``) or the grace period, like any request whose answer was lost.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from metering.errors import DeliveryError, UncertainDeliveryError, UncertainPendingError
from metering.exactly_once import KeyedLine, LineSender, OnceReport, deliver_once
from metering.ledger import DeliveryLedger, UncertainRequest
from metering.metrics import delivery_failure_kind
from metering.outcomes import Reason
from metering.uncertain import UncertainResolver
from ogc_audit.serve.metrics import ServeMetrics
from ogc_audit.serve.settings import DeliverySettings
from ogc_audit.serve.spool import Spool, SpooledLine

logger = logging.getLogger(__name__)

_EXCERPT_CHARS = 200
# Lines waiting for an uncertain request are looked at again at least this often.
RESOLVE_AGAIN_S = 10.0


def instance_name() -> str:
    """This process's name in spool leases: host, pid and a random suffix (a restarted pid is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Leases:
    """The lines this instance is sending, renewed by one thread so a slow OGC RS never lets a lease run out."""

    def __init__(self, spool: Spool, owner: str, lease_s: float, stopped: threading.Event) -> None:
        self._spool = spool
        self._owner = owner
        self._lease_s = lease_s
        self._stopped = stopped
        self._held: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._renew, name="spool-leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hold(self, round_id: int, ids: list[int]) -> None:
        with self._lock:
            self._held[round_id] = ids

    def drop(self, round_id: int) -> None:
        with self._lock:
            self._held.pop(round_id, None)

    def _renew(self) -> None:
        while not self._stopped.wait(self._lease_s / 3):
            with self._lock:
                ids = [line_id for held in self._held.values() for line_id in held]
            if not ids:
                continue
            try:
                self._spool.renew(self._owner, ids, self._lease_s)
            except Exception as error:  # the lease may lapse: the ledger still keeps the lines from going twice
                logger.warning("could not renew the lease of %d spooled lines: %s", len(ids), error)


class DeliveryLoop:
    """Deliverer threads draining one spool (shared with other instances or not) into OGC RS."""

    def __init__(  # noqa: PLR0917 - the parts, built by the relay or by a test
        self,
        spool: Spool,
        ledger: DeliveryLedger,
        client: LineSender,
        settings: DeliverySettings,
        metrics: ServeMetrics,
        resolvers: Callable[[], UncertainResolver] = UncertainResolver,
        *,
        owner: str | None = None,
    ) -> None:
        self._spool = spool
        self._ledger = ledger
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self.owner = owner or instance_name()
        self._stopped = threading.Event()
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._leases = _Leases(spool, self.owner, settings.lease_s, self._stopped)
        self._threads: list[threading.Thread] = []
        self._round_ids = iter(range(1, 2**62))
        self._round_lock = threading.Lock()
        # One resolver per deliverer thread: a resolver's database connection serves one thread at a time.
        self._new_resolver = resolvers
        self._local = threading.local()

    def start(self) -> None:
        """Start the deliverer threads and the lease keeper."""
        self._leases.start()
        for number in range(self._settings.workers):
            thread = threading.Thread(target=self._run, name=f"deliverer-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """New lines were spooled here: an idle deliverer looks at once instead of at its next poll."""
        with self._wake:
            self._pending_wakes += 1
            self._wake.notify()

    def stop(self, timeout: float) -> None:
        """Stop claiming; wait up to ``timeout`` seconds for the rounds in progress (a POST is never cut short on
        purpose: a round still running at exit leaves its lines leased and its keys in the ledger's care)."""
        self._stopped.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _next_round(self) -> int:
        with self._round_lock:
            return next(self._round_ids)

    def _idle(self, seconds: float) -> None:
        with self._wake:
            if self._pending_wakes == 0 and not self._stopped.is_set():
                self._wake.wait(seconds)
            self._pending_wakes = 0

    def _run(self) -> None:
        backoff = 0.0
        while not self._stopped.is_set():
            try:
                backoff = self._one_round(backoff)
            except Exception:  # a fault of this code or a store: logged, never the end of the deliverer
                logger.exception("deliverer fault; retrying")
                backoff = self._settings.backoff_max_s
            if backoff:
                self._stopped.wait(backoff)

    def _one_round(self, backoff: float) -> float:
        """Claim and deliver one batch; the back-off to wait before the next (0 after a success or when idle)."""
        round_id = f"{self.owner}:{self._next_round()}"
        try:
            batch = self._spool.claim(self.owner, self._settings.batch_lines, self._settings.lease_s, round_id)
        except Exception as error:
            logger.error("could not read the spool: %s", error)
            return self._settings.backoff_initial_s
        if not batch:
            self._idle(self._settings.idle_poll_s)
            return 0.0
        if self.deliver_round(batch, backoff or self._settings.backoff_initial_s):
            return 0.0
        return min(self._settings.backoff_max_s, max(self._settings.backoff_initial_s, backoff * 2))

    @property
    def _resolver(self) -> UncertainResolver:
        resolver: UncertainResolver | None = getattr(self._local, "resolver", None)
        if resolver is None:
            resolver = self._local.resolver = self._new_resolver()
        return resolver

    def deliver_round(self, batch: Sequence[SpooledLine], retry_in_s: float) -> bool:
        """Deliver one claimed batch; False when OGC RS failed it (the deliverer backs off), True otherwise (its
        lines delivered, or deferred until the ledger can resolve them)."""
        round_id = self._next_round()
        self._leases.hold(round_id, [line.id for line in batch])
        resolver = self._resolver
        failure: BaseException | None = None
        try:
            self._recover_lapsed_rounds(batch, resolver)
            report = deliver_once(
                self._client, self._ledger, [KeyedLine(line.key, line.line) for line in batch], resolver
            )
            self._record(report)
        except DeliveryError as error:
            failure = error
        except Exception as error:  # a ledger or programming fault: logged, the lines stay spooled
            failure = error
            logger.exception("delivery round failed")
        finally:
            self._leases.drop(round_id)
            self._metrics.resolved(resolver.tally.take())
        return self._settle_spool(batch, failure, retry_in_s)

    def _recover_lapsed_rounds(self, batch: Sequence[SpooledLine], resolver: UncertainResolver) -> None:
        """Hand the lines of rounds that never finished to the ledger as uncertain requests, before anything of them
        is sent again: such a round may have posted them (its instance died waiting for the answer)."""
        lapsed: dict[str, list[SpooledLine]] = {}
        for line in batch:
            if line.lapsed_round is not None:
                lapsed.setdefault(line.lapsed_round, []).append(line)
        for round_id, taken in lapsed.items():
            rest = self._spool.round_lines(round_id)  # lines of that round this claim did not take
            lines = sorted([*taken, *(rest.lines if rest else [])], key=lambda line: line.id)
            claim = self._ledger.claim([line.key for line in lines])
            # Claimed now: an expired claim of that round (or never claimed). Still claimed: the round's own claim.
            maybe_sent = claim.claimed | claim.in_flight
            if not maybe_sent:
                continue
            logs = [line.line for line in lines if line.key in maybe_sent]
            started = taken[0].lapsed_started_at or time.time()
            request = UncertainRequest.new(logs, maybe_sent, maybe_sent, sent_at=started)
            self._ledger.mark_uncertain(request)
            resolver.record_uncertain(request)
            logger.warning(
                "took over %d lines of round %s, whose lease ran out unfinished: resolved before any is sent again",
                len(logs),
                round_id,
            )

    def _settle_spool(self, batch: Sequence[SpooledLine], failure: BaseException | None, retry_in_s: float) -> bool:
        """Remove what the ledger records as delivered; defer the rest (until the ledger can resolve them, when it
        says when). False when OGC RS itself failed the round."""
        if failure is None:
            done = [line.id for line in batch]
            rest: list[int] = []
        else:
            kind = delivery_failure_kind(failure)
            self._metrics.delivery_failure(kind)
            if isinstance(failure, UncertainDeliveryError | UncertainPendingError) and failure.retry_after_s:
                # When the ledger can resolve them, but no later than RESOLVE_AGAIN_S: a request OGC RS's database
                # shows stored is settled at any age, so asking again soon delivers the rest of the spool sooner.
                retry_in_s = min(failure.retry_after_s, RESOLVE_AGAIN_S)
            delivered = self._delivered_keys(batch)
            done = [line.id for line in batch if line.key in delivered]
            rest = [line.id for line in batch if line.key not in delivered]
            log = logger.info if kind in ("in_flight", "uncertain") else logger.error
            log(
                "delivery of %d spooled lines failed (%s), %d settled, retry in %.0f s: %s",
                len(batch),
                kind,
                len(done),
                retry_in_s,
                failure,
            )
        try:
            if done:
                self._spool.remove(done)
            if rest:
                self._spool.defer(rest, retry_in_s)
        except Exception as error:  # the leases run out and the lines come back; the ledger keeps them single
            logger.error("could not update the spool after a round: %s", error)
        return failure is None or delivery_failure_kind(failure) in ("in_flight", "uncertain") or not rest

    def _delivered_keys(self, batch: Sequence[SpooledLine]) -> set[str]:
        try:
            return self._ledger.delivered([line.key for line in batch])
        except Exception as error:
            logger.error("could not read the ledger after a failed round: %s", error)
            return set()

    def _record(self, report: OnceReport) -> None:
        self._metrics.delivered(report)
        for rejected in report.delivery.rejected:
            logger.error(
                "quarantined %s: %s: %s", Reason.REJECTED_BY_OGC_RS, rejected.message, rejected.line[:_EXCERPT_CHARS]
            )
