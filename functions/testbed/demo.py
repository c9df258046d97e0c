"""``ogc-audit demo``: both flows end to end on loopback, with the real handlers and no AWS account.

An AWS emulator (moto server, enforcing IAM) holds what the synthesized templates declare: the log bucket and its
notification, the queues, the secrets and the delivery ledger tables; each handler runs with the credentials of its
own role, which holds exactly the policies its template grants. CloudTrail log files written to the log bucket
notify the log-file queue, and the real ``s3_audit`` handler receives the notifications. MinIO audit bodies are
POSTed to the real ``webhook`` handler as API Gateway events and the real ``deliver`` handler drains the delivery
queue. A reference OGC RS (token endpoint and process endpoint enforcing OGC RS's validation) writes the
``metering`` table, which the demo prints. It ends with ``ogc-audit reconcile`` of the demo's period: the log files,
access logs and MinIO bodies against that table.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import random
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from metering import env_names
from metering.outcomes import OutcomeTally
from testbed.local_aws import FlowResources, create_flow_resources, function_logs, local_aws, pump_queue
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import (
    ACCOUNT,
    Download,
    Variant,
    access_log_key,
    access_log_line,
    cloudtrail_log_file,
    cloudtrail_log_key,
    cloudtrail_record,
    eventbridge_api_call,
    minio_body,
    minio_entry,
    random_download,
    utc,
    webhook_post,
)
from testbed.stack_template import synthesized_templates

WEBHOOK_TOKEN = "demo-webhook-token-7f3a9c"  # noqa: S105 - a throwaway token of the local demo
# Where the functions' JSON logs and EMF metric documents go unless --verbose (git-ignored).
DEFAULT_LOG_FILE = Path("ogc-audit-demo.log")
_START = utc("2025-10-27T10:10:00")
# The period every sample download falls in (the closing reconcile).
_PERIOD = ("2025-10-27T10:00:00Z", "2025-10-27T11:00:00Z")
# Shown in the S3 flow: what a log file holds besides metered downloads.
_S3_VARIANTS = [
    Variant.PRESIGNED_GET,
    Variant.PRESIGNED_GET,
    Variant.FAILED_403,
    Variant.HEADER_SIGNED,
    Variant.HEAD_OBJECT,
    Variant.PUT_OBJECT,
    Variant.MISSING_USER,
    Variant.NON_UUID_USER,
    Variant.PRESIGNED_GET,
]
_MINIO_VARIANTS = [
    Variant.PRESIGNED_GET,
    Variant.FAILED_404,
    Variant.HEAD_OBJECT,
    Variant.PRESIGNED_GET,
    Variant.HEADER_SIGNED,
]


def _write_log_files(s3: Any, resources: FlowResources, rng: random.Random) -> list[Download]:
    """Two CloudTrail log files (one repeating an event), a digest file; returns the metered downloads."""
    metered: list[Download] = []
    for file_number in range(2):
        records = []
        for variant in _S3_VARIANTS:
            download = random_download(rng, _START + timedelta(minutes=5 * file_number))
            records.append(cloudtrail_record(download, variant, float_bytes=file_number == 1))
            if variant is Variant.PRESIGNED_GET:
                metered.append(download)
        records.append(records[0])  # CloudTrail delivered one event twice
        key = cloudtrail_log_key(_START + timedelta(minutes=5 * file_number), f"demo{file_number}")
        resources.put_log_file(s3, key, cloudtrail_log_file(records))
    digest_key = f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/ap-south-1/2025/10/27/{ACCOUNT}_CloudTrail-Digest_demo.json.gz"
    resources.put_log_file(s3, digest_key, gzip.compress(b'{"digestStartTime":"2025-10-27T10:00:00Z"}'))
    return metered


def _access_log_step(
    aws: Any, resources: FlowResources, rng: random.Random, also_in_trail: Download, out: TextIO
) -> list[Download]:
    """The access-log source: one object holding a download CloudTrail reported too (metered once), a new one,
    a failed and a header-signed request, delivered into the access-log bucket (whose notification feeds the
    log-file queue). Returns the downloads it adds."""
    out.write("AWS S3 flow, access-log source: access-log object -> SQS -> s3_audit handler -> OGC RS\n")
    only_here = random_download(rng, _START)
    lines = [
        access_log_line(also_in_trail),  # the same S3 request ID as its CloudTrail record
        access_log_line(only_here),
        access_log_line(random_download(rng, _START), Variant.FAILED_403),
        access_log_line(random_download(rng, _START), Variant.HEADER_SIGNED),
    ]
    key = access_log_key(_START + timedelta(hours=2), "7F48A46E2E37A2F9")
    aws.client("s3").put_object(Bucket=resources.access_log_bucket, Key=key, Body="".join(lines).encode())
    pumped = pump_queue(resources.s3_audit, queue_url=resources.log_file_queue_url)
    out.write(
        f"  s3_audit invocations: {pumped.invocations}, messages failed: {pumped.failed}; "
        f"request {also_in_trail.item_id} was reported by CloudTrail and the access log\n"
    )
    return [only_here]


def _event_path(aws: Any, resources: FlowResources, rng: random.Random, out: TextIO) -> list[Download]:
    """eventBridge=true: events for three downloads (one delivered twice) metered in one batch, then the log file
    CloudTrail writes minutes later with two of them and one EventBridge missed; returns the metered downloads."""
    out.write("AWS S3 flow, eventBridge=true: EventBridge events -> event queue -> s3_audit in batches -> OGC RS\n")
    sqs = aws.client("sqs")
    seen = [random_download(rng, _START + timedelta(minutes=10)) for _ in range(3)]
    missed = random_download(rng, _START + timedelta(minutes=10))
    for download in [*seen, seen[0]]:  # EventBridge delivers at least once
        sqs.send_message(QueueUrl=resources.event_queue_url, MessageBody=json.dumps(eventbridge_api_call(download)))
    pumped = pump_queue(resources.s3_audit, queue_url=resources.event_queue_url)
    out.write(f"  4 events (one repeated) -> s3_audit invocations: {pumped.invocations}, failed: {pumped.failed}\n")
    records = [cloudtrail_record(download) for download in [*seen, missed]]
    key = cloudtrail_log_key(_START + timedelta(minutes=15), "demoevents")
    resources.put_log_file(aws.client("s3"), key, cloudtrail_log_file(records))
    pump_queue(resources.s3_audit, queue_url=resources.log_file_queue_url)
    out.write("  then its log file: 3 downloads already delivered by their events, 1 EventBridge missed\n")
    return [*seen, missed]


def _reconcile(resources: FlowResources, rs: ReferenceOgcRs, bodies: Sequence[bytes], out: TextIO) -> bool:
    """``ogc-audit reconcile`` of the demo's period: the MinIO bodies and the AWS logs against the metering rows."""
    from ogc_audit.reconcile import ReconcileRequest, run_reconcile

    out.write(
        "\nogc-audit reconcile: the period's downloads (CloudTrail log files, access logs, MinIO bodies)"
        " against the metering table\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        minio_log = Path(folder) / "minio-audit.ndjson"
        minio_log.write_bytes(b"".join(bodies))  # what MinIO sent, re-sent body included
        request = ReconcileRequest(
            source="minio",
            since=_PERIOD[0],
            until=_PERIOD[1],
            inputs=[str(minio_log), f"s3://{resources.log_bucket}/AWSLogs/", f"s3://{resources.access_log_bucket}/"],
            database_url=rs.database_url,
        )
        return run_reconcile(request, out=out, err=out) == 0


def _minio_bodies(rng: random.Random) -> tuple[list[bytes], list[Download]]:
    """The start-up probe, a single entry, an NDJSON batch, and the batch again (MinIO re-sending it)."""
    single = random_download(rng, _START)
    batch = [(random_download(rng, _START), variant) for variant in _MINIO_VARIANTS]
    batch_body = minio_body(minio_entry(d, v) for d, v in batch)
    legacy = random_download(rng, _START)
    bodies = [
        b"{}\n",
        minio_body([minio_entry(single)]),
        batch_body,
        minio_body([minio_entry(legacy, legacy=True)]),
        batch_body,
    ]
    metered = [single, *(d for d, v in batch if v is Variant.PRESIGNED_GET), legacy]
    return bodies, metered


def _tallies(summary: dict[str, Any]) -> str:
    """An outcome summary (``OutcomeTally.as_dict`` or the webhook's answer) as words: counts, then reasons."""
    parts = []
    for name, value in summary.items():
        if isinstance(value, dict):
            reasons = ", ".join(f"{reason} {count}" for reason, count in value.items())
            parts.append(f"{name} {sum(value.values())}" + (f" ({reasons})" if reasons else ""))
        else:
            parts.append(f"{name} {value}")
    return ", ".join(parts)


def _print_rows(rs: ReferenceOgcRs, out: TextIO) -> None:
    rows = rs.rows()
    out.write(f"\nmetering table of the reference OGC RS ({len(rows)} rows):\n")
    out.write(f"{'id':>3}  {'user_id':36}  {'timestamp':19}  {'resp_size':>10}  api_path\n")
    for row in rows:
        out.write(f"{row.id:>3}  {row.user_id:36}  {row.timestamp:19}  {row.resp_size:>10}  {row.api_path}\n")


def _check(label: str, expected: Sequence[Download], rs: ReferenceOgcRs, backend: str, out: TextIO) -> bool:
    """Compare the lines OGC RS stored for ``backend`` with the downloads the samples made, exactly."""
    stored = sorted(line for line in rs.stored_lines() if line.endswith(f"|{backend}"))
    want = sorted(
        f"{d.user_id}|{d.collection_id}|{d.item_id}|{d.when:%Y-%m-%dT%H:%M:%SZ}|{d.size}|{backend}" for d in expected
    )
    ok = stored == want
    out.write(f"{label}: {len(stored)} lines stored, {len(want)} expected: {'OK' if ok else 'MISMATCH'}\n")
    return ok


def run_demo(out: TextIO = sys.stdout, *, verbose: bool = False, log_file: Path = DEFAULT_LOG_FILE) -> int:
    """Run both flows; exit status 0 when OGC RS holds exactly the expected lines, once each.

    The story goes to ``out``; the functions' JSON logs and metric documents go to ``log_file`` (named at the end),
    or to ``out`` too when ``verbose``."""
    logging.getLogger("botocore").setLevel(logging.WARNING)
    rng = random.Random(20251027)  # noqa: S311 - sample data, not security
    with contextlib.ExitStack() as stack:
        sink = out if verbose else stack.enter_context(log_file.open("w", encoding="utf-8"))
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        rs = stack.enter_context(ReferenceOgcRs(db_path=str(Path(folder) / "metering.sqlite3")))
        with local_aws():
            import boto3

            resources = create_flow_resources(
                boto3,
                prefix="ogc-demo",
                ogc_rs=rs,
                webhook_token=WEBHOOK_TOKEN,
                # Every AWS source the app can deploy: the trail's log files, access logs and EventBridge events.
                templates=synthesized_templates(awsSource="both", eventBridge=True),
                local_settings={env_names.POWERTOOLS_LOG_LEVEL: "INFO"},
            )
            roles = ", ".join(f.role_name.removeprefix("ogc-demo-") for f in resources.functions.values())
            out.write(f"IAM enforced: each function runs under its synthesized template role policy ({roles})\n")
            with function_logs(sink):
                ok, minio_bodies = _run_flows(boto3, rs, resources, rng, out)
            _print_rows(rs, out)
            ok = _reconcile(resources, rs, minio_bodies, out) and ok
    if not verbose:
        out.write(f"\nthe functions' JSON logs and metric documents: {log_file.resolve()}\n")
    return 0 if ok else 1


def _run_flows(
    aws: Any, rs: ReferenceOgcRs, resources: FlowResources, rng: random.Random, out: TextIO
) -> tuple[bool, list[bytes]]:
    """Both flows; whether OGC RS holds exactly their lines, and the bodies MinIO sent (for the reconcile)."""
    from s3_audit.extract import extract_downloads

    out.write("AWS S3 flow: CloudTrail log files -> log bucket -> SQS -> s3_audit handler -> OGC RS\n")
    s3_expected = _write_log_files(aws.client("s3"), resources, rng)
    pumped = pump_queue(resources.s3_audit, queue_url=resources.log_file_queue_url)
    out.write(f"  s3_audit invocations: {pumped.invocations}, messages failed: {pumped.failed}\n")
    tally = OutcomeTally()
    for _ in extract_downloads([f"s3://{resources.log_bucket}/AWSLogs/"], tally):
        pass
    out.write(f"  outcomes of the log files (ogc-audit extract): {_tallies(tally.as_dict())}\n")
    s3_ok = _check("  AWS S3 flow", s3_expected, rs, "aws_s3", out)
    s3_expected += _access_log_step(aws, resources, rng, s3_expected[0], out)
    s3_ok = _check("  AWS S3 flow with the access log (each request once)", s3_expected, rs, "aws_s3", out) and s3_ok
    s3_expected += _event_path(aws, resources, rng, out)
    s3_ok = _check("  AWS S3 flow with events", s3_expected, rs, "aws_s3", out) and s3_ok

    out.write("MinIO flow: audit webhook -> webhook handler -> SQS -> deliver handler -> OGC RS\n")
    bodies, minio_expected = _minio_bodies(rng)
    for body in bodies:
        response = resources.webhook.invoke(webhook_post(body, f"Bearer {WEBHOOK_TOKEN}"))
        answer = _tallies(json.loads(response["body"]))
        out.write(f"  POST {len(body):>5} bytes -> {response['statusCode']}: {answer}\n")
    denied = resources.webhook.invoke(webhook_post(bodies[1], "Bearer wrong-token"))
    out.write(f"  POST with a wrong token -> {denied['statusCode']}\n")
    pumped = pump_queue(resources.deliver)
    out.write(f"  deliver invocations: {pumped.invocations}, messages failed: {pumped.failed}\n")
    minio_ok = _check("  MinIO flow", minio_expected, rs, "minio", out)
    return s3_ok and minio_ok and denied["statusCode"] == 401, bodies
