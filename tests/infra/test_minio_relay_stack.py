"""Template assertions for the MinIO relay stack: routes, throttling, access logs, token handling, queues, outputs."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.constants import MINIO_RELAY_STACK_NAME
from metering.aws_calls import QUEUE_CONSUMER_ACTIONS
from tests.infra.synth import (
    IMPORTED_SECRET_ARN,
    LEDGER_ACTIONS,
    XRAY_ACTIONS,
    SynthesizedApp,
    as_list,
    function,
    get_att_arn,
    ledger_table,
    logical_id,
    only_resource,
    policy_statements,
    queue_ids,
    render,
    resources_of_type,
    role_statements,
    synthesize,
)

Template = Mapping[str, Any]
TOKEN_SECRET_ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:ogc-audit/minio-webhook-token"


@pytest.fixture(scope="module")
def default_app(module_tmp: Path) -> SynthesizedApp:
    """cdk.json defaults: both flows, the credentials secret and the webhook token created by the app."""
    return synthesize(module_tmp / "default")


@pytest.fixture(scope="module")
def relay(default_app: SynthesizedApp) -> Template:
    return default_app.templates[MINIO_RELAY_STACK_NAME]


@pytest.fixture(scope="module")
def imported_app(module_tmp: Path) -> SynthesizedApp:
    """MinIO only, with an existing client credentials secret and an existing webhook token secret."""
    return synthesize(
        module_tmp / "imported",
        enableS3Audit="false",
        clientCredentialsSecretArn=IMPORTED_SECRET_ARN,
        webhookTokenSecretArn=TOKEN_SECRET_ARN,
    )


@pytest.fixture(scope="module")
def imported_relay(imported_app: SynthesizedApp) -> Template:
    return imported_app.templates[MINIO_RELAY_STACK_NAME]


def methods(template: Template) -> dict[tuple[str, str], Mapping[str, Any]]:
    """API methods by (path, HTTP method); the path is rebuilt from the resource tree."""
    resources = template["Resources"]
    api = logical_id(template, "AWS::ApiGateway::RestApi", "WebhookApi")

    def path_of(resource_id: Any) -> str:
        if resource_id == {"Fn::GetAtt": [api, "RootResourceId"]}:
            return "/"
        properties = resources[resource_id["Ref"]]["Properties"]
        parent = path_of(properties["ParentId"])
        return f"{parent.rstrip('/')}/{properties['PathPart']}"

    return {
        (path_of(body["Properties"]["ResourceId"]), body["Properties"]["HttpMethod"]): body["Properties"]
        for body in resources_of_type(template, "AWS::ApiGateway::Method").values()
    }


# --- API -------------------------------------------------------------------------------------------------------------


def test_api_is_regional(relay: Template) -> None:
    api = only_resource(relay, "AWS::ApiGateway::RestApi")["Properties"]
    assert api["EndpointConfiguration"] == {"Types": ["REGIONAL"]}


def test_routes_are_post_and_put_on_the_processor_and_get_on_the_root(relay: Template) -> None:
    webhook, _ = function(relay, "WebhookFunction")
    routes = methods(relay)
    assert set(routes) == {("/auditlogs/processor", "POST"), ("/auditlogs/processor", "PUT"), ("/", "GET")}
    for verb in ("POST", "PUT"):
        integration = routes[("/auditlogs/processor", verb)]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert render(integration["Uri"]).endswith(f"/functions/${{{webhook}.Arn}}/invocations")


def test_health_check_answers_status_ok_without_a_function(relay: Template) -> None:
    integration = methods(relay)[("/", "GET")]["Integration"]
    assert integration["Type"] == "MOCK"
    (response,) = integration["IntegrationResponses"]
    assert response["StatusCode"] == "200"
    assert json.loads(response["ResponseTemplates"]["application/json"]) == {"status": "ok"}


def test_webhook_requires_the_authorization_header_and_answers_401_without_it(relay: Template) -> None:
    validator = logical_id(relay, "AWS::ApiGateway::RequestValidator", "WebhookApi")
    assert relay["Resources"][validator]["Properties"]["ValidateRequestParameters"] is True
    for verb in ("POST", "PUT"):
        method = methods(relay)[("/auditlogs/processor", verb)]
        assert method["RequestParameters"] == {"method.request.header.Authorization": True}
        assert method["RequestValidatorId"] == {"Ref": validator}
        assert "RequestModels" not in method  # MinIO's NDJSON bodies are parsed by the function
    response = only_resource(relay, "AWS::ApiGateway::GatewayResponse")["Properties"]
    assert (response["ResponseType"], response["StatusCode"]) == ("BAD_REQUEST_PARAMETERS", "401")


def test_stage_is_throttled(relay: Template) -> None:
    stage = only_resource(relay, "AWS::ApiGateway::Stage")["Properties"]
    (settings,) = stage["MethodSettings"]
    assert (settings["HttpMethod"], settings["ResourcePath"]) == ("*", "/*")
    assert settings["ThrottlingRateLimit"] == 50
    assert settings["ThrottlingBurstLimit"] == 100


def test_stage_writes_json_access_logs_to_a_log_group_with_retention(relay: Template) -> None:
    stage = only_resource(relay, "AWS::ApiGateway::Stage")["Properties"]
    access_log = stage["AccessLogSetting"]
    # The ARN API Gateway stores: no trailing ":*" (@aws-cdk/aws-apigateway:logGroupDestinationArnWithoutWildcard).
    destination = re.fullmatch(
        r"arn:\$\{AWS::Partition\}:logs:\$\{AWS::Region\}:\$\{AWS::AccountId\}:log-group:\$\{(\w+)\}",
        render(access_log["DestinationArn"]),
    )
    assert destination is not None, access_log["DestinationArn"]
    log_group = destination.group(1)
    assert relay["Resources"][log_group]["Properties"]["RetentionInDays"] > 0
    fields = json.loads(access_log["Format"])
    assert fields["requestId"] == "$context.requestId"
    assert fields["status"] == "$context.status"
    assert fields["ip"] == "$context.identity.sourceIp"
    assert fields["integrationLatency"] == "$context.integrationLatency"
    assert "$context.identity" not in json.dumps({k: v for k, v in fields.items() if k not in ("ip", "userAgent")})


# --- Token and environment ----------------------------------------------------------------------------------------


def test_webhook_environment_references_the_token_never_holds_it(relay: Template) -> None:
    _, webhook = function(relay, "WebhookFunction")
    token = logical_id(relay, "AWS::SecretsManager::Secret", "WebhookToken")
    queue, _ = queue_ids(relay, "Delivery")
    assert webhook["Environment"]["Variables"] == {
        "POWERTOOLS_SERVICE_NAME": "minio_relay",
        "POWERTOOLS_METRICS_NAMESPACE": "OgcAuditIngest",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "WEBHOOK_TOKEN_SECRET_ARN": {"Ref": token},
        "DELIVERY_QUEUE_URL": {"Ref": queue},
        "MAX_BODY_BYTES": str(4 * 1024 * 1024),
        "BATCH_MAX_LINES": "500",
    }
    assert (webhook["Handler"], webhook["Architectures"], webhook["Runtime"]) == (
        "minio_relay.handler.webhook",
        ["arm64"],
        "python3.14",
    )


def test_generated_token_is_never_written_into_the_template(relay: Template) -> None:
    token = only_resource(relay, "AWS::SecretsManager::Secret")["Properties"]
    assert "SecretString" not in token
    assert token["GenerateSecretString"] == {"ExcludePunctuation": True, "IncludeSpace": False, "PasswordLength": 48}
    assert '"SecretString"' not in json.dumps(relay)


def test_imported_token_is_referenced_by_arn_only(imported_relay: Template) -> None:
    assert not resources_of_type(imported_relay, "AWS::SecretsManager::Secret")
    _, webhook = function(imported_relay, "WebhookFunction")
    assert webhook["Environment"]["Variables"]["WEBHOOK_TOKEN_SECRET_ARN"] == TOKEN_SECRET_ARN
    assert role_statements(imported_relay, "WebhookFunction")[("secretsmanager:GetSecretValue",)] == [
        TOKEN_SECRET_ARN,
        f"{TOKEN_SECRET_ARN}-??????",
    ]


# --- Queue -----------------------------------------------------------------------------------------------------------


def test_deliver_gathers_lines_into_batches_of_ten(relay: Template) -> None:
    # Partial batches and the bounded concurrency of every flow: tests/infra/test_flow_stacks.py.
    mapping = only_resource(relay, "AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["BatchSize"] == 10
    assert 0 < mapping["MaximumBatchingWindowInSeconds"] <= 10


def test_webhook_keeps_the_accounts_shared_concurrency(relay: Template) -> None:
    # The webhook calls no upstream: the stage throttle bounds it, and it keeps the account's shared pool.
    _, webhook = function(relay, "WebhookFunction")
    assert "ReservedConcurrentExecutions" not in webhook


def test_webhook_has_the_cpu_share_to_read_a_hostile_body_within_its_timeout(relay: Template) -> None:
    # bench/bounded_work.py webhook: a 4 MiB body of bad entries costs up to ~3.2 CPU-s; Lambda gives one vCPU per
    # 1,769 MB, so the function needs about 1 GB to finish such a body well inside its timeout.
    _, webhook = function(relay, "WebhookFunction")
    vcpu_share = webhook["MemorySize"] / 1769
    assert 3.2 / vcpu_share < 0.6 * webhook["Timeout"]


def test_requests_are_traced_from_the_stage_through_the_functions(relay: Template) -> None:
    stage = only_resource(relay, "AWS::ApiGateway::Stage")["Properties"]
    assert stage["TracingEnabled"] is True
    for prefix in ("WebhookFunction", "DeliverFunction"):
        _, properties = function(relay, prefix)
        assert properties["TracingConfig"] == {"Mode": "Active"}, prefix
        assert role_statements(relay, prefix)[XRAY_ACTIONS] == "*"


# --- IAM -------------------------------------------------------------------------------------------------------------


def test_webhook_may_only_read_its_token_and_send_to_the_queue(relay: Template) -> None:
    queue, _ = queue_ids(relay, "Delivery")
    token = logical_id(relay, "AWS::SecretsManager::Secret", "WebhookToken")
    log_group = logical_id(relay, "AWS::Logs::LogGroup", "WebhookLogGroup")
    assert role_statements(relay, "WebhookFunction") == {
        ("logs:CreateLogStream", "logs:PutLogEvents"): get_att_arn(log_group),
        XRAY_ACTIONS: "*",
        ("secretsmanager:GetSecretValue",): {"Ref": token},
        ("sqs:SendMessage",): get_att_arn(queue),
    }


def test_deliver_may_only_consume_its_queue_and_read_the_client_credentials(relay: Template) -> None:
    queue, _ = queue_ids(relay, "Delivery")
    log_group = logical_id(relay, "AWS::Logs::LogGroup", "DeliverLogGroup")
    statements = role_statements(relay, "DeliverFunction")
    secret = statements[("secretsmanager:GetSecretValue",)]
    assert set(secret) == {"Fn::ImportValue"}
    assert statements == {
        ("logs:CreateLogStream", "logs:PutLogEvents"): get_att_arn(log_group),
        XRAY_ACTIONS: "*",
        ("secretsmanager:GetSecretValue",): secret,
        tuple(sorted(QUEUE_CONSUMER_ACTIONS)): get_att_arn(queue),
        tuple(sorted(LEDGER_ACTIONS)): get_att_arn(ledger_table(relay)),
    }


@pytest.mark.parametrize("template_fixture", ["relay", "imported_relay"])
def test_no_wildcard_resources_and_no_managed_policies(template_fixture: str, request: pytest.FixtureRequest) -> None:
    template: Template = request.getfixturevalue(template_fixture)
    for owner, statement in policy_statements(template):
        if statement["Effect"] == "Allow" and tuple(as_list(statement["Action"])) != XRAY_ACTIONS:
            assert "*" not in as_list(statement["Resource"]), owner
    for role in resources_of_type(template, "AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]


# --- Outputs and deployment modes -----------------------------------------------------------------------------------


def test_outputs_give_the_webhook_url_and_the_mc_command(relay: Template) -> None:
    outputs = {name: render(output["Value"]) for name, output in relay["Outputs"].items()}
    api = logical_id(relay, "AWS::ApiGateway::RestApi", "WebhookApi")
    stage = logical_id(relay, "AWS::ApiGateway::Stage", "WebhookApi")
    token = logical_id(relay, "AWS::SecretsManager::Secret", "WebhookToken")
    url = f"https://${{{api}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/${{{stage}}}/auditlogs/processor"
    assert outputs["WebhookUrl"] == url
    assert outputs["MinioConfigCommand"] == (
        f"mc admin config set ALIAS audit_webhook:ogc endpoint={url} "
        f'auth_token="Bearer <token: aws secretsmanager get-secret-value --secret-id ${{{token}}} '
        '--query SecretString --output text>"'
    )
    assert outputs["WebhookTokenSecretArn"] == f"${{{token}}}"


def test_minio_only_deployment_pays_for_no_trail(imported_app: SynthesizedApp) -> None:
    assert set(imported_app.templates) == {MINIO_RELAY_STACK_NAME}
    assert imported_app.stacks.s3_audit is None
    assert imported_app.stacks.credentials is None
