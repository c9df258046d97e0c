"""The delivery loop: drains the spool into OGC RS through metering's exactly-once rules.

Each round claims a batch of spooled lines (a lease), hands them to ``deliver_once`` with their ledger keys, then
removes from the spool every line the ledger now records as delivered (stored now, stored before by any instance,
or refused for good) and defers the others with a growing back-off. The ledger alone decides what is sent, so a line
spooled twice (a body MinIO re-sent to another instance), a lease taken over from a dead instance, or a round cut
short is never sent again on a hunch; what the client could not confirm stays in the ledger's hands until resolved.
No time limit binds a round: OGC RS may take as long as the client's timeouts allow, MinIO has its answer already.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence

from metering.errors import DeliveryError
from metering.exactly_once import KeyedLine, LineSender, OnceReport, deliver_once
from metering.ledger import DeliveryLedger
from metering.metrics import delivery_failure_kind
from metering.outcomes import Reason
from ogc_audit.serve.metrics import ServeMetrics
from ogc_audit.serve.settings import DeliverySettings
from ogc_audit.serve.spool import Spool, SpooledLine

logger = logging.getLogger(__name__)

_EXCERPT_CHARS = 200


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

    def __init__(
        self,
        spool: Spool,
        ledger: DeliveryLedger,
        client: LineSender,
        settings: DeliverySettings,
        metrics: ServeMetrics,
        *,
        owner: str | None = None,
        sleep: Callable[[threading.Event, float], bool] | None = None,
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

    def deliver_round(self, batch: Sequence[SpooledLine], retry_in_s: float) -> bool:
        """Deliver one claimed batch; True when every line of it is settled (nothing left to retry)."""
        round_id = self._next_round()
        self._leases.hold(round_id, [line.id for line in batch])
        failure: BaseException | None = None
        try:
            report = deliver_once(self._client, self._ledger, [KeyedLine(line.key, line.line) for line in batch])
            self._record(report)
        except DeliveryError as error:
            failure = error
        except Exception as error:  # a ledger or programming fault: logged, the lines stay spooled
            failure = error
            logger.exception("delivery round failed")
        finally:
            self._leases.drop(round_id)
        return self._settle_spool(batch, failure, retry_in_s)

    def _settle_spool(self, batch: Sequence[SpooledLine], failure: BaseException | None, retry_in_s: float) -> bool:
        """Remove what the ledger records as delivered; defer the rest. True when nothing is left."""
        if failure is None:
            done = [line.id for line in batch]
            rest: list[int] = []
        else:
            kind = delivery_failure_kind(failure)
            self._metrics.delivery_failure(kind)
            delivered = self._delivered_keys(batch)
            done = [line.id for line in batch if line.key in delivered]
            rest = [line.id for line in batch if line.key not in delivered]
            log = logger.info if kind == "in_flight" else logger.error
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
        return not rest

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
