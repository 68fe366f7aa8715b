"""Exit codes and the error types every command raises (httpie's status.py idea).

The CLI's one handler (qcli.cli._errors) maps these, and third-party exception types, to an exit code
and one stderr line. Core code raises; it never prints or exits.
"""

from __future__ import annotations

import os
import signal
import sys
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the work ran and failed: a verify check, a load error, OOM, an internal error
    BAD_INPUT = 2  # flags, preset, model path or config that cannot be used
    INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C
    TERMINATED = 128 + signal.SIGTERM  # 143: SIGTERM, what a CI cancel sends


class QcliError(Exception):
    """Base error: its message is one line written for the user, with an optional hint."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        """Return the message and the hint as one line."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(QcliError):
    """Bad input: exit 2."""

    exit_code = ExitCode.BAD_INPUT


class RunError(QcliError):
    """The work ran and failed: exit 1."""

    exit_code = ExitCode.FAILED


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives, so that `with` blocks clean up as for Ctrl-C.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it.
    """

    exit_code = ExitCode.TERMINATED


class StdoutClosed(QcliError):
    """stdout is closed (`qcli … >&-` leaves Python's sys.stdout None): the result has nowhere to go. Exit 1."""

    def __init__(self) -> None:
        super().__init__(
            "stdout is closed: there is nowhere to print the result", "redirect it to a file or /dev/null instead"
        )


class HubError(UsageError):
    """The hub did not give a file of a repo; each subclass is one cause, worded by the CLI's error table."""

    def __init__(
        self,
        *,
        repo_id: str,
        revision: str,
        filename: str,
        endpoint: str,
        status: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(f"{repo_id}: {type(self).__name__} ({filename} at {revision})")
        self.repo_id, self.revision, self.filename = repo_id, revision, filename
        self.endpoint, self.status, self.detail = endpoint, status, detail


class HubOffline(HubError):
    """HF_HUB_OFFLINE is set and the file is not in the hub's cache."""


class HubUnreachable(HubError):
    """No answer from the endpoint: connection refused, DNS, timeout, TLS."""


class HubIncomplete(HubUnreachable):
    """The endpoint answered, but the file did not arrive whole: too slow (a deadline) or cut short."""


class HubRedirectLoop(HubUnreachable):
    """The endpoint redirected the request in a loop."""


class HubNotAHub(HubUnreachable):
    """The endpoint answered without the hub's headers (X-Repo-Commit): a proxy's or captive portal's page, a
    redirect to a login page on another host, or an HF_ENDPOINT that is not a hub."""


class HubServerError(HubError):
    """The endpoint answered with a server error (5xx) or another unexpected status."""


class HubAccessDenied(HubError):
    """A plain 401/403: the token is invalid or lacks the permission."""


class HubRepoNotFound(HubError):
    """No such repo, or a private one this token cannot see."""


class HubGated(HubRepoNotFound):
    """A gated repo whose licence this account has not accepted (or no token was sent)."""


class HubRevisionNotFound(HubError):
    """The repo exists; the branch, tag or commit does not."""


class HubFileMissing(HubError):
    """The repo and revision exist; the file does not."""


def debug_enabled() -> bool:
    """Return whether --debug (or QCLI_DEBUG) asked for tracebacks and the libraries' own warnings."""
    return os.environ.get("QCLI_DEBUG", "") not in {"", "0"}


def too_many_digits() -> str:
    """Return the problem of a number Python's int() refuses to read (CVE-2020-10735's digit limit)."""
    return f"a number with more than {sys.get_int_max_str_digits()} digits"
