"""The near-real-time path (``eventBridge=true``): the trail's GetObject data events reach s3_audit within seconds.

CloudTrail hands every data event it records to EventBridge on the default bus ("AWS API Call via CloudTrail",
best effort). A rule keeps the successful presigned GetObject events on the asset buckets and sends them to an
event queue (+DLQ), which s3_audit consumes in batches; the queue admits EventBridge for this rule only, and
denies every other sender (``infra/writers.py``). The log files keep flowing beside it: they are the completeness
guarantee, and the delivery ledger meters each S3 request once whichever path brings it first.
"""

from __future__ import annotations

from collections.abc import Sequence

import jsii
from aws_cdk import Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk.interfaces import aws_events as events_refs
from constructs import Construct

from infra.constants import EVENT_BATCH_SIZE, EVENT_MAX_BATCHING_WINDOW, EVENT_MAX_CONCURRENCY, S3_AUDIT_TIMEOUT
from infra.secure_defaults import AuditFunction, DurableQueue
from infra.writers import deny_all_but_delivery

# The detail-type EventBridge gives the CloudTrail events it receives (s3_audit/envelopes.py reads the same value).
API_CALL_DETAIL_TYPE = "AWS API Call via CloudTrail"


EVENTBRIDGE_SERVICE = "events.amazonaws.com"


def download_event_pattern(asset_buckets: Sequence[s3.IBucket]) -> events.EventPattern:
    """Successful presigned GetObject data events on the asset buckets (the trail records every GetObject there, and
    the default bus is shared): no ``errorCode``, ``AuthenticationMethod`` QueryString. The function applies the same
    rules again; the filter only spares a queue message and an invocation for each event that cannot be metered."""
    return events.EventPattern(
        source=["aws.s3"],
        detail_type=[API_CALL_DETAIL_TYPE],
        detail={
            "eventSource": ["s3.amazonaws.com"],
            "eventName": ["GetObject"],
            "errorCode": [{"exists": False}],
            "additionalEventData": {"AuthenticationMethod": ["QueryString"]},
            "requestParameters": {"bucketName": [bucket.bucket_name for bucket in asset_buckets]},
        },
    )


@jsii.implements(events.IRuleTarget)
class RuleBoundQueueTarget:
    """The durable queue as the rule's target, its dead-letter queue as the target's DLQ, both admitting
    EventBridge only for this rule (``aws:SourceArn``) and this account.

    CDK's ``targets.SqsQueue`` binds the queue policy to the rule only for unencrypted queues; with ``kmsKey`` it
    admits any rule of the account. These statements are the same with and without a key.
    """

    def __init__(self, queue: DurableQueue) -> None:
        self._queue = queue

    def bind(self, rule: events_refs.IRuleRef, id: str | None = None) -> events.RuleTargetConfig:
        """Write the queue policies for the rule; EventBridge enqueues, and parks in the DLQ what it cannot."""
        for queue in (self._queue.queue, self._queue.dead_letter_queue):
            queue.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="EventBridgeFromTheDownloadRule",
                    principals=[iam.ServicePrincipal(EVENTBRIDGE_SERVICE)],
                    actions=["sqs:SendMessage"],
                    resources=[queue.queue_arn],
                    conditions={
                        "ArnEquals": {"aws:SourceArn": rule.rule_ref.rule_arn},
                        "StringEquals": {"aws:SourceAccount": Stack.of(rule).account},
                    },
                )
            )
        return events.RuleTargetConfig(
            arn=self._queue.queue.queue_arn,
            dead_letter_config=events.CfnRule.DeadLetterConfigProperty(arn=self._queue.dead_letter_queue.queue_arn),
        )


class DownloadEvents(Construct):
    """The rule on the default bus, the event queue (+DLQ) it fills and the batched event source of s3_audit."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        asset_buckets: Sequence[s3.IBucket],
        consumer: AuditFunction,
        alarm_topic: sns.ITopic,
        key: kms.IKey | None = None,
        break_glass_role_arn: str = "",
    ) -> None:
        super().__init__(scope, construct_id)
        # Under the app's key when there is one: its policy lets EventBridge in (EventBridgeToEventQueue).
        self.queue = DurableQueue(self, "Queue", consumer_timeout=S3_AUDIT_TIMEOUT, alarm_topic=alarm_topic, key=key)
        self.rule = events.Rule(
            self,
            "Rule",
            description="Presigned-download candidates (GetObject on the asset buckets) to the s3_audit event queue",
            event_pattern=download_event_pattern(asset_buckets),
        )
        # EventBridge bound to this rule (aws:SourceArn) on the queue and on the dead-letter queue, where it parks an
        # event it could not enqueue after its retries; nobody else may send to the queue.
        self.rule.add_target(RuleBoundQueueTarget(self.queue))
        for statement in deny_all_but_delivery(
            "OnlyTheDownloadRuleSends",
            actions=["sqs:SendMessage"],
            resources=[self.queue.queue.queue_arn],
            service=EVENTBRIDGE_SERVICE,
            source_arns=[self.rule.rule_arn],
            break_glass_role_arn=break_glass_role_arn,
        ):
            self.queue.queue.add_to_resource_policy(statement)
        # The event source grants the function exactly the consume rights on this queue.
        consumer.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue.queue,
                batch_size=EVENT_BATCH_SIZE,
                max_batching_window=EVENT_MAX_BATCHING_WINDOW,
                max_concurrency=EVENT_MAX_CONCURRENCY,
                report_batch_item_failures=True,
            )
        )
