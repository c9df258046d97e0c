"""Objects built once per process (Lambda cold start, server start) from the environment."""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import requests

from metering import env_names
from metering.auth import TokenProvider
from metering.ledger import DeliveryLedger, DynamoDbLedger, SqliteLedger
from metering.ogc_rs import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, OgcRsClient, http_session
from metering.ogc_rs_database import OgcRsDatabase, RequestLanding, open_ogc_rs_database
from metering.settings import ClientCredentials, OgcRsSettings, SettingsError
from metering.uncertain import LandingCheck, UncertainResolver

# Secrets are re-read at most this often, so a rotated secret is picked up without a redeploy.
SECRET_MAX_AGE_S = 300


def secret_string(arn: str, *, force_fetch: bool = False) -> str:
    """The SecretString of a Secrets Manager secret, cached for SECRET_MAX_AGE_S (Powertools parameters)."""
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(arn, max_age=SECRET_MAX_AGE_S, force_fetch=force_fetch)
    return value if isinstance(value, str) else bytes(value).decode()


def parse_client_credentials(secret: str) -> ClientCredentials:
    """``{"clientId": ..., "clientSecret": ...}`` from the client-credentials secret."""
    try:
        document = json.loads(secret)
        return ClientCredentials(str(document["clientId"]).strip(), str(document["clientSecret"]).strip())
    except (ValueError, KeyError, TypeError) as error:
        raise SettingsError(
            'the client credentials secret must be JSON {"clientId": "...", "clientSecret": "..."}'
        ) from error


def build_ogc_rs_client(
    settings: OgcRsSettings,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
) -> OgcRsClient:
    """An OgcRsClient with a retrying session and a token provider reading the configured credentials."""
    local = settings.local_credentials
    secret_arn = settings.credentials_secret_arn

    def credentials(force_fetch: bool) -> ClientCredentials:
        if local is not None:
            return local
        assert secret_arn is not None
        return parse_client_credentials(secret_string(secret_arn, force_fetch=force_fetch))

    session = session or http_session()
    tokens = TokenProvider(
        auth_url=settings.auth_url,
        item_id=settings.auth_item_id,
        item_type=settings.auth_item_type,
        role=settings.auth_role,
        credentials=credentials,
        session=session,
        timeout=(timeout[0], min(timeout[1], 30.0)),
    )
    return OgcRsClient(
        process_url=settings.process_api_url,
        tokens=tokens,
        session=session,
        batch_max_lines=settings.batch_max_lines,
        timeout=timeout,
    )


def build_ledger(env: Mapping[str, str]) -> DeliveryLedger:
    """DynamoDB (IDEMPOTENCY_TABLE_NAME) in AWS; else SQLite at LEDGER_PATH, or in memory for this process."""
    table = env.get(env_names.IDEMPOTENCY_TABLE_NAME, "").strip()
    if table:
        import boto3

        return DynamoDbLedger(table, boto3.client("dynamodb"))
    return SqliteLedger(env.get(env_names.LEDGER_PATH, "").strip() or ":memory:")


@functools.cache
def _cached_ledger() -> DeliveryLedger:
    return build_ledger(os.environ)


def delivery_ledger() -> DeliveryLedger:
    """The process-wide delivery ledger."""
    return _cached_ledger()


@functools.cache
def _cached_client() -> OgcRsClient:
    return build_ogc_rs_client(OgcRsSettings.from_env())


def ogc_rs_client(env: Mapping[str, str] | None = None) -> OgcRsClient:
    """The process-wide client (its token cache outlives one Lambda invocation); ``env`` builds a fresh one."""
    if env is not None:
        return build_ogc_rs_client(OgcRsSettings.from_env(env))
    return _cached_client()


def build_uncertain_resolver(env: Mapping[str, str], database: LandingCheck | None = None) -> UncertainResolver:
    """The resolver of uncertain requests: ``UNCERTAIN_GRACE_S``, and OGC RS's database when ``database`` is given
    or ``OGC_RS_DATABASE_URL`` is set (``serve`` and the CLI near OGC RS; the Lambda bundles lack its driver)."""
    url = env.get(env_names.OGC_RS_DATABASE_URL, "").strip()
    if database is None and url:
        database = DatabaseOnDemand(url)
    return UncertainResolver.from_env(env, database)


class DatabaseOnDemand:
    """OGC RS's database, opened at the first question and again after a failure: a database that is down when
    the process starts must not stop delivery (meanwhile the grace period applies, see ``UncertainResolver``)."""

    def __init__(self, url: str) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("postgresql", "postgres", "sqlite"):
            raise SettingsError(
                f"environment variable {env_names.OGC_RS_DATABASE_URL} must be a postgresql:// (or sqlite:///) URL, "
                f"got scheme {scheme or 'none'!r}"
            )
        self._url = url
        self._database: OgcRsDatabase | None = None
        self._lock = threading.Lock()

    def landing(self, logs: Sequence[str]) -> RequestLanding:
        """``OgcRsDatabase.landing``; raises OgcRsDatabaseError while the database cannot be reached."""
        with self._lock:
            if self._database is None:
                self._database = open_ogc_rs_database(self._url)
            database = self._database
        return database.landing(logs)


@functools.cache
def _cached_resolver() -> UncertainResolver:
    return build_uncertain_resolver(os.environ)


def uncertain_resolver() -> UncertainResolver:
    """The process-wide resolver of uncertain requests (its tally is read once per invocation)."""
    return _cached_resolver()
