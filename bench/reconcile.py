"""Benchmark: ``ogc-audit reconcile`` of a period of 28,000 downloads and as many rows, against the extraction alone.

Usage::

    .venv/bin/python -m bench.reconcile [--downloads 28000] [--runs 3]

Builds, in a temporary folder, CloudTrail log files (1,000 records each) of N downloads spread over one day, and a
throwaway PostgreSQL with OGC RS's tables (``testbed.reference_store``) holding their rows, with 1 % of the rows
missing, 1 % doubled and 0.5 % unexpected, so the report has something to say. The same again with 2N. Then runs,
alternately and each as its own process:

- baseline: ``ogc-audit extract --source cloudtrail FILES`` (the extraction every reconcile does anyway);
- reconcile: ``ogc-audit reconcile --source cloudtrail --since --until --database-url URL --json REPORT FILES``.

Wall time is the whole process (start-up included); peak RSS is the child's ``ru_maxrss`` from ``os.wait4``.
It prints the medians, reconcile/extract ratios, and the peak-memory ratio of reconcile at 2N against N: memory
stays bounded when that ratio stays near 1 (the multisets live in a scratch SQLite file, the rows are streamed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "functions")]  # testbed, when run as a script

START = datetime(2025, 10, 27, tzinfo=UTC)
SINCE, UNTIL = "2025-10-27T00:00:00Z", "2025-10-28T00:00:00Z"
RECORDS_PER_FILE = 1000
TARGET_SECONDS = 10.0


@dataclass
class DataSet:
    """Log files and a database holding the rows of one period."""

    files: list[str]
    database_url: str
    downloads: int
    rows: int


def build(folder: Path, server: object, count: int, seed: int) -> DataSet:
    """N downloads in CloudTrail log files, and their rows (with some differences) in OGC RS's tables."""
    import psycopg

    from testbed.postgres import ThrowawayPostgres
    from testbed.reference_store import PostgresMeteringStore
    from testbed.samples import cloudtrail_log_file, cloudtrail_record, random_download

    assert isinstance(server, ThrowawayPostgres)
    rng = random.Random(seed)
    downloads = [random_download(rng, START, spread_s=86_400 - 1) for _ in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for number in range(0, count, RECORDS_PER_FILE):
        path = folder / f"trail-{number // RECORDS_PER_FILE:04d}.json.gz"
        path.write_bytes(
            cloudtrail_log_file(cloudtrail_record(d) for d in downloads[number : number + RECORDS_PER_FILE])
        )
        files.append(str(path))
    url = server.create_database()
    PostgresMeteringStore(url).close()  # OGC RS's DDL
    rows = 0
    copy_sql = "COPY metering (user_id, collection_id, api_path, timestamp, resp_size) FROM STDIN"
    with psycopg.connect(url) as connection, connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
        for index, download in enumerate(downloads):
            copies = 0 if index % 100 == 0 else 2 if index % 100 == 1 else 1  # 1 % missing, 1 % doubled
            row = (
                download.user_id,
                download.collection_id,
                f"stac/collections/{download.collection_id}/items/{download.item_id}",
                download.when.replace(tzinfo=None, microsecond=0),
                download.size,
            )
            for _ in range(copies):
                copy.write_row(row)
                rows += 1
        for extra in range(count // 200):  # 0.5 % unexpected
            stranger = random_download(rng, START + timedelta(seconds=extra))
            copy.write_row(
                (
                    stranger.user_id,
                    stranger.collection_id,
                    f"stac/collections/{stranger.collection_id}/items/{stranger.item_id}",
                    stranger.when.replace(tzinfo=None, microsecond=0),
                    stranger.size,
                )
            )
            rows += 1
    return DataSet(files, url, count, rows)


def timed(command: list[str]) -> tuple[float, int, int]:
    """(seconds, peak RSS in MiB, exit status) of a child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    return time.perf_counter() - started, usage.ru_maxrss // 1024, os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> int:
    """Build both data sets, run both commands alternately, print the medians and ratios."""
    from testbed.postgres import ThrowawayPostgres

    parser = argparse.ArgumentParser(prog="python -m bench.reconcile")
    parser.add_argument("--downloads", type=int, default=28_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    cli = [sys.executable, "-m", "ogc_audit.cli"]
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as scratch, ThrowawayPostgres() as server:
        folder = Path(scratch)
        sets = {
            "N": build(folder / "n", server, args.downloads, 1),
            "2N": build(folder / "2n", server, 2 * args.downloads, 2),
        }
        report = folder / "report.json"

        def reconcile_command(database_url: str, files: list[str]) -> list[str]:
            period = ["--source", "cloudtrail", "--since", SINCE, "--until", UNTIL]
            return [*cli, "reconcile", *period, "--database-url", database_url, "--json", str(report), *files]

        commands = {
            "extract N": [*cli, "extract", "--source", "cloudtrail", *sets["N"].files],
            "reconcile N": reconcile_command(sets["N"].database_url, sets["N"].files),
            "reconcile 2N": reconcile_command(sets["2N"].database_url, sets["2N"].files),
        }
        results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                results[name].append(timed(command))
        found = json.loads(report.read_text())
    print(f"load: {os.getloadavg()[0]:.2f} (1-minute average), {os.cpu_count()} cores")
    for name, data in sets.items():
        print(f"data {name}: {data.downloads} downloads in {len(data.files)} log files, {data.rows} rows")
    medians = {}
    for name, runs in results.items():
        seconds = statistics.median(run[0] for run in runs)
        memory = statistics.median(run[1] for run in runs)
        medians[name] = (seconds, memory)
        print(f"  {name:13s} {seconds:6.2f} s  peak RSS {memory:5d} MiB  exit {sorted({run[2] for run in runs})}")
    print(
        f"report of 2N: {found['downloads']} downloads, {found['rows']} rows, {len(found['missing'])} missing, "
        f"{sum(len(d['row_ids']) for d in found['duplicated'])} duplicated, {len(found['unexpected'])} unexpected"
    )
    print("ratios:")
    print(f"  time   reconcile N / extract N   {medians['reconcile N'][0] / medians['extract N'][0]:.2f}x")
    print(f"  memory reconcile N / extract N   {medians['reconcile N'][1] / medians['extract N'][1]:.2f}x")
    print(f"  memory reconcile 2N / reconcile N {medians['reconcile 2N'][1] / medians['reconcile N'][1]:.2f}x")
    met = medians["reconcile N"][0] < TARGET_SECONDS
    print(f"target {args.downloads} downloads in < {TARGET_SECONDS:.0f} s: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
