"""The OGC RS client against the reference OGC RS over real HTTP on loopback."""

from __future__ import annotations

import functools
import socket
import time
import uuid

import pytest
import requests

from metering.errors import ConfigurationError, DeliveryError, UncertainDeliveryError
from metering.ogc_rs import http_session, provably_not_sent
from testbed.reference_rs import ReferenceOgcRs
from tests import helpers

COLLECTION = "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d"


def make_lines(count: int, item: str = "item") -> list[str]:
    return [
        f"{uuid.UUID(int=i + 1)}|{COLLECTION}|{item}-{i}|2025-10-27T10:12:30Z|{i * 10}|aws_s3" for i in range(count)
    ]


# Short backoff keeps the suite fast; the retry policy itself is the production one.
client_for = functools.partial(helpers.client_for, retries=None)


def test_many_posts_share_one_token(reference_rs: ReferenceOgcRs) -> None:
    client = client_for(reference_rs)
    fetches = []
    for start in range(5):
        report = client.deliver(make_lines(3, item=f"batch{start}"))
        assert report.delivered == 3
        fetches.append(report.token_fetches)
    assert fetches == [1, 0, 0, 0, 0]
    assert reference_rs.token_requests == 1
    assert reference_rs.row_count() == 15


def test_chunks_of_batch_max_lines(reference_rs: ReferenceOgcRs) -> None:
    lines = make_lines(23)
    report = client_for(reference_rs, batch_max_lines=10).deliver(lines)
    assert (report.delivered, report.requests) == (23, 3)
    assert [record.lines for record in reference_rs.requests_log if "processes" in record.path] == [10, 10, 3]
    assert reference_rs.stored_lines() == lines


def test_revoked_token_gets_one_fresh_token_and_one_retry(reference_rs: ReferenceOgcRs) -> None:
    client = client_for(reference_rs)
    client.deliver(make_lines(1))
    reference_rs.revoke_tokens()
    report = client.deliver(make_lines(2, item="after"))
    assert report.delivered == 2
    assert reference_rs.token_requests == 2
    assert reference_rs.row_count() == 3


def test_401_twice_is_a_configuration_error(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("unauthorized", times=2)
    with pytest.raises(ConfigurationError, match="admin"):
        client_for(reference_rs).deliver(make_lines(1))
    assert reference_rs.row_count() == 0


def test_429_and_503_store_nothing_and_are_retried_with_backoff(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("status", 503).push("status", 429, retry_after=0).push("status", 503)
    report = client_for(reference_rs).deliver(make_lines(4))
    assert report.delivered == 4
    assert posted_statuses(reference_rs) == [503, 429, 503, 200]
    assert reference_rs.row_count() == 4


def test_outage_past_the_retries_raises_delivery_error(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("status", 503, times=10)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="503") as raised:
        client_for(reference_rs).deliver(make_lines(2))
    assert not isinstance(raised.value, UncertainDeliveryError)
    assert time.monotonic() - started < 30
    assert reference_rs.row_count() == 0


def posted_statuses(rs: ReferenceOgcRs) -> list[int | None]:
    return [record.status for record in rs.requests_log if "processes" in record.path]


@pytest.mark.parametrize("status", [500, 502, 504])
def test_500_502_504_make_the_request_uncertain_and_are_never_resent(reference_rs: ReferenceOgcRs, status: int) -> None:
    lines = make_lines(7)
    reference_rs.faults.push("ok").push("status", status)
    settled: list[int] = []
    with pytest.raises(UncertainDeliveryError, match=str(status)) as raised:
        client_for(reference_rs, batch_max_lines=3).deliver(lines, on_settled=settled.extend)
    assert posted_statuses(reference_rs) == [200, status]  # one try, and the third chunk was not sent
    assert (raised.value.logs, raised.value.positions, settled) == (tuple(lines[3:6]), (3, 4, 5), [0, 1, 2])


def test_a_read_timeout_is_uncertain_and_not_resent_though_the_lines_land(reference_rs: ReferenceOgcRs) -> None:
    """An OGC RS that answers after the client's read timeout, and stores the lines anyway."""
    reference_rs.faults.push("delay", 1.5)
    lines = make_lines(3)
    client = client_for(reference_rs, read_timeout_s=0.5)
    with pytest.raises(UncertainDeliveryError) as raised:
        client.deliver(lines)
    assert raised.value.logs == tuple(lines)
    assert reference_rs.wait_for_rows(3)
    time.sleep(0.5)
    assert reference_rs.row_count() == 3  # once: no retry of its own after the timeout
    assert len(posted_statuses(reference_rs)) == 1


@pytest.mark.parametrize("fault", ["drop", "store_then_drop"])
def test_a_connection_lost_after_sending_is_uncertain(reference_rs: ReferenceOgcRs, fault: str) -> None:
    reference_rs.faults.push(fault)
    lines = make_lines(2)
    with pytest.raises(UncertainDeliveryError) as raised:
        client_for(reference_rs).deliver(lines)
    assert raised.value.logs == tuple(lines)
    assert len(posted_statuses(reference_rs)) == 1
    assert reference_rs.row_count() == (2 if fault == "store_then_drop" else 0)


def test_a_connection_never_established_is_retried_then_fails_cleanly() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = http_session(retries=2, backoff_factor=0.01)
    with pytest.raises(requests.exceptions.ConnectionError) as raised:
        session.post(f"http://127.0.0.1:{port}/processes/x/execution", json={}, timeout=(1, 1))
    assert provably_not_sent(raised.value)
    assert "Max retries exceeded" in str(raised.value)


def test_a_read_timeout_is_not_provably_unsent(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("delay", 1.0)
    with pytest.raises(requests.RequestException, match="Read timed out") as raised:
        http_session().post(reference_rs.process_url, json={}, timeout=(1, 0.2))
    assert not provably_not_sent(raised.value)
    time.sleep(1.2)  # the delayed request is logged when its answer goes out
    assert len(posted_statuses(reference_rs)) == 1  # urllib3 did not send it again


def test_201_accepted_is_success(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.mode = "async"
    report = client_for(reference_rs).deliver(make_lines(3))
    assert report.delivered == 3
    assert reference_rs.row_count() == 3


def test_a_rejected_line_is_isolated_and_the_others_land(reference_rs: ReferenceOgcRs) -> None:
    lines = make_lines(9)
    reference_rs.poisoned_item_ids.add("item-6")
    report = client_for(reference_rs, batch_max_lines=4).deliver(lines)
    assert report.delivered == 8
    assert [rejected.line for rejected in report.rejected] == [lines[6]]
    assert "item-6" in report.rejected[0].message
    assert sorted(reference_rs.stored_lines()) == sorted(line for line in lines if line != lines[6])


def test_invalid_lines_are_never_sent(reference_rs: ReferenceOgcRs) -> None:
    good = make_lines(2)
    bad = [f"not-a-uuid|{COLLECTION}|i|2025-10-27T10:12:30Z|1|minio", f"{good[0]}|extra", ""]
    report = client_for(reference_rs).deliver([good[0], *bad, good[1]])
    assert report.delivered == 2
    assert [rejected.line for rejected in report.rejected] == bad
    assert reference_rs.stored_lines() == good


@pytest.mark.parametrize(
    ("change", "status"),
    [({"CLIENT_SECRET": "0" * 40}, "401"), ({"AUTH_ROLE": "consumer"}, "400"), ({"AUTH_ITEM_ID": "other"}, "400")],
)
def test_token_endpoint_faults_are_configuration_errors(
    reference_rs: ReferenceOgcRs, change: dict[str, str], status: str
) -> None:
    client = client_for(reference_rs, overrides=change)
    with pytest.raises(ConfigurationError, match=status) as raised:
        client.deliver(make_lines(1))
    assert reference_rs.client_secret not in str(raised.value)
    # Not retried in a loop: a second delivery fails fast without asking the auth server again.
    requests_before = reference_rs.token_requests
    with pytest.raises(ConfigurationError):
        client.deliver(make_lines(1))
    assert reference_rs.token_requests == requests_before


def test_role_not_held_is_a_configuration_error(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.role_held = False
    with pytest.raises(ConfigurationError, match="403"):
        client_for(reference_rs).deliver(make_lines(1))


def test_token_is_renewed_shortly_before_expiry(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.token_lifetime_s = 200  # inside the renewal margin: every call needs a new token
    client = client_for(reference_rs)
    client.deliver(make_lines(1))
    client.deliver(make_lines(1, item="again"))
    assert reference_rs.token_requests == 2
