"""The MinIO webhook as an ASGI application (``ogc-audit serve`` runs it under uvicorn).

Routes: POST or PUT ``/auditlogs/processor`` (the audit body), ``GET /`` health (``{"status":"ok"}``, the old
FastAPI processor's answer), ``GET /ready`` (200 while the spool accepts bodies, else 503 with the reason) and
``GET /metrics`` (Prometheus text).

A body is handled in this order, so an unauthenticated or unwanted one costs next to nothing: the token is checked
from the headers before a byte of the body is read; a full spool answers 503 before reading; the body is read with
a size limit and a per-read idle timeout. Only then does the webhook meter it and commit its lines to the spool, in a
thread (JSON parsing and the spool's commit would otherwise hold the event loop). An answer that leaves the body
unread closes the connection rather than draining it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

from minio_relay.routes import WEBHOOK_PATH
from minio_relay.webhook import WebhookRequest, WebhookResponse
from ogc_audit.serve.relay import Relay

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

READY_PATH = "/ready"
METRICS_PATH = "/metrics"
# After the headers, each part of the body must arrive within this time, and the whole body within the deadline.
BODY_IDLE_TIMEOUT_S = 10.0
BODY_DEADLINE_S = 60.0
# Threads that meter bodies and wait for their spool commit: bodies being handled, never idle connections.
HANDLER_THREADS = 32


class BodyTooLarge(Exception):
    """The body grew past the limit while it was read."""


class ClientGone(Exception):
    """The client closed the connection before its body was complete."""


class WebhookApp:
    """ASGI application around a relay; the relay is started and stopped by the server's lifespan events."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._threads = ThreadPoolExecutor(max_workers=HANDLER_THREADS, thread_name_prefix="webhook")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await loop.run_in_executor(self._threads, self.relay.start)
                except Exception as error:
                    logger.exception("serve could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await loop.run_in_executor(self._threads, self.relay.stop)
                self._threads.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"].upper()
        path = scope["path"].rstrip("/")
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if path == WEBHOOK_PATH and method in ("POST", "PUT"):
            response = await self._audit_body(method, path, headers, receive)
            self.relay.metrics.body(response.status, response.tally)
            await _answer(send, response, close=response.status in (400, 401, 408, 413, 503))
        elif path == READY_PATH and method in ("GET", "HEAD"):
            state = self.relay.admission.state
            document: dict[str, object] = {"ready": state.accepting, "spoolDepth": state.stats.depth}
            if not state.accepting:
                document["reason"] = state.reason
            await _answer(send, WebhookResponse(200 if state.accepting else 503, document))
        elif path == METRICS_PATH and method in ("GET", "HEAD"):
            text = self.relay.metrics.render(self.relay.admission.state, self.relay.webhook.auth_failures)
            await _send(send, 200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
        else:  # GET / health, and the 404/405 answers, as the webhook defines them
            await _answer(send, self.relay.webhook.handle(WebhookRequest(method, path, headers, b"")))

    async def _audit_body(self, method: str, path: str, headers: dict[str, str], receive: Receive) -> WebhookResponse:
        webhook = self.relay.webhook
        loop = asyncio.get_running_loop()
        # The token first (a Secrets Manager read every few minutes may block: in a thread), the body after.
        presented = headers.get("authorization")
        refused = await loop.run_in_executor(self._threads, webhook.refuse_unauthenticated, presented)
        if refused is not None:
            return refused
        refusal = self.relay.admission.refusal()
        if refusal is not None:
            self.relay.metrics.spool_refusal()
            return WebhookResponse(503, {"error": f"{refusal}; retry later"})
        body = await self._body(method, path, headers, receive)
        if isinstance(body, WebhookResponse):
            return body
        return await loop.run_in_executor(self._threads, webhook.handle, WebhookRequest(method, path, headers, body))

    async def _body(self, method: str, path: str, headers: dict[str, str], receive: Receive) -> bytes | WebhookResponse:
        """The body, or the answer when it is too large, too slow or cut short."""
        webhook = self.relay.webhook
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > webhook.max_body_bytes:
            return webhook.handle(WebhookRequest(method, path, headers, b"", int(declared)))
        try:
            return await asyncio.wait_for(_read_body(receive, webhook.max_body_bytes), BODY_DEADLINE_S)
        except BodyTooLarge:
            return webhook.handle(WebhookRequest(method, path, headers, b"", webhook.max_body_bytes + 1))
        except TimeoutError:
            logger.warning("a client sent its body too slowly: closed")
            return WebhookResponse(408, {"error": "body not received in time"})
        except ClientGone:
            return WebhookResponse(400, {"error": "body incomplete: the client closed the connection"})


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole body; BodyTooLarge as soon as it passes ``limit``, TimeoutError when a part is late."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await asyncio.wait_for(receive(), BODY_IDLE_TIMEOUT_S)
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise BodyTooLarge
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _answer(send: Send, response: WebhookResponse, *, close: bool = False) -> None:
    extra = [(b"www-authenticate", b"Bearer")] if response.status == 401 else []
    await _send(send, response.status, response.body(), "application/json", close=close, extra=extra)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    *,
    close: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))  # an unread body is not drained: the connection ends
    headers.extend(extra or [])
    await send({"type": "http.response.start", "status": HTTPStatus(status).value, "headers": headers})
    await send({"type": "http.response.body", "body": body})
