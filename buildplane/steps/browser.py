"""Browser smoke: the portal in a real Chromium (Playwright, the system's browser), with a screenshot.

Passes when the page answers 2xx, the topology's selector appears and no console error was logged.
Until the deadline a page that does not answer (or answers non-2xx) is tried again, since a fresh
release takes a while; a 2xx page with a console error or without the selector fails at once.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..errors import Missing
from .base import RunContext, Status, StepFields, StepResult
from .smoke import FIRST_BACKOFF_S, MAX_BACKOFF_S

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# No sandbox (root, containers), and nothing that would reach the network on its own.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
SCREENSHOT_DIR = Path("output/playwright")


def find_chromium(environ=None) -> str:
    environ = os.environ if environ is None else environ
    explicit = environ.get("BUILDPLANE_CHROMIUM")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise Missing(f"BUILDPLANE_CHROMIUM={explicit} is not an executable file; point it at a Chromium or Chrome binary")
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise Missing("no Chromium found for the browser smoke: install Debian's chromium (`make provision` does) "
                  "or set BUILDPLANE_CHROMIUM to a Chromium/Chrome binary")


def screenshot_path(target: str) -> Path:
    return SCREENSHOT_DIR / f"tilt-{target}-smoke.png"


@dataclass
class PageVisit:
    status: int | None = None
    selector_found: bool = False
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    error: str = ""


def _favicon(message) -> bool:
    # Browsers ask for /favicon.ico on their own; a missing one is not the portal's error.
    url = (message.location or {}).get("url", "")
    return message.text.startswith("Failed to load resource") and url.split("?")[0].endswith("/favicon.ico")


def _visit(context, url: str, selector: str, timeout_ms: float, screenshot: Path) -> PageVisit:
    visit = PageVisit()
    page = context.new_page()
    page.on("console", lambda m: visit.console_errors.append(m.text) if m.type == "error" and not _favicon(m) else None)
    page.on("pageerror", lambda exc: visit.console_errors.append(f"uncaught: {exc}"))
    page.on("requestfailed", lambda r: visit.failed_requests.append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: visit.failed_requests.append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None)
    try:
        resp = page.goto(url, wait_until="load", timeout=timeout_ms)
        visit.status = resp.status if resp else None
        if visit.status is not None and 200 <= visit.status < 300:
            try:
                page.wait_for_selector(selector, state="visible", timeout=min(timeout_ms, 10_000))
                visit.selector_found = True
            except Exception:  # playwright's TimeoutError: the selector never showed
                visit.selector_found = False
            page.wait_for_timeout(200)  # let late console errors of the load arrive
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    except Exception as exc:  # navigation failures: refused, DNS, TLS, timeout
        visit.error = str(exc).splitlines()[0]
    finally:
        page.close()
    return visit


def require_playwright():
    """Playwright's sync entry point; Missing (exit 4, one line) when the package is not importable."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise Missing(f"the browser smoke needs Playwright ({exc.name or 'playwright'} is not importable): "
                      "`pip install playwright` in buildplane's environment (`make install` does it)") from None
    return sync_playwright


def _launch(pw, profile: str, chromium: str):
    try:
        return pw.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True,
                                                     args=CHROMIUM_FLAGS, ignore_https_errors=False)
    except Exception as exc:  # playwright.Error: the binary is there but does not start
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Missing(f"Chromium at {chromium} did not start ({first}); install Debian's chromium "
                      "or set BUILDPLANE_CHROMIUM to a working Chromium/Chrome binary") from None


@dataclass
class BrowserFacts:
    url: str
    selector: str
    visit: PageVisit
    screenshot: str | None
    attempts: int

    def to_json(self) -> dict:
        v = self.visit
        return {"url": self.url, "status": v.status, "selector": self.selector, "selector_found": v.selector_found,
                "console_errors": v.console_errors[:20], "failed_requests": v.failed_requests[:20],
                "screenshot": self.screenshot, "attempts": self.attempts}


@dataclass(frozen=True)
class BrowserStep(StepFields):
    """The target's page in a real Chromium: 2xx, the selector visible, no console error; a screenshot."""

    kind: ClassVar[str] = "smoke"
    target: str
    url: str
    selector: str
    deadline_s: float
    chromium: str


    def describe(self) -> dict:
        return {"browser": f"open {self.url} in {self.chromium}; wait for {self.selector!r}; "
                           f"screenshot {screenshot_path(self.target)}"}

    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        shot = screenshot_path(self.target)
        with ctx.browser:
            visit, attempts = self._visit_until_up(shot, ctx.sleep)
        facts = BrowserFacts(self.url, self.selector, visit, str(shot) if shot.is_file() else None, attempts)
        took = time.monotonic() - started
        answered = visit.status is not None and 200 <= visit.status < 300
        url = self.url
        if not answered:
            last = f"last status {visit.status}" if visit.status is not None else (visit.error or "no answer")
            return StepResult("smoke", self.target, Status.FAILED,
                              f"{url} did not answer 2xx within {self.deadline_s:g}s ({attempts} attempt(s); {last})",
                              took, facts)
        if not visit.selector_found:
            return StepResult("smoke", self.target, Status.FAILED, f"{url}: selector {self.selector!r} never appeared",
                              took, facts)
        if visit.console_errors:
            return StepResult("smoke", self.target, Status.FAILED,
                              f"{url}: {len(visit.console_errors)} console error(s), first: {visit.console_errors[0]}",
                              took, facts)
        return StepResult("smoke", self.target, Status.SUCCEEDED,
                          f"{url} rendered {self.selector!r} with no console error (screenshot {shot})", took, facts)

    def _visit_until_up(self, shot: Path, ctx_sleep) -> tuple[PageVisit, int]:
        """Visit the page until it answers 2xx or the deadline passes (a fresh release takes a while)."""
        sync_playwright = require_playwright()
        started = time.monotonic()
        shot.unlink(missing_ok=True)
        attempts, backoff = 0, FIRST_BACKOFF_S
        with tempfile.TemporaryDirectory(prefix="bp-chromium-") as profile, sync_playwright() as pw:
            context = _launch(pw, profile, self.chromium)
            try:
                while True:
                    attempts += 1
                    remaining = self.deadline_s - (time.monotonic() - started)
                    visit = _visit(context, self.url, self.selector, max(1000.0, min(remaining, 15.0) * 1000), shot)
                    answered = visit.status is not None and 200 <= visit.status < 300
                    remaining = self.deadline_s - (time.monotonic() - started)
                    if answered or remaining <= 0:
                        return visit, attempts
                    visit.console_errors.clear()  # errors of a page that was not up yet do not count
                    ctx_sleep(min(backoff, max(remaining, 0)))
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
            finally:
                context.close()
