"""The OGC RS client against the reference OGC RS over real HTTP on loopback."""

from __future__ import annotations

import functools
import time
import uuid

import pytest

from metering.errors import ConfigurationError, DeliveryError
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


def test_5xx_and_429_are_retried_with_backoff(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("status", 503).push("status", 500).push("status", 429, retry_after=0)
    report = client_for(reference_rs).deliver(make_lines(4))
    assert report.delivered == 4
    statuses = [record.status for record in reference_rs.requests_log if "processes" in record.path]
    assert statuses == [503, 500, 429, 200]
    assert reference_rs.row_count() == 4


def test_outage_past_the_retries_raises_delivery_error(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("status", 503, times=10)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="503"):
        client_for(reference_rs).deliver(make_lines(2))
    assert time.monotonic() - started < 30
    assert reference_rs.row_count() == 0


def test_dropped_connection_is_retried(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("drop")
    report = client_for(reference_rs).deliver(make_lines(2))
    assert report.delivered == 2
    assert reference_rs.row_count() == 2


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
