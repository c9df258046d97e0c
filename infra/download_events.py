"""The near-real-time path (``eventBridge=true``): the trail's GetObject data events reach s3_audit within seconds.

CloudTrail hands every data event it records to EventBridge on the default bus ("AWS API Call via CloudTrail",
best effort). A rule keeps the GetObject events on the asset buckets and sends them to an event queue (+DLQ),
which s3_audit consumes in batches. The log files keep flowing beside it: they are the completeness guarantee, and
the delivery ledger meters each S3 request once whichever path brings it first.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constants import EVENT_BATCH_SIZE, EVENT_MAX_BATCHING_WINDOW, EVENT_MAX_CONCURRENCY, S3_AUDIT_TIMEOUT
from infra.secure_defaults import AuditFunction, DurableQueue

# The detail-type EventBridge gives the CloudTrail events it receives (s3_audit/envelopes.py reads the same value).
API_CALL_DETAIL_TYPE = "AWS API Call via CloudTrail"


def download_event_pattern(asset_buckets: Sequence[s3.IBucket]) -> events.EventPattern:
    """GetObject data events on the asset buckets (the trail records nothing else, but the default bus is shared)."""
    return events.EventPattern(
        source=["aws.s3"],
        detail_type=[API_CALL_DETAIL_TYPE],
        detail={
            "eventSource": ["s3.amazonaws.com"],
            "eventName": ["GetObject"],
            "requestParameters": {"bucketName": [bucket.bucket_name for bucket in asset_buckets]},
        },
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
        # The target adds the queue policy for events.amazonaws.com bound to this rule (aws:SourceArn), on the queue
        # and on the dead-letter queue, where EventBridge parks an event it could not enqueue after its retries.
        self.rule.add_target(targets.SqsQueue(self.queue.queue, dead_letter_queue=self.queue.dead_letter_queue))
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
