"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ogc_audit.reference_rs import ReferenceOgcRs


@pytest.fixture
def reference_rs() -> Iterator[ReferenceOgcRs]:
    """A started reference OGC RS + token endpoint on loopback, with an in-memory metering table."""
    with ReferenceOgcRs() as server:
        yield server
