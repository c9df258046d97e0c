"""Names of the environment variables the functions read, shared by the stacks that set them.

Plain strings and no imports beyond the standard library, like ``metric_names``: ``infra/`` imports this module at
synthesis time, and every Lambda bundle carries it inside the ``metering`` package. A variable renamed here is
renamed on both sides, so a stack can never set a variable that no function reads.
"""

# ruff: noqa: S105 (these are names of variables, never credentials)

from __future__ import annotations

from typing import Final

# Where lines go and how the admin token is obtained (metering.settings.OgcRsSettings).
PROCESS_API_URL: Final = "PROCESS_API_URL"
AUTH_URL: Final = "AUTH_URL"
AUTH_ITEM_ID: Final = "AUTH_ITEM_ID"
AUTH_ITEM_TYPE: Final = "AUTH_ITEM_TYPE"
AUTH_ROLE: Final = "AUTH_ROLE"
CLIENT_CREDENTIALS_SECRET_ARN: Final = "CLIENT_CREDENTIALS_SECRET_ARN"
"""A Secrets Manager secret holding JSON ``{"clientId": ..., "clientSecret": ...}``."""
CLIENT_ID: Final = "CLIENT_ID"
"""Local runs only (CLI, standalone server, tests), instead of CLIENT_CREDENTIALS_SECRET_ARN."""
CLIENT_SECRET: Final = "CLIENT_SECRET"
BATCH_MAX_LINES: Final = "BATCH_MAX_LINES"
"""Lines per OGC RS request, and per delivery-queue message."""
OGC_AUDIT_ALLOW_HTTP: Final = "OGC_AUDIT_ALLOW_HTTP"
"""``1`` allows plain-http PROCESS_API_URL and AUTH_URL: loopback tests, the demo and the drill only."""

# Reading CloudTrail log files (s3_audit.log_file.ReadLimits).
MAX_LOG_FILE_BYTES: Final = "MAX_LOG_FILE_BYTES"
"""Inflated bytes read from one log file before it is quarantined as file_too_large."""

# Where s3_audit accepts log files from (s3_audit.sources.registry.LogOrigins); unset in local runs: anywhere.
CLOUDTRAIL_LOG_BUCKET: Final = "CLOUDTRAIL_LOG_BUCKET"
"""The bucket the trail writes to: only CloudTrail log files are read from it."""
ACCESS_LOG_BUCKET: Final = "ACCESS_LOG_BUCKET"
"""The bucket the asset buckets' server access logs go to: only access-log objects are read from it."""
TRAIL_ACCOUNT_IDS: Final = "TRAIL_ACCOUNT_IDS"
"""Comma-separated account ids whose CloudTrail log files (``AWSLogs/[o-id/]<account>/``) are metered."""

# The delivery ledger (metering.runtime.build_ledger).
IDEMPOTENCY_TABLE_NAME: Final = "IDEMPOTENCY_TABLE_NAME"
"""The DynamoDB ledger table in AWS."""
LEDGER_PATH: Final = "LEDGER_PATH"
"""The SQLite ledger file of local runs and the standalone server."""
LEDGER_DATABASE_URL: Final = "LEDGER_DATABASE_URL"
"""``postgresql://...``: the standalone server's spool and ledger, shared by a fleet (``serve --database-url``)."""

# Uncertain requests (metering.uncertain.UncertainResolver).
UNCERTAIN_GRACE_S: Final = "UNCERTAIN_GRACE_S"
"""Seconds an uncertain request is left alone, without OGC RS's database, before its lines are sent once more."""

# OGC RS's own database, read-only (metering.ogc_rs_database: uncertain requests are looked up there; reconcile).
OGC_RS_DATABASE_URL: Final = "OGC_RS_DATABASE_URL"
"""Optional ``postgresql://role@host:port/db`` of OGC RS's database, for a role granted SELECT on metering and
jobs_table."""
RECONCILE_LEDGER: Final = "RECONCILE_LEDGER"
"""The SQLite ledger file of ``ogc-audit reconcile --repair`` (default under ``$XDG_STATE_HOME/ogc-audit/``)."""

# The MinIO webhook (minio_relay.webhook.WebhookSettings, minio_relay.handler).
WEBHOOK_TOKEN_SECRET_ARN: Final = "WEBHOOK_TOKEN_SECRET_ARN"
"""A Secrets Manager secret whose SecretString is the token MinIO sends."""
WEBHOOK_TOKEN: Final = "WEBHOOK_TOKEN"
"""Local runs only, instead of WEBHOOK_TOKEN_SECRET_ARN."""
MAX_BODY_BYTES: Final = "MAX_BODY_BYTES"
DELIVERY_QUEUE_URL: Final = "DELIVERY_QUEUE_URL"

# Read by Powertools itself (logger, metrics).
POWERTOOLS_SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"
POWERTOOLS_METRICS_NAMESPACE: Final = "POWERTOOLS_METRICS_NAMESPACE"
POWERTOOLS_LOG_LEVEL: Final = "POWERTOOLS_LOG_LEVEL"
