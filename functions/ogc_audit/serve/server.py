"""``ogc-audit serve``: the MinIO audit webhook on a plain host, under uvicorn (one asyncio event loop).

A drop-in for the old FastAPI processor: same path ``/auditlogs/processor`` (POST or PUT), same port 8092, ``GET /``
answers ``{"status":"ok"}``. Configuration comes from the same environment variables as the Lambda functions
(WEBHOOK_TOKEN, PROCESS_API_URL, AUTH_URL, AUTH_ITEM_ID, CLIENT_ID/CLIENT_SECRET, ...) plus the flags of the command.

A connection costs a socket and a few kilobytes, never a thread, so idle and slow clients cannot starve MinIO: a
request's line and headers must arrive within HEAD_TIMEOUT_S of its first byte (or of the connection), an idle
keep-alive connection is closed after KEEPALIVE_S, a body must keep arriving (``ogc_audit.serve.app``).
SIGTERM and SIGINT stop gracefully: no new connection, requests in flight answered, delivery rounds given time to
finish, exit status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import resource
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from metering.ogc_rs import READ_TIMEOUT_S
from metering.settings import OgcRsSettings, SettingsError
from minio_relay.webhook import WebhookSettings
from ogc_audit.serve.app import WebhookApp
from ogc_audit.serve.relay import Relay, RelaySettings
from ogc_audit.serve.settings import (
    DEFAULT_DELIVERY_WORKERS,
    DEFAULT_LEASE_S,
    DEFAULT_SPOOL_MAX_AGE_S,
    DEFAULT_SPOOL_MAX_LINES,
    DeliverySettings,
    SpoolLimits,
    StoreLocation,
    is_loopback,
)

logger = logging.getLogger(__name__)

# The request line and headers (MinIO sends them in one packet) must all arrive within this time.
HEAD_TIMEOUT_S = 5.0
# Go's HTTP client (MinIO) keeps connections open between bodies; closing them early costs a handshake each.
KEEPALIVE_S = 30
GRACEFUL_TIMEOUT_S = 10
# The request head's size bound (h11's default is 16 KiB; MinIO's headers are well under 4 KiB).
MAX_HEAD_BYTES = 32 * 1024
# Connections beyond this many are answered 503 (uvicorn); each idle one is cut after HEAD_TIMEOUT_S anyway.
MAX_CONNECTIONS = 8192


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on each request's head.

    uvicorn times out idle keep-alive connections but not a connection that never sends anything, nor one that
    sends its headers a byte at a time (the keep-alive timer stops at the first byte). The deadline starts when the
    connection is made (after any TLS handshake) or when the first byte of a new request arrives, and is lifted once
    the head is complete; when it passes, the connection is closed.
    """

    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the deadline of the first request's head."""
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        """Lift the deadline once a head is complete; start one when a new request begins."""
        super().data_received(data)
        if self._awaiting_head():
            if self._head_deadline is None:
                self._arm_head_deadline()
        else:
            self._disarm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline."""
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_deadline_passed)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        if self._awaiting_head() and not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server, but a signal only stops it: uvicorn re-raises the signal after a graceful shutdown, which
    would end the process with status -15 instead of 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install handlers that start the graceful shutdown; restore the previous ones after it."""
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {number: signal.signal(number, self.handle_exit) for number in signals}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


@dataclass(frozen=True, slots=True)
class Listener:
    """Where and how ``serve`` listens."""

    host: str
    port: int
    certfile: str | None = None
    keyfile: str | None = None
    insecure_http: bool = False


def listener_problem(listener: Listener) -> str | None:
    """Why the listener options cannot be used, as one sentence; None when they can."""
    certfile, keyfile = listener.certfile, listener.keyfile
    if bool(certfile) != bool(keyfile):
        return "--certfile and --keyfile go together: give both, or neither to serve plain HTTP"
    for option, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path and not Path(path).is_file():
            return f"{option} {path} is not a readable file"
    if not certfile and not is_loopback(listener.host) and not listener.insecure_http:
        return (
            f"refusing plain HTTP on {listener.host}: the webhook token and users' presigned signatures would cross "
            "the network in clear; give --certfile and --keyfile, or listen on 127.0.0.1 behind a TLS-terminating "
            "proxy, or add --insecure-http when such a proxy reaches this address"
        )
    return None


def uvicorn_config(app: WebhookApp | str, listener: Listener, workers: int = 1) -> uvicorn.Config:
    """uvicorn's settings for the webhook: our HTTP protocol, timeouts and limits, TLS when configured; ``app`` is a
    factory's import string for worker processes."""
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        host=listener.host,
        port=listener.port,
        http=HeadDeadlineProtocol,
        ws="none",
        lifespan="on",
        interface="asgi3",
        log_config=None,
        access_log=bool(os.environ.get("ACCESS_LOG")),
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=KEEPALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S,
        limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        backlog=2048,
        ssl_certfile=listener.certfile,
        ssl_keyfile=listener.keyfile,
    )


def _raise_open_files_limit() -> None:
    """Idle connections cost a file descriptor each: use the whole hard limit (often 1024 soft by default)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """The command line's choices beyond the listener (JSON-serialisable: worker processes receive them)."""

    database_url: str | None = None
    spool_max_lines: int = DEFAULT_SPOOL_MAX_LINES
    spool_max_age_s: float = DEFAULT_SPOOL_MAX_AGE_S
    delivery_workers: int = DEFAULT_DELIVERY_WORKERS
    lease_s: float = DEFAULT_LEASE_S
    ogc_rs_read_timeout_s: float = READ_TIMEOUT_S

    def relay_settings(self) -> RelaySettings:
        """The relay's settings from these options and the environment; SettingsError names what is wrong."""
        webhook = WebhookSettings.from_env()
        ogc_rs = OgcRsSettings.from_env()
        numbers = (self.delivery_workers, self.lease_s, self.spool_max_lines, self.spool_max_age_s)
        if min(numbers) <= 0 or self.ogc_rs_read_timeout_s <= 0:
            raise SettingsError(
                "--delivery-workers, --spool-max-lines, --spool-max-age, --lease and --ogc-rs-read-timeout must be "
                "greater than 0"
            )
        return RelaySettings(
            webhook=webhook,
            ogc_rs=ogc_rs,
            store=StoreLocation.parse(self.database_url),
            limits=SpoolLimits(self.spool_max_lines, self.spool_max_age_s),
            delivery=DeliverySettings(
                batch_lines=ogc_rs.batch_max_lines,
                workers=self.delivery_workers,
                lease_s=self.lease_s,
                read_timeout_s=self.ogc_rs_read_timeout_s,
            ),
        )


def _configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def worker_app() -> WebhookApp:
    """The application of one worker process (``--workers`` > 1): the options come from the parent's environment."""
    _configure_logging()
    options = ServeOptions(**json.loads(os.environ[_WORKER_OPTIONS_ENV]))
    return WebhookApp(Relay.build(options.relay_settings()))


_WORKER_OPTIONS_ENV = "OGC_AUDIT_SERVE_WORKER_OPTIONS"


def run_serve(listener: Listener, options: ServeOptions | None = None, workers: int = 1) -> int:
    """Run the webhook server until SIGTERM/SIGINT; the exit status (2 for a configuration error)."""
    _configure_logging()
    options = options or ServeOptions()
    problem = listener_problem(listener) or (None if workers >= 1 else "--workers must be at least 1")
    if problem is not None:
        print(f"ogc-audit serve: {problem}", file=sys.stderr)
        return 2
    try:
        settings = options.relay_settings()
        # Opened here even with worker processes: a wrong URL stops serve before it listens, the schema is migrated
        # once, and a spool a previous run left is delivered from the start.
        relay = Relay.build(settings)
    except SettingsError as error:
        print(f"ogc-audit serve: {error}", file=sys.stderr)
        return 2
    if not listener.certfile and not is_loopback(listener.host):
        logger.warning("plain HTTP on %s (--insecure-http): a TLS-terminating proxy must be in front", listener.host)
    logger.info(
        "serve on %s:%d with %d worker(s), spool and ledger in %s (%s)",
        listener.host,
        listener.port,
        workers,
        settings.store.redacted(),
        settings.store.kind,
    )
    _raise_open_files_limit()
    if workers > 1:
        relay.close()
        os.environ[_WORKER_OPTIONS_ENV] = json.dumps(dataclasses.asdict(options))
        config = uvicorn_config(f"{__name__}:worker_app", listener, workers=workers)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    server = _Server(uvicorn_config(WebhookApp(relay), listener))
    try:
        server.run()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0 if server.started else 1
