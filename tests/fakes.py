"""Fake executables for tool-boundary tests: they record argv and FAIL on any call nobody expected."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

TEMPLATE = '''#!{python}
import json, sys, time, os
argv = sys.argv[1:]
rules = json.load(open({rules!r}))
with open({log!r}, "a") as fh:
    fh.write(json.dumps([{name!r}] + argv) + "\\n")
for index, rule in enumerate(rules):
    if argv[:len(rule["prefix"])] == rule["prefix"]:
        if rule.get("has") and not any(rule["has"] in a for a in argv):  # only calls naming this (e.g. a target)
            continue
        if rule.get("times") is not None:  # a rule for the first N matching calls only
            counter = {rules!r} + f".{{index}}.count"
            used = int(open(counter).read()) if os.path.exists(counter) else 0
            if used >= rule["times"]:
                continue
            open(counter, "w").write(str(used + 1))
        if rule.get("stdout"):
            sys.stdout.write(rule["stdout"])
        if rule.get("stdout_bytes"):  # raw bytes, e.g. output that is not UTF-8 (latin-1 in a JSON string)
            sys.stdout.flush()
            sys.stdout.buffer.write(rule["stdout_bytes"].encode("latin-1"))
        if rule.get("stderr"):
            sys.stderr.write(rule["stderr"])
        if rule.get("write_metadata"):
            i = argv.index("--metadata-file")
            open(argv[i + 1], "w").write(json.dumps({{"containerimage.digest": rule["write_metadata"]}}))
        if rule.get("write_layout"):  # what buildx writes for --output type=oci,dest=DIR,tar=false
            import shutil
            out = argv[argv.index("--output") + 1]
            dest = dict(kv.split("=", 1) for kv in out.split(","))["dest"]
            shutil.copytree(rule["write_layout"], dest, dirs_exist_ok=True)
            index = json.load(open(os.path.join(rule["write_layout"], "index.json")))
            i = argv.index("--metadata-file")
            open(argv[i + 1], "w").write(json.dumps({{"containerimage.digest": index["manifests"][0]["digest"]}}))
        if rule.get("write_file"):  # a file changed while the tool ran (an editor saving during a build)
            for path, text in rule["write_file"].items():
                open(path, "w").write(text)
        if rule.get("sleep"):
            time.sleep(rule["sleep"])
        if rule.get("touch"):  # proof that the call ran to its end
            open(rule["touch"], "w").write("done")
        if rule.get("until_signalled"):  # a long-running tool (tilt up): runs until TERM (or KILL)
            import signal
            def on_term(signum, frame):
                with open({log!r}, "a") as fh:
                    fh.write(json.dumps([{name!r}, "<SIGTERM>"]) + "\\n")
                if not rule.get("ignore_term"):
                    time.sleep(rule.get("term_grace", 0))  # a tool that takes a while to stop
                    sys.exit(0)
            signal.signal(signal.SIGTERM, on_term)
            while True:
                time.sleep(0.05)
        sys.exit(rule.get("exit", 0))
sys.stderr.write("fake {name}: unexpected call: " + " ".join(argv) + "\\n")
sys.exit(97)
'''


class FakeTool:
    """`name` on PATH at bin_dir; `expect(prefix, ...)` declares an allowed call."""

    def __init__(self, bin_dir: Path, name: str) -> None:
        self.name = name
        bin_dir.mkdir(parents=True, exist_ok=True)
        self.path = bin_dir / name
        self.log = bin_dir / f"{name}.calls.jsonl"
        self.rules_file = bin_dir / f"{name}.rules.json"
        self.rules: list[dict] = []
        self._save()
        self.path.write_text(TEMPLATE.format(python=sys.executable, rules=str(self.rules_file), log=str(self.log), name=name))
        self.path.chmod(self.path.stat().st_mode | stat.S_IEXEC)

    def _save(self) -> None:
        self.rules_file.write_text(json.dumps(self.rules))

    def expect(self, *prefix: str, **behaviour) -> "FakeTool":
        self.rules.append({"prefix": list(prefix), **behaviour})
        self._save()
        return self

    @property
    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line)[1:] for line in self.log.read_text().splitlines()]

    def unexpected(self) -> list[list[str]]:
        return [c for c in self.calls if not any(c[:len(r["prefix"])] == r["prefix"] for r in self.rules)]


# ---- a run at the tool boundary: fake tools on PATH, a registry on httpx.MockTransport -------------

import httpx  # noqa: E402

from buildplane.engine import Engine  # noqa: E402
from buildplane.freshness import StatCache  # noqa: E402
from buildplane.plan import Options, make_plan  # noqa: E402
from buildplane.state import StateDir, write_json_atomic  # noqa: E402
from buildplane.steps.base import BuilderCaps, RunContext  # noqa: E402
from buildplane.tools.buildx import BuilderInfo  # noqa: E402
from buildplane.tools.registry import RegistryClient  # noqa: E402
from buildplane.tools.run import Runner  # noqa: E402
from buildplane.topology import load  # noqa: E402

DIGEST = "sha256:" + "ab" * 32
STATE = StateDir(Path(".buildplane"))


def registry_stub(existing: set[str]):
    """A registry where `existing` manifests (repo:tag) exist; records requests."""
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(f"{req.method} {req.url.path}")
        if req.url.path == "/v2/":
            return httpx.Response(200)
        repo, _, tag = req.url.path.removeprefix("/v2/").partition("/manifests/")
        if req.method == "HEAD":
            return httpx.Response(200, headers={"docker-content-digest": DIGEST}) if f"{repo}:{tag}" in existing else httpx.Response(404)
        if req.method == "GET":
            return httpx.Response(200, content=b"{}", headers={"docker-content-digest": DIGEST, "content-type": "application/vnd.oci.image.index.v1+json"})
        if req.method == "PUT":
            existing.add(f"{repo}:{tag}")
            return httpx.Response(201)
        return httpx.Response(405)

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


def routes_answering(status: int = 200) -> httpx.Client:
    """Every smoke route answers `status` (the cluster's routes are not reachable from here)."""
    return httpx.Client(transport=httpx.MockTransport(lambda req: httpx.Response(status, text="ok")))


_DEFAULT = object()


def run_context(bin_dir: Path, client: httpx.Client, *, force: bool = False, logs: list | None = None,
                http=_DEFAULT, registry_cache: bool = True, sleep=None, builder: BuilderInfo | None = None) -> RunContext:
    """The seams of a run, all injected: fake tools first on PATH, the stub registry, a builder whose
    registry-cache capability is given, smoke routes that answer (or a real client with http=None)."""
    runner = Runner(extra_path=[str(bin_dir)])
    ctx = RunContext(state=STATE, log=logs.append if logs is not None else (lambda m: None), runner=runner,
                     registry=RegistryClient(client=client, runner=runner),
                     builder=BuilderCaps(lambda: builder or BuilderInfo(registry_cache, "the test's builder",
                                                                       "docker", (0, 29))),
                     release_cache=StatCache.open(STATE.release_statcache), force=force,
                     http=routes_answering() if http is _DEFAULT else http)
    if sleep is not None:
        ctx.sleep = sleep
    return ctx


def run_up(bin_dir: Path, *, mode="dev", targets=("api",), apply=False, force=False, namespace=None, reporter=None,
           build_only=False, client: httpx.Client | None = None, logs: list | None = None, http=_DEFAULT, sleep=None):
    """`up` in-process against the workspace's topology.yaml; returns the RunSummary."""
    runner = Runner(extra_path=[str(bin_dir)])
    plan = make_plan(load("topology.yaml"), Options(mode=mode, targets=targets, apply=apply, force=force,
                                                    namespace=namespace, build_only=build_only), runner=runner)
    client = client or registry_stub(set())[0]
    ctx = run_context(bin_dir, client, force=force, logs=logs, http=http, sleep=sleep)
    return Engine(plan, ctx, reporter=reporter).run()


def up(tools, **kw):
    return run_up(tools["bin"], **kw)


def seed_builder(env: dict, state_root: Path = Path(".buildplane"), info: BuilderInfo | None = None) -> None:
    """The builder's answer kept as if asked before: a fake docker that refuses the probe's calls
    (`buildx inspect`, `info`, `buildx version`) then never sees them."""
    from buildplane.tools.buildx import builder_key

    info = info or BuilderInfo(False, "the test's builder", "docker", (0, 29))
    write_json_atomic(StateDir(state_root).builder_caps, {builder_key(env): info.to_json()})
