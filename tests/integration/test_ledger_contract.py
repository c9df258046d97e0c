"""The DeliveryLedger contract, run against every store: SQLite, DynamoDB (moto) and PostgreSQL (a real server)."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from metering.ledger import DeliveryLedger, DynamoDbLedger, SqliteLedger, UncertainRequest
from metering.ledger.postgres import PostgresLedger
from tests.helpers import create_ledger_table


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


STORES = ["sqlite", "dynamodb", "postgres"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=STORES)
def ledger(request: pytest.FixtureRequest, clock: Clock) -> Iterator[DeliveryLedger]:
    if request.param == "sqlite":
        yield SqliteLedger(clock=clock, in_progress_s=60, retention_s=3600)
    elif request.param == "dynamodb":
        with mock_aws():
            dynamodb = boto3.client("dynamodb", region_name="us-east-1")
            create_ledger_table(dynamodb)
            yield DynamoDbLedger("ledger", dynamodb, clock=clock, in_progress_s=60, retention_s=3600)
    else:
        url = request.getfixturevalue("postgres_url")
        postgres = PostgresLedger(url, clock=clock, in_progress_s=60, retention_s=3600)
        yield postgres
        postgres.close()


def expires_on_its_own(ledger: DeliveryLedger) -> bool:
    """DynamoDB's TTL deletes later, on its own schedule; the others ignore an expired record at once."""
    return not isinstance(ledger, DynamoDbLedger)


def test_a_key_is_claimed_once(ledger: DeliveryLedger) -> None:
    first = ledger.claim(["a", "b"])
    second = ledger.claim(["b", "c"])
    assert first.claimed == {"a", "b"}
    assert (second.claimed, second.in_flight) == ({"c"}, {"b"})


def test_settled_keys_stay_delivered_until_retention_ends(ledger: DeliveryLedger, clock: Clock) -> None:
    ledger.claim(["a"])
    ledger.settle(["a"])
    assert ledger.claim(["a"]).delivered == {"a"}
    if expires_on_its_own(ledger):
        clock.now += 3601
        assert ledger.claim(["a"]).claimed == {"a"}


def test_delivered_reads_settled_keys_only(ledger: DeliveryLedger) -> None:
    ledger.claim(["claimed"])
    ledger.settle(["event-1", "event-2", "event-2"])  # recorded without a claim: events delivered inside a chunk
    assert ledger.delivered(["event-1", "event-2", "claimed", "unknown"]) == {"event-1", "event-2"}
    assert ledger.delivered([f"k{i}" for i in range(250)]) == set()  # several batches of 100
    assert ledger.claim(["event-1"]).delivered == {"event-1"}


def test_released_keys_can_be_claimed_again(ledger: DeliveryLedger) -> None:
    ledger.claim(["a"])
    ledger.release(["a"])
    assert ledger.claim(["a"]).claimed == {"a"}


def test_release_never_forgets_a_settled_key(ledger: DeliveryLedger) -> None:
    ledger.settle(["a"])
    ledger.release(["a"])
    assert ledger.delivered(["a"]) == {"a"}


def test_an_abandoned_claim_expires(ledger: DeliveryLedger, clock: Clock) -> None:
    ledger.claim(["a"])
    clock.now += 61
    assert ledger.claim(["a"]).claimed == {"a"}


def uncertain(clock: Clock, keys: tuple[str, ...] = ("a", "b")) -> UncertainRequest:
    logs = [f"line of {key}|x" for key in keys]
    return UncertainRequest.new(logs, keys, [*keys, "event-of-a"], sent_at=clock.now)


def test_uncertain_keys_are_never_claimed_nor_released_nor_expired(ledger: DeliveryLedger, clock: Clock) -> None:
    ledger.claim(["a", "b"])
    ledger.mark_uncertain(uncertain(clock))
    ledger.release(["a", "b"])
    clock.now += 61  # past the claim's expiry: uncertainty does not expire with it
    claim = ledger.claim(["a", "b", "c"])
    assert (claim.uncertain, claim.claimed, claim.in_flight, claim.delivered) == ({"a", "b"}, {"c"}, set(), set())
    assert ledger.delivered(["a", "b"]) == set()


def test_an_uncertain_request_is_kept_exactly(ledger: DeliveryLedger, clock: Clock) -> None:
    request = uncertain(clock)
    ledger.claim(request.keys)
    ledger.mark_uncertain(request)
    assert ledger.uncertain_requests(["b", "a", "other"]) == [request]
    assert ledger.uncertain_requests(["other"]) == []


def test_one_resolver_at_a_time_holds_the_lease(ledger: DeliveryLedger, clock: Clock) -> None:
    request = uncertain(clock)
    ledger.mark_uncertain(request)
    assert ledger.lease_uncertain(request.request_id)
    assert not ledger.lease_uncertain(request.request_id)
    ledger.unlease_uncertain(request.request_id)
    assert ledger.lease_uncertain(request.request_id)
    clock.now += 61  # a resolver that died: its lease expires
    assert ledger.lease_uncertain(request.request_id)
    assert not ledger.lease_uncertain("no-such-request")


def test_a_request_found_stored_settles_its_keys(ledger: DeliveryLedger, clock: Clock) -> None:
    request = uncertain(clock)
    ledger.mark_uncertain(request)
    ledger.resolve_uncertain(request, stored=True)
    assert ledger.delivered(["a", "b", "event-of-a"]) == {"a", "b", "event-of-a"}
    assert ledger.uncertain_requests(["a", "b"]) == []
    assert not ledger.lease_uncertain(request.request_id)  # forgotten


def test_a_request_found_not_stored_frees_its_keys(ledger: DeliveryLedger, clock: Clock) -> None:
    request = uncertain(clock)
    ledger.mark_uncertain(request)
    ledger.resolve_uncertain(request, stored=False)
    assert ledger.delivered(["a", "b", "event-of-a"]) == set()
    assert ledger.claim(["a", "b"]).claimed == {"a", "b"}


def test_resolving_leaves_keys_another_request_made_uncertain(ledger: DeliveryLedger, clock: Clock) -> None:
    first = uncertain(clock)
    ledger.mark_uncertain(first)
    second = uncertain(clock, ("b",))  # "b" was released, claimed and sent again, uncertain again
    ledger.mark_uncertain(second)
    ledger.resolve_uncertain(first, stored=False)
    assert ledger.claim(["a", "b"]).uncertain == {"b"}
    assert ledger.uncertain_requests(["a", "b"]) == [second]


def test_a_large_uncertain_request_is_kept(ledger: DeliveryLedger, clock: Clock) -> None:
    keys = tuple(f"minio:deployment:{i:08d}-request-id" for i in range(500))
    user = "6f1d2c8e-3b4a-4f5e-9a7b-1c2d3e4f5a6b"
    logs = [f"{user}|0b8e6c1a|item-{i}|2025-10-27T10:12:30Z|{i}|minio" for i in range(500)]
    request = UncertainRequest.new(logs, keys, keys, sent_at=clock.now)
    ledger.mark_uncertain(request)
    assert ledger.uncertain_requests(keys[-1:]) == [request]


def test_new_sqlite_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = SqliteLedger(str(path))
    ledger.claim(["a"])
    for name in ("ledger.sqlite3", "ledger.sqlite3-wal"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600


def test_an_older_sqlite_file_gains_the_uncertain_state(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE delivery_ledger (key TEXT PRIMARY KEY, status TEXT NOT NULL, expires REAL NOT NULL)")
    old.execute("INSERT INTO delivery_ledger VALUES ('done', 'COMPLETED', 9e12)")
    old.commit()
    old.close()
    ledger = SqliteLedger(str(path))
    assert ledger.delivered(["done"]) == {"done"}
    request = UncertainRequest.new(["l"], ["k"], ["k"], sent_at=0)
    ledger.mark_uncertain(request)
    assert ledger.claim(["k"]).uncertain == {"k"}


def test_postgres_claims_are_exclusive_across_connections(postgres_url: str) -> None:
    """Eight ledgers (as eight serve processes would hold) claim the same 200 keys at once: each key is won once."""
    ledgers = [PostgresLedger(postgres_url) for _ in range(8)]
    keys = [f"k{i}" for i in range(200)]
    won: list[set[str]] = [set() for _ in ledgers]
    start = threading.Barrier(len(ledgers))

    def claim(index: int) -> None:
        start.wait()
        # Each process asks in its own order: the store must not deadlock on crosswise row locks.
        order = keys[index * 25 :] + keys[: index * 25]
        won[index] = ledgers[index].claim(order).claimed

    threads = [threading.Thread(target=claim, args=(index,)) for index in range(len(ledgers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(key for claimed in won for key in claimed) == sorted(keys)
    for ledger in ledgers:
        ledger.close()


def test_postgres_lease_is_won_by_one_of_many(postgres_url: str) -> None:
    ledgers = [PostgresLedger(postgres_url) for _ in range(6)]
    request = UncertainRequest.new(["l"], ["k"], ["k"], sent_at=0)
    ledgers[0].mark_uncertain(request)
    results: list[bool] = []
    start = threading.Barrier(len(ledgers))

    def lease(ledger: PostgresLedger) -> None:
        start.wait()
        results.append(ledger.lease_uncertain(request.request_id))

    threads = [threading.Thread(target=lease, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False] * 5 + [True]
    for ledger in ledgers:
        ledger.close()
