"""``ogc-audit serve`` over real HTTP on loopback: gunicorn in a subprocess, the reference OGC RS as target."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ogc_audit.reference_rs import Fault, ReferenceOgcRs
from ogc_audit.serve import run_serve
from tests.events import event_bytes
from tests.helpers import cli_env, compact_entry, ogc_rs_env

TOKEN = "Bearer serve-test-token"
MINIO_HEADERS = {
    "User-Agent": "MinIO (linux; amd64) madmin-go/2.0.0",
    "x-minio-version": "RELEASE.2025-09-07T16-13-09Z",
    "x-minio-deployment-id": "8f3c1f2e-5b7a-4c1d-9e2f-0a1b2c3d4e5f",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(reference_rs: ReferenceOgcRs, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    code = f"import sys; from ogc_audit.serve import run_serve; sys.exit(run_serve('127.0.0.1', {port}, 2))"
    env = cli_env(reference_rs, WEBHOOK_TOKEN=TOKEN, LOG_LEVEL="warning", LEDGER_PATH=str(tmp_path / "ledger.sqlite3"))
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(base + "/", timeout=1)
            break
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(process.communicate()[1].decode()) from None
            time.sleep(0.05)
    yield base, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_webhook_server_end_to_end(server: tuple[str, subprocess.Popen[bytes]], reference_rs: ReferenceOgcRs) -> None:
    base, process = server
    url = base + "/auditlogs/processor"
    session = requests.Session()

    health = session.get(base + "/")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})

    # the start-up probe and a single entry, as batch_size 1 sends them
    probe = session.post(url, data=b"{}", headers={**MINIO_HEADERS, "Authorization": TOKEN})
    assert probe.status_code == 200
    single = session.post(
        url,
        data=compact_entry("get_object_presigned"),
        headers={**MINIO_HEADERS, "Authorization": TOKEN, "Content-Type": "application/json"},
    )
    assert single.status_code == 200
    assert single.json() == {"entries": 1, "metered": 1, "filtered": 0, "quarantined": 0}

    # NDJSON, as batch_size > 1 sends it: no Content-Type; the token without "Bearer"
    batch = session.put(
        url,
        data=event_bytes("minio/batch.ndjson"),
        headers={**MINIO_HEADERS, "Authorization": "serve-test-token", "x-minio-webhook-payload-count": "7"},
    )
    assert batch.status_code == 200
    assert batch.json()["metered"] == 3
    # the batch repeats the single entry's requestID: that event is metered once
    assert reference_rs.row_count() == 3

    wrong = session.post(url, data=compact_entry("get_object_presigned"), headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401
    assert session.post(url, data=b"not json", headers={"Authorization": TOKEN}).status_code == 400

    # OGC RS down: 503, so MinIO keeps the body and re-sends it; nothing stored
    reference_rs.faults.randomize([(Fault.with_status(503), 1.0)])
    started = time.monotonic()
    down = session.post(url, data=compact_entry("get_object_partial_206"), headers={"Authorization": TOKEN})
    assert down.status_code == 503
    assert time.monotonic() - started < 3.0  # within MinIO's timeout
    assert reference_rs.row_count() == 3
    # back up: the re-sent body is delivered, and a second re-send (answer lost on the way) stores nothing
    reference_rs.faults.clear()
    for _ in range(2):
        again = session.post(url, data=compact_entry("get_object_partial_206"), headers={"Authorization": TOKEN})
        assert again.status_code == 200
    assert reference_rs.row_count() == 4
    assert sorted(line.split("|")[4] for line in reference_rs.stored_lines()) == sorted(
        ["1048576", "2048", "4096", "65536"]
    )

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    stderr = process.communicate()[1].decode()
    assert "serve-test-token" not in stderr
    assert "guess" not in stderr


def test_missing_configuration_stops_before_serving(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("WEBHOOK_TOKEN", "WEBHOOK_TOKEN_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    assert run_serve("127.0.0.1", free_port(), 1) == 2
    assert "WEBHOOK_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize("weak", ["Bearer ", "Bearer short-token"])
def test_weak_token_stops_serve_with_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], reference_rs: ReferenceOgcRs, weak: str
) -> None:
    for name, value in ogc_rs_env(reference_rs).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEBHOOK_TOKEN_SECRET_ARN", raising=False)
    monkeypatch.setenv("WEBHOOK_TOKEN", weak)

    assert run_serve("127.0.0.1", free_port(), 1) == 2

    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ogc-audit serve: environment variable WEBHOOK_TOKEN must hold at least 16 characters")
