"""Argo CD's REST API (its swagger.json; the part used is in tests/contracts/), the only way deploy mode touches the cluster.

Auth: a bearer token from the env var the topology names, else a session login with the user/password
env vars. TLS is verified (optionally against a CA file). Every call has a timeout; 502/503/504 and
connection errors are retried with backoff, nothing else is. The token is never logged or raised.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import os
import ssl
from typing import Callable


from ..errors import Missing, StepFailed
from . import run

if TYPE_CHECKING:  # httpx is imported where a request is made: a run that makes none never loads it
    import httpx

RETRY_STATUS = (502, 503, 504)
IN_PROGRESS = "another operation is already in progress"


class ArgoError(StepFailed):
    """Argo CD answered with an error for one call; `message` is Argo's own."""

    def __init__(self, message: str, status: int, argo_message: str) -> None:
        super().__init__(message)
        self.status = status
        self.argo_message = argo_message


def argo_message(resp: httpx.Response) -> str:
    """The `message` (or `error`) of Argo's runtimeError body, else the status line."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    return f"HTTP {resp.status_code} {resp.reason_phrase}".strip()


class ArgoClient:
    def __init__(self, server: str, *, token_env: str = "ARGOCD_AUTH_TOKEN", username_env: str | None = None,
                 password_env: str | None = None, ca_file: str | None = None, timeout_s: float = 10.0,
                 retries: int = 4, backoff_s: float = 0.5, client: httpx.Client | None = None,
                 environ: dict[str, str] | None = None, sleep: Callable[[float], None] = run.sleep) -> None:
        self.server = server.rstrip("/")
        self.token_env, self.username_env, self.password_env = token_env, username_env, password_env
        self.retries, self.backoff_s, self.sleep = retries, backoff_s, sleep
        self._environ = os.environ if environ is None else environ
        verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=ca_file) if ca_file else True
        import httpx

        self._http = client or httpx.Client(verify=verify, timeout=httpx.Timeout(timeout_s))
        self._token: str | None = None

    # -- auth ---------------------------------------------------------------------------------------
    def _bearer(self) -> str:
        if self._token is None:
            token = self._environ.get(self.token_env, "")
            if token:
                self._token = token
            elif self.username_env and self.password_env and self._environ.get(self.username_env):
                self._token = self._login()
            else:
                login = (f" or ${self.username_env}/${self.password_env}" if self.username_env and self.password_env else "")
                raise Missing(f"Argo CD at {self.server}: no credentials: set ${self.token_env}{login} "
                              "(argocd account generate-token)")
        return self._token

    def _login(self) -> str:
        body = {"username": self._environ.get(self.username_env or "", ""),
                "password": self._environ.get(self.password_env or "", "")}
        resp = self._send("POST", "/api/v1/session", json=body, auth=False)
        if resp.status_code in (401, 403):
            raise Missing(f"Argo CD at {self.server} refused the login of ${self.username_env} "
                          f"({resp.status_code}: {argo_message(resp)}); check ${self.username_env}/${self.password_env}")
        self._raise_for(resp, "POST /api/v1/session")
        try:
            token = resp.json().get("token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise StepFailed(f"Argo CD at {self.server}: the session login returned no token")
        return token

    # -- calls --------------------------------------------------------------------------------------
    def get_app(self, name: str, refresh: str | None = None) -> dict:
        params = {"refresh": refresh} if refresh else None
        return self._json("GET", f"/api/v1/applications/{name}", params=params)

    def sync(self, name: str, *, prune: bool, revision: str | None = None) -> dict:
        body: dict = {"name": name, "prune": prune}
        if revision:
            body["revision"] = revision
        return self._json("POST", f"/api/v1/applications/{name}/sync", json=body)

    def _json(self, method: str, path: str, **kw) -> dict:
        resp = self._send(method, path, **kw)
        if 300 <= resp.status_code < 400:
            raise Missing(f"Argo CD at {self.server}: {method} {path} was redirected to "
                          f"{resp.headers.get('location', '?')} (an SSO proxy?); point modes.deploy.argo.server "
                          "at the API server itself")
        self._raise_for(resp, f"{method} {path}")
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            kind = resp.headers.get("content-type", "no content type").split(";")[0]
            raise Missing(f"Argo CD at {self.server}: {method} {path} answered {resp.status_code} with {kind}, "
                          "not Argo CD's JSON (an SSO proxy or another service?); check modes.deploy.argo.server")
        return body

    def _raise_for(self, resp: httpx.Response, what: str) -> None:
        if resp.status_code < 400:
            return
        msg = argo_message(resp)
        if resp.status_code in (401, 403):
            source = f"${self.token_env}" if self._environ.get(self.token_env) else f"the session of ${self.username_env}"
            raise Missing(f"Argo CD at {self.server} refused the token from {source} ({resp.status_code}: {msg}); "
                          f"set a valid token in ${self.token_env}")
        raise ArgoError(f"Argo CD {what}: {resp.status_code}: {msg}", resp.status_code, msg)

    def _send(self, method: str, path: str, *, auth: bool = True, **kw) -> httpx.Response:
        import httpx

        headers = {"Authorization": f"Bearer {self._bearer()}"} if auth else {}
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, self.server + path, headers=headers, **kw)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # retrying cannot fix trust
                    raise Missing(f"Argo CD at {self.server}: its TLS certificate is not trusted ({exc}); "
                                  "set modes.deploy.argo.ca_file to the CA that signed it") from None
                if attempt == self.retries:
                    raise Missing(f"Argo CD at {self.server} does not answer ({type(exc).__name__}: {exc}); "
                                  "check modes.deploy.argo.server and your network") from None
            except httpx.TimeoutException:
                raise StepFailed(f"Argo CD at {self.server}: {method} {path} timed out") from None
            except httpx.HTTPError as exc:
                raise Missing(f"Argo CD at {self.server}: {type(exc).__name__}: {exc}") from None
            else:
                if resp.status_code not in RETRY_STATUS or attempt == self.retries:
                    return resp
            self.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._http.close()
