"""``ogc-audit serve`` over real HTTP on loopback: uvicorn in a subprocess, the reference OGC RS as target."""

from __future__ import annotations

import contextlib
import ipaddress
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from ogc_audit.cli import main as cli_main
from testbed.postgres import ThrowawayPostgres
from testbed.reference_rs import Fault, ReferenceOgcRs
from testbed.samples import minio_body, minio_entry, random_download
from tests.events import event_bytes
from tests.helpers import cli_env, compact_entry, ogc_rs_env

TOKEN = "Bearer serve-test-token"
WEBHOOK = "/auditlogs/processor"
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
    rs: ReferenceOgcRs,
    tmp_path: Path,
    *arguments: str,
    verify: str | bool = True,
    port: int | None = None,
    stderr: int | None = subprocess.PIPE,
    **env: str,
) -> tuple[str, subprocess.Popen[bytes]]:
    """``ogc-audit serve`` on a free loopback port in a subprocess, once it answers ``GET /``."""
    port = port or free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    scheme = "https" if "--certfile" in arguments else "http"
    command = [sys.executable, "-m", "ogc_audit.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    environment = {
        **cli_env(rs, WEBHOOK_TOKEN=TOKEN, LOG_LEVEL="warning", LEDGER_PATH=str(tmp_path / "serve.sqlite3")),
        **env,
    }
    process = subprocess.Popen([*command, *arguments], env=environment, stderr=stderr)
    base = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(base + "/", timeout=1, verify=verify)
            return base, process
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(process.communicate()[1].decode() if stderr else "serve did not start") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(0.05)


def download_bodies(count: int, per_body: int, seed: int = 1) -> tuple[list[bytes], list[str]]:
    """``count`` NDJSON bodies of ``per_body`` distinct presigned downloads, and the ``user|collection|item`` start
    of the line each download makes."""
    rng = random.Random(seed)
    when = datetime(2025, 10, 27, 10, 0, tzinfo=UTC)
    bodies: list[bytes] = []
    starts: list[str] = []
    for _ in range(count):
        downloads = [random_download(rng, when) for _ in range(per_body)]
        bodies.append(minio_body(minio_entry(download) for download in downloads))
        starts.extend(f"{d.user_id}|{d.collection_id}|{d.item_id}|" for d in downloads)
    return bodies, starts


def stored_once(rs: ReferenceOgcRs, starts: list[str]) -> bool:
    """Every expected line stored, none twice, nothing else."""
    stored = Counter("|".join(line.split("|")[:3]) + "|" for line in rs.stored_lines())
    return stored == Counter(starts)


def post(base: str, body: bytes, token: str = TOKEN) -> requests.Response:
    return requests.post(base + WEBHOOK, data=body, headers={**MINIO_HEADERS, "Authorization": token}, timeout=10)


@pytest.fixture
def server(reference_rs: ReferenceOgcRs, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    base, process = launch(reference_rs, tmp_path)
    yield base, process
    stop(process)


def test_webhook_server_end_to_end(
    server: tuple[str, subprocess.Popen[bytes]], reference_rs: ReferenceOgcRs, tmp_path: Path
) -> None:
    base, process = server
    url = base + WEBHOOK
    session = requests.Session()

    health = session.get(base + "/")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = session.get(base + "/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "spoolDepth": 0})

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
    # the batch repeats the single entry's requestID: that event is delivered once
    wait_for(lambda: reference_rs.row_count() == 3, what="3 rows")

    wrong = session.post(url, data=compact_entry("get_object_presigned"), headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401
    assert session.post(url, data=b"not json", headers={"Authorization": TOKEN}).status_code == 400

    # OGC RS down: MinIO still gets its 200 at once (the line is spooled), nothing is stored meanwhile
    reference_rs.faults.randomize([(Fault.with_status(503), 1.0)])
    started = time.monotonic()
    down = session.post(url, data=compact_entry("get_object_partial_206"), headers={"Authorization": TOKEN})
    assert down.status_code == 200
    assert time.monotonic() - started < 1.0
    time.sleep(1.0)
    assert reference_rs.row_count() == 3
    metrics = session.get(base + "/metrics").text
    assert "ogc_audit_spool_depth 1" in metrics
    assert 'ogc_audit_delivery_failures_total{kind="unavailable"}' in metrics
    # back up: the spooled line is delivered; MinIO re-sending the same body (answer lost) stores nothing more
    reference_rs.faults.clear()
    wait_for(lambda: reference_rs.row_count() == 4, what="the spooled line delivered")
    again = session.post(url, data=compact_entry("get_object_partial_206"), headers={"Authorization": TOKEN})
    assert again.status_code == 200
    time.sleep(1.5)
    assert reference_rs.row_count() == 4
    assert sorted(line.split("|")[4] for line in reference_rs.stored_lines()) == sorted(
        ["1048576", "2048", "4096", "65536"]
    )
    wait_for(lambda: "ogc_audit_spool_depth 0" in session.get(base + "/metrics").text, what="an empty spool")

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    stderr = process.communicate()[1].decode()
    assert "serve-test-token" not in stderr
    assert "guess" not in stderr
    # spool and ledger share one file readable by its owner only
    assert (tmp_path / "serve.sqlite3").stat().st_mode & 0o777 == 0o600


def test_missing_configuration_stops_before_serving(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("WEBHOOK_TOKEN", "WEBHOOK_TOKEN_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEDGER_PATH", str(tmp_path / "l.sqlite3"))
    assert cli_main(["serve", "--host", "127.0.0.1", "--port", str(free_port())]) == 2
    assert "WEBHOOK_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize("weak", ["Bearer ", "Bearer short-token"])
def test_weak_token_stops_serve_with_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reference_rs: ReferenceOgcRs,
    weak: str,
    tmp_path: Path,
) -> None:
    for name, value in ogc_rs_env(reference_rs).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEBHOOK_TOKEN_SECRET_ARN", raising=False)
    monkeypatch.setenv("WEBHOOK_TOKEN", weak)
    monkeypatch.setenv("LEDGER_PATH", str(tmp_path / "l.sqlite3"))

    assert cli_main(["serve", "--host", "127.0.0.1", "--port", str(free_port())]) == 2

    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ogc-audit serve: environment variable WEBHOOK_TOKEN must hold at least 16 characters")


def test_a_wrong_database_url_stops_serve_with_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], reference_rs: ReferenceOgcRs
) -> None:
    for name, value in {**ogc_rs_env(reference_rs), "WEBHOOK_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    port = free_port()  # nothing listens there
    url = f"postgresql://spool:s3cret-password@127.0.0.1:{port}/spool"

    assert cli_main(["serve", "--host", "127.0.0.1", "--port", str(free_port()), "--database-url", url]) == 2

    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ogc-audit serve: cannot use the database postgresql://spool@127.0.0.1:{port}/spool")
    assert "s3cret" not in line
    assert cli_main(["serve", "--host", "127.0.0.1", "--database-url", "mysql://x/y"]) == 2
    assert "must be postgresql://... or sqlite:///PATH" in capsys.readouterr().err


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
            base + WEBHOOK,
            data=compact_entry("get_object_presigned"),
            headers={"Authorization": TOKEN},
            verify=certfile,
            timeout=10,
        )
        assert (answer.status_code, answer.json()["metered"]) == (200, 1)
        wait_for(lambda: reference_rs.row_count() == 1, what="the line delivered")
        # Plain HTTP on the TLS port gets no answer from the webhook.
        with pytest.raises(requests.ConnectionError):
            requests.get(base.replace("https://", "http://") + "/", timeout=2)
    finally:
        stop(process)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--host", "127.0.0.1", "--certfile", "missing.pem"], "--keyfile"),
        (["--host", "127.0.0.1", "--certfile", "a.pem", "--keyfile", "b.pem"], "a.pem"),
        (["--host", "0.0.0.0"], "--insecure-http"),
        ([], "refusing plain HTTP on 0.0.0.0"),  # the default host is every interface: TLS needed
    ],
)
def test_unsafe_or_incomplete_listener_options_stop_serve(
    monkeypatch: pytest.MonkeyPatch,
    reference_rs: ReferenceOgcRs,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    named: str,
) -> None:
    for name, value in {**ogc_rs_env(reference_rs), "WEBHOOK_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    assert cli_main(["serve", "--port", str(free_port()), *options]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ogc-audit serve: ")
    assert named in line


def test_insecure_http_beyond_loopback_is_explicit(reference_rs: ReferenceOgcRs, tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "ogc_audit.cli", "serve", "--host", "0.0.0.0", "--port", str(port)]
    env = cli_env(reference_rs, WEBHOOK_TOKEN=TOKEN, LOG_LEVEL="warning", LEDGER_PATH=str(tmp_path / "l.sqlite3"))
    process = subprocess.Popen([*command, "--insecure-http"], env=env, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), what="serve answering")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    stderr = process.communicate()[1].decode()
    assert "plain HTTP on 0.0.0.0 (--insecure-http): a TLS-terminating proxy must be in front" in stderr


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


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
    assert b"connection: close" in answer.lower()


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


def test_idle_and_trickling_clients_cost_no_worker(reference_rs: ReferenceOgcRs, tmp_path: Path) -> None:
    base, process = launch(reference_rs, tmp_path)
    port = int(base.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
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
        time.sleep(1.0)  # the idle and slow clients hold their connections
        started = time.monotonic()
        answer = requests.post(
            base + WEBHOOK, data=compact_entry("get_object_presigned"), headers={"Authorization": TOKEN}, timeout=10
        )
        waited = time.monotonic() - started
        assert answer.status_code == 200
        assert waited < 0.5  # far within MinIO's timeout, while 316 connections are held
        # A client that does not finish its headers in time is cut off, and so is one that sends nothing.
        for connection in (slow[0], idle[0]):
            cut_started = time.monotonic()
            while connection.recv(4096):
                pass
            assert time.monotonic() - cut_started < 8
    finally:
        stop_trickling.set()
        trickler.join()
        for connection in [*idle, *slow]:
            connection.close()
        stop(process)


# ---- the spool: durable before the answer, bounded, delivered behind --------------------------------


def test_kill_9_right_after_the_answer_loses_nothing(reference_rs: ReferenceOgcRs, tmp_path: Path) -> None:
    bodies, starts = download_bodies(5, 20)
    # OGC RS out of reach while the bodies are accepted (its token endpoint refuses serve): the lines exist only in
    # serve's spool when it is killed.
    reference_rs.token_faults.randomize([(Fault.with_status(401), 1.0)])
    port = free_port()
    # A round cut short by the kill is resolved by the grace period (no OGC RS database here): 1 s in this test.
    base, process = launch(reference_rs, tmp_path, "--lease", "2", port=port, UNCERTAIN_GRACE_S="1")
    for body in bodies:
        assert post(base, body).status_code == 200
    process.kill()  # SIGKILL right after the last 2xx: no shutdown code runs
    process.wait()
    assert reference_rs.row_count() == 0

    reference_rs.token_faults.clear()
    base, process = launch(reference_rs, tmp_path, "--lease", "2", port=port, UNCERTAIN_GRACE_S="1")
    try:
        wait_for(lambda: _metric(base, "ogc_audit_spool_depth") == 0, timeout=40, what="the spooled lines delivered")
        assert stored_once(reference_rs, starts)
    finally:
        stop(process)


def test_a_full_spool_answers_503_and_accepts_again_once_drained(reference_rs: ReferenceOgcRs, tmp_path: Path) -> None:
    bodies, starts = download_bodies(4, 5, seed=2)
    reference_rs.faults.randomize([(Fault.with_status(503), 1.0)])
    base, process = launch(reference_rs, tmp_path, "--spool-max-lines", "10", LOG_LEVEL="info")
    try:
        assert post(base, bodies[0]).status_code == 200
        assert post(base, bodies[1]).status_code == 200
        full = post(base, bodies[2])
        assert full.status_code == 503  # MinIO keeps the body and re-sends it
        assert "spool full" in full.json()["error"]
        ready = requests.get(base + "/ready", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        metrics = requests.get(base + "/metrics", timeout=5).text
        assert "ogc_audit_spool_accepting 0" in metrics
        assert "ogc_audit_spool_refusals_total 1" in metrics
        assert "ogc_audit_spool_depth 10" in metrics

        reference_rs.faults.clear()  # OGC RS back: the spool drains and accepts again
        wait_for(lambda: requests.get(base + "/ready", timeout=5).json() == {"ready": True, "spoolDepth": 0})
        for body in bodies[2:]:
            assert post(base, body).status_code == 200
        wait_for(lambda: reference_rs.row_count() >= len(starts), what="every line delivered")
        time.sleep(1.0)
        assert stored_once(reference_rs, starts)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert "spool full: 10 lines (limit 10); answering 503" in process.communicate()[1].decode()


def test_a_slow_ogc_rs_does_not_slow_minio_and_gets_each_line_once(
    reference_rs: ReferenceOgcRs, tmp_path: Path
) -> None:
    bodies, starts = download_bodies(6, 10, seed=3)
    reference_rs.faults.randomize([(Fault.delay(3.0), 1.0)])  # every request answered after 3 s
    base, process = launch(reference_rs, tmp_path)
    try:
        for body in bodies:
            started = time.monotonic()
            assert post(base, body).status_code == 200
            assert time.monotonic() - started < 0.5
        wait_for(lambda: reference_rs.row_count() >= len(starts), timeout=40, what="every line delivered")
        time.sleep(1.0)
        assert stored_once(reference_rs, starts)
    finally:
        stop(process)


# ---- a slow OGC RS on its own database, and a fleet on PostgreSQL ------------------------------------------------


@pytest.fixture
def slow_rs_on_postgres(postgres_server: ThrowawayPostgres) -> Iterator[ReferenceOgcRs]:
    """A reference OGC RS writing OGC RS's own tables in PostgreSQL, storing each request on receipt and answering
    it 3 s later."""
    with ReferenceOgcRs(database_url=postgres_server.create_database(), answer_latency_s=3.0) as server:
        yield server


def test_an_ogc_rs_answering_after_the_read_timeout_gets_each_line_once(
    slow_rs_on_postgres: ReferenceOgcRs, tmp_path: Path
) -> None:
    rs = slow_rs_on_postgres
    bodies, starts = download_bodies(4, 10, seed=4)
    # Every request times out on serve's side (1 s) while OGC RS stores it: each is uncertain, and OGC RS's
    # database (read-only) shows it stored, so nothing is sent twice.
    base, process = launch(rs, tmp_path, "--ogc-rs-read-timeout", "1", OGC_RS_DATABASE_URL=rs.database_url)
    try:
        for body in bodies:
            started = time.monotonic()
            assert post(base, body).status_code == 200
            assert time.monotonic() - started < 0.5
        wait_for(lambda: _metric(base, "ogc_audit_spool_depth") == 0, timeout=60, what="an empty spool")
        assert stored_once(rs, starts)
        assert _metric(base, "ogc_audit_lines_found_stored_total") >= 1
        assert _metric(base, "ogc_audit_lines_possibly_duplicated_total") == 0
    finally:
        stop(process)


def test_a_fleet_on_postgresql_stores_each_entry_once(
    slow_rs_on_postgres: ReferenceOgcRs, postgres_url: str, tmp_path: Path
) -> None:
    rs = slow_rs_on_postgres
    bodies, starts = download_bodies(6, 20, seed=5)
    fleet = ("--database-url", postgres_url, "--lease", "2")
    database = rs.database_url
    first_base, first = launch(rs, tmp_path / "a", *fleet, OGC_RS_DATABASE_URL=database)
    for body in bodies[:3]:
        assert post(first_base, body).status_code == 200
    # Killed mid-delivery: OGC RS has stored its first request and will answer it 3 s later.
    wait_for(lambda: rs.row_count() > 0, what="a request stored by OGC RS")
    first.kill()
    first.wait()

    second_base, second = launch(rs, tmp_path / "b", *fleet, OGC_RS_DATABASE_URL=database)
    third_base, third = launch(rs, tmp_path / "c", *fleet, OGC_RS_DATABASE_URL=database)
    try:
        # MinIO re-sends the killed instance's bodies (its answers were lost) to the others, and the rest too.
        for number, body in enumerate([*bodies[:3], *bodies[3:]]):
            assert post((second_base, third_base)[number % 2], body).status_code == 200
        assert post(third_base, bodies[4]).status_code == 200  # one more re-send, to the other instance

        wait_for(lambda: _metric(second_base, "ogc_audit_spool_depth") == 0, timeout=90, what="an empty spool")
        time.sleep(3.5)  # anything still on its way to OGC RS lands
        assert stored_once(rs, starts)
        found = sum(_metric(base, "ogc_audit_lines_found_stored_total") for base in (second_base, third_base))
        assert found >= 1  # the killed instance's request was found stored, not sent again
    finally:
        stop(second)
        stop(third)


def _metric(base: str, name: str) -> float:
    for line in requests.get(base + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
