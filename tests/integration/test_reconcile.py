"""``ogc-audit reconcile`` against a real PostgreSQL holding OGC RS's tables (the reference OGC RS writes them).

The period is constructed: downloads with their row, without one, with three, two equal downloads with one row, a
row no download explains, and rows and downloads outside the comparison. The report must list exactly those.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import requests

from ogc_audit.cli import main as cli_main
from ogc_audit.reconcile import ReconcileRequest, run_reconcile
from testbed.local_aws import local_aws
from testbed.postgres import ThrowawayPostgres
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import (
    Download,
    access_log_key,
    access_log_line,
    cloudtrail_log_file,
    cloudtrail_log_key,
    cloudtrail_record,
    minio_body,
    minio_entry,
    random_download,
    utc,
)
from tests import helpers

SINCE, UNTIL = "2025-10-27T10:00:00Z", "2025-10-27T11:00:00Z"
START = utc("2025-10-27T10:00:00")


def line_of(download: Download, backend: str = "aws_s3") -> str:
    """The line the pipeline sends for a download (time truncated to the second, UTC)."""
    return (
        f"{download.user_id}|{download.collection_id}|{download.item_id}|{download.when:%Y-%m-%dT%H:%M:%SZ}"
        f"|{download.size}|{backend}"
    )


def key_of(download: Download) -> str:
    """The report's key: the line without its backend, the two uuids in lower case."""
    user, collection, rest = line_of(download).rsplit("|", 1)[0].split("|", 2)
    return f"{user.lower()}|{collection.lower()}|{rest}"


def post(rs: ReferenceOgcRs, logs: list[str]) -> None:
    response = requests.post(
        rs.process_url,
        json={"inputs": {"logs": logs}},
        headers={"Authorization": f"Bearer {rs.issue_token()}"},
        timeout=10,
        allow_redirects=False,
    )
    assert response.status_code == 200, response.text


def reconcile(*inputs: str, **options: object) -> tuple[int, dict[str, object] | None, str]:
    """Run the command in process: exit status, the JSON report (when asked on stdout) and stderr."""
    out, err = io.StringIO(), io.StringIO()
    request = ReconcileRequest(
        source=str(options.pop("source", "cloudtrail")),
        since=str(options.pop("since", SINCE)),
        until=str(options.pop("until", UNTIL)),
        inputs=inputs,
        **options,  # type: ignore[arg-type]
    )
    status = run_reconcile(request, out=out, err=err)
    report = json.loads(out.getvalue()) if request.json_path == "-" and out.getvalue() else None
    return status, report, err.getvalue()


@dataclasses.dataclass
class ConstructedPeriod:
    """The downloads of a CloudTrail log file and the rows the reference OGC RS holds for them."""

    rs: ReferenceOgcRs
    log_file: Path
    downloads: dict[str, Download]
    unexpected_line: str


@pytest.fixture
def period(postgres_url: str, tmp_path: Path) -> Iterator[ConstructedPeriod]:
    rng = random.Random(17)
    named = {name: random_download(rng, START + timedelta(minutes=5)) for name in ("a", "b", "missing", "tripled")}
    # Ids written in upper case in the query string: OGC RS stores uuids in lower case; the key ignores the case.
    named["shouting"] = dataclasses.replace(
        random_download(rng, START), user_id=str(uuid.uuid4()).upper(), collection_id=str(uuid.uuid4()).upper()
    )
    # Two downloads with equal fields (the same second, the same bytes) but two requests: they need two rows.
    named["twin1"] = random_download(rng, START + timedelta(minutes=30))
    named["twin2"] = dataclasses.replace(named["twin1"], event_id=str(uuid.uuid4()))
    # Outside the period: before it, and at `until` exactly (exclusive).
    named["early"] = dataclasses.replace(random_download(rng, START), when=START - timedelta(seconds=1))
    named["at_until"] = dataclasses.replace(random_download(rng, START), when=utc("2025-10-27T11:00:00"))
    log_file = tmp_path / "trail.json.gz"
    log_file.write_bytes(cloudtrail_log_file(cloudtrail_record(download) for download in named.values()))
    unexpected = line_of(random_download(rng, START + timedelta(minutes=40)))
    with ReferenceOgcRs(database_url=postgres_url) as rs:
        lines = {name: line_of(download) for name, download in named.items()}
        post(rs, [lines["a"], lines["b"], lines["shouting"], lines["tripled"], lines["twin1"]])
        post(rs, [lines["tripled"], lines["early"], lines["at_until"]])
        post(rs, [lines["tripled"], unexpected])
        with psycopg.connect(postgres_url) as connection:  # OGC RS's own API metering: a path with a leading /
            connection.execute(
                "INSERT INTO metering (user_id, collection_id, api_path, timestamp, resp_size)"
                " VALUES (%s, %s, '/stac/collections/x/items', '2025-10-27T10:20:00', 100)",
                (str(uuid.uuid4()), str(uuid.uuid4())),
            )
        yield ConstructedPeriod(rs, log_file, named, unexpected)


def use_period_rs(period: ConstructedPeriod, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this process's OGC RS settings (what --repair sends with) at the period's reference OGC RS."""
    for name, value in helpers.ogc_rs_env(period.rs).items():
        monkeypatch.setenv(name, value)


def row_ids_of(rs: ReferenceOgcRs, line: str) -> list[int]:
    """The ids of the rows of a line's user (each user id of these tests is drawn afresh)."""
    user_id = line.split("|", 1)[0].lower()
    return [row.id for row in rs.rows() if row.user_id == user_id]


def test_a_constructed_period_is_reported_exactly(
    period: ConstructedPeriod, postgres_server: ThrowawayPostgres, postgres_url: str
) -> None:
    role = f"reconciler_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide: one name per test
    reader = postgres_server.create_read_only_role(postgres_url, role, ("metering", "jobs_table"))
    status, report, summary = reconcile(str(period.log_file), database_url=reader, json_path="-")
    assert status == 1
    named = period.downloads
    tripled_ids = row_ids_of(period.rs, line_of(named["tripled"]))
    (unexpected_id,) = row_ids_of(period.rs, period.unexpected_line)
    assert (
        report
        == {
            "since": SINCE,
            "until": UNTIL,
            "downloads": 7,  # a, b, missing, tripled, shouting, twin1, twin2
            "rows": 8,  # a, b, shouting, tripled x3, twin1, unexpected: not early, at_until or the API row
            "matched": 5,
            "missing": sorted([line_of(named["missing"]), line_of(named["twin1"])], key=lambda line: line.lower()),
            "duplicated": [{"line": key_of(named["tripled"]), "expected": 1, "row_ids": tripled_ids[1:]}],
            "unexpected": [{"line": period.unexpected_line.rsplit("|", 1)[0], "row_id": unexpected_id}],
        }
    )
    assert "7 downloads, 8 rows, 2 missing, 2 duplicated, 1 unexpected" in summary


def test_repair_twice_sends_the_missing_lines_once(
    period: ConstructedPeriod, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_period_rs(period, monkeypatch)
    ledger = str(tmp_path / "repair-ledger.sqlite3")
    before = len(period.rs.stored_lines())
    status, _, summary = reconcile(str(period.log_file), database_url=postgres_url, repair=True, ledger=ledger)
    assert status == 1  # the period as found
    assert "repaired: 2 lines sent, 0 sent by an earlier repair" in summary
    repaired = period.rs.stored_lines()[before:]
    assert sorted(repaired) == sorted([line_of(period.downloads["missing"]), line_of(period.downloads["twin1"])])

    # The repaired rows vanish from view (say, a replica lagging): the second repair still sends nothing.
    with psycopg.connect(postgres_url) as connection:
        connection.execute("DELETE FROM metering WHERE id > (SELECT MAX(id) - 2 FROM metering)")
    requests_before = len(period.rs.requests_log)
    status, _, summary = reconcile(str(period.log_file), database_url=postgres_url, repair=True, ledger=ledger)
    assert status == 1
    assert "2 missing" in summary
    assert "repaired: 0 lines sent, 2 sent by an earlier repair" in summary
    assert len(period.rs.requests_log) == requests_before


def test_a_repair_whose_answer_was_lost_is_settled_through_the_database_it_reads(
    period: ConstructedPeriod, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_period_rs(period, monkeypatch)
    monkeypatch.delenv("OGC_RS_DATABASE_URL", raising=False)  # only --database-url names the database
    ledger = str(tmp_path / "repair-ledger.sqlite3")
    period.rs.faults.push("store_then_drop")  # the repair's lines are stored, its answer is lost
    status, _, summary = reconcile(str(period.log_file), database_url=postgres_url, repair=True, ledger=ledger)
    assert status == 2
    assert "repair stopped" in summary
    stored = sorted([line_of(period.downloads["missing"]), line_of(period.downloads["twin1"])])
    assert sorted(period.rs.stored_lines()[-2:]) == stored

    # The rows vanish from view (a lagging replica): the next repair asks jobs_table, finds that request
    # stored and sends nothing, instead of waiting out the grace period or sending again.
    with psycopg.connect(postgres_url) as connection:
        connection.execute("DELETE FROM metering WHERE id > (SELECT MAX(id) - 2 FROM metering)")
    requests_before = len(period.rs.requests_log)
    status, _, summary = reconcile(str(period.log_file), database_url=postgres_url, repair=True, ledger=ledger)
    assert status == 1, summary
    assert "repaired: 0 lines sent" in summary
    assert len(period.rs.requests_log) == requests_before


def test_delete_sql_and_repair_leave_an_exact_period(
    period: ConstructedPeriod, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_period_rs(period, monkeypatch)
    # The unexpected row is the operator's to explain; remove it, as an operator would after checking it.
    (unexpected_id,) = row_ids_of(period.rs, period.unexpected_line)
    with psycopg.connect(postgres_url) as connection:
        connection.execute("DELETE FROM metering WHERE id = %s", (unexpected_id,))
    delete_sql = tmp_path / "surplus.sql"
    ledger = str(tmp_path / "ledger.sqlite3")
    status, _, summary = reconcile(
        str(period.log_file), database_url=postgres_url, repair=True, delete_sql=str(delete_sql), ledger=ledger
    )
    assert status == 1
    sql = delete_sql.read_text()
    surplus = row_ids_of(period.rs, line_of(period.downloads["tripled"]))[1:]
    assert f"DELETE FROM metering WHERE id IN ({', '.join(map(str, surplus))});" in sql
    with psycopg.connect(postgres_url) as connection:  # the owner role runs the reviewed file
        connection.execute(sql)
    status, report, summary = reconcile(str(period.log_file), database_url=postgres_url, json_path="-")
    assert status == 0, summary
    assert report is not None
    assert (report["downloads"], report["rows"], report["matched"]) == (7, 7, 7)
    assert (report["missing"], report["duplicated"], report["unexpected"]) == ([], [], [])
    assert "7 downloads, 7 rows, 0 missing, 0 duplicated" in summary


def test_cloudtrail_and_access_logs_under_one_prefix_count_each_request_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(3)
    downloads = [random_download(rng, START + timedelta(minutes=10)) for _ in range(4)]
    with ReferenceOgcRs(database_url=postgres_url) as rs, local_aws(enforce_iam=False):
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="audit-logs")
        # CloudTrail reports all four; the access log three of them (the same requests) and one of its own.
        extra = random_download(rng, START + timedelta(minutes=20))
        s3.put_object(
            Bucket="audit-logs",
            Key=cloudtrail_log_key(START + timedelta(minutes=15), "a"),
            Body=cloudtrail_log_file(cloudtrail_record(download) for download in downloads),
        )
        s3.put_object(
            Bucket="audit-logs",
            Key=access_log_key(START + timedelta(hours=2), "b"),
            Body="".join(access_log_line(download) + "\n" for download in [*downloads[:3], extra]).encode(),
        )
        # A log file written long after the period (past the delivery lag) is not read.
        late = random_download(rng, START + timedelta(minutes=30))
        s3.put_object(
            Bucket="audit-logs",
            Key=access_log_key(START + timedelta(days=3), "c"),
            Body=(access_log_line(late) + "\n").encode(),
        )
        post(rs, [line_of(download) for download in [*downloads, extra]])
        status, report, summary = reconcile(
            "s3://audit-logs/", source="s3-access-log", database_url=postgres_url, json_path="-"
        )
    assert status == 0, summary
    assert report is not None
    assert (report["downloads"], report["rows"], report["matched"]) == (5, 5, 5)


def test_minio_files_and_the_reference_sqlite_file(tmp_path: Path) -> None:
    rng = random.Random(5)
    downloads = [random_download(rng, START) for _ in range(3)]
    body = tmp_path / "minio.ndjson"
    body.write_bytes(minio_body(minio_entry(download) for download in downloads))
    with ReferenceOgcRs(db_path=str(tmp_path / "metering.sqlite3")) as rs:
        post(rs, [line_of(download, "minio") for download in downloads[:2]])
        status, report, summary = reconcile(str(body), source="minio", database_url=rs.database_url, json_path="-")
    assert status == 1
    assert report is not None
    assert report["missing"] == [line_of(downloads[2], "minio")]
    assert "3 downloads, 2 rows, 1 missing, 0 duplicated, 0 unexpected" in summary


def test_errors_exit_2_with_one_sentence(
    postgres_server: ThrowawayPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("OGC_RS_DATABASE_URL", raising=False)
    log_file = tmp_path / "empty.json"
    log_file.write_text('{"Records": []}')
    sqlite_url = f"sqlite:///{tmp_path / 'none.sqlite3'}"
    cases = [
        ({}, "no database: give --database-url or set OGC_RS_DATABASE_URL"),
        ({"database_url": "mysql://x@h/d"}, "unsupported database URL scheme"),
        ({"database_url": f"postgresql://postgres:pw-secret@127.0.0.1:{postgres_server.port}/nodb"}, "cannot connect"),
        ({"database_url": sqlite_url}, "cannot open the SQLite metering file"),
        ({"database_url": sqlite_url, "since": UNTIL}, "--since must be before --until"),
        ({"database_url": sqlite_url, "since": "yesterday"}, "--since must be an ISO 8601"),
    ]
    for options, message in cases:
        status, _, err = reconcile(str(log_file), **options)
        assert status == 2, (options, err)
        assert err.startswith("ogc-audit reconcile: "), err
        assert message in err, err
        assert err.count("\n") == 1
        assert "pw-secret" not in err
    with ReferenceOgcRs(db_path=str(tmp_path / "m.sqlite3")) as rs:
        status, _, err = reconcile(str(tmp_path / "absent.json.gz"), database_url=rs.database_url)
        assert (status, err.startswith("ogc-audit reconcile: cannot read an INPUT")) == (2, True)
    # The command line: argparse refuses a missing INPUT with exit status 2 too.
    with pytest.raises(SystemExit) as exited:
        cli_main(["reconcile", "--source", "cloudtrail", "--since", SINCE, "--until", UNTIL])
    assert exited.value.code == 2
    capsys.readouterr()
