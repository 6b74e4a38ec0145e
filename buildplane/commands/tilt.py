"""`buildplane tilt up|ci|down`: Tilt as a process that can be found and stopped again."""
from __future__ import annotations

import sys

from ..errors import BadInput
from ..state import StateDir
from ..tools import tilt
from ..tools.run import Runner


def run(args, topology) -> int:
    record = StateDir.from_env().tilt
    if args.action == "down":
        if args.args:
            raise BadInput(f"buildplane tilt down takes no arguments (got {' '.join(args.args)})")
        import shutil
        print(tilt.stop(record, binary=shutil.which("tilt")))  # run from Tilt's UI: Tilt stops after it
        return 0
    binary = Runner().which("tilt")  # exit 4 with how to install it
    sys.stdout.flush()
    tilt.exec_tilt(binary, [args.action, *args.args], record)
    return 0  # not reached: exec_tilt becomes Tilt
