"""Exit codes and the two error types every command raises (httpie's status.py idea)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the work ran and failed: a verify check, a load error, OOM
    BAD_INPUT = 2  # flags, preset, model path or config that cannot be used


class QcliError(Exception):
    """Base error: its message is one line written for the user."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(QcliError):
    """Bad input: exit 2."""

    exit_code = ExitCode.BAD_INPUT


class RunError(QcliError):
    """The work ran and failed: exit 1."""

    exit_code = ExitCode.FAILED
