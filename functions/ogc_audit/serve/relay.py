"""A running relay: the webhook whose sink is the spool, the spool's admission, and the loop that drains it.

Built once per process from the settings; ``start`` opens nothing new (the stores are opened when it is built, so a
wrong database URL stops ``serve`` before it listens) and starts the threads, ``stop`` drains them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from metering.exactly_once import KeyedLine, LineSender
from metering.ledger import DeliveryLedger, SqliteLedger
from metering.line import MeteredDownload
from metering.ogc_rs import CONNECT_TIMEOUT_S
from metering.runtime import build_ogc_rs_client, build_uncertain_resolver
from metering.settings import OgcRsSettings, SettingsError
from metering.uncertain import UncertainResolver
from minio_relay.audit_entry import entry_ledger_key
from minio_relay.webhook import DownstreamUnavailable, Webhook, WebhookSettings
from ogc_audit.serve.admission import Admission
from ogc_audit.serve.delivery import DeliveryLoop
from ogc_audit.serve.metrics import ServeMetrics
from ogc_audit.serve.settings import DeliverySettings, SpoolLimits, StoreLocation
from ogc_audit.serve.spool import GroupCommit, PostgresSpool, Spool, SpoolUnavailable, SqliteSpool

logger = logging.getLogger(__name__)

# Rounds in progress at SIGTERM get this long to finish; what is still in flight then stays leased, and the ledger
# keeps its keys from being sent blindly again.
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Everything a relay is built from."""

    webhook: WebhookSettings
    ogc_rs: OgcRsSettings
    store: StoreLocation
    limits: SpoolLimits
    delivery: DeliverySettings


def open_stores(store: StoreLocation) -> tuple[Spool, DeliveryLedger]:
    """The spool and the ledger at ``store``: one SQLite file (0600) for both, or one PostgreSQL database.

    Raises SettingsError (one sentence) when the store cannot be opened.
    """
    if store.kind == "sqlite":
        try:
            spool: Spool = SqliteSpool(store.target)
            return spool, SqliteLedger(store.target)
        except OSError as error:
            raise SettingsError(f"cannot open the spool file {store.redacted()}: {error.strerror or error}") from error
    import psycopg

    try:
        spool = PostgresSpool(store.target)
    except psycopg.Error as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SettingsError(f"cannot use the database {store.redacted()}: {message}") from error
    from metering.ledger.postgres import PostgresLedger

    try:
        return spool, PostgresLedger(store.target)
    except psycopg.Error as error:
        spool.close()
        raise SettingsError(f"cannot use the database {store.redacted()} for the ledger: {error}") from error


def check_resolver(env: dict[str, str]) -> None:
    """Build the resolver of uncertain requests once, so a wrong UNCERTAIN_GRACE_S or OGC_RS_DATABASE_URL stops
    serve at start-up (SettingsError, one sentence) rather than its first uncertain request."""
    try:
        build_uncertain_resolver(env)
    except SettingsError:
        raise
    except Exception as error:
        raise SettingsError(f"cannot use OGC_RS_DATABASE_URL: {type(error).__name__}: {error}") from error


class Relay:
    """The parts of one ``serve`` process."""

    def __init__(  # noqa: PLR0917 - the parts, built by ``build`` or by a test
        self,
        webhook_settings: WebhookSettings,
        spool: Spool,
        ledger: DeliveryLedger,
        client: LineSender,
        limits: SpoolLimits,
        delivery: DeliverySettings,
        resolvers: Callable[[], UncertainResolver] = UncertainResolver,
    ) -> None:
        self.metrics = ServeMetrics()
        self.spool = spool
        self.admission = Admission(spool, limits)
        self._commits = GroupCommit(spool)
        self.delivery = DeliveryLoop(spool, ledger, client, delivery, self.metrics, resolvers)
        self.webhook = Webhook(
            token=webhook_settings.token_source(), sink=self.spool_lines, max_body_bytes=webhook_settings.max_body_bytes
        )

    @classmethod
    def build(cls, settings: RelaySettings) -> Relay:
        """Open the stores (creating or migrating their schema) and build the OGC RS client."""
        resolver_env = dict(os.environ)
        check_resolver(resolver_env)
        spool, ledger = open_stores(settings.store)
        client = build_ogc_rs_client(settings.ogc_rs, timeout=(CONNECT_TIMEOUT_S, settings.delivery.read_timeout_s))

        def resolvers() -> UncertainResolver:
            return build_uncertain_resolver(resolver_env)

        return cls(settings.webhook, spool, ledger, client, settings.limits, settings.delivery, resolvers)

    def start(self) -> None:
        """Measure the spool and start delivering what it holds (lines a previous run left included)."""
        self.admission.start()
        self.delivery.start()
        self.delivery.wake()

    def stop(self) -> None:
        """Stop delivering (rounds in progress may finish), commit what is queued, close the stores."""
        self.admission.stop()
        self.delivery.stop(STOP_TIMEOUT_S)
        self._commits.close()
        self.spool.close()

    def close(self) -> None:
        """Close the stores of a relay that was never started (the parent of worker processes)."""
        self._commits.close()
        self.spool.close()

    def spool_lines(self, downloads: Sequence[MeteredDownload]) -> None:
        """The webhook's sink: the lines durably in the spool, or DownstreamUnavailable (503, MinIO re-sends)."""
        refusal = self.admission.refusal()
        if refusal is not None:
            self.metrics.spool_refusal()
            raise DownstreamUnavailable(refusal)
        lines = [KeyedLine(entry_ledger_key(download.event_id), download.to_line()) for download in downloads]
        try:
            self._commits.append(lines)
        except SpoolUnavailable as error:
            self.metrics.spool_refusal()
            raise DownstreamUnavailable(str(error)) from error
        self.metrics.spooled(len(lines))
        self.admission.added(len(lines))
        self.delivery.wake()
