"""The ``ogc-audit`` command: extract, replay, serve and demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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
    extract.add_argument("--source", choices=("cloudtrail", "minio"), required=True)
    extract.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a .json.gz, .json or NDJSON file, - for stdin, or (cloudtrail) s3://bucket/prefix",
    )

    replay = commands.add_parser(
        "replay",
        help="re-send a period of CloudTrail log files through the delivery ledger (never twice)",
        description="Backfill after an outage: meter and deliver the log files CloudTrail delivered in a period.",
    )
    replay.add_argument("location", metavar="s3://bucket/prefix")
    replay.add_argument("--since", required=True, help="start of the period (ISO 8601; UTC unless an offset is given)")
    replay.add_argument("--until", required=True, help="end of the period, exclusive")
    replay.add_argument("--dry-run", action="store_true", help="meter and count only: nothing sent, ledger untouched")

    redrive = commands.add_parser("redrive", help="move dead-letter queue messages back to their queue")
    redrive.add_argument("dead_letter_queue_url", metavar="DLQ_URL")
    redrive.add_argument("--to", dest="target", help="queue URL to move to (default: the DLQ's source queue)")
    redrive.add_argument("--max", dest="limit", type=int, help="move at most this many messages")

    serve = commands.add_parser("serve", help="run the MinIO audit webhook on a plain host")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server for MinIO on other hosts
    serve.add_argument("--port", type=int, default=8092)
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument("--certfile", help="PEM certificate (chain) to serve HTTPS; needs --keyfile")
    serve.add_argument("--keyfile", help="PEM private key of --certfile")

    commands.add_parser("demo", help="run both flows locally end to end against an emulator and a reference OGC RS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ogc-audit`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "extract":
        from ogc_audit.extract import run_extract

        return run_extract(args.source, args.paths)
    if args.command == "replay":
        from ogc_audit.replay import run_replay

        return run_replay(args.location, args.since, args.until, dry_run=args.dry_run)
    if args.command == "redrive":
        from ogc_audit.redrive import run_redrive

        return run_redrive(args.dead_letter_queue_url, args.target, args.limit)
    if args.command == "serve":
        from ogc_audit.serve import run_serve

        return run_serve(
            host=args.host, port=args.port, workers=args.workers, certfile=args.certfile, keyfile=args.keyfile
        )
    from ogc_audit.demo import run_demo

    return run_demo()


if __name__ == "__main__":
    sys.exit(main())
