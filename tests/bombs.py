"""Inflation bombs for the bounded-reading tests, and a runner that reports its own peak memory.

A bomb is written in well under a second: one megabyte of filler is deflated once after a full flush, and the
same compressed block (about 1 KB) is repeated, since after a full flush the deflater has no history and the same
input gives the same bytes. The gzip trailer (CRC-32, length) is computed, so the file is a valid gzip stream.

Run as ``python -m tests.bombs extract cloudtrail|minio PATH`` or ``python -m tests.bombs handler PATH [ENV=V...]``:
the last line on stdout is JSON with the outcome and ``peak_mb``, the process's own peak resident set size
(``VmHWM``), so other processes of the test session cannot blur the figure.
"""

from __future__ import annotations

import json
import resource
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

MIB = 1 << 20
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def write_gzip_bomb(path: Path, head: bytes, filler: bytes, repeats: int, tail: bytes) -> int:
    """Write ``head + filler * repeats + tail`` gzip-compressed to ``path``; the inflated size is returned."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(head)
    with path.open("wb") as out:
        out.write(_GZIP_HEADER)
        out.write(deflater.compress(head) + deflater.flush(zlib.Z_FULL_FLUSH))
        block = deflater.compress(filler) + deflater.flush(zlib.Z_FULL_FLUSH)
        for _ in range(repeats):
            out.write(block)
            crc = zlib.crc32(filler, crc)
        out.write(deflater.compress(tail) + deflater.flush(zlib.Z_FINISH))
        crc = zlib.crc32(tail, crc)
        size = len(head) + len(filler) * repeats + len(tail)
        out.write(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return size


def one_huge_record(path: Path, megabytes: int = 1536) -> int:
    """A CloudTrail Records document whose one record holds a string of ``megabytes`` MiB."""
    head = b'{"Records":[{"eventVersion":"1.08","eventSource":"s3.amazonaws.com","padding":"'
    return write_gzip_bomb(path, head, b"a" * MIB, megabytes, b'"}]}')


def huge_document(path: Path, megabytes: int = 1536) -> int:
    """A JSON array (not a Records document, so read whole) inflating to ``megabytes`` MiB."""
    return write_gzip_bomb(path, b'[{"padding":"', b"a" * MIB, megabytes, b'"}]')


def tiny_objects_document(path: Path, megabytes: int = 1536) -> int:
    """``[{},{},...]``: the most objects per byte, so the worst case of decoding a whole document."""
    return write_gzip_bomb(path, b"[", b"{}," * (MIB // 3), megabytes, b"{}]")


def many_records(path: Path, record: dict[str, Any], megabytes: int) -> int:
    """A Records document of ``megabytes`` MiB of copies of ``record`` (well-formed, only too many)."""
    text = json.dumps(record, separators=(",", ":")).encode() + b","
    return write_gzip_bomb(path, b'{"Records":[', text * (MIB // len(text)), megabytes, text[:-1] + b"]}")


def minio_long_line(path: Path, entry: bytes, megabytes: int = 1536) -> int:
    """NDJSON: one good entry, one line of ``megabytes`` MiB, one good entry."""
    return write_gzip_bomb(path, entry + b'\n{"padding":"', b"a" * MIB, megabytes, b'"}\n' + entry + b"\n")


def _peak_mb() -> float:
    """Peak RSS of this process's own memory (VmHWM): ``ru_maxrss`` keeps the parent's peak across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no procfs: kilobytes on Linux


def _run_extract(source: str, path: str) -> dict[str, Any]:
    import io

    from ogc_audit.extract import run_extract

    out, err = io.StringIO(), io.StringIO()
    status = run_extract(source, [path], out=out, err=err)
    return {"status": status, "lines": out.getvalue().count("\n"), "summary": json.loads(err.getvalue())}


def _run_handler(path: str) -> dict[str, Any]:
    """The s3_audit handler on an SQS message announcing the bomb, with moto S3 and a sink that must not be used."""
    import boto3
    from moto import mock_aws

    from s3_audit import handler as s3_audit_handler
    from testbed.local_aws import lambda_context

    class NoDelivery:
        batch_max_lines = 500

        def deliver(self, lines: Any, on_settled: Any = None) -> Any:
            raise AssertionError(f"{len(lines)} lines delivered from a bomb")

    bucket, key = "bomb-logs", "AWSLogs/111122223333/CloudTrail/eu-west-1/2025/10/27/bomb.json.gz"
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        s3.upload_file(path, bucket, key)
        deps = s3_audit_handler.Dependencies(s3=s3, sink=NoDelivery(), ledger=None)
        s3_audit_handler.dependencies = lambda: deps  # type: ignore[assignment]
        notification = {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": key}},
                }
            ]
        }
        event = {"Records": [{"eventSource": "aws:sqs", "messageId": "m-1", "body": json.dumps(notification)}]}
        response = s3_audit_handler.handler(event, lambda_context("s3-audit", memory_mb=1024))
    return {"response": response}


def main(argv: list[str]) -> int:
    """``extract SOURCE PATH`` or ``handler PATH``: run it, then print the result and the peak RSS as JSON."""
    result = _run_extract(argv[1], argv[2]) if argv[0] == "extract" else _run_handler(argv[1])
    print(json.dumps({**result, "peak_mb": round(_peak_mb(), 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
