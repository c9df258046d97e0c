"""``ogc-audit serve``: the MinIO audit webhook on a plain host, behind gunicorn (gthread workers).

A drop-in for the old FastAPI processor: same path ``/auditlogs/processor`` (POST or PUT), same port 8092,
``GET /`` answers ``{"status":"ok"}``. Configuration comes from the same environment variables as the Lambda
functions (WEBHOOK_TOKEN, PROCESS_API_URL, AUTH_URL, AUTH_ITEM_ID, CLIENT_ID/CLIENT_SECRET, ...). SIGTERM
stops gracefully (requests in flight finish), SIGINT at once.

With ``--certfile``/``--keyfile`` gunicorn speaks TLS itself; without them it warns when it listens beyond loopback.
Slow clients cannot hold the threads: a request's line and headers (and the TLS handshake) must arrive within
HEADER_TIMEOUT_S, every later read must make progress within CLIENT_IDLE_TIMEOUT_S, and the token is checked
before the body is read (see ``ogc_audit.wsgi``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from metering.settings import OgcRsSettings, SettingsError
from minio_relay.webhook import WebhookSettings
from ogc_audit.wsgi import WsgiApp, create_app

# Threads per worker: a request mostly waits on OGC RS; a thread costs little memory, and a client that connects
# and stalls holds one for up to HEADER_TIMEOUT_S, so there are more threads than a burst of such clients.
THREADS_PER_WORKER = 64
# The request line and headers (MinIO sends them in one packet) must all arrive within this time.
HEADER_TIMEOUT_S = 5.0
# After the headers, each read of the body must make progress within this time.
CLIENT_IDLE_TIMEOUT_S = 10.0
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
# Go's HTTP client (MinIO) keeps connections open between bodies; closing them early costs a handshake each.
KEEPALIVE_S = 30
GRACEFUL_TIMEOUT_S = 10


class SlowClientSafeWorker(ThreadWorker):
    """gunicorn's gthread worker, with a deadline on reading each request's head and a timeout on every read.

    The gthread worker reads a request in a pool thread with blocking reads and no timeout, so a client that sends
    a byte now and then would hold a thread for ever. A reaper thread shuts the socket of any request whose line
    and headers are not in after HEADER_TIMEOUT_S, which ends the blocked read and frees the thread.
    """

    def init_process(self) -> None:
        """Start the reaper, then gthread's own start-up (which runs the worker loop)."""
        self._head_deadlines: dict[Any, float] = {}
        self._deadline_lock = threading.Lock()
        threading.Thread(target=self._reap_slow_heads, name="slow-client-reaper", daemon=True).start()
        super().init_process()

    def handle(self, conn: Any) -> Any:
        """Serve one request on ``conn`` with its head under a deadline and every read under a timeout."""
        if not getattr(conn, "read_timeout_set", False):
            _time_out_reads(conn)
        with self._deadline_lock:
            self._head_deadlines[conn] = time.monotonic() + HEADER_TIMEOUT_S
        try:
            return super().handle(conn)
        finally:
            with self._deadline_lock:
                self._head_deadlines.pop(conn, None)

    def handle_request(self, req: Any, conn: Any) -> Any:
        """The head is in: lift its deadline (the body is read only after the token is checked)."""
        with self._deadline_lock:
            self._head_deadlines.pop(conn, None)
        return super().handle_request(req, conn)

    def _reap_slow_heads(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._deadline_lock:
                late = [conn for conn, deadline in self._head_deadlines.items() if deadline < now]
                for conn in late:
                    del self._head_deadlines[conn]
            for conn in late:
                with contextlib.suppress(OSError):  # already closed by the client
                    conn.sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once; gunicorn closes it


def _time_out_reads(conn: Any) -> None:
    """Make every socket read of ``conn`` time out after CLIENT_IDLE_TIMEOUT_S.

    gthread makes the socket blocking (no timeout) and then calls ``conn.init()`` on every request, wrapping it in
    TLS on the first: the timeout is set right after, on whatever socket init leaves.
    """
    initialize = conn.init

    def init_with_timeout() -> None:
        initialize()
        conn.sock.settimeout(CLIENT_IDLE_TIMEOUT_S)

    conn.init = init_with_timeout
    conn.read_timeout_set = True


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only listens on this machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


def server_options(
    host: str, port: int, workers: int, certfile: str | None = None, keyfile: str | None = None
) -> dict[str, Any]:
    """gunicorn settings of the webhook server (TLS when a certificate and its key are given)."""
    tls = {"certfile": certfile, "keyfile": keyfile} if certfile and keyfile else {}
    return {
        **tls,
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": workers,
        "worker_class": SlowClientSafeWorker,
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


def _tls_problem(certfile: str | None, keyfile: str | None) -> str | None:
    """Why the TLS options cannot be used, as one sentence; None when they can (or are both absent)."""
    if bool(certfile) != bool(keyfile):
        return "--certfile and --keyfile go together: give both, or neither to serve plain HTTP"
    for option, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path and not Path(path).is_file():
            return f"{option} {path} is not a readable file"
    return None


def run_serve(
    host: str = "0.0.0.0",  # noqa: S104 - serves MinIO hosts
    port: int = 8092,
    workers: int = 2,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> int:
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
    problem = _tls_problem(certfile, keyfile)
    if problem is not None:
        print(f"ogc-audit serve: {problem}", file=sys.stderr)
        return 2
    if not certfile and not is_loopback(host):
        print(
            f"ogc-audit serve: warning: listening on {host}:{port} without TLS: the webhook token and the audit bodies "
            "(with users' presigned signatures) cross the network in clear; give --certfile and --keyfile, or put a "
            "TLS-terminating proxy in front and listen on 127.0.0.1",
            file=sys.stderr,
            flush=True,
        )
    try:
        WebhookServer(create_app(), server_options(host, port, workers, certfile, keyfile)).run()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0
