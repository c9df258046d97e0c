"""What an operator chooses for ``ogc-audit serve``: where spool and ledger live, their bounds, the listener."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from metering import env_names
from metering.settings import SettingsError

DEFAULT_DATABASE_FILE = "ogc-audit-ledger.sqlite3"
# A million lines is ~300 MB of spool: hours of a busy MinIO site while OGC RS is down.
DEFAULT_SPOOL_MAX_LINES = 1_000_000
# Past this age the spool stops accepting: OGC RS has been away for days and an operator must look; MinIO keeps
# what it cannot deliver (queue_dir) meanwhile. Shorter than the ledger's retention, so every spooled line is judged
# against a ledger that still remembers its key.
DEFAULT_SPOOL_MAX_AGE_S = 3 * 24 * 3600.0
# A deliverer's lease on the lines it sends, renewed every third of it: a dead instance's lines are taken over
# within this time.
DEFAULT_LEASE_S = 60.0
DEFAULT_DELIVERY_WORKERS = 2
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only listens on this machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where spool and ledger live: one SQLite file, or one PostgreSQL database shared by a fleet."""

    kind: str
    """``sqlite`` or ``postgresql``."""
    target: str
    """The file path, or the libpq URL."""

    @classmethod
    def parse(cls, url: str | None, env: Mapping[str, str] | None = None) -> StoreLocation:
        """``--database-url``, else LEDGER_DATABASE_URL, else the SQLite file LEDGER_PATH (or the default file)."""
        env = os.environ if env is None else env
        value = (url or env.get(env_names.LEDGER_DATABASE_URL, "")).strip()
        if not value:
            return cls("sqlite", env.get(env_names.LEDGER_PATH, "").strip() or DEFAULT_DATABASE_FILE)
        scheme = urlsplit(value).scheme
        if scheme in ("postgresql", "postgres"):
            return cls("postgresql", value)
        if scheme == "sqlite" and value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
            return cls("sqlite", value[len("sqlite:///") :])
        raise SettingsError(
            f"--database-url (or {env_names.LEDGER_DATABASE_URL}) must be postgresql://... or sqlite:///PATH, "
            f"got scheme {scheme or 'none'!r}"
        )

    def redacted(self) -> str:
        """For logs: the URL without its password, or the file path."""
        if self.kind != "postgresql":
            return str(Path(self.target))
        parts = urlsplit(self.target)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    """When the spool stops accepting (MinIO then keeps the bodies and re-sends them)."""

    max_lines: int = DEFAULT_SPOOL_MAX_LINES
    max_age_s: float = DEFAULT_SPOOL_MAX_AGE_S


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """How the spool is drained: lines per round, parallel deliverers, lease and back-off."""

    batch_lines: int
    """Lines claimed per round: one OGC RS request (BATCH_MAX_LINES)."""
    workers: int = DEFAULT_DELIVERY_WORKERS
    lease_s: float = DEFAULT_LEASE_S
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    read_timeout_s: float = 60.0
    """How long one OGC RS request may take to answer; past it the request is uncertain (resolved, never re-sent
    blindly). ``serve`` passes the client's own default (``metering.ogc_rs.READ_TIMEOUT_S``) unless told otherwise."""
    idle_poll_s: float = 0.5
    """How often an idle deliverer looks for lines another instance spooled (its own appends wake it at once)."""
