"""Fixtures of the infrastructure tests: each module synthesizes its apps once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary cdk.out for the module's synthesis."""
    return tmp_path_factory.mktemp("cdk.out")
