"""``ogc-audit demo``: both flows end to end, run as a user runs it (``make demo``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli_env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One run of ``ogc-audit demo`` in a fresh folder, as ``make demo`` runs it; its result and folder."""
    folder = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, "-m", "ogc_audit.cli", "demo"],
        check=False,
        cwd=folder,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=240,  # the demo synthesizes the stacks in process first
    )
    return result, folder


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_demo_meters_both_flows_exactly_once(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, _ = demo
    assert result.returncode == 0, result.stdout + result.stderr
    # Each function ran with its own role's credentials, holding its synthesized policies, IAM enforced.
    assert result.stdout.startswith("IAM enforced: each function runs under its synthesized template role policy")
    for role in ("S3AuditRole", "WebhookRole", "DeliverRole"):
        assert role in result.stdout.splitlines()[0]
    assert "AWS S3 flow: 6 lines stored, 6 expected: OK" in result.stdout
    assert "AWS S3 flow with the access log (each request once): 7 lines stored, 7 expected: OK" in result.stdout
    assert "AWS S3 flow with events: 11 lines stored, 11 expected: OK" in result.stdout
    assert "MinIO flow: 4 lines stored, 4 expected: OK" in result.stdout
    assert "POST with a wrong token -> 401" in result.stdout
    assert "metering table of the reference OGC RS (15 rows)" in result.stdout
    # The closing reconcile: every download of the period (both flows) has exactly its row.
    assert (
        "reconcile 2025-10-27T10:00:00Z .. 2025-10-27T11:00:00Z: "
        "15 downloads, 15 rows, 0 missing, 0 duplicated, 0 unexpected (15 matched)"
    ) in result.stdout
    assert "demo-webhook-token" not in result.stdout + result.stderr


def test_demo_prints_a_story_and_no_raw_json_line(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, folder = demo
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if _json_object(line)] == []
    assert not any(line.lstrip().startswith("{") for line in lines)
    # The story: each step's name, its outcome tallies, its check; the metering table.
    story = (
        "AWS S3 flow: CloudTrail log files -> log bucket -> SQS -> s3_audit handler -> OGC RS",
        "  outcomes of the log files (ogc-audit extract): entries 20, metered 6, filtered 14 (",
        "MinIO flow: audit webhook -> webhook handler -> SQS -> deliver handler -> OGC RS",
        "  POST  6858 bytes -> 200: entries 5, metered 2, filtered 3, quarantined 0",
        "metering table of the reference OGC RS (15 rows):",
    )
    for start in story:
        assert any(line.startswith(start) for line in lines), start
    # The functions' JSON logs and EMF metric documents went to the file named on the last line.
    log_file = folder / "ogc-audit-demo.log"
    assert lines[-1] == f"the functions' JSON logs and metric documents: {log_file.resolve()}"
    logged = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    services = {document.get("service") for document in logged}
    assert {"s3_audit", "minio_relay"} <= services
    assert any(document.get("message") == "invocation totals" for document in logged)
    assert any("_aws" in document for document in logged)  # an EMF metric document
    assert any("webhook authentication failed" in str(document.get("message")) for document in logged)
