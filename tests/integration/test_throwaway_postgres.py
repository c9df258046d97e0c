"""The throwaway PostgreSQL server the tests start themselves (testbed.postgres)."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from testbed.postgres import PostgresUnavailableError, ThrowawayPostgres, find_postgres_bin


def test_a_database_of_its_own_answers_on_loopback(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        address = connection.execute("SELECT inet_server_addr()::text").fetchone()
    assert address is not None
    assert address[0].startswith("127.0.0.1")


def test_read_only_role_reads_but_cannot_write(postgres_server: ThrowawayPostgres, postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        connection.execute("CREATE TABLE metering (id integer)")
        connection.execute("INSERT INTO metering VALUES (1)")
    # Roles belong to the whole cluster, which the worker's other tests share: a name of this test's own.
    role = f"reader_{uuid.uuid4().hex[:8]}"
    reader = postgres_server.create_read_only_role(postgres_url, role, ("metering",))
    with psycopg.connect(reader) as connection:
        assert connection.execute("SELECT count(*) FROM metering").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connection.execute("INSERT INTO metering VALUES (2)")


def test_stop_removes_the_cluster() -> None:
    server = ThrowawayPostgres().start()
    folder = server.data_dir
    assert (folder / "data" / "postmaster.pid").exists()
    server.stop()
    assert not folder.exists()


def test_missing_binaries_say_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PG_BIN", str(tmp_path))
    with pytest.raises(PostgresUnavailableError, match=r"apt-get install -y postgresql"):
        find_postgres_bin()
