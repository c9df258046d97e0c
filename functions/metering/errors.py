"""Failures of delivery to OGC RS, split by what the caller should do about them."""

from __future__ import annotations

from collections.abc import Sequence


class DeliveryError(Exception):
    """Lines could not be delivered now (OGC RS or the auth server down, throttling, timeouts).

    The caller keeps the input for a later try: the SQS message fails, the webhook answers 503.
    """


class ConfigurationError(DeliveryError):
    """The auth server or OGC RS refuses the configured identity or URL; retrying cannot help.

    Still a DeliveryError, so the input is kept (and ends in a dead-letter queue) until an operator fixes it.
    """


class RedirectError(ConfigurationError):
    """The auth server or OGC RS answered a redirect (3xx): the configured URL is wrong.

    Never followed: a redirect would carry the client secret or the lines to another host, and its 200 there
    would look like a delivery. The message names the Location host only, never its path or query.
    """


class UncertainDeliveryError(DeliveryError):
    """OGC RS may or may not have stored one request: its answer never came (a read timeout, a connection lost
    after the body was sent) or was a 500/502/504.

    Never re-sent on a hunch: the request's lines become *uncertain* until OGC RS's database or a grace period
    settles them (``metering.exactly_once``). ``logs`` is the request's ``inputs.logs`` array exactly as sent, in
    order; ``positions`` are those lines' positions in the ``lines`` given to ``OgcRsClient.deliver``; ``sent_at``
    is when it was sent (epoch seconds). ``retry_after_s``, when set, is how long the input should wait before the
    next try can resolve it.
    """

    def __init__(self, message: str, *, logs: Sequence[str], positions: Sequence[int], sent_at: float) -> None:
        super().__init__(message)
        self.logs = tuple(logs)
        self.positions = tuple(positions)
        self.sent_at = sent_at
        self.retry_after_s: float | None = None


class UncertainPendingError(DeliveryError):
    """Some keys wait for an uncertain request to be resolved (its grace period is running, OGC RS is still running
    it, or another resolver holds it): the input is tried again after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s: float | None = retry_after_s
