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


@pytest.mark.parametrize("name", ["PROCESS_API_URL", "AUTH_URL"])
def test_plain_http_is_refused_at_run_time_in_one_sentence(name: str) -> None:
    url = BASE[name].replace("https://", "http://")
    with pytest.raises(SettingsError) as raised:
        OgcRsSettings.from_env({**BASE, name: url})
    message = str(raised.value)
    assert message.startswith(f"environment variable {name} must be an https URL")
    assert "OGC_AUDIT_ALLOW_HTTP=1" in message
    assert message.count(". ") == 0  # one sentence
    assert "/processes/" not in message  # only the scheme and host, never a path or query


@pytest.mark.parametrize("opt_in", ["", "0", "yes", "true"])
def test_only_the_explicit_opt_in_allows_http(opt_in: str) -> None:
    env = {**BASE, "PROCESS_API_URL": "http://127.0.0.1:9000/processes/4f1c/execution", "OGC_AUDIT_ALLOW_HTTP": opt_in}
    with pytest.raises(SettingsError, match="PROCESS_API_URL"):
        OgcRsSettings.from_env(env)
    allowed = OgcRsSettings.from_env({**env, "OGC_AUDIT_ALLOW_HTTP": "1"})
    assert allowed.process_api_url.startswith("http://127.0.0.1")
