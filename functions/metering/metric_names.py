"""Names of the custom CloudWatch metrics, shared by the functions that publish them and the alarms that read them.

Plain strings and no imports beyond the standard library: ``infra/monitoring.py`` imports this module at synthesis
time, and every Lambda bundle carries it inside the ``metering`` package. A metric renamed here is renamed on both
sides, so an alarm can never watch a metric that nobody publishes.

Every metric carries the dimensions ``flow`` and ``service`` (Powertools adds ``service`` to every EMF document);
the per-reason and per-kind breakdowns carry one more dimension, ``reason`` or ``kind``.
"""

from __future__ import annotations

from typing import Final, Literal

DEFAULT_NAMESPACE: Final = "OgcAuditIngest"

# Dimensions.
FLOW: Final = "flow"
SERVICE: Final = "service"
REASON: Final = "reason"
KIND: Final = "kind"
PATH: Final = "path"

Flow = Literal["aws_s3", "minio"]
FLOW_AWS_S3: Final = "aws_s3"
FLOW_MINIO: Final = "minio"
# POWERTOOLS_SERVICE_NAME of the functions of each flow (the stacks set the same names).
SERVICE_OF_FLOW: Final[dict[str, str]] = {FLOW_AWS_S3: "s3_audit", FLOW_MINIO: "minio_relay"}

# Inputs and outcomes (Count). Filtered and Quarantined are published twice: as a total per flow (alarms read
# it) and per reason with the extra ``reason`` dimension (the dashboard breaks it down).
LOG_FILES_READ: Final = "LogFilesRead"
ENTRIES_SEEN: Final = "EntriesSeen"
METERED: Final = "Metered"
FILTERED: Final = "Filtered"
QUARANTINED: Final = "Quarantined"

# Delivery to OGC RS.
LINES_DELIVERED: Final = "LinesDelivered"
LINES_REJECTED: Final = "LinesRejected"
LINES_ALREADY_DELIVERED: Final = "LinesAlreadyDelivered"
DELIVERY_REQUESTS: Final = "DeliveryRequests"
OGC_RS_LATENCY: Final = "OgcRsLatency"
"""Milliseconds per OGC RS request of one delivery (the client's retries and back-off included)."""
DELIVERY_FAILURES: Final = "DeliveryFailures"
"""Total per flow, and per ``kind`` (one of DELIVERY_FAILURE_KINDS)."""
TOKEN_FETCHES: Final = "TokenFetches"  # noqa: S105 (a metric name, not a credential)

# Uncertain requests (metering.uncertain): OGC RS's answer was lost, or was a 500/502/504.
LINES_UNCERTAIN: Final = "LinesUncertain"
"""Lines of requests that became uncertain: never re-sent on a hunch, resolved on the input's next try."""
LINES_FOUND_STORED: Final = "LinesFoundStored"
"""Lines of uncertain requests that OGC RS's database showed stored: settled without sending."""
LINES_POSSIBLY_DUPLICATED: Final = "LinesPossiblyDuplicated"
"""Lines sent once more after the grace period without OGC RS's database to ask: each may be stored twice
(an alarm; ``ogc-audit reconcile`` confirms)."""

# AWS S3 flow, per ``path`` (how the download reached s3_audit): with eventBridge on, an event delivers a line within
# seconds and the log file later finds its request delivered; a log-file line delivered fresh is one EventBridge
# missed (best effort) or had not delivered yet.
LINES_DELIVERED_BY_PATH: Final = "LinesDeliveredByPath"
"""Lines delivered to OGC RS, per ``path`` (PATH_EVENT, PATH_LOG_FILE)."""
REQUESTS_ALREADY_DELIVERED: Final = "RequestsAlreadyDelivered"
"""Lines not sent because an earlier input (event, log file, access log) delivered the same S3 request, per path."""
LINE_AGE: Final = "LineAge"
"""Seconds from a download (its record's time) to the delivery of its line, per ``path``: the end-to-end latency."""
DeliveryPath = Literal["event", "log_file"]
PATH_EVENT: Final = "event"
PATH_LOG_FILE: Final = "log_file"
DELIVERY_PATHS: Final = (PATH_EVENT, PATH_LOG_FILE)

# MinIO webhook.
WEBHOOK_AUTH_FAILURES: Final = "WebhookAuthFailures"

DeliveryFailureKind = Literal["unavailable", "configuration", "redirect", "in_flight", "uncertain"]
KIND_UNAVAILABLE: Final = "unavailable"
"""OGC RS or the auth server down, throttling or timing out: SQS retries the input."""
KIND_CONFIGURATION: Final = "configuration"
"""The auth server or OGC RS refuses the configured identity or URL: an operator must fix the configuration."""
KIND_REDIRECT: Final = "redirect"
"""The auth server or OGC RS answered a redirect (3xx), never followed: the configured URL must be corrected."""
KIND_IN_FLIGHT: Final = "in_flight"
"""Another invocation holds some of the same entries in the delivery ledger: retried later, nothing is lost."""
KIND_UNCERTAIN: Final = "uncertain"
"""A request's answer was lost (or was a 500/502/504), or the input waits for such a request to be resolved: retried
when it can be resolved, nothing sent twice on a hunch."""
DELIVERY_FAILURE_KINDS: Final = (KIND_UNAVAILABLE, KIND_CONFIGURATION, KIND_REDIRECT, KIND_IN_FLIGHT, KIND_UNCERTAIN)


def flow_dimensions(flow: str) -> dict[str, str]:
    """The dimensions every metric of ``flow`` carries: ``{"flow": ..., "service": ...}``."""
    if flow not in SERVICE_OF_FLOW:
        raise ValueError(f"unknown flow {flow!r}; expected one of {sorted(SERVICE_OF_FLOW)}")
    return {FLOW: flow, SERVICE: SERVICE_OF_FLOW[flow]}
