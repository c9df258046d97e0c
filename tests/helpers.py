"""Helpers shared by the test modules: OGC RS clients, the ledger table, subprocess environments, MinIO bodies."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from metering.ledger import KEY_ATTRIBUTE
from metering.ogc_rs import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, OgcRsClient, http_session
from metering.runtime import build_ogc_rs_client
from metering.settings import OgcRsSettings
from testbed.local_aws import local_aws
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import Download, Variant, random_download
from tests.events import event_path

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


def ogc_rs_env(rs: ReferenceOgcRs) -> dict[str, str]:
    """The OGC RS settings (endpoints, token item and client credentials) that point at the reference OGC RS."""
    return {
        "PROCESS_API_URL": rs.process_url,
        "AUTH_URL": rs.token_url,
        "OGC_AUDIT_ALLOW_HTTP": "1",  # the reference OGC RS speaks plain http on loopback
        "AUTH_ITEM_ID": rs.rs_host,
        "CLIENT_ID": rs.client_id,
        "CLIENT_SECRET": rs.client_secret,
    }


def client_for(
    rs: ReferenceOgcRs,
    batch_max_lines: int = 500,
    overrides: dict[str, str] | None = None,
    *,
    retries: int | None = 1,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> OgcRsClient:
    """An OgcRsClient for the reference OGC RS with a short backoff; ``retries=None`` keeps the production count,
    ``read_timeout_s`` shortens the wait for an answer (tests of an OGC RS that answers late)."""
    env = {**ogc_rs_env(rs), "BATCH_MAX_LINES": str(batch_max_lines), **(overrides or {})}
    session = (
        http_session(backoff_factor=0.01) if retries is None else http_session(retries=retries, backoff_factor=0.01)
    )
    return build_ogc_rs_client(
        OgcRsSettings.from_env(env), session=session, timeout=(CONNECT_TIMEOUT_S, read_timeout_s)
    )


def create_ledger_table(dynamodb: Any, name: str = "ledger") -> None:
    """The delivery ledger's DynamoDB table (string key, on demand) in ``dynamodb``, a boto3 client."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": KEY_ATTRIBUTE, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": KEY_ATTRIBUTE, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def cli_env(rs: ReferenceOgcRs | None = None, *, keep_aws: bool = False, **values: str) -> dict[str, str]:
    """This environment for an ``ogc_audit`` subprocess, less CLIENT_*, WEBHOOK_* and AWS_* (unless ``keep_aws``)."""
    dropped = ("CLIENT_", "WEBHOOK_") if keep_aws else ("AWS_", "CLIENT_", "WEBHOOK_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FUNCTIONS), env.get("PYTHONPATH")]))
    if rs is not None:
        env.update(ogc_rs_env(rs))
    env.update(values)
    return env


def compact_entry(name: str) -> bytes:
    """A MinIO sample as MinIO sends one entry: compact JSON followed by a newline."""
    return json.dumps(json.loads(event_path(f"minio/{name}").read_bytes()), separators=(",", ":")).encode() + b"\n"


def run_replay(rs: ReferenceOgcRs, location: str, *args: str) -> tuple[int, list[dict[str, object]]]:
    """``ogc-audit replay LOCATION ARGS`` as a subprocess against the emulator: exit status and its JSON summaries.

    local_aws's endpoint and credentials stay (``keep_aws``): the replay reads the moto server.
    """
    result = subprocess.run(
        [sys.executable, "-m", "ogc_audit.cli", "replay", location, *args],
        env=cli_env(rs, keep_aws=True, IDEMPOTENCY_TABLE_NAME="ledger"),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.returncode, [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


# --- log files of a period, for ``ogc-audit replay`` ---------------------------------------------------------------

LOG_FILE_MIX = (Variant.PRESIGNED_GET, Variant.FAILED_403, Variant.PRESIGNED_GET, Variant.HEAD_OBJECT)


@contextmanager
def replay_emulator(bucket: str) -> Iterator[Any]:
    """A moto server with ``bucket`` and the ledger table, as ``run_replay`` expects; yields its S3 client."""
    with local_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=bucket)
        create_ledger_table(boto3.client("dynamodb"))
        yield s3


def log_file_entries(rng: random.Random, when: datetime) -> tuple[list[tuple[Download, Variant]], list[str]]:
    """The requests of one log file (two downloads among four, after ``when``) and the ``user|collection|item|``
    start of the line each download makes."""
    entries = [(random_download(rng, when), variant) for variant in LOG_FILE_MIX]
    metered = [
        f"{download.user_id}|{download.collection_id}|{download.item_id}|"
        for download, variant in entries
        if variant is Variant.PRESIGNED_GET
    ]
    return entries, metered
