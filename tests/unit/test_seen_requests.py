"""SeenRequests: the compact set of the requests metered in one log file (64-bit fingerprints, open addressing)."""

from __future__ import annotations

import subprocess
import sys

from metering.line import Backend, MeteredDownload
from s3_audit.seen_requests import SeenRequests, fingerprint
from tests.helpers import cli_env

USER = "3f1c9a52-7a4e-4c1e-9f0b-2d5f8e6a1b7c"


def download(event_id: str) -> MeteredDownload:
    return MeteredDownload(USER, USER, "item", "2025-10-27T10:12:30Z", 1, Backend.AWS_S3, event_id)


def test_a_request_is_first_once_and_a_download_without_id_always() -> None:
    seen = SeenRequests()

    assert seen.first_time(download("s3-request:b/A"))
    assert not seen.first_time(download("s3-request:b/A"))
    assert seen.first_time(download("s3-request:b/B"))
    assert seen.first_time(download(""))
    assert seen.first_time(download(""))
    assert len(seen) == 2


def test_every_key_is_remembered_across_growth_and_the_table_stays_compact() -> None:
    seen = SeenRequests()
    keys = [f"s3-request:stac-assets/{index:016X}" for index in range(200_000)]

    assert all(seen.first_time(download(key)) for key in keys)
    assert not any(seen.first_time(download(key)) for key in keys[::7])
    assert len(seen) == len(keys)
    # At most one third empty after growing (16 bytes a key or less, against ~130 for a set of the strings).
    assert seen.memory_bytes <= 16 * len(keys) * 2
    assert seen.memory_bytes >= 8 * len(keys) * 3 // 2


def test_the_keys_of_a_small_file_are_held_exactly_then_move_into_the_table() -> None:
    seen = SeenRequests(exact_keys=100)
    keys = [f"s3-request:stac-assets/{index:016X}" for index in range(1000)]

    assert all(seen.first_time(download(key)) for key in keys[:100])
    small = seen.memory_bytes
    assert not seen.first_time(download(keys[42]))
    assert all(seen.first_time(download(key)) for key in keys[100:])  # the 101st key moves them all
    assert not any(seen.first_time(download(key)) for key in keys)
    assert len(seen) == len(keys)
    assert seen.memory_bytes < small * len(keys) // 100 // 4  # the table: a fraction of the strings' bytes


def test_the_fingerprint_is_the_same_in_every_process() -> None:
    # A retried file must meet the same duplicates in its next invocation: not Python's per-process hash().
    key = "s3-request:stac-assets/7KQ4B1S9XW2M3N5P"
    script = f"from s3_audit.seen_requests import fingerprint; print(fingerprint({key!r}))"
    printed = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**cli_env(), "PYTHONHASHSEED": seed},
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert printed == {str(fingerprint(key)).encode()}


def test_the_fingerprint_is_never_zero_and_takes_any_text() -> None:
    assert fingerprint("a") != fingerprint("b")
    assert fingerprint("lone \udc80 surrogate") > 0
    assert all(fingerprint(str(index)) != 0 for index in range(1000))
