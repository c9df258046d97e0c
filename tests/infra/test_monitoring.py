"""Template assertions for monitoring: every alarm, the encrypted alarm topic and its subscription, the dashboards."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.constants import MINIO_RELAY_STACK_NAME, S3_AUDIT_STACK_NAME
from metering import metric_names as names
from metering.metrics import flow_metrics, record_delivery_failure, record_outcomes, record_uncertain
from metering.outcomes import OutcomeTally
from metering.uncertain import UncertainTally
from tests.infra.synth import (
    SynthesizedApp,
    as_list,
    logical_id,
    only_resource,
    render,
    resources_of_type,
    synthesize,
)

Template = Mapping[str, Any]
EMAIL = "ops@example.org"
S3_DIMENSIONS = [{"Name": "flow", "Value": "aws_s3"}, {"Name": "service", "Value": "s3_audit"}]
MINIO_DIMENSIONS = [{"Name": "flow", "Value": "minio"}, {"Name": "service", "Value": "minio_relay"}]


@pytest.fixture(scope="module")
def default_app(module_tmp: Path) -> SynthesizedApp:
    """cdk.json defaults: both flows, no alarm email."""
    return synthesize(module_tmp / "default")


@pytest.fixture(scope="module")
def email_app(module_tmp: Path) -> SynthesizedApp:
    return synthesize(module_tmp / "email", alarmEmail=EMAIL)


@pytest.fixture(scope="module")
def s3_template(default_app: SynthesizedApp) -> Template:
    return default_app.templates[S3_AUDIT_STACK_NAME]


@pytest.fixture(scope="module")
def relay_template(default_app: SynthesizedApp) -> Template:
    return default_app.templates[MINIO_RELAY_STACK_NAME]


def alarm(template: Template, name: str) -> Mapping[str, Any]:
    """The properties of the alarm whose logical id starts with ``name``."""
    properties: Mapping[str, Any] = template["Resources"][logical_id(template, "AWS::CloudWatch::Alarm", name)][
        "Properties"
    ]
    return properties


def topic_ref(template: Template) -> dict[str, str]:
    return {"Ref": logical_id(template, "AWS::SNS::Topic", "AlarmTopic")}


def queue_name(template: Template, prefix: str) -> list[dict[str, Any]]:
    return [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [logical_id(template, "AWS::SQS::Queue", prefix), "QueueName"]}}
    ]


def function_name(template: Template, prefix: str) -> list[dict[str, Any]]:
    return [{"Name": "FunctionName", "Value": {"Ref": logical_id(template, "AWS::Lambda::Function", prefix)}}]


def metric_of(properties: Mapping[str, Any]) -> dict[str, Any]:
    """What an alarm watches and when it fires, without its description and actions."""
    return {
        key: properties.get(key)
        for key in (
            "Namespace",
            "MetricName",
            "Dimensions",
            "Statistic",
            "Period",
            "Threshold",
            "ComparisonOperator",
            "EvaluationPeriods",
            "DatapointsToAlarm",
            "TreatMissingData",
        )
    }


def expected(
    namespace: str,
    metric: str,
    dimensions: list[dict[str, Any]],
    *,
    threshold: float,
    statistic: str = "Sum",
    period: int = 300,
    comparison: str = "GreaterThanOrEqualToThreshold",
    evaluation_periods: int = 1,
    datapoints: int | None = None,
    missing: str = "notBreaching",
) -> dict[str, Any]:
    return {
        "Namespace": namespace,
        "MetricName": metric,
        "Dimensions": dimensions,
        "Statistic": statistic,
        "Period": period,
        "Threshold": threshold,
        "ComparisonOperator": comparison,
        "EvaluationPeriods": evaluation_periods,
        "DatapointsToAlarm": datapoints,
        "TreatMissingData": missing,
    }


def queue_alarms(template: Template, label: str, max_age_seconds: int) -> dict[str, dict[str, Any]]:
    """The alarms on the durable queue ``label``: a message in its dead-letter queue, its oldest message too old."""
    return {
        f"{label}DeadLetterAlarm": expected(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            queue_name(template, f"{label}DeadLetterQueue"),
            threshold=1,
            statistic="Maximum",
        ),
        f"Monitoring{label}QueueAge": expected(
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            queue_name(template, f"{label}Queue"),
            threshold=max_age_seconds,
            statistic="Maximum",
        ),
    }


def function_alarms(template: Template, label: str) -> dict[str, dict[str, Any]]:
    """The alarms on the function ``label``: any error, any throttle."""
    function = function_name(template, f"{label}Function")
    return {
        f"Monitoring{label}Errors": expected("AWS/Lambda", "Errors", function, threshold=1),
        f"Monitoring{label}Throttles": expected("AWS/Lambda", "Throttles", function, threshold=1),
    }


def delivery_alarms(dimensions: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """The alarms every flow has on its own metrics (``dimensions``: flow and service): delivery and quarantine."""
    flow, service = dimensions

    def of_kind(kind: str) -> list[dict[str, str]]:
        return [flow, {"Name": "kind", "Value": kind}, service]

    return {
        "MonitoringDeliveryFailures": expected(
            "OgcAuditIngest", "DeliveryFailures", dimensions, threshold=1, evaluation_periods=6, datapoints=3
        ),
        "MonitoringDeliveryConfiguration": expected(
            "OgcAuditIngest", "DeliveryFailures", of_kind("configuration"), threshold=1
        ),
        "MonitoringDeliveryRedirect": expected("OgcAuditIngest", "DeliveryFailures", of_kind("redirect"), threshold=1),
        "MonitoringQuarantined": expected("OgcAuditIngest", "Quarantined", dimensions, threshold=1, period=3600),
        "MonitoringPossibleDuplicates": expected("OgcAuditIngest", "LinesPossiblyDuplicated", dimensions, threshold=1),
    }


def s3_alarms(template: Template) -> dict[str, dict[str, Any]]:
    """Every alarm of the S3 audit stack as it must be."""
    return {
        **queue_alarms(template, "LogFiles", 3600),
        **function_alarms(template, "S3Audit"),
        **delivery_alarms(S3_DIMENSIONS),
        # CloudTrail writes a digest file every hour: two hours without any message on the queue is a silent trail.
        "MonitoringTrailSilent": expected(
            "AWS/SQS",
            "NumberOfMessagesSent",
            queue_name(template, "LogFilesQueue"),
            threshold=1,
            period=3600,
            comparison="LessThanThreshold",
            evaluation_periods=2,
            missing="breaching",
        ),
    }


def relay_alarms(template: Template) -> dict[str, dict[str, Any]]:
    """Every alarm of the MinIO relay stack as it must be."""
    api_name = [{"Name": "ApiName", "Value": "OgcAuditMinioRelay-webhook"}]
    return {
        **queue_alarms(template, "Delivery", 900),
        **function_alarms(template, "Webhook"),
        **function_alarms(template, "Deliver"),
        **delivery_alarms(MINIO_DIMENSIONS),
        "MonitoringWebhookAuthFailures": expected(
            "OgcAuditIngest", "WebhookAuthFailures", MINIO_DIMENSIONS, threshold=10
        ),
        "MonitoringWebhookServerErrors": expected(
            "AWS/ApiGateway", "5XXError", api_name, threshold=1, evaluation_periods=3
        ),
    }


STACK_ALARMS = {S3_AUDIT_STACK_NAME: s3_alarms, MINIO_RELAY_STACK_NAME: relay_alarms}


# --- Alarms ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_every_alarm_watches_its_metric_with_its_threshold(default_app: SynthesizedApp, stack_name: str) -> None:
    template = default_app.templates[stack_name]
    wanted = STACK_ALARMS[stack_name](template)
    for name, definition in wanted.items():
        assert metric_of(alarm(template, name)) == definition, name


@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_there_is_no_other_alarm(default_app: SynthesizedApp, stack_name: str) -> None:
    template = default_app.templates[stack_name]
    assert len(resources_of_type(template, "AWS::CloudWatch::Alarm")) == len(STACK_ALARMS[stack_name](template))


@pytest.mark.parametrize("app_name", ["default_app", "email_app"])
@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_every_alarm_notifies_the_topic_and_points_to_the_runbook(
    request: pytest.FixtureRequest, app_name: str, stack_name: str
) -> None:
    template = request.getfixturevalue(app_name).templates[stack_name]
    for name, body in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        properties = body["Properties"]
        assert properties["AlarmActions"] == [topic_ref(template)], name
        if name.startswith("Monitoring"):  # the dead-letter alarms are DurableQueue's own
            assert "Runbook: docs/operations.md#" in properties["AlarmDescription"], name


def test_runbook_has_a_section_for_every_alarm(default_app: SynthesizedApp) -> None:
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    anchors = {
        properties["AlarmDescription"].rsplit("#", 1)[1]
        for template in default_app.templates.values()
        for properties in (
            body["Properties"] for body in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        )
        if "Runbook:" in properties.get("AlarmDescription", "")
    }
    headings = {
        line.lstrip("#").strip().lower().replace(" ", "-") for line in runbook.splitlines() if line.startswith("### ")
    }
    assert anchors <= headings, sorted(anchors - headings)


PublishedMetric = tuple[str, str, frozenset[tuple[str, str]]]


def published_metrics(printed: str) -> set[PublishedMetric]:
    """(namespace, metric name, dimensions) of every metric in the EMF documents printed, one JSON per line."""
    published: set[PublishedMetric] = set()
    for line in printed.splitlines():
        document = json.loads(line)
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        for keys in directive["Dimensions"]:
            dimensions = frozenset((key, document[key]) for key in keys)
            published |= {(directive["Namespace"], metric["Name"], dimensions) for metric in directive["Metrics"]}
    return published


def test_custom_metric_alarms_read_what_the_functions_publish(
    default_app: SynthesizedApp, capsys: pytest.CaptureFixture[str]
) -> None:
    """Namespace, metric names and dimension sets of the alarms equal the EMF documents of metering.metrics."""
    for flow in (names.FLOW_AWS_S3, names.FLOW_MINIO):
        metrics = flow_metrics(flow)
        record_outcomes(metrics, OutcomeTally())
        record_delivery_failure(metrics, "configuration")
        record_delivery_failure(metrics, "redirect")
        record_uncertain(metrics, UncertainTally(uncertain=2, possible_duplicates=2))
        metrics.add_metric(name=names.WEBHOOK_AUTH_FAILURES, unit="Count", value=1)
        metrics.flush_metrics()
    published = published_metrics(capsys.readouterr().out)
    watched = {
        (p["Namespace"], p["MetricName"], frozenset((d["Name"], d["Value"]) for d in p["Dimensions"]))
        for template in default_app.templates.values()
        for p in (body["Properties"] for body in resources_of_type(template, "AWS::CloudWatch::Alarm").values())
        if p["Namespace"] == names.DEFAULT_NAMESPACE
    }
    assert watched
    assert watched <= published, sorted(watched - published)


@pytest.mark.parametrize(
    ("stack_name", "function_prefixes", "service"),
    [
        (S3_AUDIT_STACK_NAME, ["S3AuditFunction"], "s3_audit"),
        (MINIO_RELAY_STACK_NAME, ["WebhookFunction", "DeliverFunction"], "minio_relay"),
    ],
)
def test_functions_publish_into_the_namespace_the_alarms_read(
    default_app: SynthesizedApp, stack_name: str, function_prefixes: list[str], service: str
) -> None:
    template = default_app.templates[stack_name]
    for prefix in function_prefixes:
        environment = template["Resources"][logical_id(template, "AWS::Lambda::Function", prefix)]["Properties"][
            "Environment"
        ]["Variables"]
        assert environment["POWERTOOLS_METRICS_NAMESPACE"] == names.DEFAULT_NAMESPACE
        assert environment["POWERTOOLS_SERVICE_NAME"] == service


# --- Topic -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_topic_is_encrypted_with_a_rotated_key_cloudwatch_may_use(default_app: SynthesizedApp, stack_name: str) -> None:
    template = default_app.templates[stack_name]
    key_id = logical_id(template, "AWS::KMS::Key", "AlarmTopicKey")
    topic = only_resource(template, "AWS::SNS::Topic")["Properties"]
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    key = template["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch_statements = [
        statement
        for statement in key["KeyPolicy"]["Statement"]
        if statement.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch_statements == [
        {
            "Sid": "AllowCloudWatchAlarmsToPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            # Only alarms of this account (tests/infra/test_service_principals.py checks the values).
            "Condition": cloudwatch_statements[0]["Condition"],
        }
    ]
    assert set(cloudwatch_statements[0]["Condition"]) == {"StringEquals", "ArnLike"}


@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_topic_refuses_publishing_without_tls(default_app: SynthesizedApp, stack_name: str) -> None:
    template = default_app.templates[stack_name]
    policy = only_resource(template, "AWS::SNS::TopicPolicy")["Properties"]
    assert policy["Topics"] == [topic_ref(template)]
    (statement,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert as_list(statement["Action"]) == ["sns:Publish"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == topic_ref(template)


@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_no_email_subscription_without_an_alarm_email(default_app: SynthesizedApp, stack_name: str) -> None:
    assert resources_of_type(default_app.templates[stack_name], "AWS::SNS::Subscription") == {}


@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_alarm_email_subscribes_to_the_topic(email_app: SynthesizedApp, stack_name: str) -> None:
    template = email_app.templates[stack_name]
    subscription = only_resource(template, "AWS::SNS::Subscription")["Properties"]
    assert subscription == {"Protocol": "email", "Endpoint": EMAIL, "TopicArn": topic_ref(template)}


@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_outputs_name_the_dashboard_and_the_topic(default_app: SynthesizedApp, stack_name: str) -> None:
    template = default_app.templates[stack_name]
    outputs = template["Outputs"]
    assert outputs["AlarmTopicArn"]["Value"] == topic_ref(template)
    dashboard = logical_id(template, "AWS::CloudWatch::Dashboard", "MonitoringDashboard")
    assert render(outputs["DashboardUrl"]["Value"]) == (
        f"https://console.aws.amazon.com/cloudwatch/home?region=${{AWS::Region}}#dashboards:name=${{{dashboard}}}"
    )


# --- Dashboards ------------------------------------------------------------------------------------------------------


def dashboard(template: Template) -> tuple[str, list[dict[str, Any]]]:
    """The dashboard's name and its widgets, references rendered as ``${LogicalId...}``."""
    properties = only_resource(template, "AWS::CloudWatch::Dashboard")["Properties"]
    body = json.loads(render(properties["DashboardBody"]))
    return render(properties["DashboardName"]), body["widgets"]


def graphed(widgets: list[dict[str, Any]]) -> list[list[Any]]:
    return [line for widget in widgets if widget["type"] == "metric" for line in widget["properties"]["metrics"]]


def metric_names_of(widgets: list[dict[str, Any]], namespace: str) -> set[str]:
    return {str(line[1]) for line in graphed(widgets) if line[0] == namespace}


def searches(widgets: list[dict[str, Any]]) -> list[str]:
    return [line[0]["expression"] for line in graphed(widgets) if isinstance(line[0], dict)]


COMMON_CUSTOM_METRICS = {
    names.ENTRIES_SEEN,
    names.METERED,
    names.FILTERED,
    names.QUARANTINED,
    names.LINES_DELIVERED,
    names.LINES_REJECTED,
    names.LINES_ALREADY_DELIVERED,
    names.DELIVERY_FAILURES,
    names.DELIVERY_REQUESTS,
    names.OGC_RS_LATENCY,
    names.TOKEN_FETCHES,
}


def test_s3_dashboard_shows_the_flow_end_to_end(s3_template: Template) -> None:
    name, widgets = dashboard(s3_template)
    assert name == f"{S3_AUDIT_STACK_NAME}-${{AWS::Region}}"
    assert metric_names_of(widgets, "OgcAuditIngest") == COMMON_CUSTOM_METRICS | {names.LOG_FILES_READ}
    assert metric_names_of(widgets, "AWS/SQS") == {
        "NumberOfMessagesSent",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateAgeOfOldestMessage",
    }
    assert metric_names_of(widgets, "AWS/Lambda") == {"Errors", "Throttles", "Duration", "ConcurrentExecutions"}
    body = json.dumps(widgets)
    for queue in ("LogFilesQueue", "LogFilesDeadLetterQueue"):
        assert f"${{{logical_id(s3_template, 'AWS::SQS::Queue', queue)}.QueueName}}" in body
    assert f"${{{logical_id(s3_template, 'AWS::Lambda::Function', 'S3AuditFunction')}}}" in body
    assert searches(widgets) == [
        'SEARCH(\'{OgcAuditIngest,flow,reason,service} MetricName="Filtered" flow="aws_s3" service="s3_audit"\', '
        "'Sum', 300)",
        'SEARCH(\'{OgcAuditIngest,flow,reason,service} MetricName="Quarantined" flow="aws_s3" '
        "service=\"s3_audit\"', 'Sum', 300)",
        'SEARCH(\'{OgcAuditIngest,flow,kind,service} MetricName="DeliveryFailures" flow="aws_s3" '
        "service=\"s3_audit\"', 'Sum', 300)",
    ]


def test_minio_dashboard_shows_the_flow_end_to_end(relay_template: Template) -> None:
    name, widgets = dashboard(relay_template)
    assert name == f"{MINIO_RELAY_STACK_NAME}-${{AWS::Region}}"
    assert metric_names_of(widgets, "OgcAuditIngest") == COMMON_CUSTOM_METRICS | {names.WEBHOOK_AUTH_FAILURES}
    assert metric_names_of(widgets, "AWS/ApiGateway") == {
        "Count",
        "4XXError",
        "5XXError",
        "Latency",
        "IntegrationLatency",
    }
    assert metric_names_of(widgets, "AWS/SQS") == {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateAgeOfOldestMessage",
    }
    body = json.dumps(widgets)
    for queue in ("DeliveryQueue", "DeliveryDeadLetterQueue"):
        assert f"${{{logical_id(relay_template, 'AWS::SQS::Queue', queue)}.QueueName}}" in body
    for function in ("WebhookFunction", "DeliverFunction"):
        assert f"${{{logical_id(relay_template, 'AWS::Lambda::Function', function)}}}" in body
    assert all('flow="minio" service="minio_relay"' in search for search in searches(widgets))


@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_dashboard_shows_the_state_of_every_alarm(default_app: SynthesizedApp, stack_name: str) -> None:
    template = default_app.templates[stack_name]
    _, widgets = dashboard(template)
    (status,) = [widget for widget in widgets if widget["type"] == "alarm"]
    assert sorted(status["properties"]["alarms"]) == sorted(
        f"${{{name}.Arn}}" for name in resources_of_type(template, "AWS::CloudWatch::Alarm")
    )


@pytest.mark.parametrize("stack_name", STACK_ALARMS)
def test_dashboard_marks_the_alarm_thresholds(default_app: SynthesizedApp, stack_name: str) -> None:
    template = default_app.templates[stack_name]
    _, widgets = dashboard(template)
    annotations = {
        widget["properties"]["title"]: [a["value"] for a in widget["properties"]["annotations"]["horizontal"]]
        for widget in widgets
        if widget["type"] == "metric" and "annotations" in widget["properties"]
    }
    ages = [values for title, values in annotations.items() if "age of the oldest message" in title]
    assert ages == [[3600]] if stack_name == S3_AUDIT_STACK_NAME else [[900]]
    dead_letters = [values for title, values in annotations.items() if "dead-letter queue" in title]
    assert dead_letters == [[1]]
