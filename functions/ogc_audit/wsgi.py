"""The MinIO webhook as a WSGI application, delivering straight to OGC RS (``ogc-audit serve``).

Without a queue in between, a body is confirmed to MinIO only once its lines are in OGC RS: when OGC RS stays
unreachable the answer is 503 and MinIO keeps the body and re-sends it. The OGC RS client used here gives up
within about two seconds, because MinIO abandons a request after ~3 s and re-sends it anyway; a slower answer
would only risk the same lines arriving twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any

from metering import env_names
from metering.errors import DeliveryError
from metering.exactly_once import KeyedLine, LineSender, deliver_once
from metering.ledger import DeliveryLedger, SqliteLedger
from metering.line import MeteredDownload
from metering.ogc_rs import OgcRsClient, http_session
from metering.outcomes import Reason
from metering.runtime import build_ogc_rs_client
from metering.settings import OgcRsSettings
from minio_relay.audit_entry import entry_ledger_key
from minio_relay.routes import WEBHOOK_PATH
from minio_relay.webhook import DownstreamUnavailable, Webhook, WebhookRequest, WebhookResponse, WebhookSettings

logger = logging.getLogger(__name__)

# Retry budget of the direct client: one retry, short timeouts; see the module docstring.
SERVE_RETRIES = 1
SERVE_TIMEOUT_S = (1.0, 2.0)
_EXCERPT_CHARS = 200
DEFAULT_LEDGER_PATH = "ogc-audit-ledger.sqlite3"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def direct_client(settings: OgcRsSettings) -> OgcRsClient:
    """An OGC RS client with the short retry budget of the standalone server."""
    session = http_session(retries=SERVE_RETRIES, backoff_factor=0.2, pool_size=32)
    return build_ogc_rs_client(settings, session=session, timeout=SERVE_TIMEOUT_S)


def direct_sink(client: LineSender, ledger: DeliveryLedger) -> Callable[[Sequence[MeteredDownload]], None]:
    """A webhook sink that delivers to OGC RS once per entry and raises DownstreamUnavailable when it cannot."""

    def deliver(downloads: Sequence[MeteredDownload]) -> None:
        lines = [KeyedLine(entry_ledger_key(download.event_id), download.to_line()) for download in downloads]
        try:
            report = deliver_once(client, ledger, lines)
        except DeliveryError as error:
            raise DownstreamUnavailable(str(error)) from error
        for rejected in report.delivery.rejected:
            logger.error(
                "quarantined %s: %s: %s", Reason.REJECTED_BY_OGC_RS, rejected.message, rejected.line[:_EXCERPT_CHARS]
            )

    return deliver


def webhook_from_env() -> Webhook:
    """The webhook configured from the environment, delivering directly to OGC RS.

    Delivered entries are remembered in the SQLite file LEDGER_PATH (default ``ogc-audit-ledger.sqlite3`` in the
    working directory), shared by the workers, so a body MinIO re-sends is not counted twice.
    """
    settings = WebhookSettings.from_env()
    client = direct_client(OgcRsSettings.from_env())
    ledger = SqliteLedger(os.environ.get(env_names.LEDGER_PATH, "").strip() or DEFAULT_LEDGER_PATH)
    return Webhook(
        token=settings.token_source(), sink=direct_sink(client, ledger), max_body_bytes=settings.max_body_bytes
    )


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return headers


def _read_body(environ: dict[str, Any], limit: int) -> tuple[bytes, int | None]:
    """The body, or nothing and the declared length when it is over ``limit`` (it is not read at all)."""
    raw_length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if raw_length.isdigit():
        length = int(raw_length)
        if length > limit:
            return b"", length
        return stream.read(length), None
    # Chunked transfer: read one byte past the limit so an oversized body is recognised.
    return stream.read(limit + 1), None


def create_app(webhook_factory: Callable[[], Webhook] = webhook_from_env) -> WsgiApp:
    """A WSGI application around the webhook; the webhook is built on the first request of each worker."""
    built: list[Webhook] = []

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not built:
            built.append(webhook_factory())
        webhook = built[0]
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        headers = _headers(environ)
        body, declared = b"", None
        response: WebhookResponse | None = None
        if method in ("POST", "PUT") and path.rstrip("/") == WEBHOOK_PATH:
            # The token first: a body from someone without it is never read.
            response = webhook.refuse_unauthenticated(headers.get("authorization"))
            if response is None:
                body, declared = _read_body(environ, webhook.max_body_bytes)
        if response is None:
            response = webhook.handle(WebhookRequest(method, path, headers, body, declared))
        payload = response.body()
        answer = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        if response.status == 401:
            answer.append(("WWW-Authenticate", "Bearer"))
        if response.status in (401, 413, 503) and method in ("POST", "PUT"):
            answer.append(("Connection", "close"))  # the unread body is not drained: the connection ends
        status = HTTPStatus(response.status)
        start_response(f"{status.value} {status.phrase}", answer)
        return [payload]

    return application
