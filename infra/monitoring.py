"""Alarms and a dashboard per flow, so an on-call engineer can watch and fix the flows without reading the code.

One ``FlowMonitoring`` per stack. Every alarm notifies the stack's alarm topic (``secure_defaults.alarm_topic``:
SSE-KMS, TLS only, email when ``alarmEmail`` is set); the dead-letter alarms come from ``DurableQueue`` and are
only collected here. docs/operations.md has a section per alarm (the anchors in the descriptions below).

The custom metrics are the ones ``functions/metering/metrics.py`` publishes; both sides take their names from
``metering.metric_names``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constants import (
    ACCESS_LOG_SILENCE,
    ALARM_PERIOD,
    API_SERVER_ERROR_PERIODS,
    AUTH_FAILURE_BURST,
    DELIVERY_FAILURE_PERIODS,
    POWERTOOLS_METRICS_NAMESPACE,
    QUARANTINE_PERIOD,
    TRAIL_SILENCE,
)
from infra.secure_defaults import AuditFunction, DurableQueue
from metering import metric_names as names

RUNBOOK = "docs/operations.md"
# Trail heartbeat: messages are counted per hour, the alarm fires after TRAIL_SILENCE of hours without any.
HEARTBEAT_PERIOD = Duration.hours(1)
WIDGET_WIDTH = 8
WIDGET_HEIGHT = 6
DASHBOARD_WIDTH = 24


@dataclass(frozen=True)
class WatchedQueue:
    """A durable queue of the flow and how old its oldest message may grow before someone must look."""

    label: str
    """Short name for titles and construct ids, e.g. "LogFiles"."""
    queue: DurableQueue
    max_age: Duration


@dataclass(frozen=True)
class WatchedFunction:
    """A function of the flow, watched for errors, throttles, duration and concurrency."""

    label: str
    function: AuditFunction
    timeout: Duration


@dataclass(frozen=True)
class LogFileSilence:
    """A source of log files that falls silent: no message on the log-file queue for ``window`` raises ``name``."""

    name: str
    source: str
    """What reaches the queue, e.g. "CloudTrail file"."""
    window: Duration
    meaning: str
    """Why the silence means trouble, and what may have broken."""
    anchor: str

    @property
    def hours(self) -> int:
        return int(self.window.to_hours())

    @property
    def description(self) -> str:
        return f"No {self.source} reached the log-file queue for {self.hours} hours. {self.meaning}"


TRAIL_SILENT = LogFileSilence(
    name="TrailSilent",
    source="CloudTrail file",
    window=TRAIL_SILENCE,
    meaning="CloudTrail writes a digest file every hour even without downloads, so the trail stopped logging, "
    "lost access to the log bucket, or the bucket notification is gone.",
    anchor="trail-silent",
)
ACCESS_LOGS_SILENT = LogFileSilence(
    name="AccessLogsSilent",
    source="S3 server access log",
    window=ACCESS_LOG_SILENCE,
    meaning="S3 writes access logs only when the asset buckets are used and can deliver them hours late, hence "
    "the long window: logging was turned off on an asset bucket, the log delivery lost access, the notification is "
    "gone, or nobody used the assets for a day.",
    anchor="access-logs-silent",
)


def custom_metric(
    flow: str,
    metric_name: str,
    *,
    statistic: str = "Sum",
    period: Duration = ALARM_PERIOD,
    label: str | None = None,
    extra_dimensions: Mapping[str, str] | None = None,
) -> cloudwatch.Metric:
    """A metric published by the functions of ``flow`` (namespace and dimensions as metering.metrics writes them)."""
    return cloudwatch.Metric(
        namespace=POWERTOOLS_METRICS_NAMESPACE,
        metric_name=metric_name,
        dimensions_map={**names.flow_dimensions(flow), **(extra_dimensions or {})},
        statistic=statistic,
        period=period,
        label=label,
    )


def breakdown_search(flow: str, metric_name: str, dimension: str) -> cloudwatch.MathExpression:
    """Every value of ``dimension`` (reason, kind) of a custom metric, found by a SEARCH expression (dashboard only)."""
    service = names.SERVICE_OF_FLOW[flow]
    schema = ",".join(sorted([names.FLOW, names.SERVICE, dimension]))
    return cloudwatch.MathExpression(
        expression=(
            f'SEARCH(\'{{{POWERTOOLS_METRICS_NAMESPACE},{schema}}} MetricName="{metric_name}" '
            f'{names.FLOW}="{flow}" {names.SERVICE}="{service}"\', \'Sum\', {int(ALARM_PERIOD.to_seconds())})'
        ),
        using_metrics={},
        label="",
        period=ALARM_PERIOD,
    )


class FlowMonitoring(Construct):
    """The alarms and the dashboard of one flow.

    ``alarms`` maps a stable short name (e.g. ``"LogFilesQueueAge"``) to each alarm, the dead-letter alarms of the
    queues included; tests and the dashboard's status widget read it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        flow: names.Flow,
        topic: sns.ITopic,
        queues: Sequence[WatchedQueue],
        functions: Sequence[WatchedFunction],
        api: apigateway.RestApi | None = None,
        trail_log_files: DurableQueue | None = None,
        access_log_files: DurableQueue | None = None,
        event_path: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.flow = flow
        self._topic = topic
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for watched in queues:
            self._watch_queue(watched)
        for function in functions:
            self._watch_function(function)
        self._watch_delivery()
        self._watch_quarantine()
        if api is not None:
            self._watch_webhook(api)
        if trail_log_files is not None:
            self._watch_silence(TRAIL_SILENT, trail_log_files)
        elif access_log_files is not None:  # with a trail too, its hourly digest is the stronger heartbeat
            self._watch_silence(ACCESS_LOGS_SILENT, access_log_files)
        self.dashboard = self._dashboard(queues, functions, api, trail_log_files)
        if event_path:
            self.dashboard.add_widgets(*self._path_widgets())
        self._outputs()

    # --- alarms ---------------------------------------------------------------------------------------------------

    def _alarm(
        self,
        name: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        anchor: str,
        evaluation_periods: int = 1,
        datapoints_to_alarm: int | None = None,
        comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            name,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            comparison_operator=comparison,
            treat_missing_data=missing,
            alarm_description=f"{description} Runbook: {RUNBOOK}#{anchor}",
        )
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(self._topic))
        self.alarms[name] = alarm
        return alarm

    def _watch_queue(self, watched: WatchedQueue) -> None:
        # The dead-letter alarm is DurableQueue's own, notifying the same topic.
        self.alarms[f"{watched.label}DeadLetters"] = watched.queue.dead_letter_alarm
        minutes = int(watched.max_age.to_minutes())
        self._alarm(
            f"{watched.label}QueueAge",
            metric=watched.queue.queue.metric_approximate_age_of_oldest_message(
                period=ALARM_PERIOD, statistic="Maximum"
            ),
            threshold=watched.max_age.to_seconds(),
            description=f"The oldest message of the {watched.label} queue waits for more than {minutes} minutes: "
            "inputs are failing and being retried (OGC RS or the auth server down, or a function failing).",
            anchor="queue-age",
        )

    def _watch_function(self, watched: WatchedFunction) -> None:
        function = watched.function.function
        self._alarm(
            f"{watched.label}Errors",
            metric=function.metric_errors(period=ALARM_PERIOD, statistic="Sum"),
            threshold=1,
            description=f"The {watched.label} function crashed or timed out (failed inputs are retried by SQS, "
            "or re-sent by MinIO): read its log group.",
            anchor="function-errors",
        )
        self._alarm(
            f"{watched.label}Throttles",
            metric=function.metric_throttles(period=ALARM_PERIOD, statistic="Sum"),
            threshold=1,
            description=f"Lambda throttled the {watched.label} function: the account's concurrency is exhausted.",
            anchor="function-throttles",
        )

    def _watch_delivery(self) -> None:
        self._alarm(
            "DeliveryFailures",
            metric=custom_metric(self.flow, names.DELIVERY_FAILURES),
            threshold=1,
            # Sustained, not one blip: a short OGC RS restart is absorbed by SQS retries.
            evaluation_periods=2 * DELIVERY_FAILURE_PERIODS,
            datapoints_to_alarm=DELIVERY_FAILURE_PERIODS,
            description=f"Deliveries to OGC RS failed in {DELIVERY_FAILURE_PERIODS} of the last "
            f"{2 * DELIVERY_FAILURE_PERIODS} five-minute periods ({self.flow} flow): OGC RS or the auth server is "
            "unavailable. Inputs wait in the queue and are retried.",
            anchor="delivery-failures",
        )
        self._alarm(
            "PossibleDuplicates",
            metric=custom_metric(self.flow, names.LINES_POSSIBLY_DUPLICATED),
            threshold=1,
            description=f"Lines were sent again after the grace period of an uncertain request ({self.flow} flow): "
            "OGC RS's answer was lost and its database could not be asked, so each may now be stored twice. Run "
            "ogc-audit reconcile on their period; the log names the request.",
            anchor="possible-duplicates",
        )
        # One alarm per failure kind an operator must fix: retrying cannot help.
        for name, kind, description, anchor in (
            (
                "DeliveryConfiguration",
                names.KIND_CONFIGURATION,
                f"The auth server or OGC RS refuses the configured identity or URL ({self.flow} flow): "
                "retrying cannot help; fix the client credentials secret or the context values.",
                "delivery-configuration",
            ),
            (
                "DeliveryRedirect",
                names.KIND_REDIRECT,
                f"The auth server or OGC RS answered a redirect ({self.flow} flow), which is never followed "
                "(it would carry the client secret or the lines elsewhere): set processApiUrl/authUrl to the URL the "
                "redirect points to (the log names its host).",
                "delivery-redirect",
            ),
        ):
            self._alarm(
                name,
                metric=custom_metric(self.flow, names.DELIVERY_FAILURES, extra_dimensions={names.KIND: kind}),
                threshold=1,
                description=description,
                anchor=anchor,
            )

    def _watch_quarantine(self) -> None:
        self._alarm(
            "Quarantined",
            metric=custom_metric(self.flow, names.QUARANTINED, period=QUARANTINE_PERIOD),
            threshold=1,
            description=f"Entries were quarantined in the last hour ({self.flow} flow): malformed input or lines "
            "OGC RS refused. They are not metered until an operator looks at the ERROR lines of the log group.",
            anchor="quarantined",
        )

    def _watch_webhook(self, api: apigateway.RestApi) -> None:
        self._alarm(
            "WebhookAuthFailures",
            metric=custom_metric(self.flow, names.WEBHOOK_AUTH_FAILURES),
            threshold=AUTH_FAILURE_BURST,
            description=f"At least {AUTH_FAILURE_BURST} webhook requests with a wrong Authorization header in five "
            "minutes: MinIO's auth_token does not match the token secret (rotation half done?) or someone probes "
            "the endpoint. MinIO keeps and re-sends refused bodies.",
            anchor="webhook-authentication-failures",
        )
        self._alarm(
            "WebhookServerErrors",
            metric=api.metric_server_error(period=ALARM_PERIOD, statistic="Sum"),
            threshold=1,
            evaluation_periods=API_SERVER_ERROR_PERIODS,
            description=f"The webhook API answered 5xx for {API_SERVER_ERROR_PERIODS} five-minute periods in a "
            "row: the delivery queue or the token secret is unreachable, or the function fails. MinIO re-sends.",
            anchor="webhook-server-errors",
        )

    def _watch_silence(self, silence: LogFileSilence, log_files: DurableQueue) -> None:
        """Alarm when no message reached the log-file queue for the hours of ``silence``."""
        self._alarm(
            silence.name,
            metric=log_files.queue.metric_number_of_messages_sent(period=HEARTBEAT_PERIOD, statistic="Sum"),
            threshold=1,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=silence.hours,
            # SQS stops publishing the metrics of an idle queue: no data is silence too.
            missing=cloudwatch.TreatMissingData.BREACHING,
            description=silence.description,
            anchor=silence.anchor,
        )

    # --- dashboard ------------------------------------------------------------------------------------------------

    def _dashboard(
        self,
        queues: Sequence[WatchedQueue],
        functions: Sequence[WatchedFunction],
        api: apigateway.RestApi | None,
        trail_log_files: DurableQueue | None,
    ) -> cloudwatch.Dashboard:
        stack = Stack.of(self)
        dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            # Dashboards are global to the account: the region keeps two deployments of one stack apart.
            dashboard_name=f"{stack.stack_name}-{stack.region}",
            default_interval=Duration.hours(6),
        )
        dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown=f"# {stack.stack_name}: {self.flow} flow\n"
                "Inputs, outcomes, queues, delivery to OGC RS, functions. "
                f"Each alarm has a section in `{RUNBOOK}` of the repository.",
                width=DASHBOARD_WIDTH,
                height=2,
            )
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=list(self.alarms.values()), width=DASHBOARD_WIDTH, height=3
            )
        )
        dashboard.add_widgets(*self._input_widgets(api, trail_log_files))
        dashboard.add_widgets(*self._outcome_widgets())
        for watched in queues:
            dashboard.add_widgets(*self._queue_widgets(watched))
        dashboard.add_widgets(*self._delivery_widgets())
        dashboard.add_widgets(*self._function_widgets(functions))
        return dashboard

    @staticmethod
    def _graph(
        title: str,
        left: Sequence[cloudwatch.IMetric],
        *,
        stacked: bool = False,
        left_annotations: Sequence[cloudwatch.HorizontalAnnotation] | None = None,
    ) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(
            title=title,
            left=list(left),
            stacked=stacked,
            left_annotations=list(left_annotations) if left_annotations else None,
            width=WIDGET_WIDTH,
            height=WIDGET_HEIGHT,
        )

    def _input_widgets(
        self, api: apigateway.RestApi | None, trail_log_files: DurableQueue | None
    ) -> list[cloudwatch.IWidget]:
        widgets: list[cloudwatch.IWidget] = []
        if trail_log_files is not None:
            widgets.append(
                self._graph(
                    "Log files received (S3 notifications, digests included) and read",
                    [
                        trail_log_files.queue.metric_number_of_messages_sent(
                            period=ALARM_PERIOD, statistic="Sum", label="Notifications queued"
                        ),
                        custom_metric(self.flow, names.LOG_FILES_READ, label="Log files read"),
                    ],
                )
            )
        if api is not None:
            widgets.append(
                self._graph(
                    "Webhook requests and errors",
                    [
                        api.metric_count(period=ALARM_PERIOD, statistic="Sum", label="Requests"),
                        api.metric_client_error(period=ALARM_PERIOD, statistic="Sum", label="4xx"),
                        api.metric_server_error(period=ALARM_PERIOD, statistic="Sum", label="5xx"),
                        custom_metric(self.flow, names.WEBHOOK_AUTH_FAILURES, label="Authentication failures"),
                    ],
                )
            )
            widgets.append(
                self._graph(
                    "Webhook latency (ms; MinIO gives up after ~3 s)",
                    [
                        api.metric_latency(period=ALARM_PERIOD, statistic="p50", label="Latency p50"),
                        api.metric_latency(period=ALARM_PERIOD, statistic="p99", label="Latency p99"),
                        api.metric_integration_latency(period=ALARM_PERIOD, statistic="p99", label="Function p99"),
                    ],
                )
            )
        widgets.append(
            self._graph(
                "Entries: seen, metered, filtered, quarantined",
                [
                    custom_metric(self.flow, names.ENTRIES_SEEN, label="Seen"),
                    custom_metric(self.flow, names.METERED, label="Metered"),
                    custom_metric(self.flow, names.FILTERED, label="Filtered"),
                    custom_metric(self.flow, names.QUARANTINED, label="Quarantined"),
                ],
            )
        )
        return widgets

    def _outcome_widgets(self) -> list[cloudwatch.IWidget]:
        return [
            self._graph(
                "Filtered entries by reason",
                [breakdown_search(self.flow, names.FILTERED, names.REASON)],
                stacked=True,
            ),
            self._graph(
                "Quarantined entries by reason (see ERROR log lines)",
                [breakdown_search(self.flow, names.QUARANTINED, names.REASON)],
                stacked=True,
            ),
            self._graph(
                "Delivery failures by kind",
                [breakdown_search(self.flow, names.DELIVERY_FAILURES, names.KIND)],
                stacked=True,
            ),
        ]

    def _queue_widgets(self, watched: WatchedQueue) -> list[cloudwatch.IWidget]:
        queue = watched.queue.queue
        dead_letters = watched.queue.dead_letter_queue
        return [
            self._graph(
                f"{watched.label} queue: messages",
                [
                    queue.metric_approximate_number_of_messages_visible(
                        period=ALARM_PERIOD, statistic="Maximum", label="Waiting"
                    ),
                    queue.metric_approximate_number_of_messages_not_visible(
                        period=ALARM_PERIOD, statistic="Maximum", label="In flight or waiting for a retry"
                    ),
                ],
            ),
            self._graph(
                f"{watched.label} queue: age of the oldest message (s)",
                [queue.metric_approximate_age_of_oldest_message(period=ALARM_PERIOD, statistic="Maximum")],
                left_annotations=[cloudwatch.HorizontalAnnotation(value=watched.max_age.to_seconds(), label="alarm")],
            ),
            self._graph(
                f"{watched.label} dead-letter queue: messages (redrive once fixed)",
                [
                    dead_letters.metric_approximate_number_of_messages_visible(
                        period=ALARM_PERIOD, statistic="Maximum", label="Dead letters"
                    )
                ],
                left_annotations=[cloudwatch.HorizontalAnnotation(value=1, label="alarm")],
            ),
        ]

    def _delivery_widgets(self) -> list[cloudwatch.IWidget]:
        return [
            self._graph(
                "Lines to OGC RS",
                [
                    custom_metric(self.flow, names.LINES_DELIVERED, label="Delivered"),
                    custom_metric(self.flow, names.LINES_REJECTED, label="Rejected by OGC RS"),
                    custom_metric(self.flow, names.LINES_ALREADY_DELIVERED, label="Already delivered (not re-sent)"),
                    custom_metric(self.flow, names.DELIVERY_FAILURES, label="Failed inputs"),
                ],
            ),
            self._graph(
                "OGC RS latency per request (ms)",
                [
                    custom_metric(self.flow, names.OGC_RS_LATENCY, statistic="Average", label="Average"),
                    custom_metric(self.flow, names.OGC_RS_LATENCY, statistic="p90", label="p90"),
                    custom_metric(self.flow, names.OGC_RS_LATENCY, statistic="Maximum", label="Maximum"),
                ],
            ),
            self._graph(
                "OGC RS requests and token fetches",
                [
                    custom_metric(self.flow, names.DELIVERY_REQUESTS, label="Requests"),
                    custom_metric(self.flow, names.TOKEN_FETCHES, label="Token fetches"),
                ],
            ),
        ]

    def _path_widgets(self) -> list[cloudwatch.IWidget]:
        """eventBridge on: lines an event delivered against lines only a log file brought (EventBridge missed them,
        or they were late), and how often a log file found its request already delivered by an event."""

        def by_path(metric_name: str, path: str, label: str) -> cloudwatch.Metric:
            return custom_metric(self.flow, metric_name, label=label, extra_dimensions={names.PATH: path})

        by_event = by_path(names.LINES_DELIVERED_BY_PATH, names.PATH_EVENT, "Delivered by an event")
        by_log_file = by_path(names.LINES_DELIVERED_BY_PATH, names.PATH_LOG_FILE, "Only by a log file (event missed)")
        missed = cloudwatch.MathExpression(
            expression="100 * FILL(logFile, 0) / (FILL(event, 0) + FILL(logFile, 0))",
            using_metrics={"event": by_event, "logFile": by_log_file},
            label="Missed by EventBridge (%)",
            period=ALARM_PERIOD,
        )
        return [
            cloudwatch.GraphWidget(
                title="Lines by path: event first, or log file only",
                left=[
                    by_event,
                    by_log_file,
                    by_path(
                        names.REQUESTS_ALREADY_DELIVERED, names.PATH_LOG_FILE, "Log-file lines an event delivered first"
                    ),
                ],
                width=2 * WIDGET_WIDTH,
                height=WIDGET_HEIGHT,
            ),
            self._graph("Downloads EventBridge missed (% of lines; the log files delivered them)", [missed]),
            self._graph(
                "Age of a download when its event delivered the line (s): end-to-end latency",
                [
                    custom_metric(
                        self.flow,
                        names.LINE_AGE,
                        statistic=statistic,
                        label=f"Event path {statistic}",
                        extra_dimensions={names.PATH: names.PATH_EVENT},
                    )
                    for statistic in ("p50", "p99", "Maximum")
                ],
            ),
        ]

    def _function_widgets(self, functions: Sequence[WatchedFunction]) -> list[cloudwatch.IWidget]:
        errors: list[cloudwatch.IMetric] = []
        durations: list[cloudwatch.IMetric] = []
        concurrency: list[cloudwatch.IMetric] = []
        for watched in functions:
            function = watched.function.function
            errors += [
                function.metric_errors(period=ALARM_PERIOD, statistic="Sum", label=f"{watched.label} errors"),
                function.metric_throttles(period=ALARM_PERIOD, statistic="Sum", label=f"{watched.label} throttles"),
            ]
            durations += [
                function.metric_duration(period=ALARM_PERIOD, statistic="p99", label=f"{watched.label} p99"),
                function.metric_duration(period=ALARM_PERIOD, statistic="Maximum", label=f"{watched.label} max"),
            ]
            concurrency.append(
                function.metric("ConcurrentExecutions", period=ALARM_PERIOD, statistic="Maximum", label=watched.label)
            )
        timeouts = [
            cloudwatch.HorizontalAnnotation(value=watched.timeout.to_seconds() * 1000, label=f"{watched.label} timeout")
            for watched in functions
        ]
        return [
            self._graph("Functions: errors and throttles", errors),
            self._graph("Functions: duration (ms)", durations, left_annotations=timeouts),
            self._graph("Functions: concurrent executions", concurrency),
        ]

    def _outputs(self) -> None:
        url = CfnOutput(
            self,
            "DashboardUrl",
            value=f"https://console.aws.amazon.com/cloudwatch/home?region={Aws.REGION}"
            f"#dashboards:name={self.dashboard.dashboard_name}",
            description="CloudWatch dashboard of this flow",
        )
        url.override_logical_id("DashboardUrl")
        topic = CfnOutput(
            self,
            "AlarmTopicArn",
            value=self._topic.topic_arn,
            description="Every alarm of this stack notifies this SNS topic; subscribe a pager or chat here",
        )
        topic.override_logical_id("AlarmTopicArn")
