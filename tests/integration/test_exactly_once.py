"""Exactly-once delivery against the reference OGC RS, over the SQLite and DynamoDB (moto) ledgers.

The ledger's own contract is tested against every store in ``test_ledger_contract.py``.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator, Sequence

import boto3
import pytest
from moto import mock_aws

from metering.errors import DeliveryError, UncertainDeliveryError, UncertainPendingError
from metering.exactly_once import InFlightError, KeyedChunk, KeyedLine, chunk_key, deliver_chunks_once, deliver_once
from metering.ledger import DeliveryLedger, DynamoDbLedger, SqliteLedger
from metering.ogc_rs_database import OgcRsDatabaseError, RequestLanding
from metering.runtime import build_uncertain_resolver
from metering.settings import SettingsError
from metering.uncertain import UncertainResolver
from testbed.reference_rs import ReferenceOgcRs
from tests.helpers import client_for, create_ledger_table

COLLECTION = "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d"


class Clock:
    """Starts at the real time: the client stamps an uncertain request with the real time it was sent."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def keyed(count: int, prefix: str = "k") -> list[KeyedLine]:
    return [
        KeyedLine(f"{prefix}{i}", f"{uuid.UUID(int=i + 1)}|{COLLECTION}|{prefix}-{i}|2025-10-27T10:12:30Z|{i}|minio")
        for i in range(count)
    ]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "dynamodb"])
def ledger(request: pytest.FixtureRequest, clock: Clock) -> Iterator[DeliveryLedger]:
    if request.param == "sqlite":
        yield SqliteLedger(clock=clock, in_progress_s=60, retention_s=3600)
        return
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_ledger_table(dynamodb)
        yield DynamoDbLedger("ledger", dynamodb, clock=clock, in_progress_s=60, retention_s=3600)


def test_redelivered_input_sends_nothing_twice(reference_rs: ReferenceOgcRs, ledger: DeliveryLedger) -> None:
    client = client_for(reference_rs)
    items = keyed(5)
    first = deliver_once(client, ledger, items)
    again = deliver_once(client, ledger, [*items, KeyedLine("new", keyed(1, "new")[0].line)])
    assert (first.delivery.delivered, again.delivery.delivered, again.already_delivered) == (5, 1, 5)
    assert reference_rs.row_count() == 6


def test_repeated_keys_in_one_input_are_sent_once(reference_rs: ReferenceOgcRs, ledger: DeliveryLedger) -> None:
    items = keyed(3)
    report = deliver_once(client_for(reference_rs), ledger, [*items, items[1]])
    assert (report.delivery.delivered, report.repeated_in_input) == (3, 1)
    assert reference_rs.row_count() == 3


def test_a_failed_chunk_is_retried_but_confirmed_chunks_are_not(
    reference_rs: ReferenceOgcRs, ledger: DeliveryLedger
) -> None:
    client = client_for(reference_rs, batch_max_lines=2)
    items = keyed(5)
    reference_rs.faults.push("ok").push("status", 503, times=2)  # the first try and its one retry
    with pytest.raises(DeliveryError):
        deliver_once(client, ledger, items)
    assert reference_rs.row_count() == 2
    retry = deliver_once(client, ledger, items)
    assert (retry.already_delivered, retry.delivery.delivered) == (2, 3)
    assert sorted(reference_rs.stored_lines()) == sorted(item.line for item in items)


def test_rejected_lines_are_settled_and_not_resent(reference_rs: ReferenceOgcRs, ledger: DeliveryLedger) -> None:
    items = keyed(4)
    reference_rs.poisoned_item_ids.add("k-2")
    client = client_for(reference_rs)
    report = deliver_once(client, ledger, items)
    assert (report.delivery.delivered, len(report.delivery.rejected)) == (3, 1)
    again = deliver_once(client, ledger, items)
    assert (again.already_delivered, again.delivery.requests) == (4, 0)


def test_keys_held_by_another_sender_make_the_input_retry(reference_rs: ReferenceOgcRs, ledger: DeliveryLedger) -> None:
    items = keyed(3)
    ledger.claim([items[0].key])  # another invocation is sending this one now
    with pytest.raises(InFlightError):
        deliver_once(client_for(reference_rs), ledger, items)
    assert reference_rs.row_count() == 2


def chunks_of(lines: list[str], size: int) -> list[KeyedChunk]:
    return [
        KeyedChunk(
            chunk_key("cloudtrail", [f"event-{i}" for i in range(start, start + size)]), lines[start : start + size]
        )
        for start in range(0, len(lines), size)
    ]


def test_a_redelivered_log_file_sends_no_chunk_twice(reference_rs: ReferenceOgcRs, ledger: DeliveryLedger) -> None:
    client = client_for(reference_rs, batch_max_lines=3)
    lines = [item.line for item in keyed(7)]
    first = deliver_chunks_once(client, ledger, chunks_of(lines, 3))
    again = deliver_chunks_once(client, ledger, chunks_of(lines, 3))
    assert (first.delivery.delivered, first.delivery.requests) == (7, 3)
    assert (again.delivery.requests, again.already_delivered) == (0, 7)
    assert reference_rs.stored_lines() == lines


def test_identical_lines_of_distinct_events_in_a_chunk_are_all_sent(
    reference_rs: ReferenceOgcRs, ledger: DeliveryLedger
) -> None:
    line = keyed(1)[0].line  # the same user fetched the same item twice in one second
    report = deliver_chunks_once(client_for(reference_rs), ledger, [KeyedChunk("cloudtrail:x", [line, line])])
    assert report.delivery.delivered == 2
    assert reference_rs.row_count() == 2


def test_after_a_partial_failure_only_unconfirmed_chunks_are_resent(
    reference_rs: ReferenceOgcRs, ledger: DeliveryLedger
) -> None:
    client = client_for(reference_rs, batch_max_lines=2)
    lines = [item.line for item in keyed(6)]
    reference_rs.faults.push("ok").push("status", 503, times=2)  # 503 stores nothing: retried, then released
    with pytest.raises(DeliveryError):
        deliver_chunks_once(client, ledger, chunks_of(lines, 2))
    retry = deliver_chunks_once(client, ledger, chunks_of(lines, 2))
    assert (retry.already_delivered, retry.delivery.delivered) == (2, 4)
    assert sorted(reference_rs.stored_lines()) == sorted(lines)


GRACE_S = 900.0


@pytest.fixture
def resolver(clock: Clock) -> UncertainResolver:
    """No database to ask: the grace period decides."""
    return UncertainResolver(grace_s=GRACE_S, clock=clock)


def test_a_lost_answer_is_never_resent_within_the_grace_period_then_once_as_a_possible_duplicate(
    reference_rs: ReferenceOgcRs, ledger: DeliveryLedger, resolver: UncertainResolver, clock: Clock
) -> None:
    client = client_for(reference_rs, batch_max_lines=2)
    items = keyed(5)
    clock.now = time.time()
    reference_rs.faults.push("ok").push("store_then_drop")  # OGC RS commits the second request; its answer is lost
    with pytest.raises(UncertainDeliveryError) as raised:
        deliver_once(client, ledger, items, resolver)
    assert raised.value.retry_after_s == GRACE_S
    assert raised.value.logs == tuple(item.line for item in items[2:4])
    assert reference_rs.row_count() == 4
    assert resolver.tally.take().uncertain == 2

    # The next try inside the grace period sends the line never sent, and not the uncertain ones.
    clock.now += 60
    with pytest.raises(UncertainPendingError) as pending:
        deliver_once(client, ledger, items, resolver)
    assert pending.value.retry_after_s == pytest.approx(GRACE_S - 60, abs=5)
    assert reference_rs.row_count() == 5

    # After it: sent once more, counted as possible duplicates, and never again.
    clock.now += GRACE_S
    report = deliver_once(client, ledger, items, resolver)
    assert (report.delivery.delivered, report.already_delivered) == (2, 3)
    assert resolver.tally.take().possible_duplicates == 2
    assert reference_rs.row_count() == 7  # the two lost answers' lines, twice: what reconcile will list
    again = deliver_once(client, ledger, items, resolver)
    assert (again.delivery.requests, again.already_delivered) == (0, 5)


def test_an_uncertain_chunk_of_a_log_file_is_resolved_as_a_whole(
    reference_rs: ReferenceOgcRs, ledger: DeliveryLedger, resolver: UncertainResolver, clock: Clock
) -> None:
    client = client_for(reference_rs, batch_max_lines=3, read_timeout_s=0.3)
    lines = [item.line for item in keyed(7)]
    reference_rs.faults.push("ok").push("delay", 0.8)  # answers after the read timeout (and stores then)
    with pytest.raises(UncertainDeliveryError):
        deliver_chunks_once(client, ledger, chunks_of(lines, 3), resolver)
    assert reference_rs.wait_for_rows(6)
    with pytest.raises(UncertainPendingError):
        deliver_chunks_once(client, ledger, chunks_of(lines, 3), resolver)
    assert reference_rs.row_count() == 7
    clock.now = time.time() + GRACE_S
    report = deliver_chunks_once(client, ledger, chunks_of(lines, 3), resolver)
    assert (report.delivery.delivered, report.already_delivered) == (3, 4)
    assert resolver.tally.take().possible_duplicates == 3
    assert reference_rs.row_count() == 10


def test_a_sender_that_finds_another_resolving_waits(
    reference_rs: ReferenceOgcRs, ledger: DeliveryLedger, resolver: UncertainResolver, clock: Clock
) -> None:
    client = client_for(reference_rs)
    items = keyed(2)
    reference_rs.faults.push("status", 502)  # a gateway's answer: OGC RS may have stored them
    with pytest.raises(UncertainDeliveryError):
        deliver_once(client, ledger, items, resolver)
    (request,) = ledger.uncertain_requests([items[0].key])
    clock.now = time.time() + GRACE_S
    assert ledger.lease_uncertain(request.request_id)  # another try is resolving it right now
    with pytest.raises(UncertainPendingError) as pending:
        deliver_once(client, ledger, items, resolver)
    assert pending.value.retry_after_s == resolver.ask_again_s
    assert reference_rs.row_count() == 0
    assert resolver.tally.possible_duplicates == 0


class Answers:
    """OGC RS's database as the resolver sees it, answering what the test says (PENDING cannot be produced by the
    reference OGC RS on demand: its jobs run to the end before it answers)."""

    def __init__(self, *answers: RequestLanding | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, ...]] = []

    def landing(self, logs: Sequence[str]) -> RequestLanding:
        self.asked.append(tuple(logs))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_request_still_running_is_asked_about_again_later(
    reference_rs: ReferenceOgcRs, ledger: DeliveryLedger, clock: Clock
) -> None:
    database = Answers(RequestLanding.PENDING, RequestLanding.STORED)
    resolver = UncertainResolver(database, not_stored_after_s=0, ask_again_s=30, clock=clock)
    client = client_for(reference_rs)
    items = keyed(3)
    reference_rs.faults.push("store_then_drop")
    with pytest.raises(UncertainDeliveryError) as raised:
        deliver_once(client, ledger, items, resolver)
    assert raised.value.retry_after_s == 0  # with a database, the next try may ask at once
    with pytest.raises(UncertainPendingError) as pending:
        deliver_once(client, ledger, items, resolver)
    assert pending.value.retry_after_s == 30
    report = deliver_once(client, ledger, items, resolver)
    assert (report.delivery.requests, report.already_delivered) == (0, 3)
    assert database.asked == [tuple(item.line for item in items)] * 2  # the exact logs array, in order
    assert reference_rs.row_count() == 3
    assert resolver.tally.take().found_stored == 3


def test_a_young_not_stored_answer_is_not_trusted_yet(
    reference_rs: ReferenceOgcRs, ledger: DeliveryLedger, clock: Clock
) -> None:
    """A request may still be travelling (a proxy's buffer): NOT_STORED counts only once it is old enough."""
    database = Answers(RequestLanding.NOT_STORED, RequestLanding.NOT_STORED)
    resolver = UncertainResolver(database, not_stored_after_s=60, clock=clock)
    client = client_for(reference_rs)
    items = keyed(2)
    clock.now = time.time()
    reference_rs.faults.push("status", 504)  # the reference's injected 504 stores nothing
    with pytest.raises(UncertainDeliveryError):
        deliver_once(client, ledger, items, resolver)
    with pytest.raises(UncertainPendingError) as pending:
        deliver_once(client, ledger, items, resolver)
    assert pending.value.retry_after_s == pytest.approx(60, abs=5)
    clock.now = time.time() + 61
    report = deliver_once(client, ledger, items, resolver)
    assert report.delivery.delivered == 2
    assert reference_rs.row_count() == 2
    tally = resolver.tally.take()
    assert (tally.found_not_stored, tally.possible_duplicates) == (2, 0)


def test_an_unreachable_database_falls_back_to_the_grace_period(
    reference_rs: ReferenceOgcRs, ledger: DeliveryLedger, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    database = Answers(OgcRsDatabaseError("connection refused"), OgcRsDatabaseError("connection refused"))
    resolver = UncertainResolver(database, grace_s=GRACE_S, clock=clock)
    client = client_for(reference_rs)
    items = keyed(1)
    clock.now = time.time()
    reference_rs.faults.push("store_then_drop")
    with pytest.raises(UncertainDeliveryError):
        deliver_once(client, ledger, items, resolver)
    with pytest.raises(UncertainPendingError):
        deliver_once(client, ledger, items, resolver)
    clock.now = time.time() + GRACE_S
    deliver_once(client, ledger, items, resolver)
    assert resolver.tally.take().possible_duplicates == 1
    assert reference_rs.row_count() == 2
    assert "OGC RS's database could not be asked" in caplog.text
    assert "connection refused" not in caplog.text  # the error's text may name the server; its kind is enough


@pytest.mark.parametrize(("value", "grace"), [("", 900.0), ("0", 0.0), ("60.5", 60.5)])
def test_the_grace_period_is_configured_in_seconds(value: str, grace: float) -> None:
    assert UncertainResolver.from_env({"UNCERTAIN_GRACE_S": value}).grace_s == grace


@pytest.mark.parametrize("value", ["-1", "fifteen", "86400", "nan"])
def test_a_wrong_grace_period_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="UNCERTAIN_GRACE_S"):
        UncertainResolver.from_env({"UNCERTAIN_GRACE_S": value})


@pytest.fixture
def process_resolver_from(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process-wide resolver built afresh from this test's environment, and forgotten after it."""
    from metering import runtime

    runtime._cached_resolver.cache_clear()
    yield
    runtime._cached_resolver.cache_clear()


def test_a_caller_that_passes_no_resolver_gets_the_environments(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, process_resolver_from: None
) -> None:
    """How ``serve`` and the CLI use it: OGC_RS_DATABASE_URL set, nothing else to wire."""
    with ReferenceOgcRs(database_url=postgres_url) as rs:
        monkeypatch.setenv("OGC_RS_DATABASE_URL", rs.database_url)
        client, ledger, items = client_for(rs), SqliteLedger(), keyed(3)
        rs.faults.push("store_then_drop")
        with pytest.raises(UncertainDeliveryError):
            deliver_once(client, ledger, items)
        report = deliver_once(client, ledger, items)  # found stored in jobs_table: nothing sent
        assert (report.delivery.requests, report.already_delivered) == (0, 3)
        assert rs.row_count() == 3


def test_a_database_down_at_start_does_not_stop_delivery(reference_rs: ReferenceOgcRs, ledger: DeliveryLedger) -> None:
    """OGC_RS_DATABASE_URL is opened at the first question: while it is down the grace period applies."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    resolver = build_uncertain_resolver(
        {"OGC_RS_DATABASE_URL": f"postgresql://reader@127.0.0.1:{port}/ogc", "UNCERTAIN_GRACE_S": "0"}
    )
    client, items = client_for(reference_rs), keyed(2)
    reference_rs.faults.push("store_then_drop")
    with pytest.raises(UncertainDeliveryError):
        deliver_once(client, ledger, items, resolver)
    report = deliver_once(client, ledger, items, resolver)
    assert report.delivery.delivered == 2
    assert resolver.tally.take().possible_duplicates == 2


def test_an_ogc_rs_database_url_of_another_kind_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="OGC_RS_DATABASE_URL"):
        build_uncertain_resolver({"OGC_RS_DATABASE_URL": "mysql://reader@db/ogc"})
