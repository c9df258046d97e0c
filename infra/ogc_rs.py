"""What every function that delivers to OGC RS needs in its environment (DESIGN.md "Interfaces")."""

from __future__ import annotations

from infra.config import AuditConfig
from infra.secure_defaults import SecretReference


def ogc_rs_environment(config: AuditConfig, client_credentials: SecretReference) -> dict[str, str]:
    """Where metered lines go and how to get a token: the functions' environment, secrets by ARN only."""
    return {
        "PROCESS_API_URL": config.process_api_url,
        "AUTH_URL": config.auth_url,
        "AUTH_ITEM_ID": config.auth_item_id,
        "AUTH_ITEM_TYPE": config.auth_item_type,
        "AUTH_ROLE": config.auth_role,
        "CLIENT_CREDENTIALS_SECRET_ARN": client_credentials.arn,
        "BATCH_MAX_LINES": str(config.batch_max_lines),
    }
