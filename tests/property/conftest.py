"""Hypothesis profiles for the property suite, and the session summary of generated inputs per parser.

Profiles (environment variable ``HYPOTHESIS_PROFILE``, default ``ci``):

- ``ci``: derandomized (a fixed seed per test, so a CI failure reproduces), no example database, no deadline,
  1,000 examples per test; the tests batch several inputs per example so that every parser receives at
  least 10,000 generated inputs, and each parser's main test asserts that count.
- ``dev``: a tenth of that with random seeds and the local example database, for quick iterations.

Loading a profile here sets hypothesis' defaults for the whole session; no other test folder uses hypothesis.
Tests count their inputs in ``strategies.GENERATED`` (a module-level counter: hypothesis refuses function-scoped
fixtures in ``@given`` tests); each parser's main test asserts its own total, so the check holds under xdist.
With ``derandomize`` a given command reproduces its examples; hypothesis also mines literals from the loaded
modules, so running one file alone can draw different examples than the whole folder.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.property.strategies import CI_MAX_EXAMPLES, GENERATED

_COMMON: dict[str, Any] = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
}
settings.register_profile("ci", max_examples=CI_MAX_EXAMPLES, derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", max_examples=CI_MAX_EXAMPLES // 10, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker hands its counts to the controller
        workeroutput["generated_inputs"] = dict(GENERATED.counts)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: add the counts of a worker that finished."""
    GENERATED.counts.update(getattr(node, "workeroutput", {}).get("generated_inputs", {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not GENERATED.counts:
        return
    terminalreporter.section("generated inputs per parser")
    for parser, count in sorted(GENERATED.counts.items()):
        terminalreporter.write_line(f"{parser:<40} {count:>8,}")
    terminalreporter.write_line(f"hypothesis profile: {settings.get_current_profile_name()}")
