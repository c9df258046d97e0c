"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from testbed.postgres import ThrowawayPostgres
from testbed.reference_rs import ReferenceOgcRs


@pytest.fixture
def reference_rs() -> Iterator[ReferenceOgcRs]:
    """A started reference OGC RS + token endpoint on loopback, with an in-memory metering table."""
    with ReferenceOgcRs() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL server on loopback, one per test process (xdist worker), removed at the end.

    Never skipped: where the server binaries are missing the tests that need it fail, naming what to install.
    """
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: ThrowawayPostgres) -> str:
    """The URL of a new, empty database of ``postgres_server`` for this test alone."""
    return postgres_server.create_database()


@pytest.fixture
def aws_region() -> str:
    """The region boto3 clients default to under moto; a module overrides this fixture to use another."""
    return "us-east-1"


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, aws_region: str) -> None:
    """Fake credentials and ``aws_region`` for boto3, and no AWS_ENDPOINT_URL, so clients reach moto's mock."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": aws_region,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def mocked_aws(aws_credentials: None) -> Iterator[None]:
    """moto's in-process mock of AWS for the test, with ``aws_credentials`` set."""
    with mock_aws():
        yield


@pytest.fixture
def relay_aws(mocked_aws: None) -> Iterator[None]:
    """``mocked_aws`` with the minio_relay handler's cached SQS client and webhook built afresh inside it."""
    from minio_relay import handler

    handler._sqs_client.cache_clear()
    handler._webhook.cache_clear()
    yield
    handler._sqs_client.cache_clear()
    handler._webhook.cache_clear()


@pytest.fixture(scope="session")
def flow_templates() -> dict[str, dict[str, Any]]:
    """The app's templates synthesized with cdk.json's context, once per test process (xdist worker)."""
    from testbed.stack_template import synthesized_templates

    return synthesized_templates()
