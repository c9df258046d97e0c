"""The ``ogc-audit`` command: extract, replay, reconcile, redrive, serve, verify and demo."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from ogc_audit.serve.settings import (
    DEFAULT_DELIVERY_WORKERS,
    DEFAULT_LEASE_S,
    DEFAULT_SPOOL_MAX_AGE_S,
    DEFAULT_SPOOL_MAX_LINES,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ogc-audit",
        description="Meter presigned STAC asset downloads from CloudTrail and MinIO into OGC RS.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    extract = commands.add_parser(
        "extract",
        help="print the metered lines of log files (a dry run: nothing is sent)",
        description="Print the metered lines, one per line, to stdout and a per-reason summary to stderr.",
    )
    extract.add_argument("--source", choices=("cloudtrail", "s3-access-log", "minio"), required=True)
    extract.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a .json.gz, .json or NDJSON file, an access-log object, - for stdin, "
        "or (cloudtrail, s3-access-log) s3://bucket/prefix",
    )

    replay = commands.add_parser(
        "replay",
        help="re-send a period of log files (CloudTrail or S3 access logs) through the delivery ledger (never twice)",
        description="Backfill after an outage: meter and deliver the log files (CloudTrail log files, S3 server "
        "access logs) whose object names fall in a period.",
    )
    replay.add_argument("location", metavar="s3://bucket/prefix")
    replay.add_argument("--since", required=True, help="start of the period (ISO 8601; UTC unless an offset is given)")
    replay.add_argument("--until", required=True, help="end of the period, exclusive")
    replay.add_argument("--dry-run", action="store_true", help="meter and count only: nothing sent, ledger untouched")

    reconcile = commands.add_parser(
        "reconcile",
        help="compare a period's downloads with the rows of OGC RS's metering table (read-only)",
        description="Compare the downloads the INPUTs report for [--since, --until) with the rows OGC RS's metering "
        "table holds for that period, as multisets of userId|collectionId|itemId|timestamp|bytes. Reports missing, "
        "duplicated and unexpected rows (JSON with --json, a summary on stderr). Exit 0 when the period matches "
        "exactly, 1 when it does not, 2 on a usage, source or connection error.",
    )
    reconcile.add_argument("--source", choices=("cloudtrail", "s3-access-log", "minio"), required=True)
    reconcile.add_argument("--since", required=True, help="start of the period (ISO 8601; UTC unless an offset)")
    reconcile.add_argument("--until", required=True, help="end of the period, exclusive")
    reconcile.add_argument(
        "--database-url",
        help="OGC RS's database, postgresql://role@host:port/db (default: OGC_RS_DATABASE_URL); "
        "sqlite:///path reads the reference OGC RS's demo file",
    )
    reconcile.add_argument("--json", dest="json_path", metavar="FILE", help="write the JSON report there (- stdout)")
    reconcile.add_argument(
        "--repair", action="store_true", help="send the missing lines, once (a second repair sends nothing)"
    )
    reconcile.add_argument(
        "--delete-sql", metavar="FILE", help="write the DELETE of the surplus rows there, for review (never run)"
    )
    reconcile.add_argument(
        "--ledger",
        metavar="PATH",
        help="SQLite file remembering repaired downloads (default: RECONCILE_LEDGER, "
        "else $XDG_STATE_HOME/ogc-audit/reconcile-ledger.sqlite3)",
    )
    reconcile.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="a log file, - for stdin, or (cloudtrail, s3-access-log) s3://bucket/prefix: its CloudTrail log files "
        "and access logs together",
    )

    redrive = commands.add_parser("redrive", help="move dead-letter queue messages back to their queue")
    redrive.add_argument("dead_letter_queue_url", metavar="DLQ_URL")
    redrive.add_argument("--to", dest="target", help="queue URL to move to (default: the DLQ's source queue)")
    redrive.add_argument("--max", dest="limit", type=int, help="move at most this many messages")

    serve = commands.add_parser(
        "serve",
        help="run the MinIO audit webhook on a plain host (spool, then deliver behind)",
        description="Answer MinIO as soon as a body's lines are in the spool, and deliver them to OGC RS behind, "
        "each once. Spool and ledger live in one SQLite file, or in PostgreSQL for a fleet of instances.",
    )
    serve.add_argument(
        "--host",
        default="0.0.0.0",  # noqa: S104 - serves MinIO hosts; plain HTTP beyond loopback is refused
        help="address to listen on (default 0.0.0.0: needs --certfile/--keyfile, or --insecure-http)",
    )
    serve.add_argument("--port", type=int, default=8092)
    serve.add_argument("--certfile", help="PEM certificate (chain) to serve HTTPS; needs --keyfile")
    serve.add_argument("--keyfile", help="PEM private key of --certfile")
    serve.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)",
    )
    serve.add_argument(
        "--database-url",
        help="postgresql://... (spool and ledger shared by a fleet) or sqlite:///PATH; default LEDGER_DATABASE_URL, "
        "else the SQLite file LEDGER_PATH (ogc-audit-ledger.sqlite3)",
    )
    serve.add_argument(
        "--spool-max-lines", type=int, default=DEFAULT_SPOOL_MAX_LINES, help="answer 503 past this many spooled lines"
    )
    serve.add_argument(
        "--spool-max-age",
        type=float,
        default=DEFAULT_SPOOL_MAX_AGE_S,
        metavar="SECONDS",
        help="answer 503 while the oldest spooled line is older than this",
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="processes accepting bodies (each with its deliverers); default 1"
    )
    serve.add_argument("--delivery-workers", type=int, default=DEFAULT_DELIVERY_WORKERS, help="parallel deliverers")
    serve.add_argument(
        "--lease",
        type=float,
        default=DEFAULT_LEASE_S,
        metavar="SECONDS",
        help="how long a deliverer holds spooled lines before another instance may take them over (renewed)",
    )
    serve.add_argument(
        "--ogc-rs-read-timeout",
        type=float,
        metavar="SECONDS",
        help="how long one OGC RS request may take to answer; past it the request is uncertain and resolved, "
        "never re-sent blindly (default 60)",
    )

    verify = commands.add_parser(
        "verify",
        help="after a deploy: prove that a presigned download becomes a metered line through each configured source",
        description="Upload a marker object, download it through a presigned URL with marker ids, then wait for that "
        "request in each source (CloudTrail log file, S3 access log) and in the delivery ledger "
        "(IDEMPOTENCY_TABLE_NAME). Exit status 1 names the first step that failed, with advice.",
    )
    verify.add_argument("--asset-bucket", required=True, help="an asset bucket whose downloads are metered")
    verify.add_argument("--log-bucket", required=True, help="the stack's LogBucketName (CloudTrail log files)")
    verify.add_argument("--access-log-bucket", help="the stack's access-log bucket (default: --log-bucket)")
    verify.add_argument("--source", choices=("cloudtrail", "access-logs", "both"), default="cloudtrail")
    verify.add_argument("--timeout-cloudtrail", type=float, default=1200.0, metavar="SECONDS")
    verify.add_argument("--timeout-access-logs", type=float, default=10800.0, metavar="SECONDS")
    verify.add_argument("--timeout-delivery", type=float, default=600.0, metavar="SECONDS")
    verify.add_argument("--poll", type=float, default=30.0, metavar="SECONDS", help="how often to look")

    demo = commands.add_parser(
        "demo", help="run both flows locally end to end against an emulator and a reference OGC RS"
    )
    demo.add_argument("--verbose", action="store_true", help="print the functions' JSON logs and metrics too")
    demo.add_argument(
        "--log-file", type=Path, default=Path("ogc-audit-demo.log"), help="where the functions' logs go otherwise"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one return per command
    """Entry point of the ``ogc-audit`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "extract":
        from ogc_audit.extract import run_extract

        return run_extract(args.source, args.paths)
    if args.command == "replay":
        from ogc_audit.replay import run_replay

        return run_replay(args.location, args.since, args.until, dry_run=args.dry_run)
    if args.command == "reconcile":
        from ogc_audit.reconcile import ReconcileRequest, run_reconcile

        return run_reconcile(
            ReconcileRequest(
                source=args.source,
                since=args.since,
                until=args.until,
                inputs=args.inputs,
                database_url=args.database_url,
                json_path=args.json_path,
                repair=args.repair,
                delete_sql=args.delete_sql,
                ledger=args.ledger,
            )
        )
    if args.command == "redrive":
        from ogc_audit.redrive import run_redrive

        return run_redrive(args.dead_letter_queue_url, args.target, args.limit)
    if args.command == "serve":
        from ogc_audit.serve.server import Listener, ServeOptions, run_serve

        listener = Listener(args.host, args.port, args.certfile, args.keyfile, args.insecure_http)
        options = ServeOptions(
            database_url=args.database_url,
            spool_max_lines=args.spool_max_lines,
            spool_max_age_s=args.spool_max_age,
            delivery_workers=args.delivery_workers,
            lease_s=args.lease,
        )
        if args.ogc_rs_read_timeout is not None:
            options = dataclasses.replace(options, ogc_rs_read_timeout_s=args.ogc_rs_read_timeout)
        return run_serve(listener, options, workers=args.workers)
    if args.command == "verify":
        from ogc_audit.verify import run_verify

        return run_verify(args)
    from testbed.demo import run_demo

    return run_demo(verbose=args.verbose, log_file=args.log_file)


if __name__ == "__main__":
    sys.exit(main())
