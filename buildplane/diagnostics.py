"""What runs in the cluster, read from the API's own JSON (tools/kube.py) and said in people's words (#16):
each pod's phase, readiness, restarts and why it is unwell (CrashLoopBackOff, OOMKilled, ImagePullBackOff
with the image), each Deployment's ready/desired replicas and autoscaler bounds, and — the question behind
"my edit is not taking effect" — whether the pods run the digest buildplane last released, with the fix in
one line when they do not. Parsing only: nothing here talks to the cluster.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Waiting reasons that mean the pod will not come up by itself.
STUCK = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError",
         "CreateContainerError", "RunContainerError")


def digest_of(image_id: str | None) -> str | None:
    """`docker-pullable://repo@sha256:…`, `repo@sha256:…` or `sha256:…` → the digest."""
    found = _DIGEST.findall(image_id or "")
    return found[-1] if found else None


@dataclass(frozen=True)
class PodView:
    name: str
    phase: str
    ready: str  # "1/1"
    restarts: int
    problem: str | None  # why it is unwell, in one phrase
    digests: tuple[str, ...]  # what its containers of the target's image run
    containers: tuple[str, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "phase": self.phase, "ready": self.ready, "restarts": self.restarts,
                "problem": self.problem, "digests": list(self.digests), "containers": list(self.containers)}


def pod_view(pod: dict, repo: str | None = None) -> PodView:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    images = {c.get("name"): c.get("image", "") for c in spec.get("containers") or []}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    problems: list[str] = []
    digests: list[str] = []
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in STUCK:
            image = s.get("image") or images.get(s.get("name"), "")
            detail = f" ({image})" if "Image" in reason or reason == "InvalidImageName" else ""
            problems.append(f"{s.get('name')}: {reason}{detail}")
        last = (s.get("lastState") or {}).get("terminated") or {}
        if last.get("reason") and last.get("reason") != "Completed":
            problems.append(f"{s.get('name')}: last ended {last['reason']} (exit {last.get('exitCode')})")
        image = images.get(s.get("name"), s.get("image", ""))
        if repo is None or image.startswith(repo):
            # imageID is the runtime's word; a running container whose spec pins a digest runs that digest
            # even where the runtime does not say so (KWOK, some CRI shims leave imageID empty).
            running = bool((s.get("state") or {}).get("running"))
            digest = digest_of(s.get("imageID")) or (digest_of(image) if running and "@" in image else None)
            if digest:
                digests.append(digest)
    if status.get("reason") and not problems:  # Evicted, …
        problems.append(f"{status['reason']}: {status.get('message', '')}".strip(": "))
    return PodView(meta.get("name", "?"), status.get("phase", "Unknown"), f"{ready}/{len(images) or len(statuses)}",
                   sum(int(s.get("restartCount") or 0) for s in statuses), "; ".join(problems) or None,
                   tuple(dict.fromkeys(digests)), tuple(images))


@dataclass(frozen=True)
class Workload:
    name: str
    ready: int
    desired: int
    updated: int
    hpa: tuple[int, int, int] | None = None  # (min, max, current) when an autoscaler owns the replicas

    def to_json(self) -> dict:
        out = {"name": self.name, "ready": self.ready, "desired": self.desired, "updated": self.updated}
        if self.hpa:
            out["hpa"] = {"min": self.hpa[0], "max": self.hpa[1], "current": self.hpa[2]}
        return out

    def line(self) -> str:
        hpa = f"; autoscaled {self.hpa[0]}–{self.hpa[1]}, now {self.hpa[2]}" if self.hpa else ""
        return f"deployment {self.name}: {self.ready}/{self.desired} ready, {self.updated} updated{hpa}"


def workloads(deployments: list[dict], autoscalers: list[dict]) -> list[Workload]:
    scaled = {}
    for h in autoscalers:
        ref = (h.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") == "Deployment":
            spec, status = h.get("spec") or {}, h.get("status") or {}
            scaled[ref.get("name")] = (int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 0),
                                       int(status.get("currentReplicas") or 0))
    out = []
    for d in deployments:
        name = (d.get("metadata") or {}).get("name", "?")
        spec, status = d.get("spec") or {}, d.get("status") or {}
        out.append(Workload(name, int(status.get("readyReplicas") or 0), int(spec.get("replicas", 1)),
                            int(status.get("updatedReplicas") or 0), scaled.get(name)))
    return out


@dataclass
class TargetPods:
    target: str
    release: str
    release_status: str  # deployed, failed, pending-upgrade, … (helm status), or "not installed"
    revision: int | None
    released_digest: str | None  # what buildplane last released of this target, from its release record
    workloads: list[Workload] = field(default_factory=list)
    pods: list[PodView] = field(default_factory=list)
    runs_released: bool | None = None  # None: nothing released from here to compare with
    fix: str | None = None

    def to_json(self) -> dict:
        return {"release": self.release, "release_status": self.release_status, "revision": self.revision,
                "released_digest": self.released_digest, "runs_released": self.runs_released, "fix": self.fix,
                "workloads": [w.to_json() for w in self.workloads], "pods": [p.to_json() for p in self.pods]}


def judge(report: TargetPods, mode: str) -> TargetPods:
    """Do the pods run what buildplane released? And if not, the one thing to do about it."""
    up = f"buildplane up --mode {mode} {report.target}"
    if report.release_status == "not installed":
        report.runs_released, report.fix = False, f"the release {report.release} is not installed: `{up}`"
        return report
    if report.released_digest is None:
        report.fix = f"nothing released from this working tree to compare with: `{up}`"
        return report
    running = [p for p in report.pods if p.phase == "Running"]
    current = [p for p in running if report.released_digest in p.digests]
    stuck = [p for p in report.pods if p.problem]
    report.runs_released = bool(report.pods) and len(current) == len(report.pods)
    if report.runs_released:
        return report
    short = report.released_digest[:19]
    if stuck:
        first = stuck[0]
        hint = ("the cluster cannot pull the image: check that it exists and the pull secret "
                "(imagePullSecrets) for its registry" if "Image" in (first.problem or "") else
                f"see why: `buildplane logs {report.target} --previous`")
        report.fix = f"pod {first.name} is unwell ({first.problem}); {hint}"
    elif not report.pods:
        report.fix = f"no pod of release {report.release} exists; `helm status {report.release}` says why, or `{up}`"
    elif current:
        report.fix = (f"rolling out: {len(current)} of {len(report.pods)} pods run the released image {short}…; "
                      f"wait, or follow it with `buildplane logs {report.target} -f`")
    elif report.release_status != "deployed":
        report.fix = f"the release is {report.release_status}: `{up}` releases {short}… again"
    else:
        report.fix = (f"the pods run another image than the released {short}… (someone released over it?): "
                      f"`{up} --force`")
    return report
