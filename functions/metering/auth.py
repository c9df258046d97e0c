"""Access tokens from the DX AAA token endpoint, cached until shortly before they expire."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from metering.errors import ConfigurationError, DeliveryError, RedirectError
from metering.settings import ClientCredentials

# Renew this long before `expiry`, so a token never lapses between fetch and use.
REFRESH_MARGIN_S = 300
# After the auth server refused the configuration, fail fast for this long instead of asking again.
CONFIG_ERROR_BACKOFF_S = 60
_CONFIG_FAULTS = {400: "bad item or role", 401: "bad client id or secret", 403: "role not held"}

CredentialsSource = Callable[[bool], ClientCredentials]
"""Returns the client credentials; called with True to bypass any cache (after a rotation)."""


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and the epoch second it expires; its repr and str never show the token (logs, tracebacks)."""

    value: str = field(repr=False)
    expiry: float


class TokenProvider:
    """Fetches the OGC RS admin token and reuses it across calls (and Lambda invocations) until it nears expiry."""

    def __init__(
        self,
        *,
        auth_url: str,
        item_id: str,
        item_type: str,
        role: str,
        credentials: CredentialsSource,
        session: requests.Session,
        timeout: tuple[float, float] = (5.0, 30.0),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auth_url = auth_url
        self._body = {"itemId": item_id, "itemType": item_type, "role": role}
        self._credentials = credentials
        self._session = session
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self._config_error: tuple[float, ConfigurationError] | None = None
        self.fetches = 0

    def token(self) -> str:
        """A valid bearer token, fetched only when none is cached or it expires within the margin."""
        with self._lock:
            now = self._clock()
            if self._token is not None and self._token.expiry - REFRESH_MARGIN_S > now:
                return self._token.value
            if self._config_error is not None and now - self._config_error[0] < CONFIG_ERROR_BACKOFF_S:
                raise self._config_error[1]
            try:
                self._token = self._fetch()
            except RedirectError:
                raise  # retried like any failure: a redirect may be a move in progress, not a refusal
            except ConfigurationError as error:
                self._config_error = (now, error)
                raise
            self._config_error = None
            return self._token.value

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (OGC RS answered 401 with it) so the next call fetches a fresh one."""
        with self._lock:
            if self._token is not None and self._token.value == token:
                self._token = None

    def _fetch(self) -> AccessToken:
        response = self._request(self._credentials(False))
        if response.status_code == 401:
            # The secret may have been rotated since it was cached: read it again, once.
            response = self._request(self._credentials(True))
        if is_redirect(response):
            raise redirect_error(f"auth server {self._auth_url}", response)
        if response.status_code in _CONFIG_FAULTS:
            raise ConfigurationError(
                f"auth server {self._auth_url} answered {response.status_code} "
                f"({_CONFIG_FAULTS[response.status_code]}): {server_problem(response)}"
            )
        if response.status_code != 200:
            raise DeliveryError(
                f"auth server {self._auth_url} answered {response.status_code}: {server_problem(response)}"
            )
        try:
            results = response.json()["results"]
            token = AccessToken(str(results["accessToken"]), float(results["expiry"]))
        except (ValueError, KeyError, TypeError) as error:
            raise DeliveryError(f"auth server {self._auth_url} answered 200 without results.accessToken") from error
        self.fetches += 1
        return token

    def _request(self, credentials: ClientCredentials) -> requests.Response:
        try:
            return self._session.post(
                self._auth_url,
                json=self._body,
                headers={"clientId": credentials.client_id, "clientSecret": credentials.client_secret},
                timeout=self._timeout,
                allow_redirects=False,  # a redirect would hand the client secret to another host
            )
        except requests.RequestException as error:
            raise DeliveryError(f"auth server {self._auth_url} unreachable: {type(error).__name__}") from error


def is_redirect(response: requests.Response) -> bool:
    """Whether the answer is a 3xx (with or without a Location)."""
    return 300 <= response.status_code <= 399


def redirect_error(server: str, response: requests.Response) -> RedirectError:
    """The configuration error for a 3xx from ``server``, naming the Location host only (its query may hold secrets)."""
    location = response.headers.get("Location", "")
    try:
        host = urlsplit(location).hostname
    except ValueError:  # a Location that is not a URL at all
        host = None
    target = f"host {host}" if host else "the same host" if location else "no Location"
    return RedirectError(
        f"{server} answered {response.status_code} redirecting to {target}: redirects are never followed; "
        "set the URL the redirect points to"
    )


def server_problem(response: requests.Response) -> str:
    """The server's own title/detail, without echoing anything we sent."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        parts = [str(body[key]) for key in ("title", "detail", "code", "description") if body.get(key)]
        return "; ".join(parts)[:300] or response.text[:200]
    return response.text[:200]
