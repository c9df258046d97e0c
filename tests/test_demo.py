"""``ogc-audit demo``: both flows end to end, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import cli_env


def test_demo_meters_both_flows_exactly_once() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ogc_audit.cli", "demo"],
        check=False,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "AWS S3 flow: 6 lines stored, 6 expected: OK" in result.stdout
    assert "AWS S3 flow with the access log (each request once): 7 lines stored, 7 expected: OK" in result.stdout
    assert "AWS S3 flow with events: 11 lines stored, 11 expected: OK" in result.stdout
    assert "MinIO flow: 4 lines stored, 4 expected: OK" in result.stdout
    assert "POST with a wrong token -> 401" in result.stdout
    assert "metering table of the reference OGC RS (15 rows)" in result.stdout
    assert "demo-webhook-token" not in result.stdout + result.stderr
