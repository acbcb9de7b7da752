"""MLab's exception types and the one place that maps them to exit codes.

Exit codes follow click's convention: 0 ok, 1 failure, 2 usage or configuration error.
Every error carries a one-line message that names the object or field at fault, and
optionally a hint with the fix. Errors never carry secret values.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class MlabError(Exception):
    """Base class of every error MLab reports to a user.

    Args:
        message: one line naming what failed and why (no secrets).
        hint: optional one line naming the fix.

    Attributes:
        exit_code: the process exit code the CLI uses for this error.
        retryable: True when trying again later may succeed (a temporary condition).
    """

    exit_code: int = EXIT_FAILURE
    retryable: bool = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """Return ``message`` and, if any, ``hint`` joined on one line."""
        text = self.message.replace("\n", " ")
        if self.hint:
            text += f" ({self.hint})"
        return text


class UsageError(MlabError):
    """A bad command-line argument or option (exit 2)."""

    exit_code = EXIT_USAGE


class SiteError(MlabError):
    """The site file is invalid: unknown key, bad value, conflicting settings (exit 2)."""

    exit_code = EXIT_USAGE


class ToolMissingError(MlabError):
    """An external program (podman, kubectl, git, mmdebstrap...) is missing or too old."""


class DeployError(MlabError):
    """Applying to a cluster or to podman failed."""


class TemporaryError(MlabError):
    """A failure that may pass if retried (network, a busy lock, a rollout still running)."""

    retryable = True
