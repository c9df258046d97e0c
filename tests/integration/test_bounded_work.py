"""Memory and time of one large input, each measured in a child process (``bench/bounded_work.py``): the s3_audit
handler's peak does not grow with the log file (it delivers as it reads), and a 4 MiB webhook body of bad entries
is answered with a bounded log output, under the webhook's 512 MB and 10 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bounded_work import (
    BAD_BODIES,
    S3_PEAK_LIMIT_MB,
    WEBHOOK_BODY_BYTES,
    WEBHOOK_PEAK_LIMIT_MB,
    WEBHOOK_SECONDS_LIMIT,
    measure_s3,
    run_child,
)
from minio_relay.webhook import MAX_LOGGED_ENTRIES

# Holding a file's downloads costs ~600 bytes each (~30 MB for the larger file here); delivering as read costs the
# fingerprint table (a few MB) and allocator noise.
MAX_GROWTH_MB = 15


def test_the_s3_audit_peak_does_not_grow_with_the_log_file(tmp_path: Path) -> None:
    small, large = measure_s3(2, tmp_path), measure_s3(24, tmp_path)

    print(
        f"s3_audit peak: {small['peak_mb']} MB at 2 MiB, {large['peak_mb']} MB at 24 MiB ({large['records']} records)"
    )
    for result in (small, large):
        assert result["response"] == {"batchItemFailures": []}
        assert result["rows"] == result["records"]  # every line delivered, once
        assert result["peak_mb"] < S3_PEAK_LIMIT_MB, result
    assert large["records"] > 10 * small["records"]
    assert large["peak_mb"] - small["peak_mb"] < MAX_GROWTH_MB, (small, large)


@pytest.mark.parametrize("shape", sorted(BAD_BODIES))
def test_a_4_mib_body_of_bad_entries_logs_a_sample_in_bounded_memory_and_time(shape: str) -> None:
    result = run_child("webhook", shape)

    print(f"webhook {shape}: {result}")
    assert result["status"] == 200
    assert result["body_bytes"] > WEBHOOK_BODY_BYTES - 100
    answer = result["answer"]
    assert answer["metered"] == 1  # the good entry beside them is kept
    assert answer["entries"] == answer["metered"] + answer["quarantined"] > 48_000
    # The sample, one line counting the rest by reason, one line of totals.
    assert result["log_records"] <= MAX_LOGGED_ENTRIES + 2
    assert result["log_bytes"] < 20_000
    assert result["peak_mb"] < WEBHOOK_PEAK_LIMIT_MB
    # CPU time: the wall time of a child on this shared machine is mostly waiting for a core.
    assert result["cpu_s"] < WEBHOOK_SECONDS_LIMIT
