"""Benchmark: ``ogc-audit extract --source s3-access-log`` against a parser built on AWS's Athena RegexSerDe pattern.

Usage::

    .venv/bin/python bench/access_log_extract.py [--records 50000] [--runs 3] [--regenerate] [--scale 4]

Generates (once, deterministically) an S3 server access log of 50,000 records in ``bench/data/``, shaped like the
CloudTrail bench file (same mix of presigned successes, failures, header-signed, HEAD/PUT/list, bad ids and
re-delivered records), then runs, alternately and each as its own process:

- baseline: the pattern of AWS's Athena table for access logs (``using-s3-access-logs-to-identify-requests``),
  one ``re`` match per line, ``parse_qs`` on the Request-URI query, ``strptime`` on the time, and the same rules
  (``check_ids``, ``build_download``, Authentication Type or ``X-Amz-Signature``, request-ID dedupe);
- ours: ``ogc-audit extract --source s3-access-log FILE``.

Both must print the same lines. It prints the medians, the speed ratio baseline/ours and each side's peak RSS;
then ours once more on a file ``--scale`` times larger, to show its peak RSS does not grow with the file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "functions")]

from bench.cloudtrail_extract import Measurement, alternate, compile_sources, measure  # noqa: E402

DATA_DIR = Path(__file__).parent / "data"
TARGET_SPEED = 3.0
TARGET_RSS_MIB = 64.0
# AWS's Athena RegexSerDe for S3 server access logs: 18 fields, then 8 optional ones, then anything.
ATHENA_PATTERN = (
    r'([^ ]*) ([^ ]*) \[(.*?)\] ([^ ]*) ([^ ]*) ([^ ]*) ([^ ]*) ([^ ]*) ("[^"]*"|-) (-|[0-9]*) ([^ ]*) ([^ ]*) '
    r'([^ ]*) ([^ ]*) ([^ ]*) ([^ ]*) ("[^"]*"|-) ([^ ]*)(?: ([^ ]*) ([^ ]*) ([^ ]*) ([^ ]*) ([^ ]*) ([^ ]*) '
    r"([^ ]*) ([^ ]*))?.*$"
)


# --- the generated access log ----------------------------------------------------------------------------------


def generate(path: Path, count: int) -> None:
    """Write the access log of ``bench.record_mix``'s records, streamed to disk."""
    from bench.record_mix import access_log_lines

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    with open(temporary, "w", encoding="utf-8") as out:
        out.writelines(access_log_lines(count))
    temporary.replace(path)


# --- the baseline ----------------------------------------------------------------------------------------------


def baseline_lines(path: str) -> Iterator[str]:
    """The lines of a straightforward parser: Athena's regex, parse_qs, strptime, and the project's rules."""
    import re

    from metering.line import Backend, MeteredDownload, build_download, check_ids

    pattern = re.compile(ATHENA_PATTERN)
    seen: set[str] = set()
    with open(path, encoding="utf-8") as log:
        for raw in log:
            match = pattern.match(raw.rstrip("\n"))
            if match is None:
                continue  # malformed: quarantined
            fields = match.groups()
            if fields[6] != "REST.GET.OBJECT" or fields[9] not in ("200", "206"):
                continue
            target = fields[8].strip('"').split(" ")
            params = parse_qs(urlsplit(target[1] if len(target) > 1 else "").query)
            authentication = fields[21]
            if not (authentication == "QueryString" if authentication is not None else "X-Amz-Signature" in params):
                continue
            user, collection, item = (params.get(name, [None])[0] for name in ("userId", "collectionId", "itemId"))
            if check_ids(user, collection, item) is not None:
                continue
            assert user is not None and collection is not None and item is not None  # noqa: PT018
            when = datetime.strptime(fields[2], "%d/%b/%Y:%H:%M:%S %z").isoformat()
            download = build_download(
                user_id=user,
                collection_id=collection,
                item_id=item,
                timestamp=when,
                bytes_sent=0 if fields[11] == "-" else fields[11],
                backend=Backend.AWS_S3,
                event_id=f"{fields[1]}/{fields[5]}",
            )
            if isinstance(download, MeteredDownload) and download.event_id not in seen:
                seen.add(download.event_id)
                yield download.to_line()


def run_baseline(path: str) -> None:
    """Print the baseline's lines, one per line, as ``ogc-audit extract`` does."""
    sys.stdout.writelines(f"{line}\n" for line in baseline_lines(path))


# --- measuring -------------------------------------------------------------------------------------------------


def commands(path: Path) -> dict[str, list[str]]:
    return {
        "baseline": [sys.executable, str(Path(__file__).resolve()), "baseline", str(path)],
        "ours": [sys.executable, "-m", "ogc_audit.cli", "extract", "--source", "s3-access-log", str(path)],
    }


def data_file(records: int, regenerate: bool) -> Path:
    path = DATA_DIR / f"access_log_{records}.log"
    if regenerate or not path.exists():
        print(f"generating {path} ...", flush=True)
        generate(path, records)
    return path


def report(results: dict[str, list[Measurement]], path: Path, scaled: tuple[Path, Measurement] | None) -> bool:
    """Print medians, the speed ratio and the peak RSS figures; True when the targets are met."""
    median = {
        name: (
            statistics.median(m.seconds for m in runs),
            statistics.median(m.cpu_seconds for m in runs),
            max(m.peak_rss_mib for m in runs),
        )
        for name, runs in results.items()
    }
    base_lines, our_lines = results["baseline"][0].lines, results["ours"][0].lines
    print(f"file: {path} ({path.stat().st_size / 1e6:.1f} MB), runs per side: {len(results['ours'])}")
    print(f"{'':10}{'wall s':>10}{'CPU s':>10}{'peak RSS MiB':>15}{'lines':>10}")
    for name, (wall, cpu, rss) in median.items():
        print(f"{name:10}{wall:>10.2f}{cpu:>10.2f}{rss:>15.1f}{len(results[name][0].lines):>10}")
    speed = median["baseline"][0] / median["ours"][0]
    cpu_speed = median["baseline"][1] / median["ours"][1]
    print(f"speed-up baseline/ours: {speed:.2f}x wall (target >= {TARGET_SPEED:.0f}x), {cpu_speed:.2f}x CPU")
    same = base_lines == our_lines
    print(f"same lines on both sides: {'yes' if same else 'NO'} ({len(our_lines)} lines)")
    peaks = [median["ours"][2]]
    if scaled is not None:
        big, run = scaled
        peaks.append(run.peak_rss_mib)
        print(
            f"ours on a {big.stat().st_size / 1e6:.0f} MB file: {run.seconds:.2f} s wall, "
            f"peak RSS {run.peak_rss_mib:.1f} MiB ({len(run.lines)} lines)"
        )
    print(f"peak RSS ours: {max(peaks):.1f} MiB at most (target <= {TARGET_RSS_MIB:.0f} MiB whatever the file size)")
    return speed >= TARGET_SPEED and max(peaks) <= TARGET_RSS_MIB and same


def main(argv: list[str] | None = None) -> int:
    """Generate the files if needed, run both sides alternately, then ours on the larger file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=4, help="ours also runs on a file this many times larger (0: no)")
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args(argv)
    path = data_file(args.records, args.regenerate)
    compile_sources()
    results: dict[str, list[Measurement]] = {"baseline": [], "ours": []}
    for name, measurement in alternate(commands(path), args.runs):
        results[name].append(measurement)
    scaled = None
    if args.scale > 1:
        big = data_file(args.records * args.scale, args.regenerate)
        scaled = (big, measure(commands(big)["ours"]))
    return 0 if report(results, path, scaled) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "baseline":
        run_baseline(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
