"""``serve``'s spool (SQLite file and PostgreSQL, one contract) and its delivery loop against the reference OGC RS."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metering.exactly_once import KeyedLine
from metering.ledger import SqliteLedger
from ogc_audit.serve.admission import Admission
from ogc_audit.serve.delivery import DeliveryLoop
from ogc_audit.serve.metrics import ServeMetrics
from ogc_audit.serve.settings import DeliverySettings, SpoolLimits
from ogc_audit.serve.spool import GroupCommit, PostgresSpool, Spool, SqliteSpool, migrate_postgres
from testbed.reference_rs import Fault, ReferenceOgcRs
from tests import helpers

COLLECTION = "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d"


def keyed(count: int, start: int = 0, prefix: str = "minio:dep:") -> list[KeyedLine]:
    return [
        KeyedLine(f"{prefix}{index}", f"{uuid.UUID(int=index + 1)}|{COLLECTION}|item-{index}|2025-10-27T10:12:30Z|10|")
        for index in range(start, start + count)
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Spool]:
    store: Spool
    if request.param == "sqlite":
        store = SqliteSpool(str(tmp_path / "spool.sqlite3"))
    else:
        store = PostgresSpool(request.getfixturevalue("postgres_url"))
    yield store
    store.close()


def test_appended_lines_are_claimed_once_per_lease_then_removed(spool: Spool) -> None:
    spool.append([keyed(3), keyed(2, start=3)])
    spool.append([keyed(2, start=3)])  # a body re-sent while its lines wait: one line per key
    assert spool.stats().depth == 5

    first = spool.claim("a", limit=4, lease_s=30, round_id="r1")
    assert [line.key for line in first] == [f"minio:dep:{index}" for index in range(4)]
    second = spool.claim("b", limit=10, lease_s=30, round_id="r2")
    assert [line.key for line in second] == ["minio:dep:4"]  # the leased lines are not handed out again
    assert spool.claim("c", limit=10, lease_s=30, round_id="r3") == []

    spool.remove([line.id for line in first])
    spool.defer([line.id for line in second], delay_s=0)
    (again,) = spool.claim("c", limit=10, lease_s=30, round_id="r4")
    assert (again.key, again.line) == (second[0].key, second[0].line)
    assert spool.stats().depth == 1


def test_a_lapsed_lease_is_taken_over_and_a_renewed_one_is_not(spool: Spool) -> None:
    spool.append([keyed(2)])
    dead = spool.claim("dead-instance", limit=1, lease_s=0.5, round_id="r5")
    alive = spool.claim("live-instance", limit=1, lease_s=0.5, round_id="r6")
    time.sleep(0.3)
    spool.renew("live-instance", [line.id for line in alive], lease_s=30)
    spool.renew("someone-else", [line.id for line in dead], lease_s=30)  # not the holder: no effect
    time.sleep(0.4)

    taken_over = spool.claim("survivor", limit=10, lease_s=30, round_id="r7")

    assert [line.key for line in taken_over] == [dead[0].key]
    assert taken_over[0].lapsed_round == "r5"  # the round that may have posted it, for the ledger to resolve
    assert dead[0].lapsed_round is None
    # The line now belongs to the survivor's round; the lapsed one has no line left under its id.
    assert spool.round_lines("r5") is None
    taken = spool.round_lines("r7")
    assert taken is not None
    assert [line.key for line in taken.lines] == [dead[0].key]
    assert abs(taken.started_at - time.time()) < 5


def test_deferred_lines_wait_and_stats_age_the_oldest(spool: Spool) -> None:
    assert (spool.stats().depth, spool.stats().oldest_age_s) == (0, 0.0)
    spool.append([keyed(1)])
    time.sleep(0.3)
    spool.append([keyed(1, start=1)])
    stats = spool.stats()
    assert stats.depth == 2
    assert 0.25 <= stats.oldest_age_s < 5

    spool.defer([line.id for line in spool.claim("a", 10, 30, round_id="r8")], delay_s=30)
    assert spool.claim("a", 10, 30, round_id="r9") == []


def test_group_commit_stores_every_concurrent_append(spool: Spool) -> None:
    commits = GroupCommit(spool)
    threads = [threading.Thread(target=commits.append, args=(keyed(10, start=10 * n),)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    commits.close()
    assert spool.stats().depth == 200


def test_postgres_claims_of_concurrent_instances_never_overlap(postgres_url: str) -> None:
    PostgresSpool(postgres_url).append([keyed(400)])
    instances = [PostgresSpool(postgres_url) for _ in range(4)]
    claimed: list[list[str]] = [[] for _ in instances]

    def drain(index: int) -> None:
        while batch := instances[index].claim(f"instance-{index}", limit=7, lease_s=30, round_id="r10"):
            claimed[index].extend(line.key for line in batch)

    threads = [threading.Thread(target=drain, args=(index,)) for index in range(len(instances))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [key for keys in claimed for key in keys]
    assert sorted(every) == sorted(line.key for line in keyed(400))  # each line once, none lost
    assert sum(1 for keys in claimed if keys) >= 2  # the work was shared
    for instance in instances:
        instance.close()


def test_postgres_schema_is_created_once_by_instances_starting_together(postgres_url: str) -> None:
    import psycopg

    errors: list[BaseException] = []

    def start() -> None:
        try:
            PostgresSpool(postgres_url).close()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert migrate_postgres(connection) == 1
        versions = connection.execute("SELECT version FROM ogc_audit_spool_schema").fetchall()
    assert versions == [(1,)]


def test_the_sqlite_file_and_its_journal_are_private(tmp_path: Path) -> None:
    path = tmp_path / "serve.sqlite3"
    path.touch(mode=0o644)
    spool = SqliteSpool(str(path))
    ledger = SqliteLedger(str(path))  # the ledger shares the file
    spool.append([keyed(1)])
    ledger.settle(["minio:dep:0"])
    try:
        for file in tmp_path.iterdir():
            assert file.stat().st_mode & 0o777 == 0o600, file.name
        assert {file.name for file in tmp_path.iterdir()} >= {"serve.sqlite3", "serve.sqlite3-wal"}
    finally:
        spool.close()


# ---- admission ----------------------------------------------------------------------------------------------


def test_admission_refuses_past_the_depth_and_age_bounds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = SqliteSpool(str(tmp_path / "spool.sqlite3"))
    admission = Admission(spool, SpoolLimits(max_lines=5, max_age_s=0.5))
    admission.measure()
    assert admission.refusal() is None
    spool.append([keyed(3)])
    admission.added(3)
    assert admission.refusal() is None
    spool.append([keyed(2, start=3)])
    admission.added(2)  # counted at once, before the next measurement
    with caplog.at_level(logging.ERROR):
        assert admission.refusal() == "spool full: 5 lines (limit 5)"
        assert admission.refusal() == "spool full: 5 lines (limit 5)"
    assert len(caplog.records) == 1  # said once, not once per body
    assert admission.state.stats.depth == 5

    spool.remove([line.id for line in spool.claim("a", 4, 30, round_id="r11")])
    time.sleep(0.6)
    state = admission.measure()
    assert not state.accepting
    assert state.reason.startswith("spool too old: its oldest line waits")
    spool.remove([line.id for line in spool.claim("a", 4, 30, round_id="r12")])
    assert admission.measure().accepting


# ---- the delivery loop against the reference OGC RS ------------------------------------------------------------


def delivery_loop(rs: ReferenceOgcRs, spool: Spool, ledger: SqliteLedger) -> DeliveryLoop:
    client = helpers.client_for(rs)
    return DeliveryLoop(spool, ledger, client, DeliverySettings(batch_lines=500), ServeMetrics(), owner="test")


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_a_failed_round_keeps_its_lines_and_a_later_one_delivers_them_once(
    reference_rs: ReferenceOgcRs, tmp_path: Path
) -> None:
    spool = SqliteSpool(str(tmp_path / "s.sqlite3"))
    ledger = SqliteLedger(str(tmp_path / "s.sqlite3"))
    loop = delivery_loop(reference_rs, spool, ledger)
    spool.append([keyed(5)])
    reference_rs.faults.randomize([(Fault.with_status(503), 1.0)])

    assert loop.deliver_round(spool.claim("test", 500, 30, round_id="r13"), retry_in_s=0) is False
    assert reference_rs.row_count() == 0
    assert spool.stats().depth == 5

    reference_rs.faults.clear()
    assert loop.deliver_round(spool.claim("test", 500, 30, round_id="r14"), retry_in_s=0) is True
    assert spool.stats().depth == 0
    assert sorted(reference_rs.stored_lines()) == sorted(line.line for line in keyed(5))

    # The same entries spooled again (MinIO re-sent the body, to this or another instance): removed, never sent.
    spool.append([keyed(5)])
    assert loop.deliver_round(spool.claim("test", 500, 30, round_id="r15"), retry_in_s=0) is True
    assert (spool.stats().depth, reference_rs.row_count()) == (0, 5)


def test_a_line_ogc_rs_refuses_for_good_leaves_the_spool_and_is_logged(
    reference_rs: ReferenceOgcRs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = SqliteSpool(str(tmp_path / "s.sqlite3"))
    loop = delivery_loop(reference_rs, spool, SqliteLedger(str(tmp_path / "s.sqlite3")))
    reference_rs.poisoned_item_ids.add("item-2")
    spool.append([keyed(4)])

    with caplog.at_level(logging.ERROR):
        assert loop.deliver_round(spool.claim("test", 500, 30, round_id="r16"), retry_in_s=0) is True

    assert spool.stats().depth == 0
    assert reference_rs.row_count() == 3
    assert "quarantined rejected_by_ogc_rs" in caplog.text
    assert "item-2" in caplog.text


def test_the_loop_drains_what_is_spooled_while_it_runs(reference_rs: ReferenceOgcRs, tmp_path: Path) -> None:
    spool = SqliteSpool(str(tmp_path / "s.sqlite3"))
    loop = delivery_loop(reference_rs, spool, SqliteLedger(str(tmp_path / "s.sqlite3")))
    loop.start()
    try:
        for start in range(0, 60, 20):
            spool.append([keyed(20, start=start)])
            loop.wake()
        wait_for(lambda: reference_rs.row_count() == 60)
        wait_for(lambda: spool.stats().depth == 0)
    finally:
        loop.stop(timeout=10)
    assert sorted(reference_rs.stored_lines()) == sorted(line.line for line in keyed(60))
