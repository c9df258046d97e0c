"""Benchmark: ``ogc-audit serve`` driven like MinIO, beside a baseline server that only reads the body.

Starts the reference OGC RS (a subprocess on loopback), then, one after the other, the webhook server
(``run_serve``: gunicorn gthread, delivering to the reference OGC RS) and a baseline (the same gunicorn
settings, a WSGI app that reads the body and answers 200). Each is driven by 16 concurrent senders with
keep-alive connections, first with single-entry bodies (MinIO ``batch_size`` 1), then with 100-entry NDJSON
bodies (``batch_size`` 100, no Content-Type). Prints entries/s and p50/p99 latency per case, the ratio to the
baseline, and whether the targets (p99 < 100 ms single-entry; >= 5,000 entries/s with 100-entry bodies) hold.

    .venv/bin/python bench/minio_webhook.py [--seconds 5] [--workers 2] [--senders 16]
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "events" / "minio" / "get_object_presigned.json"
TOKEN = "Bearer bench-webhook-token-0001"
P99_TARGET_MS = 100.0
BATCH_TARGET_ENTRIES_S = 5000.0

BASELINE_APP = """
import sys
from ogc_audit.serve import WebhookServer, server_options

def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)
    body = b'{"status":"ok"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

WebhookServer(app, server_options("127.0.0.1", int(sys.argv[1]), int(sys.argv[2]))).run()
"""
WEBHOOK_APP = """
import sys
from ogc_audit.serve import run_serve

sys.exit(run_serve("127.0.0.1", int(sys.argv[1]), int(sys.argv[2])))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_up(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_reference_rs(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """The reference OGC RS in its own process; its printed variables configure the webhook server."""
    command = ["-m", "testbed.reference_rs"]
    process = subprocess.Popen(
        [sys.executable, *command, "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    settings: dict[str, str] = {}
    while "CLIENT_SECRET" not in settings:
        line = process.stdout.readline().decode()
        if not line:
            raise RuntimeError("reference OGC RS did not start")
        if "=" in line and not line.startswith("#"):
            name, _, value = line.strip().partition("=")
            settings[name] = value
    return process, settings


def entry_bodies(count: int, per_body: int, seed: str) -> list[bytes]:
    """``count`` bodies of ``per_body`` distinct presigned-download entries, compact JSON lines as MinIO sends."""
    template: dict[str, Any] = json.loads(FIXTURE.read_text())
    bodies = []
    serial = 0
    for _ in range(count):
        lines = []
        for _ in range(per_body):
            entry = copy.deepcopy(template)
            entry["requestID"] = f"{seed}{serial:012X}"
            entry["requestQuery"]["itemId"] = f"bench-item-{serial}"
            serial += 1
            lines.append(json.dumps(entry, separators=(",", ":")))
        bodies.append(("\n".join(lines) + "\n").encode())
    return bodies


@dataclass
class Result:
    requests: int
    entries: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def drive(port: int, bodies: list[bytes], per_body: int, *, senders: int, seconds: float, max_requests: int) -> Result:
    """``senders`` threads POST bodies over keep-alive connections until the time or request budget ends."""
    lock = threading.Lock()
    latencies: list[float] = []
    counters = {"next": 0, "errors": 0}
    headers = {
        "Authorization": TOKEN,
        "User-Agent": "MinIO (linux; amd64) bench",
        "x-minio-version": "RELEASE.2025-09-07T16-13-09Z",
        "x-minio-webhook-payload-count": str(per_body),
    }
    if per_body == 1:
        headers["Content-Type"] = "application/json"
    deadline = time.monotonic() + seconds

    def sender() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        errors = 0
        while time.monotonic() < deadline:
            with lock:
                index = counters["next"]
                counters["next"] += 1
            if index >= max_requests:
                break
            body = bodies[index % len(bodies)]
            started = time.perf_counter()
            try:
                connection.request("POST", "/auditlogs/processor", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                ok = False
            mine.append((time.perf_counter() - started) * 1000)
            errors += 0 if ok else 1
        connection.close()
        with lock:
            latencies.extend(mine)
            counters["errors"] += errors

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    requests = len(latencies)
    good = requests - counters["errors"]
    return Result(requests, good * per_body, counters["errors"], elapsed, latencies)


def run_case(
    name: str, code: str, env: dict[str, str], cases: list[tuple[str, list[bytes], int]], args: argparse.Namespace
) -> dict[str, Result]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(port), str(args.workers)], env=env, stderr=subprocess.DEVNULL
    )
    results = {}
    try:
        wait_until_up(port, process)
        # Warm-up: token fetch, connection pools, imports in every worker.
        drive(port, cases[0][1], cases[0][2], senders=args.senders, seconds=1.0, max_requests=200)
        for label, bodies, per_body in cases:
            results[label] = drive(
                port, bodies, per_body, senders=args.senders, seconds=args.seconds, max_requests=args.max_requests
            )
            r = results[label]
            print(
                f"  {name:<9} {label:<12} {r.requests:>6} req {r.entries_per_s:>9,.0f} entries/s "
                f"p50 {r.percentile(0.50):6.1f} ms  p99 {r.percentile(0.99):6.1f} ms  errors {r.errors}",
                flush=True,
            )
    finally:
        process.terminate()
        process.wait(timeout=20)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measured case")
    parser.add_argument("--max-requests", type=int, default=20_000, help="request budget of each case")
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of both servers")
    args = parser.parse_args()

    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "WEBHOOK_", "CLIENT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "functions"), env.get("PYTHONPATH", "")])
    env["LOG_LEVEL"] = "warning"
    rs_process, rs_settings = start_reference_rs(env)
    ledger_dir = tempfile.mkdtemp(prefix="ogc-audit-bench-")
    webhook_env = {**env, **rs_settings, "WEBHOOK_TOKEN": TOKEN, "LEDGER_PATH": f"{ledger_dir}/ledger.sqlite3"}
    cases = [
        ("single-entry", entry_bodies(2000, 1, "A"), 1),
        ("100-entry", entry_bodies(100, 100, "B"), 100),
    ]
    print(f"MinIO webhook benchmark: {args.senders} senders, {args.workers} gunicorn workers, {os.cpu_count()} CPUs")
    try:
        baseline = run_case("baseline", BASELINE_APP, env, cases, args)
        webhook = run_case("webhook", WEBHOOK_APP, webhook_env, cases, args)
    finally:
        rs_process.terminate()
        rs_process.wait(timeout=10)

    single, batch = webhook["single-entry"], webhook["100-entry"]
    print("ratios webhook / baseline:")
    for label in ("single-entry", "100-entry"):
        w, b = webhook[label], baseline[label]
        print(
            f"  {label:<12} throughput {w.entries_per_s / b.entries_per_s:5.2f}x  "
            f"p99 {w.percentile(0.99) / b.percentile(0.99):5.2f}x"
        )
    p99_ok = single.percentile(0.99) < P99_TARGET_MS and single.errors == 0
    batch_ok = batch.entries_per_s >= BATCH_TARGET_ENTRIES_S and batch.errors == 0
    p99 = single.percentile(0.99)
    print(f"target p99 < {P99_TARGET_MS:.0f} ms single-entry: {'met' if p99_ok else 'MISSED'} ({p99:.1f} ms)")
    print(
        f"target >= {BATCH_TARGET_ENTRIES_S:,.0f} entries/s 100-entry bodies: "
        f"{'met' if batch_ok else 'MISSED'} ({batch.entries_per_s:,.0f}/s)"
    )
    return 0 if p99_ok and batch_ok else 1


if __name__ == "__main__":
    sys.exit(main())
