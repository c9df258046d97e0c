"""The custom metrics as CloudWatch would read them: the EMF documents Powertools prints to stdout."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools import Metrics

from metering import env_names
from metering import metric_names as names
from metering.errors import (
    ConfigurationError,
    DeliveryError,
    RedirectError,
    UncertainDeliveryError,
    UncertainPendingError,
)
from metering.exactly_once import InFlightError, OnceReport
from metering.metrics import (
    delivery_failure_kind,
    flow_metrics,
    record_auth_failure,
    record_delivery,
    record_delivery_failure,
    record_log_files,
    record_outcomes,
    record_rejected_lines,
    record_token_fetches,
    record_uncertain,
)
from metering.ogc_rs import DeliveryReport, RejectedLine
from metering.outcomes import OutcomeTally, Reason, Skip
from metering.uncertain import UncertainTally

Document = dict[str, Any]


@pytest.fixture(autouse=True)
def _metrics_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("POWERTOOLS_DEV", "POWERTOOLS_METRICS_DISABLED", env_names.POWERTOOLS_METRICS_NAMESPACE):
        monkeypatch.delenv(variable, raising=False)
    # The functions' own service name must not leak into the dimensions the alarms expect.
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "something_else")


def emitted(capsys: pytest.CaptureFixture[str]) -> list[Document]:
    """Every EMF document printed since the last call."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def metric_definitions(document: Document) -> dict[str, str]:
    """Metric name -> unit of one EMF document."""
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    return {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}


def dimension_sets(document: Document) -> list[dict[str, str]]:
    """The dimension sets of one EMF document with their values."""
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    return [{key: document[key] for key in keys} for keys in directive["Dimensions"]]


def namespace(document: Document) -> str:
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    return str(directive["Namespace"])


def by_dimensions(documents: list[Document]) -> dict[tuple[tuple[str, str], ...], Document]:
    return {tuple(sorted(dimension_sets(d)[0].items())): d for d in documents}


S3_DIMENSIONS = {"flow": "aws_s3", "service": "s3_audit"}
MINIO_DIMENSIONS = {"flow": "minio", "service": "minio_relay"}


def key(**dimensions: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(dimensions.items()))


def test_outcomes_publish_totals_and_one_document_per_reason(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = flow_metrics("aws_s3")
    tally = OutcomeTally(metered=7)
    tally.count(Skip.filtered(Reason.NOT_PRESIGNED), 3)
    tally.count(Skip.filtered(Reason.FAILED_REQUEST), 2)
    tally.count(Skip.quarantined(Reason.BAD_JSON))

    record_outcomes(metrics, tally)
    metrics.flush_metrics()

    documents = by_dimensions(emitted(capsys))
    assert set(documents) == {
        key(**S3_DIMENSIONS),
        key(**S3_DIMENSIONS, reason="not_presigned"),
        key(**S3_DIMENSIONS, reason="failed_request"),
        key(**S3_DIMENSIONS, reason="bad_json"),
    }
    totals = documents[key(**S3_DIMENSIONS)]
    assert namespace(totals) == "OgcAuditIngest"
    assert metric_definitions(totals) == {
        "EntriesSeen": "Count",
        "Metered": "Count",
        "Filtered": "Count",
        "Quarantined": "Count",
    }
    assert dimension_sets(totals) == [S3_DIMENSIONS]
    assert (totals["EntriesSeen"], totals["Metered"], totals["Filtered"], totals["Quarantined"]) == (
        [13.0],
        [7.0],
        [5.0],
        [1.0],
    )
    not_presigned = documents[key(**S3_DIMENSIONS, reason="not_presigned")]
    assert metric_definitions(not_presigned) == {"Filtered": "Count"}
    assert not_presigned["Filtered"] == [3.0]
    assert documents[key(**S3_DIMENSIONS, reason="failed_request")]["Filtered"] == [2.0]
    bad_json = documents[key(**S3_DIMENSIONS, reason="bad_json")]
    assert metric_definitions(bad_json) == {"Quarantined": "Count"}
    assert bad_json["Quarantined"] == [1.0]


def test_an_empty_tally_publishes_zero_totals_and_no_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = flow_metrics("minio")
    record_outcomes(metrics, OutcomeTally())
    metrics.flush_metrics()

    (document,) = emitted(capsys)
    assert dimension_sets(document) == [MINIO_DIMENSIONS]
    assert [document[name] for name in ("EntriesSeen", "Metered", "Filtered", "Quarantined")] == [[0.0]] * 4


def test_outcomes_of_several_inputs_add_up_in_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = flow_metrics("aws_s3")
    record_outcomes(metrics, OutcomeTally(metered=2))
    record_outcomes(metrics, OutcomeTally(metered=5))
    record_log_files(metrics, 2)
    metrics.flush_metrics()

    (document,) = emitted(capsys)
    # CloudWatch sums the values of one document: 7 metered in this invocation.
    assert document["Metered"] == [2.0, 5.0]
    assert document["LogFilesRead"] == [2.0]
    assert metric_definitions(document)["LogFilesRead"] == "Count"


def test_delivery_report_publishes_lines_requests_and_latency_per_request(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = flow_metrics("minio")
    report = DeliveryReport(
        delivered=998,
        rejected=[RejectedLine("a|b", "invalid line, not sent")] * 2,
        requests=4,
        seconds=1.0,
        token_fetches=1,
    )
    record_delivery(metrics, report)
    metrics.flush_metrics()

    (document,) = emitted(capsys)
    assert dimension_sets(document) == [MINIO_DIMENSIONS]
    assert metric_definitions(document) == {
        "LinesDelivered": "Count",
        "LinesRejected": "Count",
        "DeliveryRequests": "Count",
        "OgcRsLatency": "Milliseconds",
        "TokenFetches": "Count",
    }
    assert document["TokenFetches"] == [1.0]
    assert document["LinesDelivered"] == [998.0]
    assert document["LinesRejected"] == [2.0]
    assert document["DeliveryRequests"] == [4.0]
    assert document["OgcRsLatency"] == [250.0]


def test_a_delivery_without_requests_publishes_no_latency(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = flow_metrics("aws_s3")
    record_delivery(metrics, OnceReport(DeliveryReport(), already_delivered=500))
    metrics.flush_metrics()

    (document,) = emitted(capsys)
    assert "OgcRsLatency" not in metric_definitions(document)
    assert document["LinesDelivered"] == [0.0]
    # A replay of lines the ledger already holds: nothing sent, everything counted as already delivered.
    assert document["LinesAlreadyDelivered"] == [500.0]
    assert metric_definitions(document)["LinesAlreadyDelivered"] == "Count"


@pytest.mark.parametrize("kind", ["unavailable", "configuration", "redirect", "in_flight"])
def test_delivery_failure_counts_the_total_and_the_kind(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = flow_metrics("aws_s3")
    record_delivery_failure(metrics, kind)  # type: ignore[arg-type]
    metrics.flush_metrics()

    documents = by_dimensions(emitted(capsys))
    assert set(documents) == {key(**S3_DIMENSIONS), key(**S3_DIMENSIONS, kind=kind)}
    assert documents[key(**S3_DIMENSIONS)]["DeliveryFailures"] == [1.0]
    assert metric_definitions(documents[key(**S3_DIMENSIONS, kind=kind)]) == {"DeliveryFailures": "Count"}
    assert documents[key(**S3_DIMENSIONS, kind=kind)]["DeliveryFailures"] == [1.0]


def test_an_unknown_failure_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown delivery failure kind 'down'"):
        record_delivery_failure(flow_metrics("minio"), "down")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InFlightError("2 entries"), "in_flight"),
        (ConfigurationError("auth server answered 401"), "configuration"),
        (RedirectError("auth server answered 307"), "redirect"),
        (DeliveryError("OGC RS answered 503"), "unavailable"),
        (TimeoutError(), "unavailable"),
        (UncertainDeliveryError("OGC RS answered 504", logs=["l"], positions=[0], sent_at=0.0), "uncertain"),
        (UncertainPendingError("2 keys wait", retry_after_s=60), "uncertain"),
    ],
)
def test_delivery_failure_kind_of_an_error(error: BaseException, kind: str) -> None:
    assert delivery_failure_kind(error) == kind


def test_lines_refused_by_ogc_rs_count_as_quarantined_without_counting_entries_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = flow_metrics("minio")
    record_rejected_lines(metrics, 2)
    record_rejected_lines(metrics, 0)
    metrics.flush_metrics()

    documents = by_dimensions(emitted(capsys))
    assert set(documents) == {key(**MINIO_DIMENSIONS), key(**MINIO_DIMENSIONS, reason="rejected_by_ogc_rs")}
    assert metric_definitions(documents[key(**MINIO_DIMENSIONS)]) == {"Quarantined": "Count"}
    assert documents[key(**MINIO_DIMENSIONS)]["Quarantined"] == [2.0]
    assert documents[key(**MINIO_DIMENSIONS, reason="rejected_by_ogc_rs")]["Quarantined"] == [2.0]


def test_uncertain_requests_publish_their_non_zero_outcomes(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = flow_metrics("minio")
    tally = UncertainTally(uncertain=4, found_stored=0, found_not_stored=1, possible_duplicates=3)
    record_uncertain(metrics, tally.take())
    record_uncertain(metrics, tally.take())  # taken: nothing more to publish
    metrics.flush_metrics()

    (document,) = emitted(capsys)
    assert document["LinesUncertain"] == [4.0]
    assert document["LinesPossiblyDuplicated"] == [3.0]
    assert "LinesFoundStored" not in document


def test_auth_failures_and_token_fetches(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = flow_metrics("minio")
    record_auth_failure(metrics)
    record_auth_failure(metrics)
    record_token_fetches(metrics, 1)
    metrics.flush_metrics()

    (document,) = emitted(capsys)
    assert metric_definitions(document) == {"WebhookAuthFailures": "Count", "TokenFetches": "Count"}
    assert document["WebhookAuthFailures"] == [1.0, 1.0]
    assert document["TokenFetches"] == [1.0]


def test_namespace_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(env_names.POWERTOOLS_METRICS_NAMESPACE, "OgcAuditStaging")
    metrics = flow_metrics("minio")
    record_delivery_failure(metrics, "unavailable")
    metrics.flush_metrics()

    assert {namespace(document) for document in emitted(capsys)} == {"OgcAuditStaging"}


def test_the_two_flows_keep_separate_metrics_in_one_process(capsys: pytest.CaptureFixture[str]) -> None:
    s3, minio = flow_metrics("aws_s3"), flow_metrics("minio")
    record_outcomes(s3, OutcomeTally(metered=1))
    record_outcomes(minio, OutcomeTally(metered=2))
    s3.flush_metrics()
    minio.flush_metrics()

    documents = by_dimensions(emitted(capsys))
    assert documents[key(**S3_DIMENSIONS)]["Metered"] == [1.0]
    assert documents[key(**MINIO_DIMENSIONS)]["Metered"] == [2.0]


def test_metrics_without_a_flow_are_refused_for_breakdowns() -> None:
    metrics = Metrics(namespace="OgcAuditIngest", service="s3_audit")
    tally = OutcomeTally()
    tally.count(Skip.filtered(Reason.NOT_GET_OBJECT))
    with pytest.raises(ValueError, match="flow_metrics"):
        record_outcomes(metrics, tally)
    metrics.clear_metrics()


def test_unknown_flow_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown flow 'gcs'"):
        flow_metrics("gcs")  # type: ignore[arg-type]


def test_metrics_can_be_switched_off_for_local_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    metrics = flow_metrics("aws_s3")
    tally = OutcomeTally()
    tally.count(Skip.quarantined(Reason.BAD_GZIP))
    record_outcomes(metrics, tally)
    metrics.flush_metrics()

    assert emitted(capsys) == []


def test_every_published_name_is_declared_in_metric_names() -> None:
    published = {
        "EntriesSeen",
        "Metered",
        "Filtered",
        "Quarantined",
        "LogFilesRead",
        "LinesDelivered",
        "LinesRejected",
        "LinesAlreadyDelivered",
        "DeliveryRequests",
        "OgcRsLatency",
        "DeliveryFailures",
        "TokenFetches",
        "WebhookAuthFailures",
    }
    declared = {value for name, value in vars(names).items() if name.isupper() and isinstance(value, str)}
    assert published <= declared
    assert names.flow_dimensions("minio") == MINIO_DIMENSIONS
