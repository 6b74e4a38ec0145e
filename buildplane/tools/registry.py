"""A small OCI distribution client (tools/http.py, or httpx): manifest HEAD for freshness (with the push scope, so wrong
credentials fail there, before anything is built), and registry-side tagging (copy a manifest under
a new tag: no build, no layer upload).

Credentials come from the Docker config the builder uses (`$DOCKER_CONFIG/config.json`:
`auths`, `credHelpers`, `credsStore`). They are sent to the registry and never printed. Once a
registry's challenge is known (kept in `challenges`, a file of scheme/realm/service, never a secret),
the next run sends its credentials with the first request instead of waiting for a 401: on a
registry 40 ms away that is one round trip less per repository.
"""
from __future__ import annotations

import base64
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

from ..errors import Missing, StepFailed
from . import run
from .registry_auth import credentials_for, docker_config_path  # noqa: F401 - where callers find them
from .registry_parts import MANIFEST_TYPES, ImageParts
from .run import Runner
from ..state import read_json, write_json_atomic



class _Reset(Exception):
    """The connection broke mid-call (reset, EOF): worth one more try."""


class RegistryFault(StepFailed):
    """The registry kept answering 5xx (or breaking the connection) through every retry of one call:
    `status` says which ("500 Internal Server Error", "connection reset"), `url` where."""

    def __init__(self, message: str, registry: str, status: str, url: str) -> None:
        super().__init__(message)
        self.registry, self.status, self.url = registry, status, url


@dataclass(frozen=True)
class Ref:
    """An image reference split as the registry API wants it. `tag` is what goes after `/manifests/`:
    the digest when the reference has one (`repo:tag@sha256:…` names the digest; the tag is a label)."""
    host: str
    repo: str
    tag: str

    @classmethod
    def parse(cls, ref: str) -> "Ref":
        name, _, digest = ref.partition("@")
        first, slash, rest = name.partition("/")
        # The first component is a registry host only if it looks like one (docker's own rule).
        if not slash or not ("." in first or ":" in first or first == "localhost"):
            first, rest = "docker.io", name
            if "/" not in rest:
                rest = f"library/{rest}"
        repo, colon, tag = rest.rpartition(":")
        if not colon or "/" in tag:
            repo, tag = rest, "latest"
        return cls(first, repo, digest or tag)


def plain_http_host(host: str, listed) -> bool:
    """Registries without TLS: those the topology lists (exactly, port included), and loopback (the lab).

    `localhost.corp.example` is not loopback: a prefix match would send it Basic credentials in clear."""
    if host in listed:
        return True
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name in ("localhost", "[::1]") or bool(re.fullmatch(r"127(\.\d{1,3}){3}", name))


def _failure(exc: BaseException) -> str | None:
    """timeout | reset | unreachable for a failed call of either client (tools/http.py or httpx), else None."""
    from . import http
    if isinstance(exc, http.Timeout):
        return "timeout"
    if isinstance(exc, http.Reset):
        return "reset"
    if isinstance(exc, http.Unreachable):
        return "unreachable"
    httpx = sys.modules.get("httpx")
    if httpx is None:
        return None
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "reset"
    return "unreachable" if isinstance(exc, httpx.HTTPError) else None


def _unreachable(host: str, exc: BaseException) -> str:
    """The sentence for a registry that could not be talked to: a plain-HTTP one asked over HTTPS and an
    untrusted certificate each have their own fix."""
    from . import http
    if isinstance(exc, http.PlainHttpServer):
        return (f"registry {host} speaks plain HTTP, not HTTPS: list it in the topology's registries.plain_http "
                f"(buildplane then tells buildx too)")
    if isinstance(exc, http.UntrustedCertificate):
        return (f"registry {host}'s certificate is not trusted ({exc}): add the CA that signed it to this machine's "
                "trust store (`update-ca-certificates`) and to the builder's (buildkitd.toml "
                f"`[registry.\"{host}\"] ca=[…]`, or the daemon's certs.d/{host}/ca.crt)")
    return f"registry {host} does not answer ({type(exc).__name__}); is it up? (`make lab-up` for the lab)"


class RegistryClient(ImageParts):
    """Talks to registries with one HTTP client (an httpx.Client injected in tests; made on first use
    otherwise, so a run that needs no registry makes none)."""

    def __init__(self, client=None, plain_http: frozenset[str] = frozenset(),
                 environ=None, timeout: float = 5.0, attempts: int = 3, backoff_s: float = 0.25,
                 sleep: Callable[[float], None] = run.sleep, runner: Runner | None = None,
                 challenges: Path | None = None, tokens: dict[str, tuple[str, str]] | None = None) -> None:
        self._client = client
        self.tokens = tokens or {}  # host → (username, token variable): registries.auth
        self._made = threading.Lock()
        self._timeout = timeout
        self.runner = runner
        self.plain_http = plain_http
        self.environ = environ
        self.attempts, self.backoff_s, self.sleep = attempts, backoff_s, sleep
        self._tokens: dict[tuple[str, str], str] = {}
        self._challenges_file = challenges
        self._challenges: dict | None = None

    @property
    def client(self):
        """The injected client, else the standard library's (tools/http.py: no httpx import on the edit
        loop), else httpx where a proxy is configured (it speaks to proxies)."""
        with self._made:
            if self._client is None:
                from .http import proxy_configured

                if proxy_configured(self.environ):
                    import httpx

                    self._client = httpx.Client(timeout=self._timeout)
                else:
                    from .http import HttpClient

                    self._client = HttpClient(timeout=self._timeout)
            return self._client

    def prepare(self, host: str, connections: int = 2) -> None:
        """Get ready for a run that will talk to `host`, in the background while the engine starts: make
        the client and open `connections` pooled connections (a TLS handshake is two round trips more on a
        remote registry). Nothing waits for it; a failure here only means the first request connects."""
        def connect() -> None:
            client = self.client
            try:
                if hasattr(client, "open"):  # tools/http.py: connect only, no request
                    client.open(self._base(host) + "/v2/")
                else:
                    client.get(self._base(host) + "/v2/")
            except Exception:  # noqa: BLE001 - the real request will say what is wrong
                pass
        for _ in range(connections):
            threading.Thread(target=connect, daemon=True, name="bp-registry-connect").start()

    def _known_challenge(self, host: str) -> str | None:
        if self._challenges is None:
            self._challenges = (read_json(self._challenges_file) if self._challenges_file else None) or {}
        value = self._challenges.get(host)
        return value if isinstance(value, str) else None

    def _remember_challenge(self, host: str, challenge: str) -> None:
        """Keep the challenge (no credential in it) for the next run's first request."""
        if self._known_challenge(host) == challenge or not self._challenges_file:
            return
        self._challenges[host] = challenge
        try:
            write_json_atomic(self._challenges_file, self._challenges)
        except OSError:
            pass  # only a round trip is lost

    def _base(self, host: str) -> str:
        return f"{'http' if plain_http_host(host, self.plain_http) else 'https'}://{host}"

    def _request(self, method: str, host: str, path: str, scope: str, **kw):
        """One call, with a bounded retry of what a registry does under load: a 5xx, a connection reset."""
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                resp = self._request_once(method, host, path, scope, **kw)
            except _Reset as exc:
                if attempt == self.attempts:
                    raise RegistryFault(f"registry {host} broke off {method} {path} {attempt} times "
                                        f"({exc.args[0]}); check the registry", host,
                                        f"connection broken ({exc.args[0]})", self._base(host) + path) from None
            else:
                if resp.status_code < 500 or resp.status_code == 501:
                    return resp
                if attempt == self.attempts:
                    raise RegistryFault(f"registry {host} answered HTTP {resp.status_code} {resp.reason_phrase} to "
                                        f"{method} {path} {attempt} times; check the registry's health and logs",
                                        host, f"{resp.status_code} {resp.reason_phrase}", self._base(host) + path)
            self.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _request_once(self, method: str, host: str, path: str, scope: str, **kw):
        url = self._base(host) + path
        headers = dict(kw.pop("headers", {}))
        try:
            token = self._tokens.get((host, scope))
            known = None if token else self._known_challenge(host)
            if known:  # auth up front: the challenge is known from an earlier run
                token = self._authorize(host, scope, known)
            if token:
                headers["Authorization"] = token
            resp = self.client.request(method, url, headers=headers, **kw)
            if resp.status_code == 401:
                challenge = resp.headers.get("www-authenticate", "")
                auth = self._authorize(host, scope, challenge)
                if auth:
                    self._remember_challenge(host, challenge)
                    headers["Authorization"] = auth
                    resp = self.client.request(method, url, headers=headers, **kw)
        except Exception as exc:  # noqa: BLE001 - sorted into the three ways a call fails, whichever client
            kind = _failure(exc)
            if kind == "timeout":
                raise Missing(f"registry {host} did not answer within {self.client.timeout.read}s") from None
            if kind == "reset":
                raise _Reset(type(exc).__name__) from None
            if kind == "unreachable":
                raise Missing(_unreachable(host, exc)) from None
            raise
        if resp.status_code == 401:
            raise Missing(self._refused(host))
        if resp.status_code == 403:
            raise Missing(f"registry {host} denied access to {scope} (HTTP 403); check the account's permissions")
        return resp

    def _refused(self, host: str) -> str:
        """The 401 sentence: whose credentials were refused, and the fix."""
        environ = os.environ if self.environ is None else self.environ
        if host in self.tokens:
            user, var = self.tokens[host]
            if environ.get(var):
                return f"registry {host} refused the token in ${var} for {user} (HTTP 401); set a valid, unexpired token there"
            return (f"registry {host} wants credentials (HTTP 401) and ${var} is not set (registries.auth.{host}); "
                    f"set it, or run `docker login {host}`")
        who = "the credentials in your Docker config" if credentials_for(host, self.environ, self.runner) else "no credentials"
        return f"registry {host} refused {who} (HTTP 401); run `docker login {host}`"

    def _authorize(self, host: str, scope: str, challenge: str) -> str | None:
        creds = credentials_for(host, self.environ, self.runner, self.tokens)
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not creds:
                return None
            value = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        elif scheme == "bearer":
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            if not params.get("realm", "").startswith(("https://", "http://")):
                raise StepFailed(f"registry {host} asked for a Bearer token without a usable realm "
                                 f"(WWW-Authenticate: {challenge[:120]}); it is misconfigured")
            query = {"service": params.get("service", "")}
            if scope:
                query["scope"] = scope
            resp = self.client.get(params["realm"], params=query, auth=creds if creds else None)
            if resp.status_code != 200:
                return None
            try:
                body = resp.json()
                value = "Bearer " + (body.get("token") or body.get("access_token") or "")
            except (ValueError, AttributeError):
                raise StepFailed(f"registry {host}: its token service {params['realm']} answered "
                                 f"{resp.headers.get('content-type', 'no content type')}, not a JSON token") from None
        else:
            return None
        self._tokens[(host, scope)] = value
        return value

    def manifest_digest(self, ref: str, push: bool = False) -> str | None:
        """The digest of `ref`'s manifest, or None when the tag does not exist (one HEAD). With `push`, the
        HEAD is made with the push scope: wrong credentials fail here (exit 4), before anything is built."""
        r = Ref.parse(ref)
        scope = f"repository:{r.repo}:{'push,pull' if push else 'pull'}"
        resp = self._request("HEAD", r.host, f"/v2/{r.repo}/manifests/{r.tag}", scope,
                             headers={"Accept": MANIFEST_TYPES})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise Missing(f"registry {r.host} answered HTTP {resp.status_code} for {r.repo}:{r.tag}")
        return resp.headers.get("docker-content-digest")

    def copy_tag(self, src: str, dst_tag: str) -> str:
        """Tag `src`'s manifest as `dst_tag` in the same repository; returns the digest."""
        r = Ref.parse(src)
        scope = f"repository:{r.repo}:push,pull"
        got = self._request("GET", r.host, f"/v2/{r.repo}/manifests/{r.tag}", scope, headers={"Accept": MANIFEST_TYPES})
        if got.status_code != 200:
            raise Missing(f"registry {r.host}: cannot read {r.repo}:{r.tag} (HTTP {got.status_code})")
        media = got.headers.get("content-type", "application/vnd.oci.image.index.v1+json")
        put = self._request("PUT", r.host, f"/v2/{r.repo}/manifests/{dst_tag}", scope, content=got.content,
                            headers={"Content-Type": media})
        if put.status_code not in (200, 201):
            raise Missing(f"registry {r.host}: cannot tag {r.repo}:{dst_tag} (HTTP {put.status_code})")
        return got.headers.get("docker-content-digest", "")


class HeadInBackground:
    """HEAD of the content tag (push scope) in a thread; `found` is set when the build it races is moot:
    the image exists, or the question failed (its error is raised by `result`)."""

    def __init__(self, registry, ref: str) -> None:
        self.found = threading.Event()
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._ask, args=(registry, ref), daemon=True, name="bp-head")
        self._thread.start()

    def _ask(self, registry, ref: str) -> None:
        try:
            self._digest = registry.manifest_digest(ref, push=True)
        except BaseException as exc:  # handed to the build's thread by result()
            self._error = exc
        if self._digest or self._error:
            self.found.set()

    def result(self) -> str | None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest
