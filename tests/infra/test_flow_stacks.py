"""What every flow's stack must have (``infra/flow_stack.py``), asserted for both: the input queue and its DLQ, the
function that delivers to OGC RS (its settings, its concurrency, its ledger), no secret in any environment, the
outputs an operator needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.constants import CREDENTIALS_STACK_NAME, MINIO_RELAY_STACK_NAME, S3_AUDIT_STACK_NAME
from metering.ledger import KEY_ATTRIBUTE, TTL_ATTRIBUTE
from tests.infra.synth import (
    IMPORTED_SECRET_ARN,
    SynthesizedApp,
    function,
    get_att_arn,
    ledger_table,
    logical_id,
    only_resource,
    queue_ids,
    render,
    resources_of_type,
    synthesize,
)

Template = Mapping[str, Any]
FOURTEEN_DAYS = 14 * 24 * 3600


@dataclass(frozen=True)
class FlowStackNames:
    """Where a flow stack's shared parts are, by construct id."""

    delivering_function: str
    """Logical id prefix of the function that delivers to OGC RS."""
    queue: str
    """Label of the durable queue that feeds it."""
    queue_outputs: str
    """Prefix of the stack outputs with the URLs of that queue and of its dead-letter queue."""
    service: str
    handler: str


FLOW_STACKS = {  # stack: (delivering function, queue label, queue outputs prefix, service, handler)
    S3_AUDIT_STACK_NAME: FlowStackNames(
        "S3AuditFunction", "LogFiles", "LogFile", "s3_audit", "s3_audit.handler.handler"
    ),
    MINIO_RELAY_STACK_NAME: FlowStackNames(
        "DeliverFunction", "Delivery", "Delivery", "minio_relay", "minio_relay.handler.deliver"
    ),
}


@pytest.fixture(scope="module")
def default_app(module_tmp: Path) -> SynthesizedApp:
    """cdk.json defaults: both flows, the credentials secret created by the app."""
    return synthesize(module_tmp / "default")


@pytest.fixture(scope="module", params=list(FLOW_STACKS))
def stack_name(request: pytest.FixtureRequest) -> str:
    """Each test runs once per flow stack."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def names(stack_name: str) -> FlowStackNames:
    return FLOW_STACKS[stack_name]


@pytest.fixture(scope="module")
def template(default_app: SynthesizedApp, stack_name: str) -> Template:
    return default_app.templates[stack_name]


@pytest.fixture(scope="module")
def imported_app(module_tmp: Path) -> SynthesizedApp:
    """Both flows with an existing client credentials secret and an existing webhook token secret."""
    return synthesize(
        module_tmp / "imported",
        clientCredentialsSecretArn=IMPORTED_SECRET_ARN,
        webhookTokenSecretArn="arn:aws:secretsmanager:eu-central-1:123456789012:secret:ogc-audit/minio-webhook-token",
    )


def test_input_queue_keeps_messages_for_days_and_parks_failures_in_a_dead_letter_queue(
    template: Template, names: FlowStackNames
) -> None:
    queue, dead_letter_queue = queue_ids(template, names.queue)
    resources = template["Resources"]
    properties = resources[queue]["Properties"]
    assert properties["RedrivePolicy"] == {"deadLetterTargetArn": get_att_arn(dead_letter_queue), "maxReceiveCount": 5}
    assert properties["MessageRetentionPeriod"] == FOURTEEN_DAYS
    assert resources[dead_letter_queue]["Properties"]["MessageRetentionPeriod"] == FOURTEEN_DAYS
    assert "RedrivePolicy" not in resources[dead_letter_queue]["Properties"]
    for name in (queue, dead_letter_queue):
        assert resources[name]["Properties"]["SqsManagedSseEnabled"] is True, name
    _, consumer = function(template, names.delivering_function)
    assert properties["VisibilityTimeout"] >= 6 * consumer["Timeout"]


def test_queues_refuse_plain_http(template: Template, names: FlowStackNames) -> None:
    secured = {
        queue["Ref"]
        for body in resources_of_type(template, "AWS::SQS::QueuePolicy").values()
        for statement in body["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for queue in body["Properties"]["Queues"]
    }
    assert secured == set(queue_ids(template, names.queue))


def test_delivering_function_reserves_exactly_the_concurrency_it_may_use_against_ogc_rs(
    template: Template, names: FlowStackNames
) -> None:
    # However it is invoked, OGC RS never sees more senders; other functions of the account cannot starve it.
    name, properties = function(template, names.delivering_function)
    mapping = only_resource(template, "AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["FunctionName"] == {"Ref": name}
    assert mapping["EventSourceArn"] == get_att_arn(queue_ids(template, names.queue)[0])
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 2 <= mapping["ScalingConfig"]["MaximumConcurrency"] <= 5
    assert properties["ReservedConcurrentExecutions"] == mapping["ScalingConfig"]["MaximumConcurrency"]
    assert properties["TracingConfig"] == {"Mode": "Active"}


def log_origins(template: Template, names: FlowStackNames) -> dict[str, Any]:
    """The s3_audit function's log origins in the default configuration (awsSource cloudtrail): the trail's bucket
    and this account; the MinIO functions have none."""
    if names.service != "s3_audit":
        return {}
    return {
        "CLOUDTRAIL_LOG_BUCKET": {"Ref": logical_id(template, "AWS::S3::Bucket", "LogBucket")},
        "TRAIL_ACCOUNT_IDS": {"Ref": "AWS::AccountId"},
    }


def test_delivering_function_environment_is_exactly_the_ogc_rs_settings(
    template: Template, names: FlowStackNames
) -> None:
    _, properties = function(template, names.delivering_function)
    environment = properties["Environment"]["Variables"]
    credentials_import = environment["CLIENT_CREDENTIALS_SECRET_ARN"]
    assert render(credentials_import).startswith(f"${{Import:{CREDENTIALS_STACK_NAME}:")
    assert environment == {
        "POWERTOOLS_SERVICE_NAME": names.service,
        "POWERTOOLS_METRICS_NAMESPACE": "OgcAuditIngest",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "PROCESS_API_URL": "https://ogc.example.org/processes/00000000-0000-4000-8000-000000000000/execution",
        "AUTH_URL": "https://auth.example.org/auth/v1/token",
        "AUTH_ITEM_ID": "ogc.example.org",
        "AUTH_ITEM_TYPE": "resource_server",
        "AUTH_ROLE": "admin",
        "CLIENT_CREDENTIALS_SECRET_ARN": credentials_import,
        "BATCH_MAX_LINES": "500",
        "IDEMPOTENCY_TABLE_NAME": {"Ref": ledger_table(template)},
        # s3_audit only: where each source's log files may come from (s3_audit.sources.registry.LogOrigins).
        **log_origins(template, names),
    }
    assert (properties["Handler"], properties["Architectures"], properties["Runtime"]) == (
        names.handler,
        ["arm64"],
        "python3.14",
    )


@pytest.mark.parametrize("app_fixture", ["default_app", "imported_app"])
def test_no_secret_value_in_any_environment(stack_name: str, app_fixture: str, request: pytest.FixtureRequest) -> None:
    app: SynthesizedApp = request.getfixturevalue(app_fixture)
    environments = [
        body["Properties"].get("Environment", {}).get("Variables", {})
        for body in resources_of_type(app.templates[stack_name], "AWS::Lambda::Function").values()
    ]
    assert any(environments)
    for environment in environments:
        for name, value in environment.items():
            if any(word in name for word in ("SECRET", "TOKEN", "PASSWORD", "CLIENT_ID")):
                assert name.endswith("_SECRET_ARN"), name
                # A reference to the secret, or the ARN the operator configured: never a value.
                assert isinstance(value, dict) or value.startswith("arn:aws:secretsmanager:"), value


def test_imported_secret_arn_reaches_the_environment_and_the_outputs(
    imported_app: SynthesizedApp, stack_name: str, names: FlowStackNames
) -> None:
    template = imported_app.templates[stack_name]
    _, properties = function(template, names.delivering_function)
    assert properties["Environment"]["Variables"]["CLIENT_CREDENTIALS_SECRET_ARN"] == IMPORTED_SECRET_ARN
    assert template["Outputs"]["ClientCredentialsSecretArn"]["Value"] == IMPORTED_SECRET_ARN


def test_outputs_name_the_queues_and_the_client_credentials(template: Template, names: FlowStackNames) -> None:
    queue, dead_letter_queue = queue_ids(template, names.queue)
    outputs = {name: render(output["Value"]) for name, output in template["Outputs"].items()}
    assert outputs[f"{names.queue_outputs}QueueUrl"] == f"${{{queue}}}"
    assert outputs[f"{names.queue_outputs}DeadLetterQueueUrl"] == f"${{{dead_letter_queue}}}"
    assert outputs["ClientCredentialsSecretArn"].startswith(f"${{Import:{CREDENTIALS_STACK_NAME}:")


def test_both_flows_share_one_client_credentials_secret(default_app: SynthesizedApp) -> None:
    assert len(resources_of_type(default_app.templates[CREDENTIALS_STACK_NAME], "AWS::SecretsManager::Secret")) == 1
    imports = {
        render(default_app.templates[name]["Outputs"]["ClientCredentialsSecretArn"]["Value"]) for name in FLOW_STACKS
    }
    assert len(imports) == 1


def test_delivery_ledger_is_on_demand_with_ttl_and_point_in_time_recovery(template: Template) -> None:
    table = template["Resources"][ledger_table(template)]
    assert table["DeletionPolicy"] == "Retain"
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": KEY_ATTRIBUTE, "KeyType": "HASH"}]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
