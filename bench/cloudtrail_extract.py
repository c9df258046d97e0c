"""Benchmark: ``ogc-audit extract --source cloudtrail`` against the original sample Lambda's parsing.

Usage::

    .venv/bin/python bench/cloudtrail_extract.py [--records 50000] [--runs 3] [--mix held-out|classic] [--regenerate]

Generates (once, deterministically) a CloudTrail log file of 50,000 records (~100 MB of JSON, gzipped) in
``bench/data/``, its kinds drawn from a ``bench.record_mix`` mix (by default ``held-out``: shaped like issue 20's
held-out file), then runs, alternately and each as its own process:

- baseline: the seed's ``parse_cloudtrail_object`` (``gzip.GzipFile`` + ``json.load`` + its filter) on the
  local file, printing its lines (``python bench/cloudtrail_extract.py baseline FILE``);
- ours: ``ogc-audit extract --source cloudtrail FILE``.

Wall time is the whole process (start-up included); peak RSS is the child's ``ru_maxrss`` from ``os.wait4``.
It prints the medians, the ratios baseline/ours, the lines each emitted and the baseline's false positives.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "functions")]  # bench.record_mix and testbed, when run as a script
DATA_DIR = Path(__file__).parent / "data"
TARGET_SPEED = 5.0
TARGET_MEMORY = 3.0
TARGET_RSS_MIB = 64.0


# --- the generated log file -------------------------------------------------------------------------------


def generate(path: Path, count: int, mix: str) -> None:
    """Write the gzipped log file of ``bench.record_mix``'s records, streaming the JSON (little memory)."""
    from bench.record_mix import MIXES, cloudtrail_records

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    with gzip.GzipFile(temporary, "wb", compresslevel=6, mtime=0) as out:
        out.write(b'{"Records":[')
        for index, record in enumerate(cloudtrail_records(count, MIXES[mix])):
            if index:
                out.write(b",")
            out.write(json.dumps(record, separators=(",", ":")).encode())
        out.write(b"]}")
    temporary.replace(path)


# --- the baseline: the seed's parse_cloudtrail_object, reading a local file ----------------------------------


def seed_parse_cloudtrail_file(path: str) -> list[str]:
    """The seed Lambda's parse_cloudtrail_object, with the S3 body replaced by the local file."""
    with open(path, "rb") as body, gzip.GzipFile(fileobj=body) as f:
        data = json.load(f)

    logs = []

    for rec in data.get("Records", []):
        event_name = rec.get("eventName")
        additional = rec.get("additionalEventData", {})
        params = rec.get("requestParameters", {})

        if (
            event_name == "GetObject"
            and additional.get("AuthenticationMethod") == "QueryString"
            and "X-Amz-Expires" in json.dumps(params)
            and params.get("collectionId")
            and params.get("itemId")
        ):
            user_id = params.get("userId")
            collection_id = params.get("collectionId")
            item_id = params.get("itemId")
            timestamp = rec.get("eventTime")
            resp_size = additional.get("bytesTransferredOut", 0)
            storage_backend = "aws_s3"

            log_entry = f"{user_id}|{collection_id}|{item_id}|{timestamp}|{resp_size}|{storage_backend}"
            logs.append(log_entry)

    return logs


def run_baseline(path: str) -> None:
    """Print the seed's lines, one per line, as ``ogc-audit extract`` does."""
    sys.stdout.write("".join(f"{line}\n" for line in seed_parse_cloudtrail_file(path)))


# --- measuring ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One process run: wall seconds, CPU seconds (user + system), peak RSS in MiB and the lines it printed."""

    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    lines: list[str]


# Runs one command, its stdout going to a file (argv[1]) so that no reader competes with it for a CPU, and
# reports its wall time, CPU time and peak RSS. Measuring from this small wrapper keeps the benchmark's own
# memory (it holds every line printed) out of the child's ru_maxrss, which counts from the fork.
_WRAPPER = """
import resource, subprocess, sys, time
with open(sys.argv[1], "wb") as out:
    started = time.perf_counter()
    status = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.write(f"{status} {wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}\\n")
"""


def measure(command: list[str]) -> Measurement:
    """Run a command as a child of the wrapper; the wrapper reports the child's own usage."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "lines.txt"
        wrapper = subprocess.run(
            [sys.executable, "-c", _WRAPPER, str(output), *command], capture_output=True, env=env, check=True
        )
        lines = output.read_text().splitlines()
    status, wall, cpu, max_rss_kib = wrapper.stderr.decode().split()
    if int(status) not in (0, 1):  # extract exits 1 when something was quarantined
        raise SystemExit(f"{command} failed with status {status}")
    return Measurement(float(wall), float(cpu), int(max_rss_kib) / 1024, lines)


def compile_sources() -> None:
    """Write the bytecode of the project's modules, as an installed command has it: with PYTHONDONTWRITEBYTECODE set
    (as on the development machines) every run of ours would otherwise compile them again (~0.03 s), while the
    baseline imports only the standard library, whose bytecode ships with Python."""
    import compileall

    compileall.compile_dir(ROOT / "functions", quiet=1)


def commands(path: Path) -> dict[str, list[str]]:
    ours = shutil.which("ogc-audit", path=str(Path(sys.executable).parent))
    extract = [ours] if ours else [sys.executable, "-m", "ogc_audit.cli"]
    return {
        "baseline": [sys.executable, str(Path(__file__).resolve()), "baseline", str(path)],
        "ours": [*extract, "extract", "--source", "cloudtrail", str(path)],
    }


def false_positives(baseline: list[str], ours: list[str]) -> int:
    """Baseline lines that the metering rules do not allow (compared as multisets: duplicates count)."""
    from collections import Counter

    allowed = Counter(ours)
    wrong = 0
    for line in baseline:
        normalized = _normalized(line)
        if allowed[normalized] > 0:
            allowed[normalized] -= 1
        else:
            wrong += 1
    return wrong


def _normalized(line: str) -> str:
    # The seed writes 16384.0 where we write 16384; that alone is a wrong line too, but count it as the same event.
    fields = line.split("|")
    if len(fields) == 6 and fields[4].endswith(".0"):
        fields[4] = fields[4][:-2]
    return "|".join(fields)


def alternate(named: dict[str, list[str]], runs: int) -> Iterator[tuple[str, Measurement]]:
    for run in range(runs):
        order = list(named) if run % 2 == 0 else list(reversed(named))
        for name in order:
            yield name, measure(named[name])


def describe(path: Path) -> str:
    """What the file holds: records, inflated size, bytes per record and the count of each event name."""
    import collections

    import msgspec

    class Named(msgspec.Struct):
        eventName: object = None

    with gzip.open(path, "rb") as file:
        document = file.read()
    records = msgspec.json.decode(document, type=dict[str, list[Named]])["Records"]
    names = collections.Counter(str(record.eventName) for record in records)
    return (
        f"{len(records)} records, {len(document) / 1e6:.1f} MB inflated ({len(document) / len(records):,.0f} bytes "
        f"a record): " + ", ".join(f"{count} {name}" for name, count in names.most_common())
    )


def report(results: dict[str, list[Measurement]], path: Path) -> bool:
    """Print medians and ratios; True when the targets are met."""
    median = {
        name: Measurement(
            statistics.median(m.seconds for m in runs),
            statistics.median(m.cpu_seconds for m in runs),
            statistics.median(m.peak_rss_mib for m in runs),
            runs[0].lines,
        )
        for name, runs in results.items()
    }
    base, ours = median["baseline"], median["ours"]
    float_lines = sum(1 for line in base.lines if line.split("|")[4].endswith(".0"))
    print(f"file: {path} ({path.stat().st_size / 1e6:.1f} MB gzip), runs per side: {len(results['ours'])}")
    print(f"holding {describe(path)}")
    print(f"{'':10}{'wall s':>10}{'CPU s':>10}{'peak RSS MiB':>15}{'lines':>10}")
    for name, value in median.items():
        print(
            f"{name:10}{value.seconds:>10.2f}{value.cpu_seconds:>10.2f}{value.peak_rss_mib:>15.1f}{len(value.lines):>10}"
        )
    speed, memory = base.seconds / ours.seconds, base.peak_rss_mib / ours.peak_rss_mib
    print(
        f"speed-up baseline/ours: {speed:.2f}x wall (target >= {TARGET_SPEED:.0f}x), "
        f"{base.cpu_seconds / ours.cpu_seconds:.2f}x CPU"
    )
    print(
        f"peak RSS baseline/ours: {memory:.2f}x (target >= {TARGET_MEMORY:.0f}x); "
        f"ours {ours.peak_rss_mib:.1f} MiB (target <= {TARGET_RSS_MIB:.0f} MiB)"
    )
    print(
        f"baseline false positives: {false_positives(base.lines, ours.lines)} lines "
        f"(+ {float_lines} lines with a float byte count like 16384.0)"
    )
    return speed >= TARGET_SPEED and memory >= TARGET_MEMORY and ours.peak_rss_mib <= TARGET_RSS_MIB


def main(argv: list[str] | None = None) -> int:
    """Generate the file if needed, run both sides alternately and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mix", choices=["held-out", "classic"], default="held-out")
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args(argv)
    suffix = "" if args.mix == "classic" else f"_{args.mix}"  # the classic file keeps its name
    path = DATA_DIR / f"cloudtrail_{args.records}{suffix}.json.gz"
    if args.regenerate or not path.exists():
        print(f"generating {path} ...", flush=True)
        generate(path, args.records, args.mix)
    compile_sources()
    results: dict[str, list[Measurement]] = {"baseline": [], "ours": []}
    for name, measurement in alternate(commands(path), args.runs):
        results[name].append(measurement)
    return 0 if report(results, path) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "baseline":
        run_baseline(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
