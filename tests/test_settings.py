"""Settings from the environment: a missing or invalid variable is named in the error."""

from __future__ import annotations

import pytest

from metering.runtime import parse_client_credentials
from metering.settings import OgcRsSettings, SettingsError

BASE = {
    "PROCESS_API_URL": "https://rs.example.org/processes/4f1c/execution",
    "AUTH_URL": "https://auth.example.org/auth/v1/token",
    "AUTH_ITEM_ID": "rs.example.org",
    "CLIENT_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:ogc-AbCdEf",
}


def test_defaults_and_secret_reference() -> None:
    settings = OgcRsSettings.from_env(BASE)
    assert settings.batch_max_lines == 500
    assert (settings.auth_item_type, settings.auth_role) == ("resource_server", "admin")
    assert settings.credentials_secret_arn == BASE["CLIENT_CREDENTIALS_SECRET_ARN"]
    assert settings.local_credentials is None


def test_local_credentials_are_never_in_the_repr() -> None:
    env = {k: v for k, v in BASE.items() if k != "CLIENT_CREDENTIALS_SECRET_ARN"}
    settings = OgcRsSettings.from_env({**env, "CLIENT_ID": "cid", "CLIENT_SECRET": "s3cr3t-value"})
    assert settings.local_credentials is not None
    assert settings.local_credentials.client_secret == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in repr(settings.local_credentials)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"PROCESS_API_URL": ""}, "PROCESS_API_URL"),
        ({"AUTH_URL": "ftp://auth"}, "AUTH_URL"),
        ({"AUTH_ITEM_ID": " "}, "AUTH_ITEM_ID"),
        ({"CLIENT_CREDENTIALS_SECRET_ARN": ""}, "CLIENT_CREDENTIALS_SECRET_ARN"),
        ({"BATCH_MAX_LINES": "0"}, "BATCH_MAX_LINES"),
        ({"BATCH_MAX_LINES": "many"}, "BATCH_MAX_LINES"),
        ({"BATCH_MAX_LINES": "100000"}, "BATCH_MAX_LINES"),
    ],
)
def test_bad_environment_names_the_variable(change: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        OgcRsSettings.from_env({**BASE, **change})


def test_client_credentials_secret_shape() -> None:
    credentials = parse_client_credentials('{"clientId": " id ", "clientSecret": "abc"}')
    assert (credentials.client_id, credentials.client_secret) == ("id", "abc")
    with pytest.raises(SettingsError, match="clientId"):
        parse_client_credentials('{"client": 1}')
