"""The product's error types, one per exit code of the CLI contract (DESIGN §4)."""
from __future__ import annotations


class BuildplaneError(Exception):
    """An error the CLI turns into one line on stderr and an exit code."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(BuildplaneError):
    """Usage, topology or a missing file: exit 2."""

    exit_code = 2


class Refused(BuildplaneError):
    """A mode guard said no: exit 3. `rule` names the guard."""

    exit_code = 3

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"refused [{rule}]: {message}")
        self.rule = rule


class Missing(BuildplaneError):
    """A required tool, credential or endpoint is missing: exit 4."""

    exit_code = 4


class StepFailed(BuildplaneError):
    """A pipeline step failed: exit 1."""

    exit_code = 1


class Interrupted(BuildplaneError):
    """SIGINT/SIGTERM: exit 130."""

    exit_code = 130


def internal_error(exc: Exception) -> str:
    """The one line for an exception nobody foresaw (a bug): its type and first line, and how to see more."""
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"internal error: {type(exc).__name__}: {first} (please report it; BUILDPLANE_DEBUG=1 shows the traceback)"
