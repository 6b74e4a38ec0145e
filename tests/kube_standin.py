"""A Kubernetes API stand-in on loopback for the diagnostics tests (#16): it answers the requests the real
`kubernetes` client makes for the paths buildplane reads, and holds both sides to Kubernetes' own OpenAPI
description of those paths (tests/contracts/kubernetes-openapi-subset.json, with its version):

- a request is checked against the path's operation: method (any method but GET is a mutation, recorded
  as a violation and refused), and query parameters (only those the API defines for it);
- every object it serves is validated against the Kubernetes JSON schema of that version (strict), so a
  test cannot pass on a pod no API server would send;
- pod logs are plain text; with follow=true the answer is a chunked stream that goes on until the test
  ends the container's log (or the stand-in stops).
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate

from http_json import send_json

CONTRACT = json.loads((Path(__file__).parent / "contracts" / "kubernetes-openapi-subset.json").read_text())
VERSION = CONTRACT["kubernetes_version"]
ROUTES = [(re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"), path) for path in CONTRACT["paths"]]
LIST_KINDS = {"/api/v1/namespaces/{namespace}/pods": "pods",
              "/apis/apps/v1/namespaces/{namespace}/deployments": "deployments",
              "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers": "autoscalers"}


def validated(obj: dict, kind: str, api_version: str) -> dict:
    kubernetes_validate.validate({"apiVersion": api_version, "kind": kind, **obj}, VERSION, strict=True)
    return obj


class KubeStandIn:
    def __init__(self) -> None:
        self.objects: dict[str, list[dict]] = {"pods": [], "deployments": [], "autoscalers": []}
        self.logs: dict[tuple[str, str, bool], list[str]] = {}  # (pod, container, previous) → lines
        self.ended: set[tuple[str, str]] = set()
        self.requests: list[tuple[str, str, dict]] = []
        self.violations: list[str] = []
        self.cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    # -- what a test puts in the cluster ---------------------------------------------------------
    def add(self, what: str, obj: dict) -> None:
        op = next(v["get"] for p, v in CONTRACT["paths"].items() if LIST_KINDS.get(p) == what)
        with self.cond:
            self.objects[what].append(validated(obj, op["item_kind"], op["item_api_version"]))
            self.cond.notify_all()

    def log(self, pod: str, container: str, *lines: str, previous: bool = False) -> None:
        with self.cond:
            self.logs.setdefault((pod, container, previous), []).extend(lines)
            self.cond.notify_all()

    def end(self, pod: str, container: str) -> None:
        with self.cond:
            self.ended.add((pod, container))
            self.cond.notify_all()

    # -- the server --------------------------------------------------------------------------------
    def __enter__(self) -> "KubeStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                standin._serve(self)

            def _refuse(self) -> None:
                standin._serve(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        with self.cond:
            self.ended.add(("*", "*"))
            self.cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, path: Path, context: str = "lab") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "dev", "user": {"token": "standin-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "standin", "user": "dev"}}]}))
        return path

    # -- answering -------------------------------------------------------------------------------
    def _check(self, method: str, path: str, query: dict) -> tuple[str | None, dict]:
        for pattern, template in ROUTES:
            m = pattern.match(path)
            if not m:
                continue
            spec = CONTRACT["paths"][template]
            if method.lower() != "get":
                self.violations.append(f"{method} {path}: a mutation ({method.lower()} "
                                       f"{'is' if method.lower() in spec['methods'] else 'is not'} an operation there)")
                return None, m.groupdict()
            unknown = sorted(set(query) - set(spec["get"]["query"]))
            if unknown:
                self.violations.append(f"GET {path}: query {unknown} not in {spec['get']['operationId']}")
            return template, m.groupdict()
        self.violations.append(f"{method} {path}: not a path of the contract")
        return None, {}

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.requests.append((h.command, parts.path, query))
        if h.headers.get("Authorization") != "Bearer standin-token":
            return self._json(h, 401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401})
        template, params = self._check(h.command, parts.path, query)
        if template is None:
            return self._json(h, 405, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 405})
        if template in LIST_KINDS:
            return self._list(h, LIST_KINDS[template], params["namespace"], query.get("labelSelector", ""))
        return self._log(h, params, query)

    def _json(self, h: BaseHTTPRequestHandler, status: int, body: dict) -> None:
        send_json(h, status, body)

    def _list(self, h: BaseHTTPRequestHandler, what: str, namespace: str, selector: str) -> None:
        want = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
        with self.cond:
            items = [o for o in self.objects[what] if o["metadata"].get("namespace") == namespace
                     and all(o["metadata"].get("labels", {}).get(k) == v for k, v in want.items())]
        kind = {"pods": ("v1", "PodList"), "deployments": ("apps/v1", "DeploymentList"),
                "autoscalers": ("autoscaling/v2", "HorizontalPodAutoscalerList")}[what]
        self._json(h, 200, {"apiVersion": kind[0], "kind": kind[1], "metadata": {"resourceVersion": "1"}, "items": items})

    def _log(self, h: BaseHTTPRequestHandler, params: dict, query: dict) -> None:
        pod, container = params["name"], query.get("container", "")
        previous, follow = query.get("previous") == "true", query.get("follow") == "true"
        key = (pod, container, previous)
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent = 0
        tail = int(query["tailLines"]) if "tailLines" in query else None
        try:
            while True:
                with self.cond:
                    lines = self.logs.get(key, [])
                    if sent == 0 and tail is not None:
                        sent = max(0, len(lines) - tail)
                    new, sent = lines[sent:], len(lines)
                    done = not follow or (pod, container) in self.ended or ("*", "*") in self.ended
                    if not new and not done:
                        self.cond.wait(0.5)
                        continue
                for line in new:
                    chunk = (line + "\n").encode()
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                h.wfile.flush()
                if done and not new:
                    break
            h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (Ctrl-C)


def pod(name: str, release: str, namespace: str, *, image: str, digest: str | None, phase: str = "Running",
        ready: bool = True, restarts: int = 0, waiting: str | None = None, last: str | None = None,
        container: str = "app") -> dict:
    """A pod as the API sends it, for a release's Deployment."""
    status = {"name": container, "image": image, "ready": ready, "restartCount": restarts,
              "imageID": f"{image.split('@')[0]}@{digest}" if digest else "",
              "state": {"waiting": {"reason": waiting, "message": f"{waiting} for {image}"}} if waiting
              else {"running": {"startedAt": "2026-12-03T08:00:00Z"}}}
    if last:
        status["lastState"] = {"terminated": {"reason": last, "exitCode": 137 if last == "OOMKilled" else 1,
                                              "startedAt": "2026-12-03T07:59:00Z", "finishedAt": "2026-12-03T07:59:30Z"}}
    return {"metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/instance": release, "app.kubernetes.io/name": release}},
            "spec": {"containers": [{"name": container, "image": image}]},
            "status": {"phase": phase, "containerStatuses": [status]}}


def deployment(name: str, namespace: str, *, replicas: int, ready: int, updated: int | None = None) -> dict:
    labels = {"app.kubernetes.io/instance": name, "app.kubernetes.io/name": name}
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "x"}]}}},
            "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": ready if updated is None else updated}}


def autoscaler(name: str, namespace: str, *, low: int, high: int, current: int) -> dict:
    labels = {"app.kubernetes.io/instance": name}
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"minReplicas": low, "maxReplicas": high,
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
            "status": {"currentReplicas": current, "desiredReplicas": current}}
