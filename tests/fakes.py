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
        if rule.get("times") is not None:  # a rule for the first N matching calls only
            counter = {rules!r} + f".{{index}}.count"
            used = int(open(counter).read()) if os.path.exists(counter) else 0
            if used >= rule["times"]:
                continue
            open(counter, "w").write(str(used + 1))
        if rule.get("stdout"):
            sys.stdout.write(rule["stdout"])
        if rule.get("stderr"):
            sys.stderr.write(rule["stderr"])
        if rule.get("write_metadata"):
            i = argv.index("--metadata-file")
            open(argv[i + 1], "w").write(json.dumps({{"containerimage.digest": rule["write_metadata"]}}))
        if rule.get("sleep"):
            time.sleep(rule["sleep"])
        if rule.get("until_signalled"):  # a long-running tool (tilt up): runs until TERM (or KILL)
            import signal
            def on_term(signum, frame):
                with open({log!r}, "a") as fh:
                    fh.write(json.dumps([{name!r}, "<SIGTERM>"]) + "\\n")
                if not rule.get("ignore_term"):
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
