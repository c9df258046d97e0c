"""The reference OGC RS enforces the real servers' contract (docs/contracts.md), over loopback HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from testbed.reference_rs import Fault, FaultKind, FaultPlan, ReferenceOgcRs, parse_log_line

USER = "6f2c1a4e-0b9d-4c1e-9a57-3e2d8f1b0c11"
COLLECTION = "0d4f2b7a-8c3e-4f6a-b1d2-5e9c7a3f8b22"
GOOD_LINE = f"{USER}|{COLLECTION}|item-1|2025-10-27T10:12:30Z|16384|aws_s3"
TIMEOUT = 5.0


def token_request(
    rs: ReferenceOgcRs,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    body: dict[str, Any] | None = None,
) -> requests.Response:
    """POST the token endpoint with the server's credentials unless others are given."""
    headers = {"clientId": client_id or rs.client_id, "clientSecret": client_secret or rs.client_secret}
    payload = body if body is not None else {"itemId": rs.rs_host, "itemType": "resource_server", "role": "admin"}
    return requests.post(rs.token_url, headers=headers, json=payload, timeout=TIMEOUT)


def token(rs: ReferenceOgcRs) -> str:
    """A valid token obtained over HTTP."""
    response = token_request(rs)
    assert response.status_code == 200
    return str(response.json()["results"]["accessToken"])


def execute(rs: ReferenceOgcRs, logs: Any, *, bearer: str | None = None, timeout: float = TIMEOUT) -> requests.Response:
    """POST the process with ``{"inputs": {"logs": logs}}`` and a fresh token unless one is given."""
    authorization = f"Bearer {bearer if bearer is not None else rs.issue_token()}"
    return requests.post(
        rs.process_url,
        headers={"Authorization": authorization},
        json={"inputs": {"logs": logs}},
        timeout=timeout,
    )


def line(**fields: str) -> str:
    """GOOD_LINE with some fields replaced."""
    values = {
        "user": USER,
        "collection": COLLECTION,
        "item": "item-1",
        "timestamp": "2025-10-27T10:12:30Z",
        "size": "16384",
        "backend": "aws_s3",
    }
    values.update(fields)
    return "|".join(values.values())


# ---- token endpoint -----------------------------------------------------------------------------


def test_token_success_returns_token_expiry_and_audience(reference_rs: ReferenceOgcRs) -> None:
    before = time.time()
    response = token_request(reference_rs)

    assert response.status_code == 200
    document = response.json()
    assert document["type"] == "urn:dx:as:Success"
    assert document["title"] == "Token created"
    results = document["results"]
    assert results["server"] == reference_rs.rs_host
    assert before + 12 * 3600 - 5 <= results["expiry"] <= time.time() + 12 * 3600
    assert results["accessToken"].count(".") == 2  # JWT-like
    assert reference_rs.token_requests == 1


def test_default_credentials_have_the_documented_shapes(reference_rs: ReferenceOgcRs) -> None:
    assert len(reference_rs.client_id) == 36
    assert len(reference_rs.client_secret) == 40
    int(reference_rs.client_secret, 16)


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [("00000000-0000-0000-0000-000000000000", None), (None, "0" * 40)],
)
def test_token_with_bad_client_credentials_is_401(
    reference_rs: ReferenceOgcRs, client_id: str | None, client_secret: str | None
) -> None:
    response = token_request(reference_rs, client_id=client_id, client_secret=client_secret)

    assert response.status_code == 401
    assert set(response.json()) == {"type", "title", "detail"}
    assert reference_rs.tokens_issued == 0


@pytest.mark.parametrize(
    "body",
    [
        {"itemId": "other.host", "itemType": "resource_server", "role": "admin"},
        {"itemId": "ogc-rs.reference.test", "itemType": "resource_group", "role": "admin"},
        {"itemId": "ogc-rs.reference.test", "itemType": "resource_server", "role": "consumer"},
        {},
    ],
)
def test_token_with_bad_item_or_role_is_400(reference_rs: ReferenceOgcRs, body: dict[str, Any]) -> None:
    response = token_request(reference_rs, body=body)

    assert response.status_code == 400
    assert set(response.json()) == {"type", "title", "detail"}


def test_token_for_a_role_not_held_is_403(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.role_held = False

    response = token_request(reference_rs)

    assert response.status_code == 403
    assert response.json()["type"].startswith("urn:dx:as:")


def test_token_lifetime_is_configurable_and_expired_tokens_are_refused() -> None:
    now = [1_000_000.0]
    with ReferenceOgcRs(token_lifetime_s=60, clock=lambda: now[0]) as rs:
        access = token(rs)
        assert token_request(rs).json()["results"]["expiry"] == 1_000_060
        assert execute(rs, [GOOD_LINE], bearer=access).status_code == 200

        now[0] += 61

        assert execute(rs, [GOOD_LINE], bearer=access).status_code == 401


# ---- process authentication ---------------------------------------------------------------------


def test_process_without_authorization_is_401(reference_rs: ReferenceOgcRs) -> None:
    response = requests.post(reference_rs.process_url, json={"inputs": {"logs": [GOOD_LINE]}}, timeout=TIMEOUT)

    assert response.status_code == 401
    assert response.json()["code"] == "Unauthorized"
    assert "description" in response.json()
    assert reference_rs.row_count() == 0


@pytest.mark.parametrize("authorization", ["Bearer not-a-token", "bearer {token}", "{token}", "Bearer  {token}"])
def test_process_with_a_wrong_token_or_scheme_is_401(reference_rs: ReferenceOgcRs, authorization: str) -> None:
    header = authorization.format(token=reference_rs.issue_token())

    response = requests.post(
        reference_rs.process_url,
        headers={"Authorization": header},
        json={"inputs": {"logs": [GOOD_LINE]}},
        timeout=TIMEOUT,
    )

    assert response.status_code == 401
    assert reference_rs.row_count() == 0


def test_token_from_another_server_is_401(reference_rs: ReferenceOgcRs) -> None:
    with ReferenceOgcRs() as other:
        foreign = token(other)

    assert execute(reference_rs, [GOOD_LINE], bearer=foreign).status_code == 401


def test_revoked_token_is_401_and_a_new_token_works(reference_rs: ReferenceOgcRs) -> None:
    access = token(reference_rs)
    assert execute(reference_rs, [GOOD_LINE], bearer=access).status_code == 200

    reference_rs.revoke_tokens()

    assert execute(reference_rs, [GOOD_LINE], bearer=access).status_code == 401
    assert execute(reference_rs, [GOOD_LINE], bearer=token(reference_rs)).status_code == 200
    assert reference_rs.row_count() == 2


def test_unknown_process_id_is_404(reference_rs: ReferenceOgcRs) -> None:
    url = reference_rs.process_url.replace(reference_rs.process_id, "11111111-1111-1111-1111-111111111111")

    response = requests.post(
        url,
        headers={"Authorization": f"Bearer {reference_rs.issue_token()}"},
        json={"inputs": {"logs": [GOOD_LINE]}},
        timeout=TIMEOUT,
    )

    assert response.status_code == 404


def test_unknown_paths_are_404(reference_rs: ReferenceOgcRs) -> None:
    assert requests.get(reference_rs.base_url + "/nowhere", timeout=TIMEOUT).status_code == 404
    assert requests.post(reference_rs.base_url + "/processes", json={}, timeout=TIMEOUT).status_code == 404


def test_process_list_names_the_audit_logs_ingestion_process(reference_rs: ReferenceOgcRs) -> None:
    response = requests.get(reference_rs.base_url + "/processes", timeout=TIMEOUT)

    assert response.status_code == 200
    [process] = response.json()["processes"]
    assert process["title"] == "AuditLogsIngestion"
    assert process["id"] == reference_rs.process_id


# ---- line validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (line(user="not-a-uuid"), "UUID"),
        (line(collection="0d4f2b7a8c3e4f6ab1d25e9c7a3f8b22"), "UUID"),
        (line(user="{6f2c1a4e-0b9d-4c1e-9a57-3e2d8f1b0c11}"), "UUID"),
        (f"{USER}|{COLLECTION}|item-1|2025-10-27T10:12:30Z|16384", "6 fields"),
        (GOOD_LINE + "|extra", "6 fields"),
        (line(item="a|b"), "6 fields"),
        (line(item=""), "Missing required"),
        (line(item="   "), "Missing required"),
        (line(size=""), "Missing required"),
        (line(timestamp="2025-10-27T10:12:30"), "timestamp"),
        (line(timestamp="2025-10-27 10:12:30Z"), "timestamp"),
        (line(timestamp="2025-02-30T10:12:30Z"), "timestamp"),
        (line(timestamp="1761560000"), "timestamp"),
        (line(size="16384.0"), "respSize"),
        (line(size="abc"), "respSize"),
        (line(size="1e3"), "respSize"),
        (line(size="9223372036854775808"), "respSize"),
    ],
)
def test_an_invalid_line_is_400_naming_the_rule(reference_rs: ReferenceOgcRs, bad_line: str, reason: str) -> None:
    response = execute(reference_rs, [bad_line])

    assert response.status_code == 400
    document = response.json()
    assert document["code"] == "Bad Request"
    assert reason in document["description"]
    assert "#1" in document["description"]
    assert reference_rs.row_count() == 0


@pytest.mark.parametrize(
    "good_line",
    [
        GOOD_LINE,
        line(backend=""),
        line(size="-5"),
        line(size="+7"),
        line(size="0"),
        line(timestamp="2025-10-27T10:12Z"),
        line(timestamp="2025-10-27t10:12:30z"),
        line(timestamp="2025-10-27T10:12:30.123456789+05:30"),
        line(user=USER.upper()),
        f"  {USER} | {COLLECTION} |\titem-1 | 2025-10-27T10:12:30Z | 16384 | minio ",
    ],
)
def test_valid_line_variants_are_accepted(reference_rs: ReferenceOgcRs, good_line: str) -> None:
    response = execute(reference_rs, [good_line])

    assert response.status_code == 200, response.text
    assert reference_rs.stored_lines() == [good_line]


def test_one_invalid_line_rejects_the_whole_batch(reference_rs: ReferenceOgcRs) -> None:
    response = execute(reference_rs, [GOOD_LINE, GOOD_LINE, line(size="16384.0"), GOOD_LINE])

    assert response.status_code == 400
    assert "#3" in response.json()["description"]
    assert reference_rs.rows() == []
    assert reference_rs.stored_lines() == []


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_an_empty_line_or_null_is_500_and_stores_nothing(reference_rs: ReferenceOgcRs, empty: str | None) -> None:
    response = execute(reference_rs, [GOOD_LINE, empty])

    assert response.status_code == 500
    assert response.json()["code"] == "Internal Server Error"
    assert reference_rs.row_count() == 0


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'{"inputs": {}}', b'{"logs": []}', b'{"inputs": {"logs": "x"}}', b'{"inputs": []}'],
)
def test_malformed_bodies_are_400(reference_rs: ReferenceOgcRs, body: bytes) -> None:
    response = requests.post(
        reference_rs.process_url,
        headers={"Authorization": f"Bearer {reference_rs.issue_token()}", "Content-Type": "application/json"},
        data=body,
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    assert response.json()["code"] == "Bad Request"


def test_parse_log_line_reports_the_stored_values() -> None:
    parsed = parse_log_line(line(collection=COLLECTION.upper(), timestamp="2025-10-27T23:59:59.9999999-03:00"))

    assert parsed.collection_id == COLLECTION
    assert parsed.api_path == f"stac/collections/{COLLECTION.upper()}/items/item-1"
    assert parsed.timestamp == "2025-10-28T00:00:00"  # offset dropped, rounded to microseconds


# ---- success and storage ------------------------------------------------------------------------


def test_sync_success_is_200_and_rows_have_api_path_and_local_time(reference_rs: ReferenceOgcRs) -> None:
    logs = [GOOD_LINE, line(item="scene 2.tif", timestamp="2025-10-27T10:12:30+05:30", size="-5", backend="")]

    response = execute(reference_rs, logs)

    assert response.status_code == 200
    document = response.json()
    assert document["status"] == "successful"
    assert document["logsInserted"] == 2
    assert document["jobID"]
    rows = reference_rs.rows()
    assert [row[1:] for row in rows] == [
        (USER, COLLECTION, f"stac/collections/{COLLECTION}/items/item-1", "2025-10-27T10:12:30", 16384),
        (USER, COLLECTION, f"stac/collections/{COLLECTION}/items/scene 2.tif", "2025-10-27T10:12:30", -5),
    ]
    assert reference_rs.stored_lines() == logs
    assert rows[0]._asdict()["api_path"].startswith("stac/collections/")


def test_async_mode_answers_201_accepted(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.mode = "async"

    response = execute(reference_rs, [GOOD_LINE])

    assert response.status_code == 201
    document = response.json()
    assert document["status"] == "ACCEPTED"
    assert reference_rs.jobs[document["jobId"]].status == "successful"
    assert reference_rs.row_count() == 1


def test_async_mode_accepts_an_invalid_batch_then_fails_the_job(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.mode = "async"
    access = reference_rs.issue_token()

    response = execute(reference_rs, [GOOD_LINE, line(user="nope")], bearer=access)

    assert response.status_code == 201
    job = requests.get(
        f"{reference_rs.base_url}/jobs/{response.json()['jobId']}",
        headers={"Authorization": f"Bearer {access}"},
        timeout=TIMEOUT,
    ).json()
    assert job["status"] == "failed"
    assert "UUID" in job["message"]
    assert reference_rs.row_count() == 0


def test_an_empty_logs_array_inserts_nothing(reference_rs: ReferenceOgcRs) -> None:
    response = execute(reference_rs, [])

    assert response.status_code == 200
    assert response.json()["logsInserted"] == 0


def test_duplicates_are_stored_twice(reference_rs: ReferenceOgcRs) -> None:
    assert execute(reference_rs, [GOOD_LINE, GOOD_LINE]).status_code == 200
    assert execute(reference_rs, [GOOD_LINE]).status_code == 200

    assert reference_rs.row_count() == 3
    assert reference_rs.stored_lines() == [GOOD_LINE] * 3


def test_requests_log_records_method_path_status_and_lines(reference_rs: ReferenceOgcRs) -> None:
    token(reference_rs)
    execute(reference_rs, [GOOD_LINE, GOOD_LINE])

    token_record, process_record = reference_rs.requests_log
    assert (token_record.method, token_record.path, token_record.status) == ("POST", "/auth/v1/token", 200)
    assert (process_record.status, process_record.lines, process_record.fault) == (200, 2, None)


def test_file_database_persists_across_instances(tmp_path: Any) -> None:
    db = str(tmp_path / "metering.sqlite3")
    with ReferenceOgcRs(db_path=db) as rs:
        assert execute(rs, [GOOD_LINE]).status_code == 200
    with ReferenceOgcRs(db_path=db) as rs:
        assert rs.stored_lines() == [GOOD_LINE]


# ---- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_status_fault_answers_the_status_with_retry_after_and_stores_nothing(
    reference_rs: ReferenceOgcRs, status: int
) -> None:
    reference_rs.faults.push("status", status, retry_after=2)

    response = execute(reference_rs, [GOOD_LINE])

    assert response.status_code == status
    assert response.headers["Retry-After"] == "2"
    assert reference_rs.row_count() == 0
    assert execute(reference_rs, [GOOD_LINE]).status_code == 200  # the script is consumed


def test_drop_fault_raises_connection_error_and_stores_nothing(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("drop")

    with pytest.raises(requests.ConnectionError):
        execute(reference_rs, [GOOD_LINE])

    assert reference_rs.row_count() == 0
    assert reference_rs.requests_log[-1].status is None
    assert reference_rs.requests_log[-1].fault is FaultKind.DROP


def test_store_then_drop_commits_rows_but_never_answers(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("store_then_drop")

    with pytest.raises(requests.ConnectionError):
        execute(reference_rs, [GOOD_LINE, GOOD_LINE])

    assert reference_rs.row_count() == 2


def test_delay_fault_exceeds_a_short_client_timeout_then_stores(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("delay", 1.0)

    with pytest.raises(requests.Timeout):
        execute(reference_rs, [GOOD_LINE], timeout=0.1)

    assert reference_rs.row_count() == 0
    assert reference_rs.wait_for_rows(1, timeout_s=3)


def test_unauthorized_fault_answers_401_like_an_expired_token(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("unauthorized")

    response = execute(reference_rs, [GOOD_LINE])

    assert response.status_code == 401
    assert response.json()["code"] == "Unauthorized"
    assert reference_rs.row_count() == 0


def test_scripted_faults_are_consumed_in_order(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.faults.push("status", 503).push("ok").push("status", 500, times=2)

    statuses = [execute(reference_rs, [GOOD_LINE]).status_code for _ in range(5)]

    assert statuses == [503, 200, 500, 500, 200]
    assert reference_rs.faults.pending == 0
    assert [fault.status for fault in reference_rs.faults.applied] == [503, 500, 500]


def test_token_faults_apply_to_the_token_endpoint_only(reference_rs: ReferenceOgcRs) -> None:
    reference_rs.token_faults.push("status", 500)

    assert token_request(reference_rs).status_code == 500
    assert execute(reference_rs, [GOOD_LINE]).status_code == 200
    assert token_request(reference_rs).status_code == 200


def test_random_faults_are_reproducible_with_a_seed() -> None:
    def draws(seed: int) -> list[FaultKind]:
        plan = FaultPlan().randomize([(Fault.with_status(503), 0.3), (Fault.drop(), 0.2)], seed=seed)
        return [plan.next_fault().kind for _ in range(200)]

    first = draws(7)

    assert first == draws(7)
    assert first != draws(8)
    assert 40 <= first.count(FaultKind.STATUS) <= 80
    assert 20 <= first.count(FaultKind.DROP) <= 60
    assert FaultKind.OK in first


def test_random_faults_apply_over_http() -> None:
    with ReferenceOgcRs() as rs:
        rs.faults.randomize([(Fault.with_status(503), 1.0)], seed=1)
        assert execute(rs, [GOOD_LINE]).status_code == 503
        rs.faults.clear()
        assert execute(rs, [GOOD_LINE]).status_code == 200


@pytest.mark.parametrize(
    ("kind", "value"),
    [("status", None), ("status", 200), ("delay", None), ("delay", -1), ("drop", 1), ("explode", None)],
)
def test_invalid_fault_scripts_are_refused(kind: str, value: float | None) -> None:
    with pytest.raises(ValueError, match=r".+"):
        FaultPlan().push(kind, value)


def test_close_ends_a_pending_delay_quickly() -> None:
    rs = ReferenceOgcRs().start()
    rs.faults.push("delay", 30)
    with pytest.raises(requests.Timeout):
        execute(rs, [GOOD_LINE], timeout=0.1)

    started = time.monotonic()
    rs.close()

    assert time.monotonic() - started < 2
