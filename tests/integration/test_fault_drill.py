"""The fault drill (``python -m testbed.fault_drill``) and the bug it found in chunk-keyed delivery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metering.auth import TokenProvider
from metering.errors import DeliveryError, UncertainDeliveryError
from metering.exactly_once import KeyedChunk, deliver_chunks_once
from metering.ledger import SqliteLedger
from metering.line import Backend, MeteredDownload
from metering.ogc_rs import OgcRsClient, http_session
from metering.ogc_rs_database import open_ogc_rs_database
from metering.settings import ClientCredentials
from metering.uncertain import UncertainResolver
from s3_audit.ingest import deliver_downloads_once
from testbed.fault_drill import WEBHOOK_TOKEN, DrillConfig, run_drill
from testbed.reference_rs import FaultKind, ReferenceOgcRs
from tests import helpers
from tests.helpers import cli_env

# Small runs: a few seconds each, yet every fault kind fires many times.
SMALL: dict[str, Any] = {"log_files": 6, "records_per_file": 30, "bodies": 10, "max_entries": 12, "rounds": 4}
QUIET: dict[str, Any] = {
    "token_503": 0.0,
    "token_redirect": 0.0,
    "revocations": 0,
    "outage_s": 0.0,
    "sqs_faults": 0.0,
    "lost_answers": 0.0,
    "slow_s": 0.0,
    # Without OGC RS's database a lost answer is re-sent once after the grace period: one extra copy per line of
    # each answer-lost request, which these tests count exactly.
    "database": False,
}


def test_the_drill_prints_its_figures_and_holds_the_guarantees() -> None:
    arguments = ["--log-files", "6", "--records-per-file", "30", "--bodies", "10", "--max-entries", "12"]
    arguments += ["--rounds", "4", "--seed", "11", "--slow-s", "3", "--slow-log-files", "2", "--slow-bodies", "3"]
    result = subprocess.run(
        [sys.executable, "-m", "testbed.fault_drill", *arguments],
        check=False,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=240,  # the drill synthesizes the stacks in process first
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "duplicates outside the window: 0" in result.stdout
    assert "duplicates inside the window: " in result.stdout
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["lost"] == 0
    assert figures["unexpected"] == 0
    assert figures["duplicates_outside_window"] == 0
    assert figures["poison_lines"] > 0
    assert figures["poison_quarantined"] == figures["poison_lines"]
    assert figures["delivered_distinct"] == figures["expected_distinct"] > 0
    # Copies per line: every expected line is stored at least once; the slow phase (OGC RS storing on receipt and
    # answering 3 s later, past the client's read timeout) delivered lines of its own.
    assert "0" not in figures["copies_per_line"]
    assert sum(figures["copies_per_line"].values()) == figures["expected_distinct"]
    assert figures["slow_expected"] > 0
    # A slow answer is no reason for a second copy: each of those lines was stored exactly once.
    assert figures["slow_copies_per_line"] == {"1": figures["slow_expected"]}
    assert figures["slow_duplicated"] == 0
    assert "slow OGC RS               answers 3 s after storing" in result.stdout
    # The functions read OGC RS's database: every lost answer was resolved, none stored a line twice.
    assert figures["database"] is True
    assert figures["duplicated"] == figures["duplicates_inside_window"] == 0
    assert figures["window_lines"] > 0  # answers were lost (the slow phase alone loses every one)
    assert sum(figures["flows"]["redriven"].values()) > 0  # the outage sent messages to the DLQs
    assert len(figures["faults_applied"]) >= 5  # of 503, 500, 429, delay, drop, store_then_drop, unauthorized
    assert "redirects followed" in result.stdout
    assert figures["redirects_followed"] == 0
    assert figures["inputs"]["poisoned_values"] > 0
    assert WEBHOOK_TOKEN not in result.stdout  # the functions' logs are kept out of the figures


def test_only_store_then_drop_duplicates_exactly_the_dropped_requests() -> None:
    """Every copy beyond the first is a line of a request OGC RS stored and never answered, and all of them are."""
    config = DrillConfig(**SMALL, **QUIET, poison_lines=0, faults="store_then_drop=0.2", seed=5)
    report = run_drill(config)
    dropped = report.requests_by_fault[FaultKind.STORE_THEN_DROP.value]
    assert report.ok, report.problems
    assert dropped["requests"] > 0
    # Measured three ways: the server's request log, the stored-but-unanswered witness, and the stored multiset.
    assert report.window_requests == dropped["requests"]
    assert report.window_lines == dropped["lines"]
    assert report.duplicated == report.duplicates_inside_window == dropped["lines"]
    assert report.window_by_fault == {"store_then_drop": dropped["requests"]}


def test_retryable_faults_that_store_nothing_duplicate_nothing() -> None:
    config = DrillConfig(**SMALL, **{**QUIET, "revocations": 2}, faults="503=0.2,drop=0.1,unauthorized=0.1", seed=9)
    report = run_drill(config)
    assert report.ok, report.problems
    assert {"503", "drop", "unauthorized"} <= set(report.faults_applied)
    assert report.window_requests == report.window_lines == 0
    assert report.duplicated == 0
    assert report.poison_quarantined == report.poison_lines > 0


@pytest.fixture
def client(reference_rs: ReferenceOgcRs) -> OgcRsClient:
    session = http_session(retries=2, backoff_factor=0.01)
    tokens = TokenProvider(
        auth_url=reference_rs.token_url,
        item_id=reference_rs.rs_host,
        item_type="resource_server",
        role="admin",
        credentials=lambda _force: ClientCredentials(reference_rs.client_id, reference_rs.client_secret),
        session=session,
    )
    return OgcRsClient(process_url=reference_rs.process_url, tokens=tokens, session=session, timeout=(1.0, 2.0))


def test_a_chunk_split_around_a_refused_line_is_not_sent_twice_after_a_failure(
    reference_rs: ReferenceOgcRs, client: OgcRsClient
) -> None:
    """Found by the drill: OGC RS refuses a chunk (one poison line), the client splits it, the first half is
    stored, the second half fails; the retry must not store the first half again."""
    user, collection = "0b6f1c1e-8d0e-4a53-9d1b-2f0c7f1d2a3b", "6a4f6a52-3d5b-4c8e-9f1a-0c2b3d4e5f60"
    lines = [f"{user}|{collection}|item-{n}|2025-10-27T10:00:0{n}Z|100|aws_s3" for n in range(3)]
    lines.append(f"{user}|{collection}|poisoned|2025-10-27T10:00:09Z|100|aws_s3")
    reference_rs.poisoned_item_ids = {"poisoned"}
    ledger = SqliteLedger()
    chunk = KeyedChunk("cloudtrail:chunk", lines)
    # whole chunk: 400 (poison); first half [0, 1]: stored; second half [2, 3]: 503 until the retries run out
    reference_rs.faults.push("ok", times=2).push("status", 503, times=3)
    with pytest.raises(DeliveryError):
        deliver_chunks_once(client, ledger, [chunk])
    assert sorted(reference_rs.stored_lines()) == lines[:2]
    report = deliver_chunks_once(client, ledger, [chunk])  # SQS delivers the message again
    assert sorted(reference_rs.stored_lines()) == lines[:3]
    assert [rejected.line for rejected in report.delivery.rejected] == [lines[3]]
    assert deliver_chunks_once(client, ledger, [chunk]).delivery.requests == 0


def test_an_uncertain_half_of_a_split_chunk_resolved_stored_sends_the_answered_half_once(tmp_path: Path) -> None:
    """Found by the drill: a chunk is split around a refused line; its first half is stored and answered, a later
    request of it loses its answer (stored). Resolved through OGC RS's database, the retry must send neither half
    again, though its chunks are cut differently (the stored requests are known now), and the refused line must
    reach an ERROR log."""
    user, collection = "0b6f1c1e-8d0e-4a53-9d1b-2f0c7f1d2a3b", "6a4f6a52-3d5b-4c8e-9f1a-0c2b3d4e5f60"
    items = ["item-0", "item-1", "item-2", "poisoned"]
    downloads = [
        MeteredDownload(user, collection, item, f"2025-10-27T10:00:0{n}Z", 100, Backend.AWS_S3, f"s3-request:b/{n}")
        for n, item in enumerate(items)
    ]
    lines = [download.to_line() for download in downloads]
    with ReferenceOgcRs(db_path=str(tmp_path / "metering.sqlite3")) as rs, open_ogc_rs_database(rs.database_url) as db:
        rs.poisoned_item_ids = {"poisoned"}
        client = helpers.client_for(rs, batch_max_lines=4)
        ledger = SqliteLedger()
        resolver = UncertainResolver(db, not_stored_after_s=0.0, ask_again_s=0.0)
        # [0..3]: 400 (poison); [0, 1]: stored; [2, 3]: 400; [2]: stored, the answer lost
        rs.faults.push("ok", times=3).push("store_then_drop")
        with pytest.raises(UncertainDeliveryError):
            deliver_downloads_once(downloads, client, ledger, resolver=resolver)
        assert sorted(rs.stored_lines()) == lines[:3]
        report = deliver_downloads_once(downloads, client, ledger, resolver=resolver)  # SQS delivers it again
        assert sorted(rs.stored_lines()) == lines[:3]  # nothing stored twice
        assert [rejected.line for rejected in report.delivery.rejected] == [lines[3]]
        requests = len(rs.requests_log)
        deliver_downloads_once(downloads, client, ledger, resolver=resolver)
        assert len(rs.requests_log) == requests


def test_redirects_and_poisoned_values_lose_nothing_and_spoil_nothing() -> None:
    """Redirects from both endpoints are never followed and retried; poisoned values (5,000-digit and 20-digit byte
    counts, text, an itemId with NUL) are left out one by one while the entries beside them are delivered."""
    config = DrillConfig(
        **SMALL, **{**QUIET, "token_redirect": 0.2}, poison_lines=0, poisoned_values=12, faults="redirect=0.2", seed=13
    )
    report = run_drill(config)
    assert report.ok, report.problems
    assert report.faults_applied.get("redirect", 0) > 0
    assert report.token_faults_applied > 0
    assert report.redirects_followed == 0
    assert report.inputs["poisoned_values"] == 12
    assert report.lost == report.unexpected == 0
    assert report.delivered_distinct == report.expected_distinct > 0
