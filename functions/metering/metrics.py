"""Custom CloudWatch metrics of both flows, published in embedded metric format (EMF) through Powertools Metrics.

The handlers own one ``Metrics`` object per process, made by :func:`flow_metrics`, flush it once per invocation
(``@metrics.log_metrics``) and call the ``record_*`` functions below with plain values. Names and dimensions come
from :mod:`metering.metric_names`, which the alarms and the dashboard of ``infra/monitoring.py`` read too.

Totals (EntriesSeen, Metered, Filtered, Quarantined, DeliveryFailures, ...) go into the invocation's one EMF
document. The breakdowns per filter/quarantine ``reason`` and per failure ``kind`` need a dimension value of their
own, and an EMF document carries one value per dimension, so each breakdown is one small extra document printed
at once. A reason dimension rather than a metric name per reason: the dashboard finds every reason with one SEARCH
expression, and CloudWatch bills the same either way (one custom metric per reason that actually occurs).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from metering import env_names
from metering.errors import ConfigurationError, RedirectError, UncertainDeliveryError, UncertainPendingError
from metering.exactly_once import InFlightError, OnceReport
from metering.metric_names import (
    DEFAULT_NAMESPACE,
    DELIVERY_FAILURE_KINDS,
    DELIVERY_FAILURES,
    DELIVERY_PATHS,
    DELIVERY_REQUESTS,
    ENTRIES_SEEN,
    FILTERED,
    FLOW,
    KIND,
    KIND_CONFIGURATION,
    KIND_IN_FLIGHT,
    KIND_REDIRECT,
    KIND_UNAVAILABLE,
    KIND_UNCERTAIN,
    LINE_AGE,
    LINES_ALREADY_DELIVERED,
    LINES_DELIVERED,
    LINES_DELIVERED_BY_PATH,
    LINES_FOUND_STORED,
    LINES_POSSIBLY_DUPLICATED,
    LINES_REJECTED,
    LINES_UNCERTAIN,
    LOG_FILES_READ,
    METERED,
    OGC_RS_LATENCY,
    PATH,
    QUARANTINED,
    REASON,
    REQUESTS_ALREADY_DELIVERED,
    SERVICE_OF_FLOW,
    TOKEN_FETCHES,
    WEBHOOK_AUTH_FAILURES,
    DeliveryFailureKind,
    DeliveryPath,
    Flow,
)
from metering.ogc_rs import DeliveryReport
from metering.outcomes import OutcomeTally, Reason
from metering.uncertain import UncertainTally

# A health check or a refused body has nothing to publish; Powertools would warn about it on every such call.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

__all__ = [
    "delivery_failure_kind",
    "flow_metrics",
    "record_auth_failure",
    "record_delivery",
    "record_delivery_failure",
    "record_line_ages",
    "record_lines_by_path",
    "record_log_files",
    "record_outcomes",
    "record_rejected_lines",
    "record_token_fetches",
    "record_uncertain",
]


def flow_metrics(flow: Flow, namespace: str | None = None) -> Metrics:
    """The Metrics of one flow: namespace from POWERTOOLS_METRICS_NAMESPACE (default OgcAuditIngest),
    dimensions ``flow`` and ``service`` fixed here so they match the alarms whatever the environment says.

    The object has state of its own (a plain ``Metrics()`` shares one metric set per process, which would mix the
    two flows when both run in one process, as ``ogc-audit demo`` does).
    """
    if flow not in SERVICE_OF_FLOW:
        raise ValueError(f"unknown flow {flow!r}; expected one of {sorted(SERVICE_OF_FLOW)}")
    provider = AmazonCloudWatchEMFProvider(
        namespace=namespace or os.environ.get(env_names.POWERTOOLS_METRICS_NAMESPACE, "").strip() or DEFAULT_NAMESPACE,
        service=SERVICE_OF_FLOW[flow],
        default_dimensions={FLOW: flow},
    )
    return Metrics(provider=provider)


def _count(metrics: Metrics, name: str, value: float) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def _publish_breakdown(metrics: Metrics, name: str, dimension: str, counts: Mapping[str, int]) -> None:
    """One EMF document per non-zero count: ``name`` with the flow's dimensions plus ``dimension``=key."""
    provider = metrics.provider
    flow = provider.default_dimensions.get(FLOW)
    if flow is None:
        raise ValueError("metrics has no flow dimension: build it with metering.metrics.flow_metrics(flow)")
    for value, count in sorted(counts.items()):
        if count <= 0:
            continue
        document = AmazonCloudWatchEMFProvider(
            namespace=provider.namespace,
            service=provider.service,
            default_dimensions={FLOW: flow, dimension: value},
        )
        document.add_metric(name=name, unit=MetricUnit.Count, value=count)
        document.flush_metrics()


def record_outcomes(metrics: Metrics, tally: OutcomeTally) -> None:
    """EntriesSeen, Metered, Filtered and Quarantined (totals), then Filtered/Quarantined per ``reason``."""
    _count(metrics, ENTRIES_SEEN, tally.entries)
    _count(metrics, METERED, tally.metered)
    _count(metrics, FILTERED, tally.filtered.total())
    _count(metrics, QUARANTINED, tally.quarantined.total())
    _publish_breakdown(metrics, FILTERED, REASON, tally.filtered)
    _publish_breakdown(metrics, QUARANTINED, REASON, tally.quarantined)


def record_rejected_lines(metrics: Metrics, lines: int) -> None:
    """Quarantined (total and reason ``rejected_by_ogc_rs``) for lines OGC RS refused after they were counted as
    metered by another function: the MinIO deliver function. (The S3 flow already counts them in its tally.)"""
    if lines <= 0:
        return
    _count(metrics, QUARANTINED, lines)
    _publish_breakdown(metrics, QUARANTINED, REASON, {Reason.REJECTED_BY_OGC_RS.value: lines})


def record_log_files(metrics: Metrics, files: int) -> None:
    """LogFilesRead: CloudTrail log files read from S3 (digest and Insights files are not counted)."""
    _count(metrics, LOG_FILES_READ, files)


def record_delivery(metrics: Metrics, report: DeliveryReport | OnceReport) -> None:
    """LinesDelivered, LinesRejected, DeliveryRequests, OgcRsLatency (ms per request), TokenFetches and, for an
    exactly-once delivery, LinesAlreadyDelivered (lines the ledger showed as sent before: replays, redeliveries)."""
    delivery = report.delivery if isinstance(report, OnceReport) else report
    _count(metrics, LINES_DELIVERED, delivery.delivered)
    _count(metrics, LINES_REJECTED, len(delivery.rejected))
    _count(metrics, DELIVERY_REQUESTS, delivery.requests)
    if delivery.requests:
        metrics.add_metric(
            name=OGC_RS_LATENCY,
            unit=MetricUnit.Milliseconds,
            value=round(delivery.seconds * 1000 / delivery.requests, 1),
        )
    if isinstance(report, OnceReport):
        _count(metrics, LINES_ALREADY_DELIVERED, report.already_delivered)
    record_token_fetches(metrics, delivery.token_fetches)


def record_lines_by_path(metrics: Metrics, path: DeliveryPath, delivered: int, known_requests: int) -> None:
    """LinesDeliveredByPath and RequestsAlreadyDelivered with ``path`` = event or log_file (zero counts are not
    published): how many downloads each path brought first, and how many it found delivered by another input."""
    if path not in DELIVERY_PATHS:
        raise ValueError(f"unknown delivery path {path!r}; expected one of {DELIVERY_PATHS}")
    _publish_breakdown(metrics, LINES_DELIVERED_BY_PATH, PATH, {path: delivered})
    _publish_breakdown(metrics, REQUESTS_ALREADY_DELIVERED, PATH, {path: known_requests})


# EMF takes at most 100 values per metric in one document; an even sample keeps the percentiles' shape.
MAX_AGE_VALUES = 100


def record_line_ages(metrics: Metrics, path: DeliveryPath, timestamps: Sequence[str], now: datetime) -> None:
    """LineAge (seconds, with ``path``): how old each delivered line's download was at delivery (``now``), from
    its RFC 3339 timestamp; at most MAX_AGE_VALUES evenly spaced values of the sorted ages."""
    if path not in DELIVERY_PATHS:
        raise ValueError(f"unknown delivery path {path!r}; expected one of {DELIVERY_PATHS}")
    ages = sorted(max(0.0, (now - datetime.fromisoformat(stamp)).total_seconds()) for stamp in timestamps)
    if not ages:
        return
    step = max(1, -(-len(ages) // MAX_AGE_VALUES))
    provider = metrics.provider
    document = AmazonCloudWatchEMFProvider(
        namespace=provider.namespace,
        service=provider.service,
        default_dimensions={FLOW: provider.default_dimensions[FLOW], PATH: path},
    )
    for age in ages[::step]:
        document.add_metric(name=LINE_AGE, unit=MetricUnit.Seconds, value=round(age, 3))
    document.flush_metrics()


def delivery_failure_kind(error: BaseException) -> DeliveryFailureKind:
    """The kind of a delivery failure: in_flight, uncertain, redirect, configuration, or unavailable (any other
    error)."""
    if isinstance(error, InFlightError):
        return KIND_IN_FLIGHT
    if isinstance(error, UncertainDeliveryError | UncertainPendingError):
        return KIND_UNCERTAIN
    if isinstance(error, RedirectError):
        return KIND_REDIRECT
    if isinstance(error, ConfigurationError):
        return KIND_CONFIGURATION
    return KIND_UNAVAILABLE


def record_delivery_failure(metrics: Metrics, kind: DeliveryFailureKind) -> None:
    """DeliveryFailures: one input (log file, queue message) not delivered now; total and per ``kind``."""
    if kind not in DELIVERY_FAILURE_KINDS:
        raise ValueError(f"unknown delivery failure kind {kind!r}; expected one of {DELIVERY_FAILURE_KINDS}")
    _count(metrics, DELIVERY_FAILURES, 1)
    _publish_breakdown(metrics, DELIVERY_FAILURES, KIND, {kind: 1})


def record_token_fetches(metrics: Metrics, fetches: int) -> None:
    """TokenFetches: tokens fetched from the auth server (about one per 12 hours per warm process is normal)."""
    _count(metrics, TOKEN_FETCHES, fetches)


def record_auth_failure(metrics: Metrics) -> None:
    """WebhookAuthFailures: one request with a missing or wrong Authorization header reached the function."""
    _count(metrics, WEBHOOK_AUTH_FAILURES, 1)


def record_uncertain(metrics: Metrics, tally: UncertainTally) -> None:
    """LinesUncertain, LinesFoundStored and LinesPossiblyDuplicated (each only when not zero): what became of
    requests whose answer was lost (``metering.uncertain``). The alarm reads LinesPossiblyDuplicated."""
    for name, lines in (
        (LINES_UNCERTAIN, tally.uncertain),
        (LINES_FOUND_STORED, tally.found_stored),
        (LINES_POSSIBLY_DUPLICATED, tally.possible_duplicates),
    ):
        if lines > 0:
            _count(metrics, name, lines)
