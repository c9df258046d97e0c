"""The MinIO flow: audit webhook -> API Gateway -> webhook Lambda -> SQS delivery queue -> deliver Lambda -> OGC RS."""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_wafv2 as wafv2

from infra.config import AuditConfig
from infra.constants import (
    API_STAGE_NAME,
    API_THROTTLE_BURST_LIMIT,
    API_THROTTLE_RATE_LIMIT,
    DELIVER_BATCH_SIZE,
    DELIVER_MAX_BATCHING_WINDOW,
    DELIVER_MAX_CONCURRENCY,
    DELIVER_MEMORY_MB,
    DELIVER_TIMEOUT,
    DELIVERY_QUEUE_MAX_AGE,
    FUNCTION_LOG_RETENTION,
    MINIO_WEBHOOK_TARGET,
    WEBHOOK_MAX_BODY_BYTES,
    WEBHOOK_MEMORY_MB,
    WEBHOOK_TIMEOUT,
    WEBHOOK_TOKEN_LENGTH,
    WEBHOOK_WAF_RATE_LIMIT,
    WEBHOOK_WAF_RATE_WINDOW_SECONDS,
)
from infra.encryption import customer_managed_key_or_skip
from infra.flow_stack import FlowStack
from infra.monitoring import FlowMonitoring, WatchedFunction, WatchedQueue
from infra.ogc_rs import delivering_function
from infra.review import skip_check
from infra.secure_defaults import (
    AuditFunction,
    DurableQueue,
    SecretReference,
    acknowledge,
    app_secret,
)
from infra.writers import deny_all_but_roles
from metering import env_names
from metering.metric_names import FLOW_MINIO
from minio_relay.routes import WEBHOOK_PATH

# One JSON object per request in the stage's access log group.
ACCESS_LOG_FIELDS = {
    "requestId": apigateway.AccessLogField.context_request_id(),
    "requestTime": apigateway.AccessLogField.context_request_time(),
    "ip": apigateway.AccessLogField.context_identity_source_ip(),
    "userAgent": apigateway.AccessLogField.context_identity_user_agent(),
    "httpMethod": apigateway.AccessLogField.context_http_method(),
    "resourcePath": apigateway.AccessLogField.context_resource_path(),
    "protocol": apigateway.AccessLogField.context_protocol(),
    "status": apigateway.AccessLogField.context_status(),
    "responseLength": apigateway.AccessLogField.context_response_length(),
    "responseLatency": apigateway.AccessLogField.context_response_latency(),
    "integrationStatus": apigateway.AccessLogField.context_integration_status(),
    "integrationLatency": apigateway.AccessLogField.context_integration_latency(),
    "errorMessage": apigateway.AccessLogField.context_error_message(),
}
HEALTH_RESPONSE = '{"status":"ok"}'


class MinioRelayStack(FlowStack):
    """Receives MinIO's audit webhook, answers at once, and delivers metered lines to OGC RS through a queue."""

    FLOW = FLOW_MINIO

    def build(self) -> None:
        self.webhook_token = self._webhook_token(self.config)
        self.delivery = DurableQueue(
            self, "Delivery", consumer_timeout=DELIVER_TIMEOUT, alarm_topic=self.alarm_topic, key=self.key
        )

        self.webhook = AuditFunction(
            self,
            "Webhook",
            package="minio_relay",
            handler="handler.webhook",
            service_name=self.service_name,
            memory_size=WEBHOOK_MEMORY_MB,
            timeout=WEBHOOK_TIMEOUT,
            environment={
                env_names.WEBHOOK_TOKEN_SECRET_ARN: self.webhook_token.arn,
                env_names.DELIVERY_QUEUE_URL: self.delivery.queue.queue_url,
                env_names.MAX_BODY_BYTES: str(WEBHOOK_MAX_BODY_BYTES),
                # One queue message holds at most one OGC RS request's worth of lines.
                env_names.BATCH_MAX_LINES: str(self.config.batch_max_lines),
            },
            key=self.key,
        )
        skip_check(
            self.webhook.function,
            "CKV_AWS_116",
            "Invoked synchronously by API Gateway only: a Lambda DLQ applies to asynchronous invocations; a body "
            "that fails is answered 5xx and MinIO keeps and re-sends it from its queue_dir.",
        )
        skip_check(
            self.webhook.function,
            "CKV_AWS_115",
            "No reserved concurrency: it calls no upstream (it only enqueues), the stage throttle "
            f"({API_THROTTLE_RATE_LIMIT} requests/s, burst {API_THROTTLE_BURST_LIMIT}) bounds it, and a throttled "
            "request is re-sent by MinIO; reserving would take capacity from every other function of the account.",
        )
        self.webhook_token.grant_read(self.webhook.role)
        self.delivery.grant_send(self.webhook.role)
        # Whatever reaches the delivery queue is sent to OGC RS: only the webhook (and the break-glass role) sends.
        senders = [self.webhook.role.role_arn]
        if self.config.break_glass_role_arn:
            senders.append(self.config.break_glass_role_arn)
        self.delivery.queue.add_to_resource_policy(
            deny_all_but_roles(
                "OnlyTheWebhookSends",
                actions=["sqs:SendMessage"],
                resources=[self.delivery.queue.queue_arn],
                role_arns=senders,
            )
        )

        self.deliver, self.ledger = delivering_function(
            self,
            "Deliver",
            package="minio_relay",
            handler="handler.deliver",
            memory_size=DELIVER_MEMORY_MB,
            timeout=DELIVER_TIMEOUT,
            max_concurrency=DELIVER_MAX_CONCURRENCY,
        )
        # OGC RS must not be flooded when it comes back after an outage with a full queue.
        self.delivery.feed(
            self.deliver,
            batch_size=DELIVER_BATCH_SIZE,
            max_batching_window=DELIVER_MAX_BATCHING_WINDOW,
            max_concurrency=DELIVER_MAX_CONCURRENCY,
        )

        self.api = self._webhook_api()
        self.web_acl = self._webhook_firewall() if self.config.webhook_waf else None
        self.monitoring = FlowMonitoring(
            self,
            "Monitoring",
            flow=self.FLOW,
            topic=self.alarm_topic,
            queues=[WatchedQueue("Delivery", self.delivery, DELIVERY_QUEUE_MAX_AGE)],
            functions=[
                WatchedFunction("Webhook", self.webhook, WEBHOOK_TIMEOUT),
                WatchedFunction("Deliver", self.deliver, DELIVER_TIMEOUT),
            ],
            api=self.api,
        )
        self._outputs()

    def _webhook_token(self, config: AuditConfig) -> SecretReference:
        """The token MinIO presents: imported by ARN, or generated here (the SecretString is the token itself)."""
        if config.webhook_token_secret_arn:
            return SecretReference.from_arn(config.webhook_token_secret_arn)
        secret = app_secret(
            self,
            "WebhookToken",
            self.key,
            description="Token MinIO sends in the Authorization header of its audit webhook (auth_token).",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=WEBHOOK_TOKEN_LENGTH,
                # Pasted into an `mc admin config set` command line: letters and digits only.
                exclude_punctuation=True,
                include_space=False,
            ),
        )
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            "MinIO holds a copy of this token in its own configuration; rotation must change both at once "
            "(mc admin config set, then put-secret-value), which a Secrets Manager rotation function cannot do.",
        )
        return SecretReference.of(secret)

    def _webhook_api(self) -> apigateway.RestApi:
        """Regional REST API: POST and PUT /auditlogs/processor to the webhook, GET / answered by a mock."""
        access_logs = logs.LogGroup(self, "ApiAccessLogs", retention=FUNCTION_LOG_RETENTION, encryption_key=self.key)
        customer_managed_key_or_skip(access_logs, self.key, "CKV_AWS_158", "CloudWatch Logs' own encryption")
        api = apigateway.RestApi(
            self,
            "WebhookApi",
            # Named after the stack: API Gateway metrics are keyed by API name, so two deployments stay apart.
            rest_api_name=f"{self.stack_name}-webhook",
            description="MinIO audit webhook for OGC RS metering",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            policy=self._only_minio_addresses(),
            # The account-wide CloudWatch role is shared by every API of the account: not this stack's to own.
            cloud_watch_role=False,
            deploy_options=apigateway.StageOptions(
                stage_name=API_STAGE_NAME,
                throttling_rate_limit=API_THROTTLE_RATE_LIMIT,
                throttling_burst_limit=API_THROTTLE_BURST_LIMIT,
                # One trace per sampled request, continued in the webhook function's trace.
                tracing_enabled=True,
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
            ),
        )
        if not self.config.webhook_waf:
            acknowledge(
                api,
                "AwsSolutions-APIG3",
                "WAF is optional (webhookWaf=true, about 7 USD a month, README): without it requests without the "
                "token are refused by the function, minioSourceCidrs refuses other addresses, the stage is "
                "throttled and bodies are size-limited.",
            )
        skip_check(
            api.deployment_stage,
            "CKV_AWS_120",
            "No cache: every request is a distinct batch of audit entries that must reach the queue; a cached "
            "answer would acknowledge entries that were never enqueued. GET / is a constant mock.",
        )
        acknowledge(
            api,
            "AwsSolutions-APIG6",
            "Execution logging needs the account-wide API Gateway CloudWatch role, which this stack must not own; "
            "the stage writes a JSON access log line per request and the functions log every outcome.",
        )

        # A request without the header never reaches the function, and MinIO sees 401 as it would from it.
        # Bodies are not validated: no model is attached (MinIO sends NDJSON without a Content-Type), the
        # function parses them; the flag only satisfies cdk-nag APIG2, which wants both flags on.
        validator = api.add_request_validator(
            "AuthorizationHeader", validate_request_parameters=True, validate_request_body=True
        )
        api.add_gateway_response(
            "MissingToken",
            type=apigateway.ResponseType.BAD_REQUEST_PARAMETERS,
            status_code="401",
            templates={"application/json": '{"message": "missing Authorization header"}'},
        )
        processor = api.root.resource_for_path(WEBHOOK_PATH.lstrip("/"))
        integration = apigateway.LambdaIntegration(self.webhook.function, proxy=True, allow_test_invoke=False)
        for method in ("POST", "PUT"):  # MinIO sends POST; some of its documentation says PUT.
            webhook_method = processor.add_method(
                method,
                integration,
                request_parameters={"method.request.header.Authorization": True},
                request_validator=validator,
            )
            self._acknowledge_token_checked_by_function(webhook_method)

        health = api.root.add_method(
            "GET",
            apigateway.MockIntegration(
                request_templates={"application/json": '{"statusCode": 200}'},
                passthrough_behavior=apigateway.PassthroughBehavior.WHEN_NO_TEMPLATES,
                integration_responses=[
                    apigateway.IntegrationResponse(
                        status_code="200", response_templates={"application/json": HEALTH_RESPONSE}
                    )
                ],
            ),
            method_responses=[apigateway.MethodResponse(status_code="200")],
        )
        health_reason = "Public health check: API Gateway answers a constant JSON itself; nothing behind it is reached."
        for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
            acknowledge(health, rule, health_reason)
        skip_check(health, "CKV_AWS_59", health_reason)
        return api

    def _only_minio_addresses(self) -> iam.PolicyDocument | None:
        """The API's resource policy with minioSourceCidrs: invoke from MinIO's addresses only (403 for others)."""
        cidrs = list(self.config.minio_source_cidrs)
        if not cidrs:
            return None
        every_method = "execute-api:/*"
        return iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="InvokeWebhook",
                    principals=[iam.AnyPrincipal()],
                    actions=["execute-api:Invoke"],
                    resources=[every_method],
                ),
                iam.PolicyStatement(
                    sid="OnlyFromMinio",
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["execute-api:Invoke"],
                    resources=[every_method],
                    conditions={"NotIpAddress": {"aws:SourceIp": cidrs}},
                ),
            ]
        )

    def _webhook_firewall(self) -> wafv2.CfnWebACL:
        """webhookWaf=true: a regional web ACL on the stage, evaluated before the resource policy and the throttle.

        With minioSourceCidrs it blocks every other address; every address outside them is rate-limited per IP
        (WEBHOOK_WAF_RATE_LIMIT per 5 minutes), so no one caller can use up the stage throttle MinIO needs.
        """
        cidrs = list(self.config.minio_source_cidrs)
        rules: list[wafv2.CfnWebACL.RuleProperty] = []
        minio: wafv2.CfnWebACL.StatementProperty | None = None
        if cidrs:
            addresses = wafv2.CfnIPSet(
                self,
                "MinioAddresses",
                scope="REGIONAL",
                ip_address_version="IPV4",
                addresses=cidrs,
                description="MinIO addresses from minioSourceCidrs, the only callers of the webhook",
            )
            minio = wafv2.CfnWebACL.StatementProperty(
                ip_set_reference_statement=wafv2.CfnWebACL.IPSetReferenceStatementProperty(arn=addresses.attr_arn)
            )
            rules.append(
                self._waf_rule(
                    "BlockOtherAddresses",
                    0,
                    wafv2.CfnWebACL.StatementProperty(
                        not_statement=wafv2.CfnWebACL.NotStatementProperty(statement=minio)
                    ),
                )
            )
        rate = wafv2.CfnWebACL.RateBasedStatementProperty(
            aggregate_key_type="IP",
            limit=WEBHOOK_WAF_RATE_LIMIT,
            evaluation_window_sec=WEBHOOK_WAF_RATE_WINDOW_SECONDS,
            scope_down_statement=(
                wafv2.CfnWebACL.StatementProperty(not_statement=wafv2.CfnWebACL.NotStatementProperty(statement=minio))
                if minio is not None
                else None
            ),
        )
        rules.append(
            self._waf_rule("RateLimitPerAddress", 1, wafv2.CfnWebACL.StatementProperty(rate_based_statement=rate))
        )
        web_acl = wafv2.CfnWebACL(
            self,
            "WebhookFirewall",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            description="MinIO audit webhook: only MinIO addresses when configured, a rate limit per address",
            visibility_config=self._waf_visibility("WebhookFirewall"),
            rules=rules,
        )
        skip_check(
            web_acl,
            "CKV_AWS_192",
            "The Log4j rule set (AWSManagedRulesKnownBadInputsRuleSet) guards Java backends; behind this web ACL is "
            "a Python function that never logs the body or headers through a lookup-expanding logger, and each "
            "managed rule group adds a monthly rule charge.",
        )
        stage = self.api.deployment_stage
        wafv2.CfnWebACLAssociation(
            self,
            "WebhookFirewallAssociation",
            web_acl_arn=web_acl.attr_arn,
            resource_arn=Stack.of(self).format_arn(
                service="apigateway",
                account="",
                resource="/restapis",
                resource_name=f"{self.api.rest_api_id}/stages/{stage.stage_name}",
            ),
        )
        return web_acl

    @staticmethod
    def _waf_visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
        # Metrics per rule (free); sampled requests show who was blocked.
        return wafv2.CfnWebACL.VisibilityConfigProperty(
            cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
        )

    def _waf_rule(
        self, name: str, priority: int, statement: wafv2.CfnWebACL.StatementProperty
    ) -> wafv2.CfnWebACL.RuleProperty:
        return wafv2.CfnWebACL.RuleProperty(
            name=name,
            priority=priority,
            action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            statement=statement,
            visibility_config=self._waf_visibility(name),
        )

    @staticmethod
    def _acknowledge_token_checked_by_function(method: apigateway.Method) -> None:
        reason = (
            "MinIO's audit webhook can only send a static Authorization header (auth_token): no IAM signature, "
            "no Cognito. The webhook function compares it with the token secret in constant time and answers 401."
        )
        acknowledge(method, "AwsSolutions-APIG4", reason)
        acknowledge(method, "AwsSolutions-COG4", reason)
        skip_check(method, "CKV_AWS_59", reason)

    def _outputs(self) -> None:
        webhook_url = self.api.url_for_path(WEBHOOK_PATH)
        CfnOutput(self, "WebhookUrl", value=webhook_url, description="MinIO audit_webhook endpoint")
        token_hint = (
            "<token: aws secretsmanager get-secret-value --secret-id "
            f"{self.webhook_token.arn} --query SecretString --output text>"
        )
        CfnOutput(
            self,
            "MinioConfigCommand",
            value=f"mc admin config set ALIAS audit_webhook:{MINIO_WEBHOOK_TARGET} endpoint={webhook_url} "
            f'auth_token="Bearer {token_hint}"',
            description="Run with your mc alias and the token, then: mc admin service restart ALIAS",
        )
        CfnOutput(self, "WebhookTokenSecretArn", value=self.webhook_token.arn, description="The webhook token")
        self.delivery.add_url_outputs(
            "Delivery",
            waiting="Lines waiting for OGC RS",
            failed="Deliveries that failed 5 times; redrive them once the cause is fixed",
        )
