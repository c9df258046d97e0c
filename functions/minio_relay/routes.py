"""The paths of the MinIO webhook, shared by the webhook code and the API the stack builds in front of it.

Plain strings and no imports: ``infra/minio_relay_stack.py`` imports this module at synthesis time, so the
route API Gateway serves and the route the function answers are one definition. The path is the old FastAPI
processor's, which MinIO deployments already point at.
"""

from __future__ import annotations

from typing import Final

WEBHOOK_PATH: Final = "/auditlogs/processor"
"""Where MinIO's ``audit_webhook`` POSTs (or PUTs) its audit bodies."""
