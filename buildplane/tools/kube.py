"""Read-only access to the cluster, for diagnostics (#16): list pods, deployments and autoscalers, and read
pod logs — through the maintained Kubernetes client, for the allowed kube context only.

This class is the only place buildplane talks to the Kubernetes API. It has reads and nothing else:
the client's methods it calls are the `list_namespaced_*` and `read_namespaced_pod_log` below, and a
test scans the package for any other (create, patch, replace, delete, connect). Answers are taken as
the API's own JSON (`_preload_content=False`) and parsed apart (diagnostics/), so a client upgrade that
changes its models changes nothing here. Every mutation of the cluster stays with Helm and Argo CD.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Iterator

from ..errors import Missing, StepFailed
from ..kubecontext import kubeconfig_files

REQUEST_TIMEOUT_S = 15.0  # one list or log read; a followed log stream has no deadline of ours


def _failure(exc: BaseException, what: str, context: str) -> Exception:
    """One line for what the API (or the way to it) said."""
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return Missing(f"the cluster refused to {what} (HTTP {status}) for kube context {context}; check your "
                       "credentials there (`kubectl auth can-i list pods`)")
    if status:
        reason = getattr(exc, "reason", "") or ""
        return StepFailed(f"the cluster answered HTTP {status} {reason} to {what}".rstrip())
    return Missing(f"the cluster of kube context {context} does not answer ({type(exc).__name__}); "
                   "is it reachable from here? (`kubectl --context " + context + " get ns`)")


class KubeReader:
    """List/get/watch and pod logs in one namespace of one (allowed) context. `api_client` is injected in
    tests; otherwise made from the kubeconfig, for that context alone."""

    def __init__(self, context: str, namespace: str, api_client=None) -> None:
        self.context, self.namespace = context, namespace
        self._api = api_client
        self._lock = threading.Lock()

    @property
    def api(self):
        with self._lock:
            if self._api is None:
                from kubernetes import config  # ~0.3 s to import: the diagnostics commands alone pay it

                # The kubeconfig as buildplane resolves it ($KUBECONFIG, else ~/.kube/config), named here: the
                # client's own default is read from the environment once, when it is imported.
                files = os.pathsep.join(str(p) for p in kubeconfig_files(dict(os.environ)))
                from kubernetes import client

                conf = client.Configuration()
                conf.retries = 1  # a cluster that does not answer is said at once, not after three tries
                try:
                    config.load_kube_config(config_file=files, context=self.context, client_configuration=conf,
                                            persist_config=False)
                    self._api = client.ApiClient(configuration=conf)
                except Exception as exc:  # noqa: BLE001 - a kubeconfig that cannot serve this context
                    raise Missing(f"kube context {self.context}: {type(exc).__name__}: {str(exc)[:160]}; "
                                  "check your kubeconfig ($KUBECONFIG)") from None
            return self._api

    def _list(self, group: str, method: str, what: str, selector: str) -> list[dict]:
        from kubernetes import client

        api = {"core": client.CoreV1Api, "apps": client.AppsV1Api, "autoscaling": client.AutoscalingV2Api}[group]
        try:
            resp = getattr(api(self.api), method)(self.namespace, label_selector=selector, _preload_content=False,
                                                  _request_timeout=REQUEST_TIMEOUT_S)
            return list(json.loads(resp.data).get("items") or [])
        except Exception as exc:  # noqa: BLE001 - sorted into one line by _failure
            raise _failure(exc, f"list {what} in {self.namespace}", self.context) from None

    def pods(self, selector: str) -> list[dict]:
        return self._list("core", "list_namespaced_pod", "pods", selector)

    def deployments(self, selector: str) -> list[dict]:
        return self._list("apps", "list_namespaced_deployment", "deployments", selector)

    def autoscalers(self, selector: str) -> list[dict]:
        return self._list("autoscaling", "list_namespaced_horizontal_pod_autoscaler", "autoscalers", selector)

    def log(self, pod: str, container: str, *, follow: bool = False, since_seconds: int | None = None,
            previous: bool = False, tail_lines: int | None = None, stop: threading.Event | None = None
            ) -> Iterator[str]:
        """The container's log, line by line; with `follow`, until the container ends or `stop` is set."""
        from kubernetes import client

        kw = {"container": container, "follow": follow, "previous": previous, "_preload_content": False}
        if since_seconds is not None:
            kw["since_seconds"] = since_seconds
        if tail_lines is not None:
            kw["tail_lines"] = tail_lines
        if not follow:
            kw["_request_timeout"] = REQUEST_TIMEOUT_S
        try:
            resp = client.CoreV1Api(self.api).read_namespaced_pod_log(pod, self.namespace, **kw)
        except Exception as exc:  # noqa: BLE001
            raise _failure(exc, f"read the log of {pod}/{container}", self.context) from None
        pending = b""
        try:
            for chunk in resp.stream(4096, decode_content=True):
                if stop is not None and stop.is_set():
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace")
            if pending and not (stop is not None and stop.is_set()):
                yield pending.decode("utf-8", errors="replace")
        except Exception as exc:  # noqa: BLE001 - a stream cut by the cluster (or by us, on Ctrl-C)
            if stop is None or not stop.is_set():
                raise _failure(exc, f"read the log of {pod}/{container}", self.context) from None
        finally:
            resp.release_conn()
