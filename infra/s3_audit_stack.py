"""The AWS S3 flow: CloudTrail GetObject data events and/or S3 server access logs -> SQS log-file queue -> s3_audit.

``awsSource`` chooses: ``cloudtrail`` (a trail writing to the log bucket), ``access-logs`` (the asset buckets'
server access logs into a bucket of their own, no trail), or ``both`` (the function meters each S3 request once).
``eventBridge`` adds the trail's events through EventBridge beside the log files (``infra/download_events.py``).
"""

from __future__ import annotations

import jsii
from aws_cdk import Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk.interfaces import aws_s3 as s3_refs
from constructs import Construct

from infra.constants import (
    ABORT_INCOMPLETE_UPLOAD_AFTER,
    ASSET_ACCESS_LOG_PREFIX,
    CLOUDTRAIL_LOG_PREFIX,
    CLOUDTRAIL_LOG_SUFFIX,
    DOWNLOAD_TRAIL_NAME,
    EVENT_QUEUE_MAX_AGE,
    LOG_FILE_QUEUE_MAX_AGE,
    S3_AUDIT_BATCH_SIZE,
    S3_AUDIT_MAX_CONCURRENCY,
    S3_AUDIT_MEMORY_MB,
    S3_AUDIT_TIMEOUT,
)
from infra.download_events import DownloadEvents
from infra.encryption import KeyUse, customer_managed_key_or_skip, grant_key_use
from infra.flow_stack import FlowStack
from infra.monitoring import FlowMonitoring, WatchedFunction, WatchedQueue
from infra.ogc_rs import delivering_function
from infra.review import skip_check
from infra.secure_defaults import (
    DurableQueue,
    access_logs_bucket,
    acknowledge,
    bucket_arn_finding,
    private_bucket,
)
from infra.writers import deny_all_but_delivery
from metering import env_names
from metering.aws_calls import LOG_FILE_READ_ACTIONS
from metering.metric_names import FLOW_AWS_S3

# S3 delivers an event notification with this call only (no GetQueueAttributes/GetQueueUrl as CDK grants).
S3_NOTIFICATION_SEND_ACTIONS = ("sqs:SendMessage",)
# CDK's singleton handler behind Custom::S3BucketNotifications (fixed id in aws-cdk-lib).
BUCKET_NOTIFICATIONS_HANDLER_ID = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


@jsii.implements(s3.IBucketNotificationDestination)
class AccountBoundQueueDestination:
    """CDK's SqsDestination, with the queue policy bound to the notifying bucket *and* this account.

    The S3 user guide's queue policy for event notifications: ``sqs:SendMessage`` for ``s3.amazonaws.com`` on
    condition of ``aws:SourceArn`` (the bucket) and ``aws:SourceAccount`` (bucket names are global: a bucket of
    the same name in another account must not be able to write here).
    """

    def __init__(self, queue: sqs.IQueue) -> None:
        self._queue = queue

    def bind(self, scope: Construct, bucket: s3_refs.IBucketRef) -> s3.BucketNotificationDestinationConfig:
        """Add the queue (and, if it has one, key) policy statement; S3 validates it when the notification is set."""
        principal = iam.ServicePrincipal("s3.amazonaws.com")
        conditions = {
            "ArnLike": {"aws:SourceArn": bucket.bucket_ref.bucket_arn},
            "StringEquals": {"aws:SourceAccount": Stack.of(scope).account},
        }
        added = self._queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[principal],
                actions=list(S3_NOTIFICATION_SEND_ACTIONS),
                resources=[self._queue.queue_arn],
                conditions=conditions,
            )
        )
        if self._queue.encryption_master_key is not None:  # S3 encrypts the message with the queue's key
            self._queue.encryption_master_key.add_to_resource_policy(
                iam.PolicyStatement(
                    principals=[principal],
                    actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                    resources=["*"],
                    conditions=conditions,
                )
            )
        return s3.BucketNotificationDestinationConfig(
            arn=self._queue.queue_arn,
            type=s3.BucketNotificationDestinationType.QUEUE,
            dependencies=[added.policy_dependable] if added.policy_dependable is not None else None,
        )


class S3AuditStack(FlowStack):
    """Meters presigned GetObject downloads from S3 asset buckets through CloudTrail data events."""

    FLOW = FLOW_AWS_S3

    def build(self) -> None:
        self.access_logs = access_logs_bucket(self, "AccessLogsBucket")
        retention = [
            s3.LifecycleRule(
                expiration=Duration.days(self.config.log_retention_days),
                noncurrent_version_expiration=Duration.days(self.config.log_retention_days),
                abort_incomplete_multipart_upload_after=ABORT_INCOMPLETE_UPLOAD_AFTER,
            )
        ]
        # SSE-S3 like every bucket here: S3 log delivery cannot write to an SSE-KMS bucket.
        self.asset_access_logs: s3.Bucket | None = None
        if self.config.uses_access_logs:
            self.asset_access_logs = private_bucket(
                self,
                "AssetAccessLogBucket",
                access_logs=self.access_logs,
                access_logs_prefix="asset-access-log-bucket/",
                lifecycle_rules=retention,
            )
        self.created_asset_bucket: s3.Bucket | None = None
        self.asset_buckets = self._asset_buckets()
        self.log_bucket = private_bucket(
            self, "LogBucket", access_logs=self.access_logs, access_logs_prefix="log-bucket/", lifecycle_rules=retention
        )
        self.trail = self._download_trail(self.key) if self.config.uses_cloudtrail else None

        self.log_files = DurableQueue(
            self, "LogFiles", consumer_timeout=S3_AUDIT_TIMEOUT, alarm_topic=self.alarm_topic, key=self.key
        )
        if self.config.uses_cloudtrail:
            # S3 filters cannot exclude CloudTrail-Digest/ keys (same prefix and suffix): the function skips them.
            self.log_bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED,
                AccountBoundQueueDestination(self.log_files.queue),
                s3.NotificationKeyFilter(prefix=CLOUDTRAIL_LOG_PREFIX, suffix=CLOUDTRAIL_LOG_SUFFIX),
            )
        if self.asset_access_logs is not None:
            self._deliver_access_logs(self.asset_access_logs)
        self._only_notifications_send()
        self._acknowledge_notifications_handler()

        self.audit, self.ledger = delivering_function(
            self,
            "S3Audit",
            package="s3_audit",
            handler="handler.handler",
            memory_size=S3_AUDIT_MEMORY_MB,
            timeout=S3_AUDIT_TIMEOUT,
            max_concurrency=S3_AUDIT_MAX_CONCURRENCY,
        )
        if self.config.uses_cloudtrail:
            self._grant_log_reads(
                self.log_bucket,
                CLOUDTRAIL_LOG_PREFIX,
                "CloudTrail names each log file at delivery (account, region, date, random suffix); the function "
                "may read any object under AWSLogs/ of the log bucket and nothing else.",
            )
        if self.asset_access_logs is not None:
            self._grant_log_reads(
                self.asset_access_logs,
                ASSET_ACCESS_LOG_PREFIX,
                "S3 names each access-log object at delivery (account, region, bucket, date, unique string); the "
                "function may read any object under access-logs/ of the access-log bucket and nothing else.",
            )
        # CloudTrail encrypts each log file with the app's key, when there is one.
        grant_key_use(self.audit.role, self.key, KeyUse.READ)
        self._tell_log_origins()
        self.log_files.feed(self.audit, batch_size=S3_AUDIT_BATCH_SIZE, max_concurrency=S3_AUDIT_MAX_CONCURRENCY)
        self.download_events: DownloadEvents | None = None
        watched_queues = [WatchedQueue("LogFiles", self.log_files, LOG_FILE_QUEUE_MAX_AGE)]
        if self.config.event_bridge:
            if self.trail is None:  # AuditConfig refuses this combination; a trail is what feeds EventBridge
                raise ValueError("eventBridge needs a trail (awsSource cloudtrail or both)")
            self.download_events = DownloadEvents(
                self,
                "DownloadEvents",
                asset_buckets=self.asset_buckets,
                consumer=self.audit,
                alarm_topic=self.alarm_topic,
                key=self.key,
                break_glass_role_arn=self.config.break_glass_role_arn,
            )
            watched_queues.append(WatchedQueue("Events", self.download_events.queue, EVENT_QUEUE_MAX_AGE))
        self.monitoring = FlowMonitoring(
            self,
            "Monitoring",
            flow=self.FLOW,
            topic=self.alarm_topic,
            queues=watched_queues,
            functions=[WatchedFunction("S3Audit", self.audit, S3_AUDIT_TIMEOUT)],
            trail_log_files=self.log_files if self.config.uses_cloudtrail else None,
            access_log_files=self.log_files if self.config.uses_access_logs else None,
            event_path=self.config.event_bridge,
        )
        self._outputs()

    def _asset_buckets(self) -> list[s3.IBucket]:
        """The buckets whose downloads are metered: the configured ones, or one created here."""
        if self.config.asset_buckets:
            return [
                s3.Bucket.from_bucket_name(self, f"AssetBucket{index}", name)
                for index, name in enumerate(self.config.asset_buckets)
            ]
        if self.asset_access_logs is not None:
            # Its server access logs are what the function meters: into their own bucket, partitioned by date.
            created = private_bucket(
                self,
                "AssetBucket",
                access_logs=self.asset_access_logs,
                access_logs_prefix=ASSET_ACCESS_LOG_PREFIX,
                access_logs_key_format=s3.TargetObjectKeyFormat.partitioned_prefix(s3.PartitionDateSource.EVENT_TIME),
            )
        else:
            created = private_bucket(
                self, "AssetBucket", access_logs=self.access_logs, access_logs_prefix="asset-bucket/"
            )
        self.created_asset_bucket = created
        return [created]

    def _tell_log_origins(self) -> None:
        """The function reads each source only from its own bucket, CloudTrail files only of the accepted accounts
        (s3_audit.sources.registry.LogOrigins): the second lock behind the bucket policies."""
        if self.config.uses_cloudtrail:
            self.audit.function.add_environment(env_names.CLOUDTRAIL_LOG_BUCKET, self.log_bucket.bucket_name)
            accounts = ",".join([self.account, *self.config.trail_account_ids])
            self.audit.function.add_environment(env_names.TRAIL_ACCOUNT_IDS, accounts)
        if self.asset_access_logs is not None:
            self.audit.function.add_environment(env_names.ACCESS_LOG_BUCKET, self.asset_access_logs.bucket_name)

    def _only_notifications_send(self) -> None:
        """Only the log buckets' notifications (and the break-glass role) may send to the log-file queue."""
        notifying = [self.log_bucket] if self.config.uses_cloudtrail else []
        if self.asset_access_logs is not None:
            notifying.append(self.asset_access_logs)
        for statement in deny_all_but_delivery(
            "OnlyLogBucketNotificationsSend",
            actions=["sqs:SendMessage"],
            resources=[self.log_files.queue.queue_arn],
            service="s3.amazonaws.com",
            source_arns=[bucket.bucket_arn for bucket in notifying],
            break_glass_role_arn=self.config.break_glass_role_arn,
        ):
            self.log_files.queue.add_to_resource_policy(statement)

    def _grant_log_reads(self, bucket: s3.Bucket, prefix: str, reason: str) -> None:
        """The function may read the log objects under ``prefix`` of ``bucket``, and nothing else of it."""
        self.audit.role.add_to_principal_policy(
            iam.PolicyStatement(actions=list(LOG_FILE_READ_ACTIONS), resources=[bucket.arn_for_objects(f"{prefix}*")])
        )
        acknowledge(self.audit.role, bucket_arn_finding(bucket, f"/{prefix}*"), reason)

    def _deliver_access_logs(self, bucket: s3.Bucket) -> None:
        """Access-log objects notify the log-file queue; existing asset buckets may deliver into the bucket."""
        bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            AccountBoundQueueDestination(self.log_files.queue),
            s3.NotificationKeyFilter(prefix=ASSET_ACCESS_LOG_PREFIX),
        )
        # Only S3 log delivery for the asset buckets (and the break-glass role) writes access logs.
        for statement in deny_all_but_delivery(
            "OnlyAssetBucketLogDeliveryWrites",
            actions=["s3:PutObject"],
            resources=[bucket.arn_for_objects(f"{ASSET_ACCESS_LOG_PREFIX}*")],
            service="logging.s3.amazonaws.com",
            source_arns=[asset.bucket_arn for asset in self.asset_buckets],
            break_glass_role_arn=self.config.break_glass_role_arn,
        ):
            bucket.add_to_resource_policy(statement)
        if not self.config.asset_buckets:
            return  # CDK writes the logging service's statement for the asset bucket it creates
        # Existing buckets: their owner turns logging on (see the output); the bucket lets only them write.
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="S3ServerAccessLogsFromAssetBuckets",
                principals=[iam.ServicePrincipal("logging.s3.amazonaws.com")],
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{ASSET_ACCESS_LOG_PREFIX}*")],
                conditions={
                    "ArnLike": {"aws:SourceArn": [asset.bucket_arn for asset in self.asset_buckets]},
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )
        for index, name in enumerate(self.config.asset_buckets):
            CfnOutput(
                self,
                f"EnableAccessLogs{index}",
                description=f"Run once to send {name}'s server access logs to the function (same account and region)",
                value=(
                    f"aws s3api put-bucket-logging --bucket {name} --bucket-logging-status "
                    f'\'{{"LoggingEnabled":{{"TargetBucket":"{bucket.bucket_name}",'
                    f'"TargetPrefix":"{ASSET_ACCESS_LOG_PREFIX}",'
                    '"TargetObjectKeyFormat":{"PartitionedPrefix":{"PartitionDateSource":"EventTime"}}}}\''
                ),
            )

    def _download_trail(self, key: kms.IKey | None) -> cloudtrail.Trail:
        """A trail recording only GetObject data events on the asset buckets, delivered to the log bucket.

        With a key, the log files are encrypted with it (the key policy's CloudTrail statements name the trail).
        """
        # The bucket policy binds CloudTrail to the trail's ARN without a reference to the trail resource (the
        # trail depends on the bucket policy: a reference back is a cycle), so the trail has a fixed name: bound to
        # "any trail of the account", any principal allowed to create a trail could deliver log files here.
        trail_name = DOWNLOAD_TRAIL_NAME
        self._admit_cloudtrail(trail_name)
        trail = cloudtrail.Trail(
            self,
            "DownloadTrail",
            trail_name=trail_name,
            encryption_key=key,
            # A reference without a policy of its own: the construct's statements, which admit CloudTrail
            # on behalf of any trail, are not written; _admit_cloudtrail wrote the bound ones.
            bucket=s3.Bucket.from_bucket_attributes(
                self,
                "LogBucketForTrail",
                bucket_arn=self.log_bucket.bucket_arn,
                bucket_name=self.log_bucket.bucket_name,
            ),
            # Data events are billed per event, not per region: a multi-region trail costs nothing more and
            # still meters asset buckets that live in another region than this stack.
            is_multi_region_trail=True,
            # CloudTrail requires global service events on multi-region trails; no management events are
            # selected below, so none are recorded.
            include_global_service_events=True,
            enable_file_validation=True,
            # No management_events here: the construct would then demand basic event selectors. The advanced
            # selectors below replace them, and having no Management category they record no management events.
            send_to_cloud_watch_logs=False,
        )
        cfn_trail = trail.node.default_child
        if not isinstance(cfn_trail, cloudtrail.CfnTrail):
            raise TypeError("the Trail construct no longer wraps a CfnTrail")
        cfn_trail.advanced_event_selectors = [
            cloudtrail.CfnTrail.AdvancedEventSelectorProperty(
                name="GetObject on asset buckets",
                field_selectors=[
                    cloudtrail.CfnTrail.AdvancedFieldSelectorProperty(field="eventCategory", equal_to=["Data"]),
                    cloudtrail.CfnTrail.AdvancedFieldSelectorProperty(
                        field="resources.type", equal_to=["AWS::S3::Object"]
                    ),
                    cloudtrail.CfnTrail.AdvancedFieldSelectorProperty(field="eventName", equal_to=["GetObject"]),
                    # Only the asset buckets, never the log bucket (a feedback loop billed per event).
                    cloudtrail.CfnTrail.AdvancedFieldSelectorProperty(
                        field="resources.ARN", starts_with=[f"{bucket.bucket_arn}/" for bucket in self.asset_buckets]
                    ),
                ],
            )
        ]
        # CloudFormation refuses EventSelectors beside AdvancedEventSelectors, even empty ones.
        cfn_trail.add_property_deletion_override("EventSelectors")
        # CloudTrail checks the bucket policy when the trail is created.
        if self.log_bucket.policy is not None:
            trail.node.add_dependency(self.log_bucket.policy)
        customer_managed_key_or_skip(trail, key, "CKV_AWS_35", "Log files under the log bucket's SSE-S3")
        # No CloudWatch Logs copy: the s3_audit function reads the log files, and a copy would double the
        # cost of every recorded event.
        return trail

    def _admit_cloudtrail(self, trail_name: str) -> None:
        """The log bucket's statements for CloudTrail (AWS CloudTrail user guide, "Amazon S3 bucket policy for
        CloudTrail"): GetBucketAcl on the bucket, PutObject under AWSLogs/<account>/, bound by aws:SourceArn to the
        trail named ``trail_name``; and the denies that keep every other writer out of AWSLogs/.
        """
        trail_arn = self.format_arn(service="cloudtrail", resource="trail", resource_name=trail_name)
        this_trail = {"StringEquals": {"aws:SourceArn": trail_arn}}
        principal = iam.ServicePrincipal("cloudtrail.amazonaws.com")
        self.log_bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudTrailAclCheck",
                principals=[principal],
                actions=["s3:GetBucketAcl"],
                resources=[self.log_bucket.bucket_arn],
                conditions=this_trail,
            )
        )
        self.log_bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudTrailWrite",
                principals=[principal],
                actions=["s3:PutObject"],
                resources=[self.log_bucket.arn_for_objects(f"{CLOUDTRAIL_LOG_PREFIX}{self.account}/*")],
                conditions={
                    **this_trail,
                    "StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control", **this_trail.get("StringEquals", {})},
                },
            )
        )
        # And nobody else: no other principal, trail, account or service writes under AWSLogs/ (any account's).
        for statement in deny_all_but_delivery(
            "OnlyTheTrailWritesLogs",
            actions=["s3:PutObject"],
            resources=[self.log_bucket.arn_for_objects(f"{CLOUDTRAIL_LOG_PREFIX}*")],
            service="cloudtrail.amazonaws.com",
            source_arns=[trail_arn],
            break_glass_role_arn=self.config.break_glass_role_arn,
        ):
            self.log_bucket.add_to_resource_policy(statement)

    def _acknowledge_notifications_handler(self) -> None:
        """CDK's own function that writes the bucket notification configuration at deployment time."""
        handler = self.node.try_find_child(BUCKET_NOTIFICATIONS_HANDLER_ID)
        if handler is None:
            return
        acknowledge(
            handler,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "CDK's deployment-time handler for bucket notifications; it only writes its own logs.",
        )
        deployment_only = "CDK's handler of Custom::S3BucketNotifications, run by CloudFormation at deployment only"
        skip_check(
            handler,
            "CKV_AWS_116",
            f"{deployment_only}: invoked synchronously, a failure fails the deployment; no asynchronous event to park.",
        )
        skip_check(
            handler,
            "CKV_AWS_117",
            f"{deployment_only}: it calls only the S3 API (PutBucketNotificationConfiguration), no VPC resource.",
        )
        skip_check(
            handler,
            "CKV_AWS_115",
            f"{deployment_only}: one invocation per deployment, nothing to bound or guarantee.",
        )

    def _outputs(self) -> None:
        CfnOutput(self, "LogBucketName", value=self.log_bucket.bucket_name, description="CloudTrail log bucket")
        self.log_files.add_url_outputs(
            "LogFile",
            waiting="Log files to meter",
            failed="Log files that failed 5 times; redrive them once the cause is fixed",
        )
        if self.download_events is not None:
            self.download_events.queue.add_url_outputs(
                "Event",
                waiting="Download events from EventBridge, metered within seconds (the log files follow)",
                failed="Events that failed 5 times or could not be enqueued; their log files still meter them",
            )
        if self.created_asset_bucket is not None:
            CfnOutput(
                self,
                "AssetBucketName",
                value=self.created_asset_bucket.bucket_name,
                description="Asset bucket whose presigned downloads are metered",
            )
