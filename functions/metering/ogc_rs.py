"""The OGC RS client: validated lines, posted in chunks to the AuditLogsIngestion process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NameResolutionError, NewConnectionError
from urllib3.util.retry import Retry

from metering.auth import TokenProvider, is_redirect, redirect_error, server_problem
from metering.errors import ConfigurationError, DeliveryError, UncertainDeliveryError
from metering.line import is_valid_line
from metering.settings import DEFAULT_BATCH_MAX_LINES

__all__ = [
    "DeliveryError",
    "DeliveryReport",
    "OgcRsClient",
    "RejectedLine",
    "UncertainDeliveryError",
    "http_session",
    "provably_not_sent",
]

logger = logging.getLogger(__name__)

# A synchronous run of the process can take ~30 s on the server; waiting less makes a slow success uncertain.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
# Retried at once: what provably stored nothing. A 429 is refused before the process runs; the reference RS's 503
# (and OGC RS's own when it is shutting down or overloaded) stores nothing either.
_NOT_STORED_STATUSES = (429, 503)
_SUCCESS = (200, 201)

SettledCallback = Callable[[Sequence[int]], None]
"""Receives positions of lines that OGC RS stored or refused for good."""


class _NoRedirectSession(requests.Session):
    """Belt and braces beside ``allow_redirects=False`` on every call: a call that forgot it follows nothing."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """No response is ever a redirect to follow."""
        return None


def http_session(retries: int = 4, backoff_factor: float = 0.5, pool_size: int = 10) -> requests.Session:
    """A session that retries, with exponential backoff and jitter, only what provably did not reach the server: a
    connection not established, 429 and 503. It never retries after the request was sent (no read retries: a read
    timeout or a connection lost after sending may mean the lines were stored) nor on 500/502/504, and never
    follows a redirect (a 3xx comes back as the answer: it is a configuration error, see RedirectError)."""
    retry = Retry(
        total=retries,
        connect=retries,
        read=0,
        status=retries,
        other=0,
        redirect=0,
        raise_on_redirect=False,
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_factor,
        backoff_max=20.0,
        status_forcelist=_NOT_STORED_STATUSES,
        allowed_methods=frozenset({"POST"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session = _NoRedirectSession()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def provably_not_sent(error: requests.RequestException) -> bool:
    """Whether a failed request never reached the server: the connection (or its TLS handshake) was not
    established. Anything else (a read timeout, a connection reset or closed after the body went out) may have
    been stored."""
    if isinstance(error, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if not isinstance(error, requests.exceptions.ConnectionError):
        return False
    reason = error.args[0] if error.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError | ConnectTimeoutError | NameResolutionError)


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """A line OGC RS (or our own check before sending) refused, with the reason given."""

    line: str
    message: str


@dataclass(slots=True)
class DeliveryReport:
    """What one ``deliver`` call achieved."""

    delivered: int = 0
    rejected: list[RejectedLine] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    token_fetches: int = 0


def log_unreported_rejections(report: DeliveryReport) -> None:
    """Log at ERROR the lines OGC RS refused, for a report its caller will never see (the call raises after).

    Those lines were settled and won't be sent again: this log is the only place an operator finds them.
    """
    for rejected in report.rejected:
        logger.error("quarantined rejected_by_ogc_rs: %s: %s", rejected.message, rejected.line[:200])


class OgcRsClient:
    """Posts metering lines to ``PROCESS_API_URL`` with a cached admin token.

    Lines are checked before sending (one bad line makes OGC RS reject the whole request); a chunk OGC RS
    still rejects with 400 is split until the offending lines are isolated, and the others are delivered.
    """

    def __init__(
        self,
        *,
        process_url: str,
        tokens: TokenProvider,
        session: requests.Session,
        batch_max_lines: int = DEFAULT_BATCH_MAX_LINES,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
    ) -> None:
        self._process_url = process_url
        self._tokens = tokens
        self._session = session
        self._batch_max_lines = batch_max_lines
        self._timeout = timeout

    @property
    def batch_max_lines(self) -> int:
        """Most lines posted in one request."""
        return self._batch_max_lines

    def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
        """Deliver every valid line; raise DeliveryError when OGC RS stays unavailable after retries, and
        UncertainDeliveryError (naming the one request's lines) when a request may or may not have been stored.

        ``on_settled`` is told, as soon as OGC RS has answered for them, the positions in ``lines`` that reached
        a final state (stored, or refused for good), so a caller can record progress chunk by chunk.
        """
        report = DeliveryReport()
        started, fetches_before = time.monotonic(), self._tokens.fetches
        valid: list[int] = []
        refused: list[int] = []
        for position, line in enumerate(lines):
            (valid if is_valid_line(line) else refused).append(position)
        report.rejected.extend(RejectedLine(str(lines[position]), "invalid line, not sent") for position in refused)
        if refused and on_settled is not None:
            on_settled(refused)
        size = self._batch_max_lines
        try:
            for start in range(0, len(valid), size):
                self._deliver_positions(lines, valid[start : start + size], report, on_settled)
        except DeliveryError:
            log_unreported_rejections(report)
            raise
        finally:
            report.seconds = time.monotonic() - started
            report.token_fetches = self._tokens.fetches - fetches_before
        return report

    def _deliver_positions(
        self,
        lines: Sequence[str],
        positions: Sequence[int],
        report: DeliveryReport,
        on_settled: SettledCallback | None,
    ) -> None:
        """Post the lines at ``positions`` in one request; on 400 split them to isolate the rejected lines."""
        chunk = [lines[position] for position in positions]
        sent_at = time.time()
        try:
            response = self._post(chunk, report)
        except UncertainDeliveryError as error:
            raise UncertainDeliveryError(str(error), logs=chunk, positions=positions, sent_at=sent_at) from error
        status = response.status_code
        if status in (400, 413) and len(chunk) > 1:
            middle = len(positions) // 2
            self._deliver_positions(lines, positions[:middle], report, on_settled)
            self._deliver_positions(lines, positions[middle:], report, on_settled)
            return
        if is_redirect(response):
            raise redirect_error(f"OGC RS {self._process_url}", response)
        if status in _SUCCESS:
            report.delivered += len(chunk)
        elif status == 400:
            report.rejected.append(RejectedLine(chunk[0], server_problem(response)))
        elif status in _NOT_STORED_STATUSES:
            raise DeliveryError(f"OGC RS answered {status} after retries: {server_problem(response)}")
        elif status >= 500:
            # 500/502/504 (a gateway's timeout, a failure after the commit): the lines may be stored.
            logger.warning("OGC RS answered %d to a request of %d lines: uncertain", status, len(chunk))
            raise UncertainDeliveryError(
                f"OGC RS answered {status}: {server_problem(response)}",
                logs=chunk,
                positions=positions,
                sent_at=sent_at,
            )
        else:
            raise ConfigurationError(f"OGC RS {self._process_url} answered {status}: {server_problem(response)}")
        if on_settled is not None:
            on_settled(positions)

    def _post(self, chunk: Sequence[str], report: DeliveryReport) -> requests.Response:
        body: dict[str, object] = {"inputs": {"logs": list(chunk)}}
        token = self._tokens.token()
        response = self._send(body, token, report)
        if response.status_code == 401:
            # The token may have been revoked or expired early (nothing was stored): one fresh token, one more try.
            self._tokens.invalidate(token)
            response = self._send(body, self._tokens.token(), report)
            if response.status_code == 401:
                raise ConfigurationError(
                    f"OGC RS refused a fresh token (401): the identity must be an RS admin; {server_problem(response)}"
                )
        return response

    def _send(self, body: dict[str, object], token: str, report: DeliveryReport) -> requests.Response:
        report.requests += 1
        try:
            return self._session.post(
                self._process_url,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout,
                allow_redirects=False,  # a redirect's 200 elsewhere would look like a delivery
            )
        except requests.RequestException as error:
            if provably_not_sent(error):
                raise DeliveryError(f"OGC RS unreachable after retries: {type(error).__name__}") from error
            logger.warning("no answer from OGC RS (%s): the request is uncertain", type(error).__name__)
            # The caller fills in the lines and positions; this one carries the cause.
            raise UncertainDeliveryError(
                f"no answer from OGC RS ({type(error).__name__}): the request may have been stored",
                logs=(),
                positions=(),
                sent_at=time.time(),
            ) from error
