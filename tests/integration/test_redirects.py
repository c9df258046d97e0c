"""A 3xx from the token endpoint or OGC RS is a configuration error: never followed, never a success, counted in
its own failure kind, logged with the Location host only (real HTTP on loopback against the reference OGC RS)."""

from __future__ import annotations

import logging
import uuid

import pytest

from metering.errors import RedirectError
from metering.metrics import delivery_failure_kind
from metering.ogc_rs import http_session
from testbed.reference_rs import FaultKind, ReferenceOgcRs
from tests import helpers

COLLECTION = "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d"
LINES = [f"{uuid.UUID(int=1)}|{COLLECTION}|item-{index}|2025-10-27T10:12:30Z|10|aws_s3" for index in range(3)]
REDIRECTS = [301, 302, 303, 307, 308]


@pytest.mark.parametrize("status", REDIRECTS)
def test_token_endpoint_redirect_is_not_followed(
    reference_rs: ReferenceOgcRs, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    reference_rs.token_faults.push("redirect", status)
    client = helpers.client_for(reference_rs)

    with pytest.raises(RedirectError) as raised:
        client.deliver(LINES)

    # The credentials never reached the other host, and nothing was stored.
    assert reference_rs.redirected_requests == []
    assert reference_rs.row_count() == 0
    message = str(raised.value)
    assert str(status) in message
    assert "127.0.0.1" in message  # the Location host, so an operator can fix the URL
    assert "never-log-this" not in message
    assert "/elsewhere" not in message
    assert reference_rs.client_secret not in message
    assert delivery_failure_kind(raised.value) == "redirect"


@pytest.mark.parametrize("status", REDIRECTS)
def test_process_redirect_is_not_a_success(reference_rs: ReferenceOgcRs, status: int) -> None:
    reference_rs.faults.push("redirect", status)
    client = helpers.client_for(reference_rs)
    settled: list[int] = []

    with pytest.raises(RedirectError) as raised:
        client.deliver(LINES, on_settled=settled.extend)

    # Followed, the sink would have answered 200 and the lines would count as delivered while never stored.
    assert reference_rs.redirected_requests == []
    assert settled == []
    assert "never-log-this" not in str(raised.value)
    assert [record.fault for record in reference_rs.requests_log if record.fault] == [FaultKind.REDIRECT]
    # Retried like any failure: the next attempt (the SQS redelivery) stores the lines.
    assert client.deliver(LINES).delivered == 3
    assert reference_rs.stored_lines() == LINES


def test_retry_policy_never_follows_redirects(reference_rs: ReferenceOgcRs) -> None:
    # Even a call that forgets allow_redirects=False gets the 3xx itself, not the sink's 200.
    session = http_session(retries=1, backoff_factor=0.01)
    reference_rs.faults.push("redirect", 307)

    response = session.post(reference_rs.process_url, json={"inputs": {"logs": LINES}}, timeout=5)

    assert response.status_code == 307
    assert reference_rs.redirected_requests == []


def test_redirect_log_lines_carry_the_host_only(reference_rs: ReferenceOgcRs, caplog: pytest.LogCaptureFixture) -> None:
    reference_rs.faults.push("redirect", 302)
    client = helpers.client_for(reference_rs)

    with caplog.at_level(logging.DEBUG), pytest.raises(RedirectError):
        client.deliver(LINES)

    assert "never-log-this" not in caplog.text
