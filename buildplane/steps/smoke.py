"""Route smoke: a release is only done when its public routes answer.

Each route (url, expected status, optional body text) is retried with backoff until the target's
deadline, because a fresh release takes a while to answer; the result keeps every route's last
status, latency and attempts. TLS is verified; redirects are followed only when the route asks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import time
from dataclasses import dataclass
from typing import Callable, ClassVar


from .base import RunContext, Status, StepFields, StepResult

if TYPE_CHECKING:  # httpx is imported where a request is made: a run that makes none never loads it
    import httpx

FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 2.0
REQUEST_TIMEOUT_S = 5.0


@dataclass
class RouteResult:
    url: str
    ok: bool
    status: int | None
    latency_ms: float | None
    attempts: int
    message: str

    def to_json(self) -> dict:
        return {"url": self.url, "ok": self.ok, "status": self.status,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
                "attempts": self.attempts, "message": self.message}


def check_route(client: httpx.Client, route, deadline: float, *, now: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> RouteResult:
    """GET the route until it answers as expected or the deadline passes; the last answer is kept."""
    import httpx

    attempts, backoff = 0, FIRST_BACKOFF_S
    last_status, last_latency, last = None, None, "no answer"
    while True:
        attempts += 1
        t0 = now()
        try:
            resp = client.get(route.url, follow_redirects=route.follow_redirects,
                              timeout=max(0.1, min(REQUEST_TIMEOUT_S, deadline - t0)))
            last_latency = (now() - t0) * 1000
            last_status = resp.status_code
            if resp.status_code != route.status:
                last = f"status {resp.status_code}, expected {route.status}"
                if resp.is_redirect and not route.follow_redirects:
                    last += f" (redirect to {resp.headers.get('location')}; set follow_redirects: true to follow it)"
            elif route.text and route.text not in resp.text:
                last = f"status {resp.status_code} but the body lacks {route.text!r}"
            else:
                return RouteResult(route.url, True, last_status, last_latency, attempts, "ok")
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        remaining = deadline - now()
        if remaining <= 0:
            return RouteResult(route.url, False, last_status, last_latency, attempts, last)
        sleep(min(backoff, remaining))
        backoff = min(backoff * 2, MAX_BACKOFF_S)


@dataclass
class RouteFacts:
    routes: list[RouteResult]

    def to_json(self) -> dict:
        passed = sum(r.ok for r in self.routes)
        return {"routes": [r.to_json() for r in self.routes], "routes_passed": f"{passed}/{len(self.routes)}"}


@dataclass(frozen=True)
class SmokeStep(StepFields):
    """GET every public route of a target until it answers as expected, or its deadline passes."""

    kind: ClassVar[str] = "smoke"
    target: str
    routes: tuple = ()
    deadline_s: float = 120.0


    def describe(self) -> dict:
        return {"http": [f"GET {r.url} expect {r.status}" + (f" containing {r.text!r}" if r.text else "")
                         for r in self.routes]}

    def run(self, ctx: RunContext) -> StepResult:
        now = ctx.now
        started = now()
        deadline = started + self.deadline_s
        if ctx.http is not None:
            client = ctx.http
        else:
            import httpx

            client = httpx.Client(verify=True)
        try:
            results = [check_route(client, r, deadline, now=now, sleep=ctx.sleep) for r in self.routes]
        finally:
            if ctx.http is None:
                client.close()
        facts = RouteFacts(results)
        passed = sum(r.ok for r in results)
        if passed == len(results):
            slowest = max((r.latency_ms or 0) for r in results) if results else 0
            return StepResult("smoke", self.target, Status.SUCCEEDED,
                              f"{passed} route(s) answered (slowest {slowest:.0f} ms)", now() - started, facts)
        bad = next(r for r in results if not r.ok)
        return StepResult("smoke", self.target, Status.FAILED,
                          f"{bad.url}: {bad.message} after {bad.attempts} attempt(s) within {self.deadline_s:g}s",
                          now() - started, facts)
