"""The MinIO audit webhook, free of any framework: authenticate, limit, parse, meter, hand on, answer.

The Lambda handler and the standalone server both wrap ``Webhook.handle``; only the sink differs (the SQS
delivery queue, or OGC RS directly). MinIO retries any non-2xx answer forever and gives up on a target that
does not answer within a few seconds, so every authenticated, well-formed body gets 2xx even when all its
entries are filtered, and only a downstream outage answers 503 (MinIO keeps the body and re-sends it).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from metering import env_names
from metering.line import MeteredDownload
from metering.outcomes import OutcomeKind, OutcomeTally, Reason, Skip
from metering.settings import DEFAULT_BATCH_MAX_LINES, MAX_BATCH_MAX_LINES, SettingsError, positive_int
from minio_relay.audit_entry import classify_entry
from minio_relay.body import BodyError, ParsedBody, parse_body
from minio_relay.routes import WEBHOOK_PATH

logger = logging.getLogger(__name__)

HEALTH_PATHS = frozenset({"/", ""})
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
# A shorter token can be guessed; the stacks generate 48 characters.
MIN_TOKEN_CHARS = 16
_BEARER = "bearer "
# Excerpts of a quarantined entry leave out the request and response headers it carries.
_HEADER_FIELDS = ("requestHeader", "responseHeader")
_EXCERPT_CHARS = 200
# Quarantined entries of one body logged one by one; the rest are counted by reason in one more line.
MAX_LOGGED_ENTRIES = 10

_encode = msgspec.json.Encoder().encode


class DownstreamUnavailable(RuntimeError):
    """The sink cannot take the lines now (queue or OGC RS down): answer 503 so MinIO re-sends."""


Sink = Callable[[Sequence[MeteredDownload]], object]
"""Takes the metered downloads of one body; raises DownstreamUnavailable when it cannot."""

TokenSource = Callable[[], str]
"""Returns the configured webhook token (cached by the caller; re-read after rotation)."""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """The webhook's own environment, read once at start-up."""

    token_secret_arn: str | None
    local_token: str | None = field(repr=False)
    max_body_bytes: int
    batch_max_lines: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        """``WEBHOOK_TOKEN_SECRET_ARN`` (or ``WEBHOOK_TOKEN`` locally), ``MAX_BODY_BYTES``, ``BATCH_MAX_LINES``."""
        env = os.environ if env is None else env
        arn = env.get(env_names.WEBHOOK_TOKEN_SECRET_ARN, "").strip() or None
        local = env.get(env_names.WEBHOOK_TOKEN, "").strip() or None
        if arn is None and local is None:
            raise SettingsError(
                f"environment variable {env_names.WEBHOOK_TOKEN_SECRET_ARN} is required "
                f"(or {env_names.WEBHOOK_TOKEN} for local runs)"
            )
        settings = cls(
            token_secret_arn=arn,
            local_token=None if arn else local,
            max_body_bytes=positive_int(env, env_names.MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, 2**31),
            batch_max_lines=positive_int(env, env_names.BATCH_MAX_LINES, DEFAULT_BATCH_MAX_LINES, MAX_BATCH_MAX_LINES),
        )
        if settings.local_token is not None and token_problem(settings.local_token):
            raise SettingsError(f"environment variable {env_names.WEBHOOK_TOKEN} {token_problem(settings.local_token)}")
        return settings

    def token_source(self) -> TokenSource:
        """The token, from Secrets Manager cached for five minutes (a rotation takes effect), or as given."""
        arn, local = self.token_secret_arn, self.local_token
        if arn is None:
            assert local is not None
            return lambda: local

        def from_secret() -> str:
            from metering.runtime import secret_string

            return secret_string(arn)

        return from_secret


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """An HTTP request as the webhook sees it."""

    method: str
    path: str
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    declared_length: int | None = None
    """Content-Length when the server did not read a body that was too large."""


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """Status and a small JSON document."""

    status: int
    document: Mapping[str, object]
    tally: OutcomeTally | None = None
    """The outcomes of an accepted body (for metrics); not part of the answer."""
    configuration_error: bool = False
    """Refused because the webhook itself is misconfigured (a weak token): alarmed, not MinIO's fault."""

    def body(self) -> bytes:
        """The document as JSON bytes."""
        return _encode(self.document)


def _error(status: int, message: str) -> WebhookResponse:
    return WebhookResponse(status, {"error": message})


def _without_bearer(value: str) -> str:
    value = value.strip()
    if value.lower() == _BEARER.strip():  # "Bearer " stripped: a prefix with nothing after it
        return ""
    return value[len(_BEARER) :].strip() if value[: len(_BEARER)].lower() == _BEARER else value


def token_problem(token: str) -> str | None:
    """Why a configured webhook token must not be used, as the end of a sentence; None when it is strong enough.

    Empty after ``Bearer `` would let ``Authorization: Bearer`` in; a short token can be guessed.
    """
    length = len(_without_bearer(token))
    if length >= MIN_TOKEN_CHARS:
        return None
    return f"must hold at least {MIN_TOKEN_CHARS} characters after any 'Bearer ' prefix, got {length}"


def authenticate(presented: str | None, token: str) -> bool:
    """True when ``presented`` equals the token, either one with or without a ``Bearer `` prefix.

    MinIO sends its ``auth_token`` verbatim and people set it with or without ``Bearer``; the comparison runs
    in constant time so the token cannot be guessed byte by byte.
    """
    expected = _without_bearer(token)
    if presented is None or not expected:
        return False
    return hmac.compare_digest(
        _without_bearer(presented).encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _entry_excerpt(entry: object) -> str:
    if isinstance(entry, dict):
        entry = {key: value for key, value in entry.items() if key not in _HEADER_FIELDS}
    try:
        return _encode(entry)[: _EXCERPT_CHARS * 4].decode("utf-8", "replace")[:_EXCERPT_CHARS]
    except (TypeError, ValueError):
        return repr(entry)[:_EXCERPT_CHARS]


@dataclass(slots=True)
class QuarantineLog:
    """The log of one body's quarantined entries, bounded: the first ``limit`` one line each (reason, detail,
    excerpt), then one line counting the rest by reason. A 4 MiB body of 2-byte bad lines would otherwise write two
    million log records (~150 MB of log text, half a minute) on a 10 s function."""

    limit: int = MAX_LOGGED_ENTRIES
    logged: Counter[str] = field(default_factory=Counter)

    @property
    def has_room(self) -> bool:
        """Whether one more entry is logged on its own line."""
        return self.logged.total() < self.limit

    def entry(self, reason: Reason, detail: str, excerpt: str) -> None:
        """Log one quarantined entry (the caller asked ``has_room``)."""
        self.logged[reason.value] += 1
        logger.warning("quarantined %s: %s: %s", reason, detail, excerpt)

    def close(self, quarantined: Mapping[str, int]) -> None:
        """One line for the body's quarantined entries (``quarantined``: counts by reason) not logged on their own."""
        rest = {reason: count - self.logged[reason] for reason, count in sorted(quarantined.items())}
        rest = {reason: count for reason, count in rest.items() if count > 0}
        if rest:
            logger.warning(
                "quarantined %d more entries of this body, not logged one by one: %s", sum(rest.values()), rest
            )


def meter_entries(parsed: ParsedBody, tally: OutcomeTally, seen: set[str] | None = None) -> list[MeteredDownload]:
    """Judge every entry of a body; count each outcome and log a bounded sample of the quarantined ones.

    MinIO re-sends a batch it thinks failed, so the same request can appear twice: it is metered once.
    ``seen`` holds the keys already metered (a file read in parts); by default the body alone is considered.
    A body can hold two million entries: outcomes are counted in a local Counter and added to ``tally`` once.
    """
    quarantine_log = QuarantineLog()
    skipped: Counter[tuple[OutcomeKind, Reason]] = Counter()
    skipped["quarantined", Reason.BAD_JSON] = parsed.bad_line_count
    for bad in parsed.bad_lines:
        if quarantine_log.has_room:
            quarantine_log.entry(Reason.BAD_JSON, f"body line {bad.number}: {bad.error}", bad.excerpt)
    downloads: list[MeteredDownload] = []
    seen = set() if seen is None else seen
    for entry in parsed.entries:
        outcome = classify_entry(entry)
        if isinstance(outcome, Skip):
            skipped[outcome.kind, outcome.reason] += 1
            if outcome.kind == "quarantined" and quarantine_log.has_room:
                quarantine_log.entry(outcome.reason, outcome.detail, _entry_excerpt(entry))
        elif outcome.event_id in seen:
            skipped["filtered", Reason.DUPLICATE_EVENT] += 1
        else:
            seen.add(outcome.event_id)
            tally.metered += 1
            downloads.append(outcome)
    for (kind, reason), count in skipped.items():
        if count:
            tally.count(Skip(kind, reason), count)
    quarantine_log.close({reason.value: count for (kind, reason), count in skipped.items() if kind == "quarantined"})
    return downloads


def summary(tally: OutcomeTally) -> dict[str, int]:
    """The counts MinIO (and a person with curl) gets back."""
    return {
        "entries": tally.entries,
        "metered": tally.metered,
        "filtered": tally.filtered.total(),
        "quarantined": tally.quarantined.total(),
    }


@dataclass(slots=True)
class Webhook:
    """The webhook with its dependencies: where the token comes from and where metered lines go."""

    token: TokenSource
    sink: Sink
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    auth_failures: int = 0
    """Refused requests since start (the log line carries it, so a metric filter can alarm on it)."""

    def handle(self, request: WebhookRequest) -> WebhookResponse:
        """Route: ``GET /`` health, POST or PUT ``/auditlogs/processor`` the audit body."""
        path = request.path.rstrip("/")
        method = request.method.upper()
        if path == WEBHOOK_PATH:
            if method in ("POST", "PUT"):
                return self.receive(request)
            return _error(405, f"{WEBHOOK_PATH} accepts POST and PUT")
        if path in HEALTH_PATHS:
            if method in ("GET", "HEAD"):
                return WebhookResponse(200, {"status": "ok"})
            return _error(405, "/ accepts GET")
        return _error(404, "not found")

    def receive(self, request: WebhookRequest) -> WebhookResponse:
        """Authenticate and process one audit body."""
        refused = self.refuse_unauthenticated(request.headers.get("authorization"))
        if refused is not None:
            return refused
        length = len(request.body) if request.declared_length is None else request.declared_length
        if length > self.max_body_bytes or len(request.body) > self.max_body_bytes:
            logger.warning("refused a body of %d bytes (limit %d)", length, self.max_body_bytes)
            return _error(413, f"body larger than {self.max_body_bytes} bytes; lower MinIO's batch_size")
        try:
            parsed = parse_body(request.body)
        except BodyError as error:
            logger.warning("refused a body: %s", error)
            return _error(400, str(error))
        tally = OutcomeTally()
        downloads = meter_entries(parsed, tally)
        if downloads:
            try:
                self.sink(downloads)
            except DownstreamUnavailable as error:
                logger.error("could not pass on %d metered lines, answering 503: %s", len(downloads), error)
                return _error(503, "metering backend unavailable; retry later")
        logger.info("audit body %s", tally.as_dict())
        return WebhookResponse(200, summary(tally), tally)

    def refuse_unauthenticated(self, presented: str | None) -> WebhookResponse | None:
        """The answer to a request whose Authorization header does not carry the token (or when the token is
        unusable); None when it does. A server calls it before reading the body."""
        try:
            token = self.token()
        except Exception as error:  # the secret store is down or misconfigured: MinIO must re-send later
            logger.error("webhook token unavailable, answering 503: %s", type(error).__name__)
            return _error(503, "webhook token unavailable; retry later")
        problem = token_problem(token)
        if problem is not None:
            # Every request is refused (MinIO keeps the bodies and re-sends them) until the secret is fixed.
            logger.error("configuration error: the webhook token secret %s; every request is refused", problem)
            return WebhookResponse(503, {"error": "webhook token misconfigured; retry later"}, configuration_error=True)
        if authenticate(presented, token):
            return None
        # The presented value is never logged: it may be a real token configured on the wrong target.
        self.auth_failures += 1
        logger.warning(
            "webhook authentication failed (%s Authorization header); %d failures since start",
            "missing" if presented is None else "wrong",
            self.auth_failures,
        )
        return _error(401, "missing or wrong Authorization header")
