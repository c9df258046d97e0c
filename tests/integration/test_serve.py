"""``ogc-audit serve`` over real HTTP on loopback: gunicorn in a subprocess, the reference OGC RS as target."""

from __future__ import annotations

import contextlib
import ipaddress
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ogc_audit.serve import run_serve
from testbed.reference_rs import Fault, ReferenceOgcRs
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


def launch(
    rs: ReferenceOgcRs, tmp_path: Path, *arguments: str, workers: int = 2, verify: str | bool = True, **env: str
) -> tuple[str, subprocess.Popen[bytes]]:
    """``ogc-audit serve`` on a free loopback port in a subprocess, once it answers ``GET /``."""
    port = free_port()
    scheme = "https" if "--certfile" in arguments else "http"
    command = [sys.executable, "-m", "ogc_audit.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    environment = {
        **cli_env(rs, WEBHOOK_TOKEN=TOKEN, LOG_LEVEL="warning", LEDGER_PATH=str(tmp_path / "ledger.sqlite3")),
        **env,
    }
    process = subprocess.Popen(
        [*command, "--workers", str(workers), *arguments], env=environment, stderr=subprocess.PIPE
    )
    base = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(base + "/", timeout=1, verify=verify)
            return base, process
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(process.communicate()[1].decode()) from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture
def server(reference_rs: ReferenceOgcRs, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    base, process = launch(reference_rs, tmp_path)
    yield base, process
    stop(process)


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


# ---- transport security and slow clients ---------------------------------------------------------


def self_signed_certificate(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files, made here with ``cryptography``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(certfile), str(keyfile)


def test_serve_speaks_https_with_a_certificate(reference_rs: ReferenceOgcRs, tmp_path: Path) -> None:
    certfile, keyfile = self_signed_certificate(tmp_path)
    base, process = launch(reference_rs, tmp_path, "--certfile", certfile, "--keyfile", keyfile, verify=certfile)
    try:
        answer = requests.post(
            base + "/auditlogs/processor",
            data=compact_entry("get_object_presigned"),
            headers={"Authorization": TOKEN},
            verify=certfile,
            timeout=10,
        )
        assert (answer.status_code, answer.json()["metered"]) == (200, 1)
        assert reference_rs.row_count() == 1
        # Plain HTTP on the TLS port gets no answer from the webhook.
        with pytest.raises(requests.ConnectionError):
            requests.get(base.replace("https://", "http://") + "/", timeout=2)
    finally:
        stop(process)
    assert "without TLS" not in process.communicate()[1].decode()


@pytest.mark.parametrize(
    ("options", "named"),
    [(["--certfile", "missing.pem"], "--keyfile"), (["--certfile", "a.pem", "--keyfile", "b.pem"], "a.pem")],
)
def test_incomplete_tls_options_stop_serve(
    monkeypatch: pytest.MonkeyPatch,
    reference_rs: ReferenceOgcRs,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    named: str,
) -> None:
    from ogc_audit.cli import main

    for name, value in {**ogc_rs_env(reference_rs), "WEBHOOK_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--host", "127.0.0.1", "--port", str(free_port()), *options]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ogc-audit serve: ")
    assert named in line


def test_listening_beyond_loopback_without_tls_warns(reference_rs: ReferenceOgcRs, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ogc_audit.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())]
    env = cli_env(reference_rs, WEBHOOK_TOKEN=TOKEN, LOG_LEVEL="warning", LEDGER_PATH=str(tmp_path / "l.sqlite3"))
    process = subprocess.Popen([*command, "--workers", "1"], env=env, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        # The warning comes before gunicorn starts; without one, nothing is written at this log level.
        readable, _, _ = select.select([process.stderr], [], [], 15)
        first = process.stderr.readline().decode() if readable else ""
    finally:
        stop(process)
    assert first.startswith("ogc-audit serve: warning: listening on 0.0.0.0:")
    assert "without TLS" in first


def test_the_token_is_checked_before_the_body_is_read(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, _process = server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        # A large body is announced but never sent: the answer must not wait for it.
        connection.sendall(
            b"POST /auditlogs/processor HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a-wrong-token-of-some-length\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401")


def test_a_body_over_the_limit_is_refused_while_it_is_read(reference_rs: ReferenceOgcRs, tmp_path: Path) -> None:
    base, process = launch(reference_rs, tmp_path, MAX_BODY_BYTES="65536")
    port = int(base.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(
                b"POST /auditlogs/processor HTTP/1.1\r\nHost: x\r\nAuthorization: "
                + TOKEN.encode()
                + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"x" * 16384
            for _ in range(5):  # 80 KiB sent of a body that would never end
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            answer = connection.recv(4096)
    finally:
        stop(process)
    assert answer.startswith(b"HTTP/1.1 413")


def test_slow_clients_cannot_starve_an_authenticated_one(reference_rs: ReferenceOgcRs, tmp_path: Path) -> None:
    base, process = launch(reference_rs, tmp_path, workers=1)
    port = int(base.rsplit(":", 1)[1])
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
    stop_trickling = threading.Event()

    def trickle() -> None:
        # Each slow client sends its request a header at a time, never finishing it.
        for connection in slow:
            connection.sendall(b"POST /auditlogs/processor HTTP/1.1\r\nHost: x\r\n")
        while not stop_trickling.wait(0.5):
            for connection in slow:
                with contextlib.suppress(OSError):
                    connection.sendall(b"X-Slow: 1\r\n")

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        time.sleep(1.0)  # the slow clients hold their connections
        started = time.monotonic()
        answer = requests.post(
            base + "/auditlogs/processor",
            data=compact_entry("get_object_presigned"),
            headers={"Authorization": TOKEN},
            timeout=10,
        )
        waited = time.monotonic() - started
        assert answer.status_code == 200
        assert waited < 3.0  # within MinIO's timeout, while the slow clients are still trickling
        # A client that does not finish its headers in time is cut off.
        slow[0].settimeout(10)
        cut_started = time.monotonic()
        while slow[0].recv(4096):
            pass
        assert time.monotonic() - cut_started < 8
    finally:
        stop_trickling.set()
        trickler.join()
        for connection in slow:
            connection.close()
        stop(process)
