"""The OGC RS access token never shows in a repr or str (a log line, a traceback, a debugger's view)."""

from __future__ import annotations

import logging

import pytest

from metering.auth import AccessToken

TOKEN = "eyJhbGciOiJFUzI1NiJ9.secret-part-of-the-jwt.signature"


def test_repr_and_str_leave_the_token_out() -> None:
    token = AccessToken(TOKEN, 1_796_670_000.0)

    for text in (repr(token), str(token), f"{token}", f"{token!r}", repr([token])):
        assert TOKEN not in text
        assert "secret-part" not in text
    assert "1796670000" in repr(token)  # the expiry still helps an operator
    assert token.value == TOKEN


def test_a_logged_token_object_shows_no_token(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("metering.auth").info("cached %s", AccessToken(TOKEN, 0.0))

    assert caplog.records
    assert TOKEN not in caplog.text
