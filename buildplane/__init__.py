"""buildplane: a local_resource pipeline engine."""
import sys

# PYTHONDONTWRITEBYTECODE (common in dev containers and CI images) would have every run compile
# buildplane's own modules from source again: ~45 ms of a 0.18 s no-op `up`, on every Tilt trigger. An
# editable install (`make install`) has no bytecode until a run writes it. So a run writes it, into the
# package's `__pycache__` (ignored by git). That happens before any other module of the package is
# imported. The standard library and installed packages have their bytecode already, so nothing is
# written there. A test process (pytest) is left as its environment set it.
if sys.dont_write_bytecode and "pytest" not in sys.modules:
    sys.dont_write_bytecode = False
