"""Benchmark: ``ogc-audit serve`` driven like MinIO, beside a baseline server that only reads the body.

Starts two reference OGC RS processes on loopback, one answering at once and one answering every request after
3 s, then, one after the other: a baseline (uvicorn with the same settings as ``serve``, an ASGI app that reads the
body and answers 200), ``serve`` delivering to the fast OGC RS, ``serve`` delivering to the slow one, and ``serve``
again with 500 idle unauthenticated connections held open beside the senders (a connection the server cuts is opened
again at once). Each is driven by 16 concurrent senders with keep-alive connections, first with single-entry bodies
(MinIO ``batch_size`` 1), then with 100-entry NDJSON bodies (``batch_size`` 100, no Content-Type). Every ``serve`` run
has a fresh spool file on disk (every commit synced). Prints entries/s and p50/p99 latency to MinIO per case, the
ratios to the baseline, the spool depth after each run, and whether the targets hold:
p99 < 50 ms for both body sizes at 0 s and 3 s OGC RS latency; >= 20,000 entries/s with 100-entry bodies; with 500
idle connections held open, p99 < 200 ms.

    .venv/bin/python bench/minio_webhook.py [--seconds 5] [--senders 16] [--workers 2] [--idle 500]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "functions"))

from testbed.samples import minio_body, minio_entry, random_download  # noqa: E402

TOKEN = "Bearer bench-webhook-token-0001"
P99_TARGET_MS = 50.0
IDLE_P99_TARGET_MS = 200.0
BATCH_TARGET_ENTRIES_S = 20_000.0
SLOW_OGC_RS_S = 3.0

REFERENCE_RS = """
import signal, sys, threading
from testbed.reference_rs import Fault, ReferenceOgcRs

server = ReferenceOgcRs(port=int(sys.argv[1]))
if float(sys.argv[2]) > 0:
    server.faults.randomize([(Fault.delay(float(sys.argv[2])), 1.0)])
with server:
    print(f"PROCESS_API_URL={server.process_url}")
    print(f"AUTH_URL={server.token_url}")
    print(f"AUTH_ITEM_ID={server.rs_host}")
    print(f"CLIENT_ID={server.client_id}")
    print(f"CLIENT_SECRET={server.client_secret}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
"""
BASELINE_SERVER = """
import sys
from uvicorn.supervisors import Multiprocess
from ogc_audit.serve.server import Listener, _Server, uvicorn_config

config = uvicorn_config("minio_webhook:baseline_app", Listener("127.0.0.1", int(sys.argv[2])), workers=int(sys.argv[1]))
config.lifespan = "off"
if config.workers > 1:
    Multiprocess(config, sockets=[config.bind_socket()]).run()
else:
    _Server(config).run()
"""


def baseline_app() -> Callable[..., Awaitable[None]]:
    """The baseline's ASGI application (a factory, as uvicorn's worker processes import it): read, answer 200."""

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        body = b'{"status":"ok"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_up(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
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


def start_reference_rs(env: dict[str, str], latency_s: float) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """A reference OGC RS in its own process (answering after ``latency_s``); its variables configure serve."""
    process = subprocess.Popen(
        [sys.executable, "-c", REFERENCE_RS, str(free_port()), str(latency_s)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    settings = {"OGC_AUDIT_ALLOW_HTTP": "1"}
    while "CLIENT_SECRET" not in settings:
        line = process.stdout.readline().decode()
        if not line:
            raise RuntimeError("reference OGC RS did not start")
        name, _, value = line.strip().partition("=")
        settings[name] = value
    return process, settings


def entry_bodies(count: int, per_body: int, seed: int) -> list[bytes]:
    """``count`` bodies of ``per_body`` distinct presigned downloads, compact JSON lines as MinIO sends them."""
    rng = random.Random(seed)
    when = datetime(2025, 10, 27, 10, 0, tzinfo=UTC)
    return [minio_body(minio_entry(random_download(rng, when)) for _ in range(per_body)) for _ in range(count)]


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


class IdleConnections:
    """``count`` unauthenticated connections that send nothing, each opened again as soon as the server cuts it."""

    def __init__(self, port: int, count: int) -> None:
        self._port = port
        self._count = count
        self._stop = threading.Event()
        self.reopened = 0
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def __enter__(self) -> IdleConnections:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _open(self, selector: selectors.BaseSelector) -> None:
        connection = socket.create_connection(("127.0.0.1", self._port), timeout=5)
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ)

    def _hold(self) -> None:
        selector = selectors.DefaultSelector()
        for _ in range(self._count):
            self._open(selector)
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.1):
                connection = key.fileobj
                assert isinstance(connection, socket.socket)
                with contextlib.suppress(OSError):
                    if connection.recv(4096):
                        continue
                selector.unregister(connection)
                connection.close()
                self._open(selector)
                self.reopened += 1
        for key in list(selector.get_map().values()):
            assert isinstance(key.fileobj, socket.socket)
            key.fileobj.close()


def spool_depth(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("ogc_audit_spool_depth "):
                return line.split()[1]
    return "?"


def run_server(
    name: str,
    command: list[str],
    env: dict[str, str],
    cases: list[tuple[str, list[bytes], int]],
    *,
    args: argparse.Namespace,
    idle: int = 0,
) -> dict[str, Result]:
    port = free_port()
    process = subprocess.Popen([*command, str(port)], env=env, stderr=subprocess.DEVNULL)
    results = {}
    try:
        wait_until_up(port, process)
        # Warm-up: token fetch, connection pools, imports.
        drive(port, cases[0][1], cases[0][2], senders=args.senders, seconds=1.0, max_requests=200)
        with IdleConnections(port, idle) if idle else contextlib.nullcontext() as held:
            if idle:
                time.sleep(1.0)
            for label, bodies, per_body in cases:
                results[label] = drive(
                    port, bodies, per_body, senders=args.senders, seconds=args.seconds, max_requests=args.max_requests
                )
                r = results[label]
                print(
                    f"  {name:<22} {label:<12} {r.requests:>6} req {r.entries_per_s:>9,.0f} entries/s "
                    f"p50 {r.percentile(0.50):6.1f} ms  p99 {r.percentile(0.99):6.1f} ms  errors {r.errors}",
                    flush=True,
                )
            if isinstance(held, IdleConnections):
                print(f"  {name:<22} idle connections cut by the server and opened again: {held.reopened}")
        if "serve" in name:
            print(f"  {name:<22} spool depth at the end: {spool_depth(port)} lines (delivered behind)")
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measured case")
    parser.add_argument("--max-requests", type=int, default=20_000, help="request budget of each case")
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of both servers")
    parser.add_argument("--idle", type=int, default=500, help="idle unauthenticated connections in the last run")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "WEBHOOK_", "CLIENT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "functions"), str(ROOT / "bench"), env.get("PYTHONPATH", "")])
    env["LOG_LEVEL"] = "warning"
    fast_rs, fast_settings = start_reference_rs(env, 0.0)
    slow_rs, slow_settings = start_reference_rs(env, SLOW_OGC_RS_S)
    spool_dir = tempfile.mkdtemp(prefix="ogc-audit-bench-", dir=ROOT)
    serve = [sys.executable, "-m", "ogc_audit.cli", "serve", "--workers", str(args.workers), "--host", "127.0.0.1"]
    serve.append("--port")
    cases = [("single-entry", entry_bodies(2000, 1, 1), 1), ("100-entry", entry_bodies(200, 100, 2), 100)]

    def serve_env(settings: dict[str, str], run: str) -> dict[str, str]:
        return {**env, **settings, "WEBHOOK_TOKEN": TOKEN, "LEDGER_PATH": f"{spool_dir}/{run}.sqlite3"}

    load = os.getloadavg()[0]
    cpus = os.cpu_count()
    print(f"MinIO webhook benchmark: {args.senders} senders, {args.workers} workers, {cpus} CPUs, load {load:.2f}")
    try:
        baseline_server = [sys.executable, "-c", BASELINE_SERVER, str(args.workers)]
        baseline = run_server("baseline", baseline_server, env, cases, args=args)
        fast = run_server("serve, OGC RS 0 s", serve, serve_env(fast_settings, "fast"), cases, args=args)
        slow = run_server(
            f"serve, OGC RS {SLOW_OGC_RS_S:.0f} s", serve, serve_env(slow_settings, "slow"), cases, args=args
        )
        idle = run_server(
            f"serve, {args.idle} idle", serve, serve_env(fast_settings, "idle"), cases, args=args, idle=args.idle
        )
    finally:
        for process in (fast_rs, slow_rs):
            process.terminate()
            process.wait(timeout=10)
        for leftover in Path(spool_dir).glob("*"):
            leftover.unlink()
        Path(spool_dir).rmdir()

    print("ratios serve / baseline (throughput, p99):")
    for run_name, run in (("OGC RS 0 s", fast), (f"OGC RS {SLOW_OGC_RS_S:.0f} s", slow), (f"{args.idle} idle", idle)):
        for label in ("single-entry", "100-entry"):
            w, b = run[label], baseline[label]
            print(
                f"  {run_name:<12} {label:<12} {w.entries_per_s / b.entries_per_s:5.2f}x  "
                f"{w.percentile(0.99) / b.percentile(0.99):5.2f}x"
            )
    verdicts = []
    for run_name, run in (("OGC RS 0 s", fast), (f"OGC RS {SLOW_OGC_RS_S:.0f} s", slow)):
        for label in ("single-entry", "100-entry"):
            p99 = run[label].percentile(0.99)
            verdicts.append(
                (f"p99 < {P99_TARGET_MS:.0f} ms, {label}, {run_name}", p99 < P99_TARGET_MS, f"{p99:.1f} ms")
            )
        rate = run["100-entry"].entries_per_s
        verdicts.append((f">= {BATCH_TARGET_ENTRIES_S:,.0f} entries/s, {run_name}", rate >= 20_000, f"{rate:,.0f}/s"))
    worst_idle = max(idle[label].percentile(0.99) for label in idle)
    verdicts.append(
        (
            f"p99 < {IDLE_P99_TARGET_MS:.0f} ms beside {args.idle} idle",
            worst_idle < IDLE_P99_TARGET_MS,
            f"{worst_idle:.1f} ms",
        )
    )
    errors = sum(r.errors for run in (fast, slow, idle) for r in run.values())
    verdicts.append(("no errors", errors == 0, str(errors)))
    for label, met, figure in verdicts:
        print(f"target {label}: {'met' if met else 'MISSED'} ({figure})")
    print(f"load after the run: {os.getloadavg()[0]:.2f}")
    return 0 if all(met for _, met, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
