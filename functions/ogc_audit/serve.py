"""``ogc-audit serve``: the MinIO audit webhook on a plain host, behind gunicorn (gthread workers).

A drop-in for the old FastAPI processor: same path ``/auditlogs/processor`` (POST or PUT), same port 8092,
``GET /`` answers ``{"status":"ok"}``. Configuration comes from the same environment variables as the Lambda
functions (WEBHOOK_TOKEN, PROCESS_API_URL, AUTH_URL, AUTH_ITEM_ID, CLIENT_ID/CLIENT_SECRET, ...). SIGTERM
stops gracefully (requests in flight finish), SIGINT at once.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from metering.settings import OgcRsSettings, SettingsError
from minio_relay.webhook import WebhookSettings
from ogc_audit.wsgi import WsgiApp, create_app

# Threads per worker: a request mostly waits on OGC RS, so a few threads keep both cores busy.
THREADS_PER_WORKER = 16
# Go's HTTP client (MinIO) keeps connections open between bodies; closing them early costs a handshake each.
KEEPALIVE_S = 30
GRACEFUL_TIMEOUT_S = 10


class WebhookServer(BaseApplication):
    """gunicorn embedded: options set in code, the WSGI app built in each worker."""

    def __init__(self, app: WsgiApp, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        """Apply the options given in code (no gunicorn command line, no config file)."""
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> WsgiApp:
        """The WSGI application."""
        return self._app


def server_options(host: str, port: int, workers: int) -> dict[str, Any]:
    """gunicorn settings of the webhook server."""
    return {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": workers,
        "worker_class": "gthread",
        "threads": THREADS_PER_WORKER,
        "keepalive": KEEPALIVE_S,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "timeout": 30,
        "accesslog": os.environ.get("ACCESS_LOG") or None,
        "errorlog": "-",
        "loglevel": os.environ.get("LOG_LEVEL", "info").lower(),
        "proc_name": "ogc-audit-serve",
        "config": None,
    }


def run_serve(host: str = "0.0.0.0", port: int = 8092, workers: int = 2) -> int:  # noqa: S104 - serves MinIO hosts
    """Run the webhook server until SIGTERM/SIGINT; the exit status (2 for a configuration error)."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        # Checked here, once, so a missing variable stops the server before any worker starts.
        WebhookSettings.from_env()
        OgcRsSettings.from_env()
    except SettingsError as error:
        print(f"ogc-audit serve: {error}", file=sys.stderr)
        return 2
    try:
        WebhookServer(create_app(), server_options(host, port, workers)).run()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0
