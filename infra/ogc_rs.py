"""What every function that delivers to OGC RS needs in its environment (docs/design.md "Interfaces")."""

from __future__ import annotations

from aws_cdk import Duration

from infra.config import AuditConfig
from infra.flow_stack import FlowStack
from infra.secure_defaults import AuditFunction, DeliveryLedgerTable, SecretReference
from metering import env_names


def ogc_rs_environment(config: AuditConfig, client_credentials: SecretReference) -> dict[str, str]:
    """Where metered lines go and how to get a token: the functions' environment, secrets by ARN only."""
    return {
        env_names.PROCESS_API_URL: config.process_api_url,
        env_names.AUTH_URL: config.auth_url,
        env_names.AUTH_ITEM_ID: config.auth_item_id,
        env_names.AUTH_ITEM_TYPE: config.auth_item_type,
        env_names.AUTH_ROLE: config.auth_role,
        env_names.CLIENT_CREDENTIALS_SECRET_ARN: client_credentials.arn,
        env_names.BATCH_MAX_LINES: str(config.batch_max_lines),
    }


def delivering_function(
    stack: FlowStack,
    construct_id: str,
    *,
    package: str,
    handler: str,
    memory_size: int,
    timeout: Duration,
    max_concurrency: int,
) -> tuple[AuditFunction, DeliveryLedgerTable]:
    """A function of the flow of ``stack`` that sends lines to OGC RS: the stack's OGC RS settings, read access to
    its client credentials, and the stack's delivery ledger table (created here) so that nothing it sends is sent
    twice.

    ``max_concurrency`` is reserved for it: however it is invoked, OGC RS never sees more concurrent senders,
    and other functions of the account cannot starve it (a throttled SQS batch counts towards the DLQ).
    """
    function = AuditFunction(
        stack,
        construct_id,
        package=package,
        handler=handler,
        service_name=stack.service_name,
        memory_size=memory_size,
        timeout=timeout,
        environment=ogc_rs_environment(stack.config, stack.client_credentials),
        key=stack.key,
        reserved_concurrency=max_concurrency,
    )
    stack.client_credentials.grant_read(function.role)
    ledger = DeliveryLedgerTable(stack, "DeliveryLedger", stack.key)
    ledger.grant_ledger_access(function)
    return function, ledger
