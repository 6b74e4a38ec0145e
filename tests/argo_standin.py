"""An Argo CD stand-in served over HTTP on loopback, held to Argo CD's own API description.

Every request is matched to a path and method of Argo CD's swagger.json (tests/contracts/), its query
parameters must be declared there and its body must validate against the declared schema; every
response body validates against the declared response schema. Both are validated strictly (no
field the swagger does not declare), so neither the client nor the stand-in can drift from the
real contract. Violations are collected and fail the test.
"""
from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema

from conftest import BASE_TOPOLOGY
from http_json import send_json

TOKEN = "s3cret-argo-token"
SWAGGER = Path(__file__).resolve().parent / "contracts" / "argo-cd-swagger.json"


def strict_definitions(swagger: dict) -> dict:
    defs = copy.deepcopy(swagger["definitions"])
    for schema in defs.values():
        if schema.get("type") == "object" and "properties" in schema:
            schema["additionalProperties"] = False
    return defs


class Contract:
    def __init__(self, path: Path = SWAGGER) -> None:
        self.swagger = json.loads(path.read_text())
        self.defs = strict_definitions(self.swagger)
        self.routes = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p, ops)
                       for p, ops in self.swagger["paths"].items()]

    def operation(self, method: str, path: str) -> dict | None:
        for regex, _, ops in self.routes:
            if regex.match(path) and method.lower() in ops:
                return ops[method.lower()]
        return None

    def check(self, schema: dict, doc) -> list[str]:
        validator = jsonschema.Draft4Validator({**schema, "definitions": self.defs})
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]

    def check_request(self, method: str, path: str, query: dict, body) -> list[str]:
        op = self.operation(method, path)
        if op is None:
            return [f"{method} {path}: not in swagger.json"]
        params = op.get("parameters", [])
        declared = {p["name"] for p in params if p["in"] == "query"}
        errors = [f"{method} {path}: query parameter {q!r} not declared" for q in query if q not in declared]
        body_param = next((p for p in params if p["in"] == "body"), None)
        if body is not None:
            if body_param is None:
                errors.append(f"{method} {path}: takes no body")
            else:
                errors += [f"{method} {path} body: {e}" for e in self.check(body_param["schema"], body)]
        return errors

    def check_response(self, method: str, path: str, status: int, body) -> list[str]:
        op = self.operation(method, path)
        if op is None:
            return []
        schema = op["responses"].get(str(status)) or op["responses"].get("default")
        return [f"{method} {path} → {status}: {e}" for e in self.check(schema["schema"], body)]


def app_doc(name: str, sync: str = "Synced", health: str = "Healthy", *, phase: str | None = None,
            started: str | None = None, finished: str | None = None, reconciled: str | None = "2026-11-23T10:00:00Z",
            revision: str = "abc123def4567890", automated: bool = False, images: tuple[str, ...] = (),
            health_message: str = "", op_message: str = "", resources: tuple[dict, ...] = ()) -> dict:
    """An Application as Argo CD returns it, with just the fields the handback reads."""
    status: dict = {"sync": {"status": sync, "revision": revision}, "health": {"status": health},
                    "summary": {"images": list(images)}}
    if health_message:
        status["health"]["message"] = health_message
    if reconciled:
        status["reconciledAt"] = reconciled
    if phase:
        op = {"phase": phase, "message": op_message, "startedAt": started or "2026-11-23T09:59:00Z",
              "operation": {"sync": {"revision": revision}}}
        if finished:
            op["finishedAt"] = finished
        status["operationState"] = op
    if resources:
        status["resources"] = list(resources)
    spec = {"project": "default", "destination": {"namespace": "fractalops", "server": "https://kubernetes.default.svc"}}
    if automated:
        spec["syncPolicy"] = {"automated": {"prune": True, "selfHeal": True}}
    return {"metadata": {"name": name, "namespace": "argocd"}, "spec": spec, "status": status}


@dataclass
class AppScript:
    """What one app answers: `before` snapshots until a sync, then `after` (each GET steps one on; the last sticks)."""

    before: list[dict]
    after: list[dict] = field(default_factory=list)
    sync_error: tuple[int, str] | None = None
    synced: bool = False
    index: int = 0

    def current(self) -> dict:
        seq = self.after if self.synced and self.after else self.before
        doc = seq[min(self.index, len(seq) - 1)]
        self.index += 1
        return doc


class ArgoStandIn:
    def __init__(self, apps: dict[str, AppScript], *, token: str = "s3cret-argo-token", users: dict | None = None,
                 fail_status: int | None = None, fail_times: int = 1 << 30) -> None:
        self.apps, self.token, self.users = apps, token, users or {}
        self.fail_status, self.fail_times = fail_status, fail_times  # the first calls answer this (e.g. 503)
        self.contract = Contract()
        self.requests: list[tuple[str, str, dict, object]] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with standin._lock:
                    status, doc = standin.answer(method, url.path, query, body, self.headers.get("Authorization", ""))
                send_json(self, status, doc)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ArgoStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def error(status: int, message: str) -> tuple[int, dict]:
        codes = {401: 16, 403: 7, 404: 5, 400: 9, 503: 14}
        return status, {"code": codes.get(status, 2), "error": message, "message": message}

    def answer(self, method: str, path: str, query: dict, body, auth: str) -> tuple[int, dict]:
        self.requests.append((method, path, query, body))
        self.violations += self.contract.check_request(method, path, query, body)
        status, doc = self._route(method, path, query, body, auth)
        self.violations += self.contract.check_response(method, path, status, doc)
        return status, doc

    def _route(self, method, path, query, body, auth) -> tuple[int, dict]:
        if self.fail_status and self.fail_times > 0:
            self.fail_times -= 1
            return self.error(self.fail_status, "upstream unavailable")
        if (method, path) == ("POST", "/api/v1/session"):
            user = (body or {}).get("username")
            if user in self.users and self.users[user] == (body or {}).get("password"):
                return 200, {"token": self.token}
            return self.error(401, "Invalid username or password")
        if auth != f"Bearer {self.token}":
            return self.error(401, "invalid session: token is malformed")
        m = re.match(r"^/api/v1/applications/([^/]+)(/sync)?$", path)
        if not m or m.group(1) not in self.apps:
            return self.error(404, f"applications.argoproj.io \"{m.group(1) if m else path}\" not found")
        app = self.apps[m.group(1)]
        if method == "GET" and not m.group(2):
            return 200, app.current()
        if method == "POST" and m.group(2):
            if app.sync_error:
                return self.error(*app.sync_error)
            app.synced, app.index = True, 0
            return 200, app.after[0] if app.after else app.before[-1]
        return self.error(400, "unsupported by the stand-in")

    def calls(self, method: str | None = None) -> list[tuple[str, str, dict, object]]:
        return [r for r in self.requests if method is None or r[0] == method]


def write_topology(url: str, apps: list[str], timeout_s: float = 20, extra: str = "") -> None:
    text = BASE_TOPOLOGY.replace('server: "https://argocd.example", apps: [demo-api]',
                                 f'server: "{url}", apps: [{", ".join(apps)}], poll_s: 0.05{extra}')
    text = text.replace("timeout_s: 60", f"timeout_s: {timeout_s}")
    Path("topology.yaml").write_text(text)
