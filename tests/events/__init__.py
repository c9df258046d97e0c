"""Sample payloads, one folder per source (``cloudtrail/``, ``envelopes/``, ``minio/`` JSON; ``access_log/`` lines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).parent


def event_path(name: str) -> Path:
    """The file of a sample, e.g. ``event_path("cloudtrail/presigned_get")``; ``.json`` may be left out."""
    path = EVENTS_DIR / name
    return path if path.suffix in {".json", ".ndjson", ".log"} else path.with_name(path.name + ".json")


def event_bytes(name: str) -> bytes:
    """A sample as it is on disk, e.g. ``event_bytes("minio/batch.ndjson")`` for a body MinIO sends."""
    return event_path(name).read_bytes()


def load_event(name: str) -> dict[str, Any]:
    """A sample payload as a dict, e.g. ``load_event("envelopes/sqs_s3_notification")``."""
    document = json.loads(event_path(name).read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise TypeError(f"{name} is not a JSON object")
    return document
