#!/usr/bin/env python3
"""Print the BuildPlane contract for a topology file: `python3 ops/infra/build_plane_env.py PATH [--mode M] [--format sh|json]`.

Runs with any python3: when the package's dependencies are not importable here, it re-runs
itself with the project's virtualenv.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
try:
    from buildplane.cli import main
except ImportError:
    venv = ROOT / ".venv" / "bin" / "python"
    if venv.exists() and Path(sys.prefix).resolve() != venv.parent.parent.resolve():
        os.execv(str(venv), [str(venv), __file__, *sys.argv[1:]])
    print("build_plane_env: the buildplane package is not installed; run `make provision`", file=sys.stderr)
    sys.exit(4)

sys.exit(main(["env", *sys.argv[1:]]))
