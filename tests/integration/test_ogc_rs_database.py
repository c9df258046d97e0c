"""OGC RS's database read-only, against the reference OGC RS's stores: PostgreSQL with OGC RS's DDL, and SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import requests

from metering.ogc_rs_database import OgcRsDatabaseError, RequestLanding, open_ogc_rs_database
from testbed.postgres import ThrowawayPostgres
from testbed.reference_rs import Fault, ReferenceOgcRs

COLLECTION = "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d"


def make_lines(count: int, item: str = "item", hour: int = 10) -> list[str]:
    return [
        f"{uuid.UUID(int=i + 1)}|{COLLECTION}|{item}-{i}|2025-10-27T{hour:02d}:12:{i % 60:02d}Z|{i * 10}|aws_s3"
        for i in range(count)
    ]


def post(rs: ReferenceOgcRs, logs: list[str], timeout: float = 10.0) -> requests.Response:
    return requests.post(
        rs.process_url,
        json={"inputs": {"logs": logs}},
        headers={"Authorization": f"Bearer {rs.issue_token()}"},
        timeout=timeout,
        allow_redirects=False,
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def rs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReferenceOgcRs]:
    """The reference OGC RS on each store."""
    if request.param == "postgresql":
        server = ReferenceOgcRs(database_url=request.getfixturevalue("postgres_url"))
    else:
        server = ReferenceOgcRs(db_path=str(tmp_path / "metering.sqlite3"))
    with server:
        yield server


def test_landing_follows_the_job_of_exactly_that_logs_array(rs: ReferenceOgcRs) -> None:
    sent, never_sent = make_lines(3, item='tuile "é"\\x/ü'), make_lines(3, item="other")
    assert post(rs, sent).status_code == 200
    invalid = [*make_lines(2, item="bad"), "not|a|line"]
    assert post(rs, invalid).status_code == 400
    with open_ogc_rs_database(rs.database_url) as database:
        assert database.landing(sent) is RequestLanding.STORED
        assert database.landing(never_sent) is RequestLanding.NOT_STORED
        # The refused request has a job, FAILED: nothing of it was stored.
        assert database.landing(invalid) is RequestLanding.NOT_STORED
        # Exactly that array: a part of it, or the same lines in another order, is another request.
        assert database.landing(sent[:2]) is RequestLanding.NOT_STORED
        assert database.landing(list(reversed(sent))) is RequestLanding.NOT_STORED
    assert sorted(rs.job_statuses().values()) == ["FAILED", "SUCCESSFUL"]


def test_a_job_still_running_is_pending(rs: ReferenceOgcRs) -> None:
    logs = make_lines(2)
    rs.store.start_job(str(uuid.uuid4()), rs.process_id, str(uuid.uuid4()), {"logs": logs})
    with open_ogc_rs_database(rs.database_url) as database:
        assert database.landing(logs) is RequestLanding.PENDING
        job_id = next(iter(rs.job_statuses()))
        rs.store.set_job_status(job_id, "RUNNING", "Starting")
        assert database.landing(logs) is RequestLanding.PENDING
        # The same logs sent again and stored: one SUCCESSFUL job is enough.
        assert post(rs, logs).status_code == 200
        assert database.landing(logs) is RequestLanding.STORED


def test_a_slow_ogc_rs_has_stored_before_the_client_gives_up(rs: ReferenceOgcRs) -> None:
    rs.faults.push_fault(Fault.store_then_delay(2.0))
    logs = make_lines(4)
    with pytest.raises(requests.ReadTimeout):
        post(rs, logs, timeout=0.5)
    assert rs.row_count() == 4  # committed on receipt, the answer still to come
    with open_ogc_rs_database(rs.database_url) as database:
        assert database.landing(logs) is RequestLanding.STORED
    rs.answer_latency_s = 0.5
    assert post(rs, make_lines(1, item="late")).status_code == 200
    assert rs.row_count() == 5


def test_rows_of_a_period_as_a_line_writes_them(rs: ReferenceOgcRs) -> None:
    assert post(rs, make_lines(3, hour=9)).status_code == 200
    assert post(rs, make_lines(5, hour=10)).status_code == 200
    assert post(rs, make_lines(2, hour=11)).status_code == 200
    since, until = datetime(2025, 10, 27, 10, tzinfo=UTC), datetime(2025, 10, 27, 11, tzinfo=UTC)
    with open_ogc_rs_database(rs.database_url) as database:
        rows = list(database.rows(since, until))
    assert [(row.user_id, row.collection_id, row.timestamp, row.resp_size) for row in rows] == [
        (str(uuid.UUID(int=i + 1)), COLLECTION, f"2025-10-27T10:12:{i:02d}Z", i * 10) for i in range(5)
    ]
    assert {row.api_path for row in rows} == {f"stac/collections/{COLLECTION}/items/item-{i}" for i in range(5)}
    assert len({row.id for row in rows}) == 5


def test_postgres_store_has_ogc_rs_column_types_and_writes_as_audit_logs_ingestion(postgres_url: str) -> None:
    with ReferenceOgcRs(database_url=postgres_url) as rs:
        size = 2**63 - 1
        line = f"{uuid.UUID(int=7)}|{COLLECTION.upper()}|tile/a b.tif|2025-10-27T15:42:30+05:30|{size}|minio"
        assert post(rs, [line]).status_code == 200
        (row,) = rs.rows()
        assert row.api_path == f"stac/collections/{COLLECTION.upper()}/items/tile/a b.tif"  # no leading slash
        assert row.timestamp == "2025-10-27T15:42:30"  # the offset dropped, not converted
        assert row.collection_id == COLLECTION  # uuid column: lower-case
        assert row.resp_size == 2**63 - 1
        assert rs.stored_lines() == [line]
    with psycopg.connect(postgres_url) as connection:
        types: dict[str, str] = dict(
            connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'metering'"
            ).fetchall()
        )
        identity = connection.execute(
            "SELECT is_identity, identity_generation FROM information_schema.columns"
            " WHERE table_name = 'metering' AND column_name = 'id'"
        ).fetchone()
        job_input, status = connection.execute("SELECT input, status::text FROM jobs_table").fetchone() or (None, None)
    assert types == {
        "id": "integer",
        "user_id": "uuid",
        "collection_id": "uuid",
        "api_path": "text",
        "timestamp": "timestamp without time zone",
        "resp_size": "bigint",
    }
    assert identity == ("YES", "BY DEFAULT")
    # OGC RS keeps the inputs object (not the whole body) with what its API layer adds.
    assert job_input == {"logs": [line], "processId": rs.process_id, "userId": job_input["userId"], "role": "admin"}
    assert status == "SUCCESSFUL"


def test_the_read_only_role_suffices_and_the_session_never_writes(
    postgres_server: ThrowawayPostgres, postgres_url: str
) -> None:
    with ReferenceOgcRs(database_url=postgres_url) as rs:
        logs = make_lines(2)
        assert post(rs, logs).status_code == 200
    role = f"reader_{uuid.uuid4().hex[:8]}"
    reader_url = postgres_server.create_read_only_role(postgres_url, role, ("metering", "jobs_table"))
    since, until = datetime(2025, 10, 27, tzinfo=UTC), datetime(2025, 10, 28, tzinfo=UTC)
    with open_ogc_rs_database(reader_url) as database:
        assert database.landing(logs) is RequestLanding.STORED
        assert len(list(database.rows(since, until))) == 2
    # Even as the owner, the session this module opens refuses to write.
    with open_ogc_rs_database(postgres_url) as database:
        connection = database._connection  # type: ignore[attr-defined]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            connection.execute("DELETE FROM metering")
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute("SELECT COUNT(*) FROM metering").fetchone() == (2,)


def test_rows_outside_stac_downloads_are_left_out(postgres_url: str) -> None:
    with ReferenceOgcRs(database_url=postgres_url) as rs:
        assert post(rs, make_lines(1)).status_code == 200
    with psycopg.connect(postgres_url) as connection:  # OGC RS's own API metering writes paths with a leading /
        connection.execute(
            "INSERT INTO metering (user_id, collection_id, api_path, timestamp, resp_size)"
            " VALUES (%s, %s, %s, '2025-10-27T10:30:00', 5)",
            (str(uuid.UUID(int=1)), COLLECTION, f"/collections/{COLLECTION}/items"),
        )
    with open_ogc_rs_database(postgres_url) as database:
        rows = list(database.rows(datetime(2025, 10, 27, tzinfo=UTC), datetime(2025, 10, 28, tzinfo=UTC)))
    assert [row.api_path for row in rows] == [f"stac/collections/{COLLECTION}/items/item-0"]


def test_errors_are_one_sentence_without_the_password(postgres_server: ThrowawayPostgres, tmp_path: Path) -> None:
    with pytest.raises(OgcRsDatabaseError, match="unsupported database URL scheme 'mysql'"):
        open_ogc_rs_database("mysql://u:p@127.0.0.1/x")
    with pytest.raises(OgcRsDatabaseError, match="cannot open the SQLite metering file"):
        open_ogc_rs_database(f"sqlite:///{tmp_path / 'absent.sqlite3'}")
    url = f"postgresql://postgres:s3cret-pass@127.0.0.1:{postgres_server.port}/no_such_database"
    with pytest.raises(OgcRsDatabaseError) as raised:
        open_ogc_rs_database(url)
    assert "127.0.0.1" in str(raised.value)
    assert "s3cret-pass" not in str(raised.value)
