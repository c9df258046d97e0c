"""Benchmark: memory and time of one large input, each measured in a child process of its own.

Two cases, the bounds of issue 19 ("bounded per input"):

- ``s3``: the s3_audit handler on a CloudTrail log file of minimal metered records (distinct requests, ~460 bytes
  each) inflating to 256 and 512 MiB, announced by an SQS message. The child runs the handler with the delivery
  ledger in a SQLite file (as DynamoDB, it is not held in the function's memory) and the real OGC RS client; S3
  (a moto server) and the reference OGC RS run in the parent process, outside the function, as in AWS (moto's
  in-process mock would record every HTTP call of the child, OGC RS posts included, and blur the figure). Every
  line must arrive once. The limit is the README's 300 MB (the function has 1,024 MB).
- ``webhook``: the MinIO webhook (``Webhook.handle``, as the Lambda handler calls it) on one authenticated 4 MiB
  body of bad entries, in the shapes that produce the most outcomes per byte (a line that is not JSON, a JSON
  value that is no object, an object that is a malformed entry). It counts the log records and bytes the body
  produced; the limits are the function's 512 MB and 10 s.

Each child reports its own peak RSS (``VmHWM``: ``ru_maxrss`` of a child started by fork keeps the parent's peak),
its CPU and wall time (the time bound is checked on the child's CPU seconds: on a shared machine the wall time is
mostly waiting for a core; the load is printed). A baseline child in the same run (Python with the same imports,
doing nothing) shows what the interpreter and its libraries hold before any input.

    .venv/bin/python -m bench.bounded_work                 # both cases (~2-4 min on 2 cores)
    .venv/bin/python -m bench.bounded_work s3 --megabytes 256 512
    .venv/bin/python -m bench.bounded_work webhook

Exit status 1 when a bound is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parent.parent
MINIO_ENTRY = ROOT / "tests" / "events" / "minio" / "get_object_presigned.json"
MIB = 1 << 20
S3_PEAK_LIMIT_MB = 300.0
WEBHOOK_PEAK_LIMIT_MB = 512.0
WEBHOOK_SECONDS_LIMIT = 10.0
WEBHOOK_BODY_BYTES = 4 * MIB
WEBHOOK_TOKEN = "Bearer bench-webhook-token-0001"
LOG_BUCKET = "bench-trail-logs"
LOG_KEY = (
    "AWSLogs/111122223333/CloudTrail/ap-south-1/2025/10/27/111122223333_CloudTrail_ap-south-1_20251027T1015Z_b.json.gz"
)
USER = "3f1c9a52-7a4e-4c1e-9f0b-2d5f8e6a1b7c"
COLLECTION = "8b2d4e6f-1a3c-4b5d-8e7f-9a0b1c2d3e4f"
# The shapes of a bad 4 MiB body: each line is one entry with the outcome named.
BAD_BODIES = {
    "not_json": b"x\n",  # bad_json: 2 bytes an entry, the most entries a body can hold
    "cut_short": b"{\n",  # bad_json the decoder has to look at
    "not_an_object": b"1\n",  # malformed_entry: decoded, then judged
    "malformed_entry": b'{"api":{"name":"GetObject","statusCode":"200"},"requestQuery":{"X-Amz-Signature":"s"}}\n',
}


def minimal_record(index: int) -> bytes:
    """One metered CloudTrail record with only what the rules read, its own request and eventID: ~300 bytes."""
    return (
        b'{"eventSource":"s3.amazonaws.com","eventName":"GetObject","eventTime":"2025-10-27T10:12:30Z",'
        b'"eventID":"00000000-0000-4000-8000-%012d","requestID":"%016X",'
        b'"requestParameters":{"bucketName":"stac-assets","userId":"%s","collectionId":"%s",'
        b'"itemId":"item-%d","X-Amz-Expires":"3600"},'
        b'"additionalEventData":{"AuthenticationMethod":"QueryString","bytesTransferredOut":16384}}'
    ) % (index, index, USER.encode(), COLLECTION.encode(), index)


def write_metered_log_file(out: BinaryIO, megabytes: int) -> int:
    """A gzipped ``{"Records": [...]}`` of distinct minimal metered records inflating to about ``megabytes`` MiB,
    written as a stream (never held whole); returns the number of records."""
    deflater = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    target = megabytes * MIB
    written, records, block = 0, 0, []
    block.append(b'{"Records":[')
    while written < target:
        text = minimal_record(records)
        block.append(text if records == 0 else b"," + text)
        written += len(text) + 1
        records += 1
        if len(block) >= 4096:
            out.write(deflater.compress(b"".join(block)))
            block = []
    block.append(b"]}")
    out.write(deflater.compress(b"".join(block)) + deflater.flush())
    return records


def bad_webhook_body(shape: str, size: int = WEBHOOK_BODY_BYTES) -> bytes:
    """A body of ``size`` bytes at most: one good MinIO entry (so the body is accepted), then one bad entry repeated
    (NDJSON, as MinIO's batch_size > 1 sends)."""
    good = json.dumps(json.loads(MINIO_ENTRY.read_text()), separators=(",", ":")).encode() + b"\n"
    entry = BAD_BODIES[shape]
    return good + entry * ((size - len(good)) // len(entry))


def _peak_mb() -> float:
    """This process's own peak RSS (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- children -----------------------------------------------------------------------------------------------------


def child_baseline() -> dict[str, Any]:
    """The interpreter with the handler's imports, nothing read."""
    import boto3  # noqa: F401

    from minio_relay import webhook  # noqa: F401
    from s3_audit import handler  # noqa: F401

    return {}


def child_s3(ledger_path: str) -> dict[str, Any]:
    """The s3_audit handler on one SQS message announcing the log file (in the emulator the parent runs)."""
    import boto3

    from metering.ledger import SqliteLedger
    from metering.ogc_rs import http_session
    from metering.runtime import build_ogc_rs_client
    from metering.settings import OgcRsSettings
    from s3_audit import handler as s3_audit_handler
    from testbed.local_aws import lambda_context

    logging.getLogger().setLevel(logging.WARNING)
    client = build_ogc_rs_client(OgcRsSettings.from_env(dict(os.environ)), session=http_session())
    deps = s3_audit_handler.Dependencies(s3=boto3.client("s3"), sink=client, ledger=SqliteLedger(ledger_path))
    s3_audit_handler.dependencies = lambda: deps  # type: ignore[assignment]
    notification = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": LOG_BUCKET}, "object": {"key": LOG_KEY}},
            }
        ]
    }
    event = {"Records": [{"eventSource": "aws:sqs", "messageId": "m-1", "body": json.dumps(notification)}]}
    started = time.monotonic()
    response = s3_audit_handler.handler(event, lambda_context("s3-audit", memory_mb=1024))
    return {"response": response, "handler_s": round(time.monotonic() - started, 1)}


class _CountingStream:
    """Where the webhook's log records go: only their number and size are kept."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0

    def write(self, text: str) -> int:
        self.records += text.count("\n")
        self.bytes += len(text.encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        pass


def child_webhook(shape: str) -> dict[str, Any]:
    """``Webhook.handle`` on one authenticated 4 MiB body of bad entries; its log output is counted."""
    from minio_relay.webhook import Webhook, WebhookRequest

    stream = _CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter('{"level":"%(levelname)s","message":"%(message)s"}'))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    body = bad_webhook_body(shape)
    sent: list[int] = []
    hook = Webhook(token=lambda: WEBHOOK_TOKEN, sink=lambda downloads: sent.append(len(downloads)))
    request = WebhookRequest("POST", "/auditlogs/processor", {"authorization": WEBHOOK_TOKEN}, body)
    started, cpu = time.monotonic(), _cpu_s()
    response = hook.handle(request)
    return {
        "status": response.status,
        "answer": dict(response.document),
        "body_bytes": len(body),
        "log_records": stream.records,
        "log_bytes": stream.bytes,
        "handle_s": round(time.monotonic() - started, 2),
        "handle_cpu_s": round(_cpu_s() - cpu, 2),
    }


def child_main(argv: list[str]) -> int:
    """``child baseline | s3 LEDGER | webhook SHAPE``: run it, print the result with peak RSS as JSON."""
    kind = argv[0]
    if kind == "baseline":
        result = child_baseline()
    elif kind == "s3":
        result = child_s3(argv[1])
    else:
        result = child_webhook(argv[1])
    print(json.dumps({**result, "peak_mb": round(_peak_mb(), 1), "cpu_s": round(_cpu_s(), 1)}))
    return 0


# ---- parent -------------------------------------------------------------------------------------------------------


def run_child(*arguments: str, env: dict[str, str] | None = None, timeout: float = 900) -> dict[str, Any]:
    """``python -m bench.bounded_work child ARGUMENTS``: its JSON result (last stdout line) and wall time."""
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "bench.bounded_work", "child", *arguments],
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'functions'}", **(env or {})},
        capture_output=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"child {arguments} failed: {completed.stderr.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def measure_s3(megabytes: int, folder: Path) -> dict[str, Any]:
    """Generate the file into the emulator's S3, run the handler child against a fresh reference OGC RS, and count
    the rows. The emulator (moto server) and the reference OGC RS run in this process, as S3 and OGC RS run outside
    the function: the child's memory is the function's alone."""
    import boto3

    from testbed.local_aws import local_aws
    from testbed.reference_rs import ReferenceOgcRs

    path = folder / f"metered-{megabytes}.json.gz"
    with path.open("wb") as out:
        records = write_metered_log_file(out, megabytes)
    with local_aws(enforce_iam=False), ReferenceOgcRs(db_path=str(folder / f"rs-{megabytes}.sqlite")) as rs:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=LOG_BUCKET)
        s3.upload_file(str(path), LOG_BUCKET, LOG_KEY)
        env = {
            "PROCESS_API_URL": rs.process_url,
            "AUTH_URL": rs.token_url,
            "OGC_AUDIT_ALLOW_HTTP": "1",
            "AUTH_ITEM_ID": rs.rs_host,
            "CLIENT_ID": rs.client_id,
            "CLIENT_SECRET": rs.client_secret,
            "BATCH_MAX_LINES": "500",
        }
        result = run_child("s3", str(folder / f"ledger-{megabytes}.sqlite"), env=env)
        rows = rs.row_count()
    result.update(megabytes=megabytes, records=records, gzip_mb=round(path.stat().st_size / MIB, 1), rows=rows)
    path.unlink()
    return result


def s3_ok(result: dict[str, Any]) -> bool:
    """Under the bound, and every record delivered exactly once."""
    return (
        result["peak_mb"] < S3_PEAK_LIMIT_MB
        and result["response"] == {"batchItemFailures": []}
        and result["rows"] == result["records"]
    )


def webhook_ok(result: dict[str, Any]) -> bool:
    """Answered, bounded log output, under the function's memory and time."""
    return (
        result["status"] == 200
        and result["log_records"] <= 100
        and result["peak_mb"] < WEBHOOK_PEAK_LIMIT_MB
        and result["cpu_s"] < WEBHOOK_SECONDS_LIMIT  # a shared machine's wall time is mostly waiting for a core
    )


def _lines_of(case: str, result: dict[str, Any]) -> Iterator[str]:
    if case == "s3":
        yield (
            f"  s3_audit {result['megabytes']:4d} MiB inflated ({result['gzip_mb']} MB gzip, {result['records']:,} "
            f"records): peak {result['peak_mb']:6.1f} MB, cpu {result['cpu_s']:6.1f} s, "
            f"handler {result['handler_s']} s, rows {result['rows']:,} -> {'ok' if s3_ok(result) else 'MISSED'}"
        )
    else:
        yield (
            f"  webhook {result['shape']:16s} {result['body_bytes']:,} bytes: answer {result['status']} "
            f"{result['answer']}, log {result['log_records']} records / {result['log_bytes']:,} bytes, "
            f"peak {result['peak_mb']:6.1f} MB, handle {result['handle_s']} s (cpu {result['handle_cpu_s']} s), "
            f"child wall {result['wall_s']} s -> {'ok' if webhook_ok(result) else 'MISSED'}"
        )


def main(argv: list[str]) -> int:
    """Run the cases, print the figures, exit 1 when a bound is missed."""
    if argv[:1] == ["child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=["s3", "webhook"], choices=["s3", "webhook"])
    parser.add_argument("--megabytes", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args(argv)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    baseline = run_child("baseline")
    print(f"  baseline (imports only): peak {baseline['peak_mb']} MB")
    ok = True
    if "s3" in args.cases:
        with tempfile.TemporaryDirectory(prefix="bounded-work-") as folder:
            for megabytes in args.megabytes:
                result = measure_s3(megabytes, Path(folder))
                ok = ok and s3_ok(result)
                for line in _lines_of("s3", result):
                    print(line, flush=True)
    if "webhook" in args.cases:
        for shape in BAD_BODIES:
            result = {**run_child("webhook", shape), "shape": shape}
            ok = ok and webhook_ok(result)
            for line in _lines_of("webhook", result):
                print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
