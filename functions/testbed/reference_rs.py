"""Reference OGC Resource Server: the AuditLogsIngestion process and the DX AAA token endpoint.

A loopback HTTP server (standard library only) that behaves like the real servers described in
``docs/contracts.md``, so that tests, ``ogc-audit demo`` and the fault-injection suite exercise the
same rules the production servers enforce:

- ``POST /auth/v1/token`` issues 12-hour admin tokens for the configured client and RS host.
- ``POST /processes/{id}/execution`` validates every line exactly like the Java process
  (``AuditLogsIngestionProcess``) and stores a batch in one transaction, or nothing.
- ``GET /processes`` lists the process; ``GET /jobs/{id}`` shows a job's outcome.

Deliberate fidelity points (mirroring the real server, not a nicer one):

- The timestamp's offset is dropped: ``10:00:00+05:30`` is stored as ``10:00:00``.
- No deduplication: a line sent twice is stored twice.
- An empty line or a JSON null in ``logs`` answers 500, not 400.
- In ``async`` mode the server answers 201 before the lines are checked (the job runs after the
  answer), so an invalid batch still gets 201; the job ends ``failed`` and nothing is stored.
  Only authentication and a missing ``inputs.logs`` are rejected synchronously.
- ``user_id`` and ``collection_id`` are stored lower-case (Postgres ``uuid``), while ``api_path``
  keeps the collection id as sent.

Where the real server is more lenient than the contract (Java accepts some non-canonical UUIDs
such as ``1-2-3-4-5``), this server is stricter; a client that passes here passes there.

Faults are scripted per endpoint with a :class:`FaultPlan` (``server.faults`` for the process,
``server.token_faults`` for the token endpoint)::

    server.faults.push("status", 503, retry_after=2)   # next execution answers 503
    server.faults.push("store_then_drop")               # then: commit rows, close without answer
    server.faults.push_fault(Fault.store_then_delay(3)) # then: commit rows, answer 3 s later
    server.faults.randomize([(Fault.drop(), 0.2)], seed=7)  # afterwards: 20 % dropped
    server.token_faults.push("redirect", 307)          # next token request is redirected to the sink

A redirect points at ``/elsewhere/...`` on the same server, a sink that answers 200 to anything (a token, a
stored batch) and stores nothing: a client that followed it would believe it succeeded. Requests that reach the
sink are kept in ``server.redirected_requests`` (their headers included), so a test sees what would have leaked.

Storage (``testbed.reference_store``): a SQLite file by default (``db_path``, the demo's embedded store), or
OGC RS's own tables in PostgreSQL (``database_url="postgresql://..."``), created with OGC RS's DDL. Either way a
request is written as AuditLogsIngestion writes it: a ``jobs_table`` row holding the ``inputs`` first (ACCEPTED,
then RUNNING), then every line validated and all of them inserted in one transaction, then SUCCESSFUL or FAILED.
``server.database_url`` is what ``metering.ogc_rs_database.open_ogc_rs_database`` reads.

A slow OGC RS: ``server.answer_latency_s = 3`` stores every request on receipt and answers 3 s later;
``Fault.store_then_delay(3)`` does it for one request.

Run standalone: ``python -m testbed.reference_rs --port 9000 --db metering.sqlite3``
(or ``--database-url postgresql://...``, ``--answer-latency 3``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast

from testbed.reference_store import MeteringRow, MeteringStore, job_user_id, open_store

__all__ = [
    "PROCESS_TITLE",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "JobRecord",
    "LineRejectedError",
    "MeteringRow",
    "ParsedLogLine",
    "ReferenceOgcRs",
    "RequestRecord",
    "main",
    "parse_log_line",
    "parse_offset_timestamp",
    "validate_logs",
]

PROCESS_TITLE = "AuditLogsIngestion"
TOKEN_PATH = "/auth/v1/token"  # noqa: S105 - a URL path, not a secret
REDIRECT_SINK_PATH = "/elsewhere"
DEFAULT_TOKEN_LIFETIME_S = 12 * 3600
DEFAULT_RS_HOST = "ogc-rs.reference.test"

ProcessMode = Literal["sync", "async"]

# The real server's messages (ogc.rs.processes.auditLogsIngestion.Constants), prefixed here with the line.
MSG_EMPTY = "One of the logs entries is empty."
MSG_FORMAT = (
    "Invalid log format in one of the log entries : "
    "Expected 6 fields (userId|collectionId|itemId|timestamp|respSize|storageBackend)"
)
MSG_MISSING = "Missing required fields in log entry."
MSG_UUID = "Invalid UUID format in one of the log entries."
MSG_RESP_SIZE = "Invalid respSize format in one of the log entries."
MSG_TIMESTAMP = "Invalid timestamp format in one of the log entries."


# --------------------------------------------------------------------------------------------------
# Line validation (mirrors AuditLogsIngestionProcess.parseLogEntry)
# --------------------------------------------------------------------------------------------------

# java.lang.String.trim() removes every char <= U+0020, which str.strip() does not.
_JAVA_TRIM = "".join(chr(code) for code in range(0x21))
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE)
_LONG_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
# DateTimeFormatter.ISO_OFFSET_DATE_TIME: seconds and fraction optional, 'T'/'Z' case-insensitive.
_TIMESTAMP_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{0,9}))?)?"
    r"(?P<offset>Z|[+-](?P<oh>[0-9]{2}):(?P<om>[0-9]{2})(?::(?P<os>[0-9]{2}))?)",
    re.ASCII | re.IGNORECASE,
)
_MAX_OFFSET_S = 18 * 3600


class LineRejectedError(Exception):
    """A log line (or the whole body) the real server refuses, with the status it answers."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@dataclass(frozen=True)
class ParsedLogLine:
    """One accepted line, with the values the real server writes to ``metering``."""

    raw_line: str
    user_id: str
    collection_id: str
    item_id: str
    timestamp: str
    resp_size: int
    storage_backend: str
    collection_id_as_sent: str

    @property
    def api_path(self) -> str:
        """``stac/collections/{collectionId}/items/{itemId}``, collection id as sent."""
        return f"stac/collections/{self.collection_id_as_sent}/items/{self.item_id}"


def _java_trim(text: str) -> str:
    return text.strip(_JAVA_TRIM)


def _parse_long(text: str) -> int | None:
    """``Long.parseLong``: optional sign, ASCII digits, 64-bit range; ``None`` when it would throw."""
    if not _LONG_RE.fullmatch(text):
        return None
    value = int(text)
    return value if _LONG_MIN <= value <= _LONG_MAX else None


def _offset_is_valid(match: re.Match[str]) -> bool:
    if match.group("offset").upper() == "Z":
        return True
    hours, minutes, seconds = (int(match.group(name) or 0) for name in ("oh", "om", "os"))
    return minutes <= 59 and seconds <= 59 and hours * 3600 + minutes * 60 + seconds <= _MAX_OFFSET_S


def parse_offset_timestamp(text: str) -> str | None:
    """Parse an ISO offset date-time and return its local part (offset dropped), or ``None``.

    The result is the canonical ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` form a Postgres ``timestamp``
    column would hold (fractions rounded to microseconds).
    """
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None or not _offset_is_valid(match):
        return None
    fraction = (match.group("fraction") or "").ljust(9, "0")
    try:
        local = datetime.fromisoformat(match.group("date")).replace(
            hour=int(match.group("hour")),
            minute=int(match.group("minute")),
            second=int(match.group("second") or 0),
        )
    except ValueError:
        return None
    local += timedelta(microseconds=round(int(fraction) / 1000))
    return local.isoformat()


def parse_log_line(line: str, number: int = 1) -> ParsedLogLine:
    """Validate one line like the real server, in its order of checks; raise :class:`LineRejectedError`."""
    if not _java_trim(line):
        raise LineRejectedError(500, f"{MSG_EMPTY} (entry #{number})")
    parts = line.split("|")
    if len(parts) != 6:
        raise LineRejectedError(400, f"{MSG_FORMAT} (entry #{number}: got {len(parts)} fields)")
    user_id, collection_id, item_id, timestamp, resp_size, backend = (_java_trim(part) for part in parts)
    missing = [
        name
        for name, value in (
            ("userId", user_id),
            ("collectionId", collection_id),
            ("itemId", item_id),
            ("timestamp", timestamp),
            ("respSize", resp_size),
        )
        if not value
    ]
    if missing:
        raise LineRejectedError(400, f"{MSG_MISSING} (entry #{number}: empty {', '.join(missing)})")
    for name, value in (("userId", user_id), ("collectionId", collection_id)):
        if not _UUID_RE.fullmatch(value):
            raise LineRejectedError(400, f"{MSG_UUID} (entry #{number}: {name}={value!r})")
    size = _parse_long(resp_size)
    if size is None:
        raise LineRejectedError(400, f"{MSG_RESP_SIZE} (entry #{number}: respSize={resp_size!r})")
    local_timestamp = parse_offset_timestamp(timestamp)
    if local_timestamp is None:
        raise LineRejectedError(400, f"{MSG_TIMESTAMP} (entry #{number}: timestamp={timestamp!r})")
    return ParsedLogLine(
        raw_line=line,
        user_id=user_id.lower(),
        collection_id=collection_id.lower(),
        item_id=item_id,
        timestamp=local_timestamp,
        resp_size=size,
        storage_backend=backend,
        collection_id_as_sent=collection_id,
    )


def validate_logs(logs: Sequence[object]) -> list[ParsedLogLine]:
    """Validate a whole ``logs`` array; the first bad entry rejects it (all or nothing)."""
    parsed = []
    for number, entry in enumerate(logs, start=1):
        if entry is None:
            raise LineRejectedError(500, f"{MSG_EMPTY} (entry #{number} is null)")
        if not isinstance(entry, str):
            raise LineRejectedError(400, f"{MSG_FORMAT} (entry #{number} is not a string)")
        parsed.append(parse_log_line(entry, number))
    return parsed


def _logs_from_body(body: bytes) -> list[object]:
    """Extract ``inputs.logs`` from an execution body or raise a 400 :class:`LineRejectedError`."""
    return cast(list[object], _inputs_from_body(body)["logs"])


def _inputs_from_body(body: bytes) -> dict[str, Any]:
    """The ``inputs`` object of an execution body, holding a ``logs`` array, or a 400 :class:`LineRejectedError`."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise LineRejectedError(400, f"Malformed JSON body: {error}") from None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, dict):
        raise LineRejectedError(400, "Body must be a JSON object with an 'inputs' object")
    logs = inputs.get("logs")
    if logs is None or logs == "":
        raise LineRejectedError(400, "Following keys in process input were missing or empty [logs]")
    if not isinstance(logs, list):
        raise LineRejectedError(400, "inputs.logs must be an array of strings")
    return inputs


def _count_lines(body: bytes) -> int:
    """Number of entries in ``inputs.logs`` (0 when the body is not a well-formed execution)."""
    try:
        return len(_logs_from_body(body))
    except LineRejectedError:
        return 0


# --------------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------------


class FaultKind(StrEnum):
    """What the server does instead of (or around) its normal answer."""

    OK = "ok"  # answer normally (useful in a scripted sequence)
    STATUS = "status"  # answer this status (500/503/429...) without processing, optional Retry-After
    DELAY = "delay"  # wait delay_s seconds, then process and answer normally
    DROP = "drop"  # read the request, close the connection without answering, process nothing
    STORE_THEN_DROP = "store_then_drop"  # process (commit rows), then close without answering
    STORE_THEN_DELAY = "store_then_delay"  # process (commit rows), then answer after delay_s seconds
    UNAUTHORIZED = "unauthorized"  # answer 401 as if the token had expired
    REDIRECT = "redirect"  # answer a 3xx whose Location is the sink, with a query that must never be logged


@dataclass(frozen=True)
class Fault:
    """One injected behaviour. Build with the class methods, e.g. ``Fault.status(503, retry_after=2)``."""

    kind: FaultKind
    status: int | None = None
    delay_s: float = 0.0
    retry_after: str | None = None

    @classmethod
    def ok(cls) -> Fault:
        """Answer normally."""
        return cls(FaultKind.OK)

    @classmethod
    def with_status(cls, status: int, retry_after: float | str | None = None) -> Fault:
        """Answer ``status`` (4xx/5xx) without processing; ``retry_after`` seconds or HTTP date."""
        if not 400 <= status <= 599:
            raise ValueError(f"injected status must be 4xx or 5xx, got {status}")
        return cls(FaultKind.STATUS, status=status, retry_after=_retry_after_header(retry_after))

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before processing and answering (to exceed a client timeout)."""
        if seconds < 0:
            raise ValueError(f"delay must be >= 0, got {seconds}")
        return cls(FaultKind.DELAY, delay_s=float(seconds))

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering; nothing is processed."""
        return cls(FaultKind.DROP)

    @classmethod
    def store_then_drop(cls) -> Fault:
        """Process the request (rows committed), then close the connection without answering."""
        return cls(FaultKind.STORE_THEN_DROP)

    @classmethod
    def store_then_delay(cls, seconds: float) -> Fault:
        """Process the request (rows committed) at once, then answer after ``seconds``: a slow OGC RS."""
        if seconds < 0:
            raise ValueError(f"delay must be >= 0, got {seconds}")
        return cls(FaultKind.STORE_THEN_DELAY, delay_s=float(seconds))

    @classmethod
    def unauthorized(cls) -> Fault:
        """Answer 401 as if the token had expired."""
        return cls(FaultKind.UNAUTHORIZED)

    @classmethod
    def redirect(cls, status: int = 307) -> Fault:
        """Answer ``status`` (301/302/303/307/308) with a Location on the sink ``/elsewhere``."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"a redirect status is 301, 302, 303, 307 or 308, got {status}")
        return cls(FaultKind.REDIRECT, status=status)

    @classmethod
    def of(cls, kind: FaultKind | str, value: float | None = None, retry_after: float | str | None = None) -> Fault:
        """Build from a kind name and its value: ``("status", 503)``, ``("delay", 1.5)``, ``("drop",)``."""
        fault_kind = FaultKind(kind)
        if fault_kind is FaultKind.STATUS:
            if value is None:
                raise ValueError("a 'status' fault needs the status code")
            return cls.with_status(int(value), retry_after)
        if fault_kind is FaultKind.REDIRECT:
            return cls.redirect(307 if value is None else int(value))
        if fault_kind in (FaultKind.DELAY, FaultKind.STORE_THEN_DELAY):
            if value is None:
                raise ValueError(f"a {fault_kind.value!r} fault needs the number of seconds")
            return cls.delay(value) if fault_kind is FaultKind.DELAY else cls.store_then_delay(value)
        if value is not None:
            raise ValueError(f"a {fault_kind.value!r} fault takes no value")
        return cls(fault_kind)


def _retry_after_header(value: float | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


class FaultPlan:
    """A thread-safe script of faults for one endpoint, consumed one per request.

    Scripted faults (``push``) are used first, in order; when none is left, the optional random
    mode (``randomize``) draws one fault per request from a seeded RNG; otherwise the request is
    answered normally. ``applied`` records every fault actually used (``OK`` excluded).
    """

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._random: list[tuple[Fault, float]] = []
        self._rng = random.Random(seed)  # noqa: S311 - reproducible test faults, not cryptography
        self.applied: list[Fault] = []

    def push(
        self,
        kind: FaultKind | str,
        value: float | None = None,
        *,
        retry_after: float | str | None = None,
        times: int = 1,
    ) -> FaultPlan:
        """Script the next request(s): ``push("status", 503)``, ``push("delay", 2)``, ``push("drop")``."""
        return self.push_fault(Fault.of(kind, value, retry_after), times=times)

    def push_fault(self, fault: Fault, *, times: int = 1) -> FaultPlan:
        """Append ``fault`` ``times`` times to the script."""
        with self._lock:
            self._queue.extend([fault] * times)
        return self

    def randomize(self, faults: Iterable[tuple[Fault, float]], *, seed: int | None = None) -> FaultPlan:
        """After the script, apply each fault with its probability (sum <= 1); ``seed`` resets the RNG."""
        table = list(faults)
        if any(probability < 0 for _, probability in table) or sum(p for _, p in table) > 1 + 1e-9:
            raise ValueError("probabilities must be >= 0 and sum to at most 1")
        with self._lock:
            self._random = table
            if seed is not None:
                self._rng.seed(seed)
        return self

    def clear(self) -> None:
        """Forget the script and the random mode (``applied`` is kept)."""
        with self._lock:
            self._queue.clear()
            self._random = []

    @property
    def pending(self) -> int:
        """Scripted faults not yet consumed."""
        with self._lock:
            return len(self._queue)

    def next_fault(self) -> Fault:
        """Consume the fault for the current request (``Fault.ok()`` when none applies)."""
        with self._lock:
            fault = self._queue.popleft() if self._queue else self._draw()
            if fault.kind is not FaultKind.OK:
                self.applied.append(fault)
            return fault

    def _draw(self) -> Fault:
        if not self._random:
            return Fault.ok()
        roll = self._rng.random()
        for fault, probability in self._random:
            if roll < probability:
                return fault
            roll -= probability
        return Fault.ok()


# --------------------------------------------------------------------------------------------------
# Server state
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received; ``status`` is ``None`` when the connection was dropped."""

    method: str
    path: str
    status: int | None
    lines: int = 0
    fault: FaultKind | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers, kept only for requests that reached the redirect sink."""


@dataclass
class JobRecord:
    """Outcome of one process execution (``GET /jobs/{id}``)."""

    job_id: str
    status: Literal["successful", "failed"]
    message: str
    logs_inserted: int = 0


@dataclass
class _Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _ogc_error(status: int, description: str) -> _Response:
    return _Response(status, {"code": HTTPStatus(status).phrase, "description": description})


def _aaa_error(status: int, detail: str) -> _Response:
    urn = {
        400: "urn:dx:as:InvalidInput",
        401: "urn:dx:as:InvalidAuthenticationToken",
        403: "urn:dx:as:Forbidden",
    }.get(status, "urn:dx:as:InternalServerError")
    return _Response(status, {"type": urn, "title": HTTPStatus(status).phrase, "detail": detail})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class ReferenceOgcRs:
    """Loopback OGC RS + token endpoint. Use as a context manager, or ``start()`` / ``close()``.

    Attributes tests may read or set while it runs: ``client_id``, ``client_secret``, ``rs_host``,
    ``process_id``, ``mode`` ("sync" answers 200, "async" answers 201), ``poisoned_item_ids``, ``role_held`` (False: the
    token endpoint answers 403), ``token_lifetime_s``, ``faults`` / ``token_faults``
    (:class:`FaultPlan`), ``token_requests``, ``tokens_issued``, ``requests_log``, ``jobs``.
    """

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        rs_host: str = DEFAULT_RS_HOST,
        process_id: str | None = None,
        mode: ProcessMode = "sync",
        token_lifetime_s: float = DEFAULT_TOKEN_LIFETIME_S,
        db_path: str = ":memory:",
        database_url: str | None = None,
        answer_latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        fault_seed: int = 0,
        clock: Callable[[], float] = time.time,
        verbose: bool = False,
    ) -> None:
        self.client_id = client_id or str(uuid.uuid4())
        self.client_secret = client_secret or secrets.token_hex(20)
        self.rs_host = rs_host
        self.process_id = process_id or str(uuid.uuid4())
        self.mode: ProcessMode = mode
        self.role_held = True
        # Lines whose itemId is listed here are refused with 400, as if the server had a rule we don't know.
        self.poisoned_item_ids: set[str] = set()
        self.token_lifetime_s = token_lifetime_s
        self.db_path = db_path
        # Seconds every execution answer waits after the lines were stored: a slow OGC RS that commits first.
        self.answer_latency_s = answer_latency_s
        self.verbose = verbose
        self.faults = FaultPlan(fault_seed)
        self.token_faults = FaultPlan(fault_seed)
        self.token_requests = 0
        self.tokens_issued = 0
        self.requests_log: list[RequestRecord] = []
        self.redirected_requests: list[RequestRecord] = []
        self.jobs: dict[str, JobRecord] = {}
        self._host, self._port = host, port
        self._clock = clock
        self._signing_key = secrets.token_bytes(32)
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        if database_url is not None and db_path != ":memory:":
            raise ValueError("give db_path (SQLite) or database_url (PostgreSQL), not both")
        self.store: MeteringStore = open_store(db_path=db_path, database_url=database_url)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ReferenceOgcRs:
        """Bind the socket and serve in a daemon thread (idempotent)."""
        if self._server is None:
            self._server = _Server((self._host, self._port), _Handler, self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True, name="reference-rs"
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, cut open connections (pending delays end as drops) and close the database."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self._lock:
                connections = list(self._connections)
            for connection in connections:
                _shutdown_socket(connection)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
        self.store.close()

    def __enter__(self) -> ReferenceOgcRs:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # ---- addresses -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` once started."""
        if self._server is None:
            raise RuntimeError("ReferenceOgcRs is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def token_url(self) -> str:
        """The token endpoint (``AUTH_URL``)."""
        return self.base_url + TOKEN_PATH

    @property
    def process_url(self) -> str:
        """The AuditLogsIngestion execution endpoint (``PROCESS_API_URL``)."""
        return f"{self.base_url}/processes/{self.process_id}/execution"

    # ---- tokens ----------------------------------------------------------------------------------

    def issue_token(self) -> str:
        """Issue a valid admin token directly (what a successful token request returns)."""
        now = self._clock()
        expiry = int(now + self.token_lifetime_s)
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "iss": "reference-aaa",
            "sub": self.client_id,
            "aud": self.rs_host,
            "iat": int(now),
            "exp": expiry,
            "iid": f"rs:{self.rs_host}",
            "role": "admin",
            "jti": str(uuid.uuid4()),
        }
        payload = _b64url(json.dumps(claims).encode())
        signature = hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{_b64url(signature)}"
        with self._lock:
            self._tokens[token] = expiry
            self.tokens_issued += 1
        return token

    def revoke_tokens(self) -> None:
        """Invalidate every token issued so far (the process endpoint then answers 401)."""
        with self._lock:
            self._tokens.clear()

    def token_is_valid(self, token: str) -> bool:
        """Whether ``token`` was issued here, is not revoked and has not expired."""
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and self._clock() < expiry

    # ---- storage ---------------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """Where the tables are: ``sqlite:///path`` or the PostgreSQL URL (``metering.ogc_rs_database`` opens it)."""
        return self.store.location

    def rows(self) -> list[MeteringRow]:
        """All ``metering`` rows, in insertion order."""
        return self.store.rows()

    def stored_lines(self) -> list[str]:
        """The stored lines exactly as received (untrimmed, backend included), in insertion order."""
        return self.store.stored_lines()

    def row_count(self) -> int:
        """Number of ``metering`` rows."""
        return self.store.row_count()

    def job_statuses(self) -> dict[str, str]:
        """``jobs_table`` status (ACCEPTED, RUNNING, SUCCESSFUL, FAILED) of every execution, by job id."""
        return self.store.job_statuses()

    def wait_for_rows(self, count: int, timeout_s: float = 5.0) -> bool:
        """Poll until at least ``count`` rows are stored (e.g. after a delayed answer); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.row_count() >= count:
                return True
            time.sleep(0.01)
        return self.row_count() >= count

    def _store(self, lines: Sequence[ParsedLogLine]) -> None:
        """Insert a validated batch in one transaction."""
        if self._stopping.is_set():
            raise LineRejectedError(503, "Server is shutting down")
        try:
            self.store.insert(lines)
        except Exception as error:  # the transaction rolled back: OGC RS answers 500, the job ends FAILED
            raise LineRejectedError(500, f"Failed during batch log insertion ({type(error).__name__})") from error

    # ---- endpoint logic (no sockets here) ----------------------------------------------------------

    def _token_request(self, headers: dict[str, str], body: bytes) -> _Response:
        with self._lock:
            self.token_requests += 1
        client_id, client_secret = headers.get("clientid", ""), headers.get("clientsecret", "")
        if not (
            hmac.compare_digest(client_id.encode(), self.client_id.encode())
            and hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        ):
            return _aaa_error(401, "Invalid client credentials")
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return _aaa_error(400, "Malformed JSON body")
        if not isinstance(request, dict):
            return _aaa_error(400, "Body must be a JSON object")
        problem = self._token_body_problem(request)
        if problem:
            return _aaa_error(400, problem)
        if not self.role_held:
            return _aaa_error(403, "Client does not hold role admin for this resource server")
        token = self.issue_token()
        with self._lock:
            expiry = int(self._tokens.get(token, 0))
        results = {"accessToken": token, "expiry": expiry, "server": self.rs_host}
        return _Response(200, {"type": "urn:dx:as:Success", "title": "Token created", "results": results})

    def _token_body_problem(self, request: dict[str, Any]) -> str | None:
        if request.get("itemType") != "resource_server":
            return "itemType must be resource_server"
        if request.get("role") != "admin":
            return "role must be admin"
        if request.get("itemId") != self.rs_host:
            return f"itemId {request.get('itemId')!r} is not a known resource server"
        return None

    def _authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        return scheme == "Bearer" and bool(token) and self.token_is_valid(token)

    def _execute(self, process_id: str, authorization: str, body: bytes) -> _Response:
        if not self._authorized(authorization):
            return _unauthorized()
        if process_id != self.process_id:
            return _ogc_error(404, "Process does not exist")
        try:
            inputs = _inputs_from_body(body)
        except LineRejectedError as error:
            return _ogc_error(error.status, error.description)
        job_id = str(uuid.uuid4())
        refused = self._start_job(job_id, process_id, inputs)
        if refused is not None:
            return refused
        job, status = self._run_job(job_id, inputs["logs"])
        return self._job_answer(job, status)

    def _job_answer(self, job: JobRecord, status: int) -> _Response:
        """201 ACCEPTED in async mode; else 200 with the count, or the error that failed the job."""
        job_id = job.job_id
        if self.mode == "async":
            return _Response(
                201,
                {
                    "jobId": job_id,
                    "processId": self.process_id,
                    "type": "PROCESS",
                    "status": "ACCEPTED",
                    "location": f"{self.base_url}/jobs/{job_id}",
                },
            )
        if job.status == "failed":
            return _ogc_error(status, job.message)
        plural = "" if job.logs_inserted == 1 else "s"
        return _Response(
            200,
            {
                "status": "successful",
                "message": f"{job.logs_inserted} log{plural} inserted into metering table",
                "logsInserted": job.logs_inserted,
                "sync": "true",
                "jobID": job_id,
                "location": f"{self.base_url}/jobs/{job_id}",
            },
        )

    def _start_job(self, job_id: str, process_id: str, inputs: dict[str, Any]) -> _Response | None:
        """Record the job (ACCEPTED) as OGC RS does before running anything; the 500 it answers when it cannot."""
        user_id = job_user_id(self.client_id)
        # jobs_table.input: the body's inputs object with what OGC RS's API layer adds to it.
        job_input = {**inputs, "processId": process_id, "userId": user_id, "role": "admin"}
        try:
            self.store.start_job(job_id, process_id, user_id, job_input)
        except Exception as error:  # e.g. PostgreSQL refusing a NUL in jsonb: OGC RS answers 500, stores nothing
            return _ogc_error(500, f"Failed to create a job ({type(error).__name__})")
        return None

    def _run_job(self, job_id: str, logs: Sequence[object]) -> tuple[JobRecord, int]:
        """Validate and store a batch; record the job and return it with the status a sync run answers."""
        self.store.set_job_status(job_id, "RUNNING", "Starting Audit Logs Ingestion Process")
        try:
            lines = validate_logs(logs)
            self._refuse_poisoned(lines)
            self._store(lines)
        except LineRejectedError as error:
            job, status = JobRecord(job_id, "failed", error.description), error.status
            self.store.set_job_status(job_id, "FAILED", error.description)
        else:
            job = JobRecord(job_id, "successful", f"{len(lines)} logs inserted", logs_inserted=len(lines))
            status = 200
            self.store.set_job_status(job_id, "SUCCESSFUL", f"Completed Audit Logs Ingestion - {job.message}")
        with self._lock:
            self.jobs[job_id] = job
        return job, status

    def _refuse_poisoned(self, lines: Sequence[ParsedLogLine]) -> None:
        for number, line in enumerate(lines, start=1):
            if line.item_id in self.poisoned_item_ids:
                raise LineRejectedError(400, f"Item is not allowed (entry #{number}: itemId={line.item_id!r})")

    def _job_status_response(self, job_id: str, authorization: str) -> _Response:
        if not self._authorized(authorization):
            return _unauthorized()
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None:
            return _ogc_error(404, "Job does not exist")
        return _Response(
            200,
            {"jobID": job.job_id, "status": job.status, "message": job.message, "logsInserted": job.logs_inserted},
        )

    def _process_list(self) -> _Response:
        control = "async-execute" if self.mode == "async" else "sync-execute"
        process = {
            "id": self.process_id,
            "title": PROCESS_TITLE,
            "description": "Ingests S3/MinIO audit log lines into the metering table.",
            "version": "1.0.0",
            "jobControlOptions": [control],
            "links": [{"href": self.process_url, "rel": "execute", "type": "application/json"}],
        }
        return _Response(200, {"processes": [process], "links": []})


def _unauthorized() -> _Response:
    return _ogc_error(401, "Invalid or expired token")


def _shutdown_socket(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        connection.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------

_EXECUTION_RE = re.compile(r"/processes/(?P<process_id>[^/]+)/execution")
_JOB_RE = re.compile(r"/jobs/(?P<job_id>[^/]+)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: ReferenceOgcRs) -> None:
        self.app = app
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client goes away (timeouts and drops are expected in tests)."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two sends; without TCP_NODELAY the body waits ~40 ms for the client's
    # delayed ACK. The real OGC RS (Vert.x) sets TCP_NODELAY too.
    disable_nagle_algorithm = True
    server_version = "ReferenceOgcRs/1.0"

    @property
    def app(self) -> ReferenceOgcRs:
        return cast(_Server, self.server).app

    def setup(self) -> None:
        super().setup()
        with self.app._lock:
            self.app._connections.add(self.connection)

    def finish(self) -> None:
        with self.app._lock:
            self.app._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        if self.app.verbose:
            super().log_message(format, *args)

    # ---- routing ---------------------------------------------------------------------------------

    def do_POST(self) -> None:
        """Token requests and process executions."""
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        execution = _EXECUTION_RE.fullmatch(path)
        if path.startswith(REDIRECT_SINK_PATH + "/"):
            self._answer_sink(body)
        elif path == TOKEN_PATH:
            headers = {name.lower(): value for name, value in self.headers.items()}
            self._answer_with_faults(
                self.app.token_faults, _aaa_error, lambda: self.app._token_request(headers, body), lines=0
            )
        elif execution:
            authorization = self.headers.get("Authorization", "")
            process_id = execution.group("process_id")
            self._answer_with_faults(
                self.app.faults,
                _ogc_error,
                lambda: self.app._execute(process_id, authorization, body),
                lines=_count_lines(body),
                latency_s=self.app.answer_latency_s,
            )
        else:
            self._answer(_ogc_error(404, f"No route for POST {path}"))

    def do_GET(self) -> None:
        """Process discovery and job status."""
        path = self.path.split("?", 1)[0]
        job = _JOB_RE.fullmatch(path)
        if path.rstrip("/") == "/processes":
            self._answer(self.app._process_list())
        elif job:
            self._answer(self.app._job_status_response(job.group("job_id"), self.headers.get("Authorization", "")))
        else:
            self._answer(_ogc_error(404, f"No route for GET {path}"))

    # ---- answering -------------------------------------------------------------------------------

    def _answer_with_faults(
        self,
        plan: FaultPlan,
        error: Callable[[int, str], _Response],
        compute: Callable[[], _Response],
        lines: int,
        latency_s: float = 0.0,
    ) -> None:
        fault = plan.next_fault()
        if fault.kind is FaultKind.DELAY and self.app._stopping.wait(fault.delay_s):
            self._drop(lines, fault)  # server closing during the delay
            return
        if fault.kind is FaultKind.DROP:
            self._drop(lines, fault)
            return
        if fault.kind is FaultKind.STATUS and fault.status is not None:
            response = error(fault.status, "Injected fault")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
        elif fault.kind is FaultKind.UNAUTHORIZED:
            response = error(401, "Token expired")
        elif fault.kind is FaultKind.REDIRECT and fault.status is not None:
            # The query stands for what a Location may carry (a signature, a token): it must never be logged.
            location = f"{self.app.base_url}{REDIRECT_SINK_PATH}{self.path}?X-Amz-Signature=never-log-this"
            response = _Response(fault.status, {"moved": True}, {"Location": location})
        else:
            response = compute()
        if fault.kind is FaultKind.STORE_THEN_DROP:
            self._drop(lines, fault)
            return
        # A slow OGC RS: what it stored is committed already; the answer comes late (or never, if it stops).
        wait_s = latency_s + (fault.delay_s if fault.kind is FaultKind.STORE_THEN_DELAY else 0.0)
        if wait_s > 0 and self.app._stopping.wait(wait_s):
            self._drop(lines, fault)
            return
        self._answer(response, lines, None if fault.kind is FaultKind.OK else fault.kind)

    def _answer_sink(self, body: bytes) -> None:
        """The target of every redirect: 200 to anything, a token or a stored batch, and nothing stored."""
        record = RequestRecord(self.command, self.path, 200, _count_lines(body), None, dict(self.headers.items()))
        with self.app._lock:
            self.app.redirected_requests.append(record)
        expiry = int(self.app._clock()) + 3600
        results = {"accessToken": "token-from-elsewhere", "expiry": expiry}
        self._answer(_Response(200, {"status": "successful", "logsInserted": record.lines, "results": results}))

    def _answer(self, response: _Response, lines: int = 0, fault: FaultKind | None = None) -> None:
        payload = json.dumps(response.body).encode()
        self._record(response.status, lines, fault)
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the client gave up (e.g. its timeout fired)

    def _drop(self, lines: int, fault: Fault) -> None:
        self._record(None, lines, fault.kind)
        self.close_connection = True
        _shutdown_socket(self.connection)

    def _record(self, status: int | None, lines: int, fault: FaultKind | None) -> None:
        record = RequestRecord(self.command, self.path, status, lines, fault)
        with self.app._lock:
            self.app.requests_log.append(record)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""


# --------------------------------------------------------------------------------------------------
# Standalone run
# --------------------------------------------------------------------------------------------------


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.reference_rs",
        description="Run the reference OGC Resource Server (AuditLogsIngestion + token endpoint) locally.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument("--db", default=":memory:", help="SQLite file for the metering table (default in memory)")
    parser.add_argument("--database-url", help="PostgreSQL URL: OGC RS's own tables there instead of SQLite")
    parser.add_argument("--answer-latency", type=float, default=0.0, help="seconds to answer after storing")
    parser.add_argument("--client-id", help="client id to accept (default: a new UUID)")
    parser.add_argument("--client-secret", help="client secret to accept (default: 40 new hex chars)")
    parser.add_argument("--rs-host", default=DEFAULT_RS_HOST, help="itemId the token endpoint accepts")
    parser.add_argument("--process-id", help="process UUID (default: a new UUID)")
    parser.add_argument("--async", dest="mode", action="store_const", const="async", default="sync")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted, after printing the URLs and credentials as environment variables."""
    args = _arguments(argv)
    server = ReferenceOgcRs(
        client_id=args.client_id,
        client_secret=args.client_secret,
        rs_host=args.rs_host,
        process_id=args.process_id,
        mode=args.mode,
        db_path=args.db,
        database_url=args.database_url,
        answer_latency_s=args.answer_latency,
        host=args.host,
        port=args.port,
        verbose=args.verbose,
    )
    with server:
        print(f"# reference OGC RS on {server.base_url} ({server.mode}, db {args.database_url or args.db})")
        print(f"PROCESS_API_URL={server.process_url}")
        print(f"AUTH_URL={server.token_url}")
        print("OGC_AUDIT_ALLOW_HTTP=1")  # it speaks plain http: the functions refuse http URLs without this
        print(f"AUTH_ITEM_ID={server.rs_host}")
        print("AUTH_ITEM_TYPE=resource_server")
        print("AUTH_ROLE=admin")
        print(f"CLIENT_ID={server.client_id}")
        print(f"CLIENT_SECRET={server.client_secret}", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())  # `kill` stops it cleanly too
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        print("# stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
