"""Settings of the functions and the standalone server, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from metering import env_names

# Shared with infra/config.py (the CDK context's defaults and bounds).
DEFAULT_BATCH_MAX_LINES = 500
MAX_BATCH_MAX_LINES = 5000
# The token request of an OGC RS admin: the RS is the item, and OGC RS accepts only the admin role.
DEFAULT_AUTH_ITEM_TYPE = "resource_server"
DEFAULT_AUTH_ROLE = "admin"
ALLOW_HTTP_ENV = env_names.OGC_AUDIT_ALLOW_HTTP
"""Set to 1 to allow plain-http OGC RS and auth URLs: for loopback tests, the demo and the drill only."""


class SettingsError(ValueError):
    """A missing or invalid environment variable; the message names it."""


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} is required")
    return value


def _url(env: Mapping[str, str], name: str) -> str:
    """An https URL; http only with the local opt-in, since the token and the client secret travel in it."""
    value = _required(env, name)
    parts = urlsplit(value)
    http_allowed = env.get(ALLOW_HTTP_ENV, "").strip() == "1"
    if parts.scheme == "https" and parts.netloc:
        return value
    if parts.scheme == "http" and parts.netloc and http_allowed:
        return value
    raise SettingsError(
        f"environment variable {name} must be an https URL ({ALLOW_HTTP_ENV}=1 allows http for local tests), "
        f"got {parts.scheme or 'no'} scheme and host {parts.hostname or 'none'!r}"
    )


def positive_int(env: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    """An optional integer variable from 1 to ``maximum``; SettingsError naming it when it is anything else."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise SettingsError(f"environment variable {name} must be an integer from 1 to {maximum}, got {raw!r}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """The auth server client id and secret of the OGC RS admin identity."""

    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class OgcRsSettings:
    """Where lines go and how the token is obtained. Secrets are referenced, never held here."""

    process_api_url: str
    auth_url: str
    auth_item_id: str
    auth_item_type: str
    auth_role: str
    batch_max_lines: int
    credentials_secret_arn: str | None
    # Local runs only (CLI, standalone server, tests): credentials given directly.
    local_credentials: ClientCredentials | None = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OgcRsSettings:
        """Parse the environment; a missing or invalid variable raises SettingsError naming it."""
        env = os.environ if env is None else env
        secret_arn = env.get(env_names.CLIENT_CREDENTIALS_SECRET_ARN, "").strip() or None
        local: ClientCredentials | None = None
        if secret_arn is None:
            if not env.get(env_names.CLIENT_ID) or not env.get(env_names.CLIENT_SECRET):
                raise SettingsError(
                    f"environment variable {env_names.CLIENT_CREDENTIALS_SECRET_ARN} is required "
                    f"(or {env_names.CLIENT_ID} and {env_names.CLIENT_SECRET} for local runs)"
                )
            local = ClientCredentials(env[env_names.CLIENT_ID].strip(), env[env_names.CLIENT_SECRET].strip())
        return cls(
            process_api_url=_url(env, env_names.PROCESS_API_URL),
            auth_url=_url(env, env_names.AUTH_URL),
            auth_item_id=_required(env, env_names.AUTH_ITEM_ID),
            auth_item_type=env.get(env_names.AUTH_ITEM_TYPE, "").strip() or DEFAULT_AUTH_ITEM_TYPE,
            auth_role=env.get(env_names.AUTH_ROLE, "").strip() or DEFAULT_AUTH_ROLE,
            batch_max_lines=positive_int(env, env_names.BATCH_MAX_LINES, DEFAULT_BATCH_MAX_LINES, MAX_BATCH_MAX_LINES),
            credentials_secret_arn=secret_arn,
            local_credentials=local,
        )
