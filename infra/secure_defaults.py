"""Building blocks with the project's secure defaults: buckets, durable queues, functions, secrets, alarms.

Each block creates its resources locked down (encryption, TLS only, no public access, bounded retention) and
acknowledges the cdk-nag findings that are inherent to it right beside the resource, with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Acknowledgment, ArnFormat, CfnOutput, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from infra.bundling import function_code
from infra.config import ConfigError
from infra.constants import (
    ABORT_INCOMPLETE_UPLOAD_AFTER,
    ACCESS_LOG_RETENTION,
    ALARM_TOPIC_KEY_PENDING_WINDOW,
    DEAD_LETTER_RETENTION,
    FUNCTION_LOG_RETENTION,
    LAMBDA_ARCHITECTURE,
    LAMBDA_RUNTIME,
    MAX_RECEIVE_COUNT,
    POWERTOOLS_LOG_LEVEL,
    POWERTOOLS_METRICS_NAMESPACE,
    QUEUE_RETENTION,
    VISIBILITY_TIMEOUT_FACTOR,
)
from infra.encryption import KeyUse, customer_managed_key_or_skip, grant_key_use
from infra.review import skip_check
from metering import env_names
from metering import ledger as ledger_layout
from metering.aws_calls import DELIVERY_QUEUE_SEND_ACTIONS, SECRET_READ_ACTIONS

# Feature flags the constructs below rely on, with why. cdk.json is where every feature flag is set (all those
# recommended for the pinned aws-cdk-lib, see README); each stack only checks these, so a cdk.json edited by hand
# or a `-c` override stops synthesis instead of silently changing the templates.
RELIED_ON_FEATURE_FLAGS: Mapping[str, tuple[bool | str, str]] = {
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": (
        True,
        "server access logs are delivered through a bucket policy, so every bucket can disable ACLs",
    ),
    "@aws-cdk/aws-apigateway:disableCloudWatchRole": (
        True,
        "no account-wide API Gateway CloudWatch role (and its AWS managed policy)",
    ),
    "@aws-cdk/core:defaultCrossStackReferences": (
        "strong",
        "CloudFormation exports: the shared credentials secret cannot be deleted while a flow stack reads it",
    ),
}


class AuditStack(Stack):
    """A Stack that checks the feature flags its constructs rely on; subclasses pass ``**kwargs`` (env, ...) through.

    Raises ConfigError naming the flag when the context (cdk.json, ``-c``) sets it otherwise or not at all.
    """

    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        for flag, (expected, reason) in RELIED_ON_FEATURE_FLAGS.items():
            value = self.node.try_get_context(flag)
            # `-c flag=true` arrives as the string "true".
            if str(value).lower() != str(expected).lower():
                raise ConfigError(
                    f'Feature flag "{flag}" must be {json.dumps(expected)} ({reason}), got {json.dumps(value)}'
                )


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``construct`` (and its children) with the reason it is accepted."""
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def bucket_arn_finding(bucket: s3.Bucket, suffix: str) -> str:
    """The granular IAM5 id cdk-nag reports for ``<bucket arn><suffix>``, e.g. ``<LogBucket1234.Arn>/AWSLogs/*``."""
    cfn = bucket.node.default_child
    if not isinstance(cfn, s3.CfnBucket):
        raise TypeError(f"{bucket.node.path} has no CfnBucket")
    return f"AwsSolutions-IAM5[Resource::<{Stack.of(bucket).get_logical_id(cfn)}.Arn>{suffix}]"


# What every bucket of the app is: SSE-S3, private, TLS only, versioned, no ACLs, kept on stack deletion.
_LOCKED_DOWN: Mapping[str, Any] = {
    "encryption": s3.BucketEncryption.S3_MANAGED,
    "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
    "enforce_ssl": True,
    "versioned": True,
    "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    "removal_policy": RemovalPolicy.RETAIN,
}


def access_logs_bucket(scope: Construct, construct_id: str) -> s3.Bucket:
    """The target of S3 server access logs: SSE-S3 (the only encryption the log delivery supports), private, TLS.

    No server access logging of its own: logging it to itself would loop, and cdk-nag's S1 accepts a bucket
    that other buckets of the stack log to, so no acknowledgement is needed. SSE-S3 whatever kmsKey says.
    """
    bucket = s3.Bucket(
        scope,
        construct_id,
        **_LOCKED_DOWN,
        lifecycle_rules=[
            s3.LifecycleRule(
                expiration=ACCESS_LOG_RETENTION,
                noncurrent_version_expiration=ACCESS_LOG_RETENTION,
                abort_incomplete_multipart_upload_after=ABORT_INCOMPLETE_UPLOAD_AFTER,
            )
        ],
    )
    skip_check(
        bucket,
        "CKV_AWS_18",
        "This is the server access log destination of the other buckets: logging its own accesses into itself "
        "would write a log record for every log record delivered.",
    )
    return bucket


def private_bucket(
    scope: Construct,
    construct_id: str,
    *,
    access_logs: s3.IBucket,
    access_logs_prefix: str,
    lifecycle_rules: Sequence[s3.LifecycleRule] | None = None,
    access_logs_key_format: s3.TargetObjectKeyFormat | None = None,
) -> s3.Bucket:
    """A versioned, SSE-S3 encrypted, private, TLS-only bucket whose server access logs go to ``access_logs``."""
    return s3.Bucket(
        scope,
        construct_id,
        **_LOCKED_DOWN,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=access_logs_prefix,
        target_object_key_format=access_logs_key_format,
        lifecycle_rules=list(lifecycle_rules) if lifecycle_rules else None,
    )


def cloudwatch_alarms_condition(scope: Construct) -> dict[str, Any]:
    """IAM conditions that admit the CloudWatch service only on behalf of an alarm of this account and region."""
    stack = Stack.of(scope)
    return {
        "StringEquals": {"aws:SourceAccount": stack.account},
        "ArnLike": {
            "aws:SourceArn": stack.format_arn(
                service="cloudwatch", resource="alarm", resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME
            )
        },
    }


def alarm_topic(scope: Construct, construct_id: str, email: str, key: kms.IKey | None = None) -> sns.Topic:
    """The SNS topic every alarm of the stack notifies: SSE-KMS, TLS only, and mailing ``email`` when one is set.

    The topic exists without an address too, so that alarms always have an action and an operator can subscribe
    a pager or chat integration later. Encrypted with the app's ``key`` when there is one (its key policy lets
    CloudWatch publish), otherwise with a key of its own, ``<construct_id>Key``.
    """
    if key is not None:
        return _topic(scope, construct_id, email, key)
    # A customer managed key: CloudWatch cannot publish to a topic encrypted with the AWS managed SNS key.
    key = kms.Key(
        scope,
        f"{construct_id}Key",
        description="Encrypts the alarm notifications of the OGC RS metering flows",
        enable_key_rotation=True,
        # The topic keeps no messages: nothing is lost with the key, so it goes with the stack.
        removal_policy=RemovalPolicy.DESTROY,
        pending_window=ALARM_TOPIC_KEY_PENDING_WINDOW,
    )
    # CloudWatch alarms publish as the service: SNS encrypts each message with a data key made for that caller.
    # Only alarms of this account (confused-deputy protection, as the CloudWatch user guide shows it).
    alarms_of_this_account = cloudwatch_alarms_condition(scope)
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowCloudWatchAlarmsToPublish",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],  # in a key policy "*" means this key
            conditions=alarms_of_this_account,
        )
    )
    return _topic(scope, construct_id, email, key)


def _topic(scope: Construct, construct_id: str, email: str, key: kms.IKey) -> sns.Topic:
    topic = sns.Topic(scope, construct_id, master_key=key, enforce_ssl=True)
    alarms_of_this_account = cloudwatch_alarms_condition(scope)
    # The topic policy replaces SNS's default one: let this account's alarms publish, and nobody else's.
    topic.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowCloudWatchAlarmsOfThisAccount",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[topic.topic_arn],
            conditions=alarms_of_this_account,
        )
    )
    if email:
        topic.add_subscription(subscriptions.EmailSubscription(email))
    return topic


class DurableQueue(Construct):
    """An SQS queue with a dead-letter queue, SSE, TLS only, and an alarm when anything reaches the DLQ.

    SSE-KMS under the app's ``key`` when there is one, else SSE-SQS: S3 cannot send event notifications to a
    queue under the AWS managed aws/sqs key, whose policy no one can change.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        consumer_timeout: Duration,
        alarm_topic: sns.ITopic | None,
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = key
        encryption: Mapping[str, Any] = (
            {"encryption": sqs.QueueEncryption.KMS, "encryption_master_key": key}
            if key is not None
            else {"encryption": sqs.QueueEncryption.SQS_MANAGED}
        )
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            **encryption,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            **encryption,
            enforce_ssl=True,
            retention_period=QUEUE_RETENTION,
            # Lambda's guidance: a message must stay invisible through the function's retries of one batch.
            visibility_timeout=Duration.seconds(consumer_timeout.to_seconds() * VISIBILITY_TIMEOUT_FACTOR),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT),
        )
        # Anything in the DLQ is a download that is not metered yet: an operator must look.
        self.dead_letter_alarm = cloudwatch.Alarm(
            self,
            "DeadLetterAlarm",
            alarm_description="Messages reached the dead-letter queue: metering records are waiting for an operator.",
            metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        if alarm_topic is not None:
            self.dead_letter_alarm.add_alarm_action(cloudwatch_actions.SnsAction(alarm_topic))
        for queue in (self.queue, self.dead_letter_queue):
            customer_managed_key_or_skip(queue, key, "CKV_AWS_27", "SSE-SQS (SQS-managed keys)")

    def feed(
        self,
        consumer: AuditFunction,
        *,
        batch_size: int,
        max_concurrency: int,
        max_batching_window: Duration | None = None,
    ) -> None:
        """Make ``consumer`` process the queue in partial batches (a failed message is retried alone), at most
        ``max_concurrency`` batches at once; it may then receive and delete messages (and decrypt them)."""
        consumer.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=batch_size,
                max_batching_window=max_batching_window,
                max_concurrency=max_concurrency,
                report_batch_item_failures=True,
            )
        )
        skip_check(
            consumer.function,
            "CKV_AWS_116",
            "Invoked only by SQS event source mappings, synchronously: a Lambda DLQ applies to asynchronous "
            "invocations and would never receive anything; failed messages go to the queue's own dead-letter "
            "queue after 5 receives (alarmed).",
        )

    def add_url_outputs(self, name: str, *, waiting: str, failed: str) -> None:
        """Stack outputs ``<name>QueueUrl`` and ``<name>DeadLetterQueueUrl``, saying what waits in each (``waiting``,
        ``failed``): where an operator looks, and redrives from."""
        stack = Stack.of(self)
        CfnOutput(stack, f"{name}QueueUrl", value=self.queue.queue_url, description=waiting)
        CfnOutput(stack, f"{name}DeadLetterQueueUrl", value=self.dead_letter_queue.queue_url, description=failed)

    def grant_send(self, role: iam.IRole) -> None:
        """Let ``role`` send messages to the queue (and use the key for it), and nothing else."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                # What the webhook calls (SendMessageBatch), not grant_send_messages' GetQueueAttributes/GetQueueUrl.
                actions=list(DELIVERY_QUEUE_SEND_ACTIONS),
                resources=[self.queue.queue_arn],
            )
        )
        grant_key_use(role, self.key, KeyUse.SEND_TO_QUEUE)


class AuditFunction(Construct):
    """A Python Lambda function (arm64, newest runtime) with its own role and its own log group with retention.

    The role starts empty apart from writing to that log group (and X-Ray traces); callers grant exactly what the
    function needs. The log group is under the app's ``key`` when there is one. ``reserved_concurrency`` both
    guarantees and caps the function's concurrency; None leaves it in the account's shared pool.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        package: str,
        handler: str,
        service_name: str,
        memory_size: int,
        timeout: Duration,
        environment: Mapping[str, str],
        key: kms.IKey | None = None,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=FUNCTION_LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
            encryption_key=key,
        )
        customer_managed_key_or_skip(self.log_group, key, "CKV_AWS_158", "CloudWatch Logs' own encryption")
        # An explicit role instead of AWSLambdaBasicExecutionRole: logs go to this log group only.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs the {service_name} function",
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            code=function_code(package),
            handler=f"{package}.{handler}",
            memory_size=memory_size,
            timeout=timeout,
            role=self.role,
            log_group=self.log_group,
            # One trace per sampled invocation (continuing API Gateway's for the webhook); the default sampling
            # rule records 1 request a second and 5% of the rest, and the first 100,000 traces a month are free.
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
            environment={
                env_names.POWERTOOLS_SERVICE_NAME: service_name,
                env_names.POWERTOOLS_METRICS_NAMESPACE: POWERTOOLS_METRICS_NAMESPACE,
                env_names.POWERTOOLS_LOG_LEVEL: POWERTOOLS_LOG_LEVEL,
                **environment,
            },
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "Active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords accept no resource-level "
            "permissions; every other statement of the role names its resources.",
        )
        skip_check(
            self.function,
            "CKV_AWS_117",
            "No VPC: the function has no inbound network path and calls only AWS APIs and the public HTTPS "
            "endpoints of OGC RS and the auth server; a VPC would add NAT gateways and endpoints without "
            "narrowing what it can reach.",
        )
        skip_check(
            self.function,
            "CKV_AWS_173",
            "The environment holds no secret (URLs, names, ARNs; secrets are read from Secrets Manager at run "
            "time) and Lambda encrypts it at rest with its AWS managed key.",
        )


class DeliveryLedgerTable(Construct):
    """The DynamoDB table of delivered metering keys, so nothing is sent to OGC RS twice.

    On-demand (load follows downloads), keyed and expiring as ``metering.ledger`` writes it (TTL on the attribute
    holding the end of the retention window), point-in-time recovery, retained on stack deletion; encrypted with
    the app's ``key`` when there is one, else with DynamoDB's AWS owned key.
    """

    def __init__(self, scope: Construct, construct_id: str, key: kms.IKey | None = None) -> None:
        super().__init__(scope, construct_id)
        self.key = key
        encryption: Mapping[str, Any] = (
            {"encryption": dynamodb.TableEncryption.CUSTOMER_MANAGED, "encryption_key": key} if key is not None else {}
        )
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name=ledger_layout.KEY_ATTRIBUTE, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=ledger_layout.TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
            **encryption,
        )
        customer_managed_key_or_skip(self.table, key, "CKV_AWS_119", "DynamoDB's AWS owned key")

    def grant_ledger_access(self, function: AuditFunction) -> None:
        """Let ``function`` make exactly the ledger's calls on this table (``metering.ledger.DYNAMODB_ACTIONS``)."""
        function.role.add_to_principal_policy(
            iam.PolicyStatement(actions=list(ledger_layout.DYNAMODB_ACTIONS), resources=[self.table.table_arn])
        )
        grant_key_use(function.role, self.key, KeyUse.TABLE)
        function.function.add_environment(env_names.IDEMPOTENCY_TABLE_NAME, self.table.table_name)


class SecretReference:
    """A Secrets Manager secret the functions read: created by this app or given by ARN.

    An ARN given by the user may lack the 6-character suffix Secrets Manager appends to the name, so read
    access covers both the ARN as given and the ARN followed by that suffix (``-??????``, no ``*``).
    """

    def __init__(self, arn: str, *, imported: bool, key: kms.IKey | None = None) -> None:
        self.arn = arn
        self.imported = imported
        self.key = key
        """The app's key when the secret is encrypted with it; None for AWS managed encryption or a secret of
        the user's (whose key policy is the user's)."""

    @classmethod
    def of(cls, secret: secretsmanager.ISecret) -> SecretReference:
        """A secret created by this app: its ARN is complete, its key the app's (if any)."""
        return cls(secret.secret_arn, imported=False, key=secret.encryption_key)

    @classmethod
    def from_arn(cls, arn: str) -> SecretReference:
        """A secret created outside the app, by complete or partial ARN."""
        return cls(arn, imported=True)

    @property
    def read_resources(self) -> list[str]:
        """The IAM resources that cover exactly this secret."""
        return [self.arn, f"{self.arn}-??????"] if self.imported else [self.arn]

    def grant_read(self, role: iam.IRole) -> None:
        """Allow ``role`` to read the secret's value, and nothing else."""
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=list(SECRET_READ_ACTIONS), resources=self.read_resources)
        )
        grant_key_use(role, self.key, KeyUse.READ)


def app_secret(scope: Construct, construct_id: str, key: kms.IKey | None, **props: Any) -> secretsmanager.Secret:
    """A secret the app creates: under the app's ``key`` when there is one, else the AWS managed aws/secretsmanager."""
    secret = secretsmanager.Secret(scope, construct_id, encryption_key=key, **props)
    customer_managed_key_or_skip(secret, key, "CKV_AWS_149", "Secrets Manager's AWS managed key aws/secretsmanager")
    return secret
