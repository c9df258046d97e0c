"""A throwaway PostgreSQL server on loopback, for tests, the demo option and the drill.

Debian's PostgreSQL server binaries (``/usr/lib/postgresql/<major>/bin``; ``PG_BIN`` overrides) run a cluster in a
temporary folder on a free 127.0.0.1 port, with no durability (``fsync=off``: the data is thrown away). PostgreSQL
refuses to run as root, and sessions and CI run as root: the cluster then runs as the ``postgres`` user
(``runuser``). Where the binaries are missing, starting fails with one sentence naming what to install.

    with ThrowawayPostgres() as server:
        url = server.create_database("ogc_rs")   # postgresql://postgres@127.0.0.1:PORT/ogc_rs
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresUnavailableError", "ThrowawayPostgres", "find_postgres_bin"]

_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_SERVICE_USER = "postgres"
INSTALL_HINT = "install Debian's PostgreSQL server (apt-get install -y postgresql) or set PG_BIN to its bin folder"


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server can be started here; the message says what to install."""


def find_postgres_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: ``PG_BIN``, else the newest Debian major version."""
    configured = os.environ.get("PG_BIN")
    candidates = [Path(configured)] if configured else sorted(_DEBIAN_ROOT.glob("*/bin"), key=_major, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    where = f"PG_BIN={configured}" if configured else f"{_DEBIAN_ROOT}/*/bin"
    raise PostgresUnavailableError(f"No PostgreSQL server binaries (initdb, pg_ctl) in {where}: {INSTALL_HINT}")


def _major(folder: Path) -> int:
    try:
        return int(folder.parent.name)
    except ValueError:
        return 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own, started on 127.0.0.1 and removed on ``stop()`` (or leaving ``with``)."""

    def __init__(self, *, bin_dir: Path | None = None, port: int = 0) -> None:
        self._bin = bin_dir
        self._requested_port = port
        self.port = 0
        self._dir: Path | None = None
        self._user: str | None = None

    @property
    def data_dir(self) -> Path:
        """The cluster's folder (data, socket and server log)."""
        if self._dir is None:
            raise RuntimeError("the server is not started")
        return self._dir

    def url(self, database: str = "postgres", user: str = _SERVICE_USER) -> str:
        """A libpq URL of ``database`` on this server (trust authentication on loopback: no password)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> ThrowawayPostgres:
        """initdb and start the server; PostgresUnavailableError (one sentence) when that is impossible."""
        if self._dir is not None:
            return self
        bin_dir = self._bin or find_postgres_bin()
        self._user = _run_as_user()
        self._dir = Path(tempfile.mkdtemp(prefix="ogc-audit-pg-"))
        data = self._dir / "data"
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        try:
            initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", _SERVICE_USER, "-A", "trust", "-E", "UTF8"]
            self._run([*initdb, "--locale=C", "--no-sync", "--no-instructions"])
            last_error = ""
            for _ in range(5):  # the free port may be taken between probing and binding: try another
                self.port = self._requested_port or _free_port()
                options = (
                    f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self._dir} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
                )
                pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self._dir / "server.log")]
                started = self._run([*pg_ctl, "-w", "-t", "30", "start"], check=False)
                if started.returncode == 0:
                    return self
                last_error = self._log_tail()
            raise PostgresUnavailableError(f"PostgreSQL did not start: {last_error}")
        except BaseException:
            self.stop()
            raise

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        import psycopg

        database = name or f"db_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')  # a name of ours, quoted
        return self.url(database)

    def create_read_only_role(self, database_url: str, role: str, tables: tuple[str, ...]) -> str:
        """A login role that may only SELECT ``tables`` of that database; the URL connecting as it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            connection.execute(
                sql.SQL("GRANT SELECT ON {} TO {}").format(
                    sql.SQL(", ").join(sql.Identifier(table) for table in tables), sql.Identifier(role)
                )
            )
        return database_url.replace(f"postgresql://{_SERVICE_USER}@", f"postgresql://{role}@", 1)

    def stop(self) -> None:
        """Stop the server at once and remove its folder."""
        if self._dir is None:
            return
        data = self._dir / "data"
        if (data / "postmaster.pid").exists():
            bin_dir = self._bin or find_postgres_bin()
            self._run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self, command: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        if check and result.returncode != 0:
            raise PostgresUnavailableError(
                f"{Path(command[-1] if self._user is None else command[4]).name} failed: "
                f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}"
            )
        return result

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.data_dir / "server.log").read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else "no server log"
        return "no server log"


def _run_as_user() -> str | None:
    """The user to run the cluster as: ``postgres`` when we are root (PostgreSQL refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError as error:
        raise PostgresUnavailableError(
            f"Running as root and there is no {_SERVICE_USER!r} user to run PostgreSQL as: {INSTALL_HINT}"
        ) from error
    if shutil.which("runuser") is None:
        raise PostgresUnavailableError("Running as root and runuser (util-linux) is missing: install util-linux")
    return _SERVICE_USER
