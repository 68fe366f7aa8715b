"""The one error table: exception type -> (exit code, one line, hint). huggingface_hub's cli/_errors.py
idea: an ordered list, subclasses before their bases (a test checks the order).

An exception no row matches is a bug in qcli: exit 1 with one line that says so and how to see the
traceback. It is never dressed up as bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import typer
from pydantic import ValidationError

from qcli.errors import (
    ExitCode,
    HubAccessDenied,
    HubError,
    HubFileMissing,
    HubGated,
    HubIncomplete,
    HubNotAHub,
    HubOffline,
    HubRedirectLoop,
    HubRepoNotFound,
    HubRevisionNotFound,
    HubServerError,
    HubUnreachable,
    QcliError,
    Terminated,
)

DEBUG_HINT = "run with --debug or QCLI_DEBUG=1 for the traceback"


@dataclass(frozen=True)
class Outcome:
    """What the user sees for one exception: the exit code and one stderr line (empty: nothing)."""

    code: int
    message: str
    hint: str | None = None

    def line(self) -> str:
        """Return the stderr line, `Error: message (hint)`, or '' when nothing is printed."""
        if not self.message:
            return ""
        return f"Error: {self.message}" + (f" ({self.hint})" if self.hint else "")


def _one_line(text: str) -> str:
    first = " ".join(text.split())
    return first[:300] + ("…" if len(first) > 300 else "")


def _qcli(exc: BaseException) -> Outcome:
    assert isinstance(exc, QcliError)
    return Outcome(int(exc.exit_code), _one_line(exc.message), exc.hint)


def _hub(exc: BaseException) -> Outcome:
    """Word a hub failure by its cause (qcli.model.hub sorts huggingface_hub's errors into these types)."""
    assert isinstance(exc, HubError)
    repo, rev, file, status, code = exc.repo_id, exc.revision, exc.filename, exc.status, int(exc.exit_code)
    login = "pass --token, set HF_TOKEN or run `hf auth login`"
    if isinstance(exc, HubOffline):
        return Outcome(
            code,
            f"{repo}: {file} is not in the local cache and HF_HUB_OFFLINE is set (offline)",
            f"unset HF_HUB_OFFLINE to fetch it, or download it first: `hf download {repo} {file}`",
        )
    if isinstance(exc, HubIncomplete):
        return Outcome(
            code,
            f"the hub at {exc.endpoint} did not finish sending {file} of {repo} ({exc.detail})",
            "check the network or try again later; HF_HUB_DOWNLOAD_TIMEOUT gives a slow link more seconds",
        )
    if isinstance(exc, HubRedirectLoop):
        return Outcome(
            code,
            f"the hub at {exc.endpoint} redirected the request for {file} of {repo} in a loop",
            "check HF_ENDPOINT and the proxy; try again later",
        )
    if isinstance(exc, HubNotAHub):
        return Outcome(
            code,
            f"{exc.endpoint} answered the request for {file} of {repo} without the hub's headers ({exc.detail}): "
            "not an answer from a Hugging Face hub",
            "a proxy, captive portal or login page may be in the way: check the network, the proxy and HF_ENDPOINT",
        )
    if isinstance(exc, HubUnreachable):
        return Outcome(
            code,
            f"cannot reach the hub at {exc.endpoint} ({exc.detail}) for {repo}, and it is not in the cache",
            "check the network, the proxy or HF_ENDPOINT; with HF_HUB_OFFLINE=1 qcli reads the cache only",
        )
    if isinstance(exc, HubServerError) and status == 429:
        return Outcome(
            code,
            f"the hub at {exc.endpoint} is rate-limiting requests (HTTP 429) for {repo}",
            f"wait a minute and try again; requests with a token get a higher limit ({login})",
        )
    if isinstance(exc, HubServerError) and status is not None and 400 <= status < 500:
        return Outcome(
            code,
            f"the hub at {exc.endpoint} refused the request for {file} of {repo} at {rev} (HTTP {status})",
            "check the id and the revision, and HF_ENDPOINT if it is set",
        )
    if isinstance(exc, HubServerError):
        return Outcome(code, f"the hub at {exc.endpoint} answered HTTP {status} for {repo}", "try again later")
    if isinstance(exc, HubAccessDenied) and exc.detail == "no token":
        return Outcome(code, f"the hub refused access to {repo} (HTTP {status}) and no token was sent", login)
    if isinstance(exc, HubAccessDenied) and exc.detail and exc.detail.startswith("invalid token: "):
        source = exc.detail.removeprefix("invalid token: ")
        return Outcome(
            code,
            f"the hub does not accept the token from {source} (HTTP {status}, invalid credentials): it is "
            f"mistyped, expired or revoked; nothing of {repo} was read",
            f"create a token at {exc.endpoint}/settings/tokens, or leave it out for a public repo",
        )
    if isinstance(exc, HubAccessDenied):
        return Outcome(code, f"the hub refused access to {repo} (HTTP {status})", "check the token's permissions")
    if isinstance(exc, HubGated):
        who = "no token was sent" if status == 401 else "this token has not been granted access"
        return Outcome(
            code, f"{repo} is a gated model and {who}", f"accept the licence on {exc.endpoint}/{repo}, then {login}"
        )
    if isinstance(exc, HubRepoNotFound):
        return Outcome(code, f"{repo}: not found on the hub (or private)", f"check the id; for a private repo {login}")
    if isinstance(exc, HubRevisionNotFound):
        return Outcome(code, f"{repo}: revision {rev!r} not found", "give a branch, tag or commit of the repo")
    if isinstance(exc, HubFileMissing) and file.endswith(".safetensors"):
        return Outcome(
            code,
            f"{repo} has no {file} at revision {rev}, which its safetensors index lists",
            "the checkpoint on the hub is incomplete: tell the repo's owners",
        )
    if isinstance(exc, HubFileMissing):  # detail and hint: what the repo holds instead, when it was listed
        instead = f"; {exc.detail}" if exc.detail else ""
        hint = exc.hint or "is it a transformers model?"
        return Outcome(code, f"{repo} has no {file} at revision {rev}{instead}", hint)
    return _qcli(exc)


def _validation(exc: BaseException) -> Outcome:
    assert isinstance(exc, ValidationError)
    from qcli.plan.presets import format_validation_error  # the presets' pydantic models: only on this path

    return Outcome(int(ExitCode.BAD_INPUT), _one_line(format_validation_error(exc.title, exc)))


def _typer_exit(exc: BaseException) -> Outcome:
    assert isinstance(exc, typer.Exit)
    return Outcome(int(exc.exit_code), "")


def _typer_usage(exc: BaseException) -> Outcome:
    # Typer's parse errors (unknown option, missing argument, bad value) carry exit code 2.
    assert isinstance(exc, typer.TyperException)
    # The help of the command that was being parsed (`qcli load --help` for a missing MODEL), else the root's.
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None and ctx.command_path.startswith("qcli") else "qcli"
    return Outcome(int(exc.exit_code), _one_line(exc.format_message()), f"see `{path} --help`")


def _interrupted(exc: BaseException) -> Outcome:
    return Outcome(int(ExitCode.INTERRUPTED), "interrupted")


def _aborted(exc: BaseException) -> Outcome:
    return Outcome(int(ExitCode.INTERRUPTED), "aborted")


def _terminated(exc: BaseException) -> Outcome:
    return Outcome(int(ExitCode.TERMINATED), "terminated (SIGTERM); temporary files were removed")


def _os_error(exc: BaseException) -> Outcome:
    """A file name the system refuses (too long) is the user's to fix, a full disk is a failed run; any other
    OSError is a bug."""
    import errno

    assert isinstance(exc, OSError)
    if exc.errno == errno.ENAMETOOLONG:
        name = str(exc.filename)[:60] + ("…" if len(str(exc.filename)) > 60 else "")
        return Outcome(int(ExitCode.BAD_INPUT), f"{name}: file name too long", "give a shorter path")
    if exc.errno in {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}:
        # A full disk (`qcli … > /dev/full`) or a failing device: the work ran, writing its result failed.
        where = str(exc.filename)[:60] if exc.filename else "the output"
        return Outcome(
            int(ExitCode.FAILED), f"cannot write {where}: {exc.strerror}", "free some space, or write elsewhere"
        )
    return _internal(exc)


def _internal(exc: BaseException) -> Outcome:
    detail = _one_line(f"{type(exc).__name__}: {exc}")
    return Outcome(int(ExitCode.FAILED), f"internal error, a bug in qcli: {detail}", DEBUG_HINT)


def _broken_pipe(exc: BaseException) -> Outcome:
    return Outcome(int(ExitCode.FAILED), "")  # the reader went away (`qcli … | head`): nothing to say


# Order matters: the first row whose type matches wins, so subclasses come before their bases.
ERROR_TABLE: list[tuple[type[BaseException], Callable[[BaseException], Outcome]]] = [
    (HubError, _hub),
    (QcliError, _qcli),
    (ValidationError, _validation),
    (typer.Exit, _typer_exit),
    (typer.Abort, _aborted),
    (typer.TyperException, _typer_usage),
    (KeyboardInterrupt, _interrupted),
    (Terminated, _terminated),
    (BrokenPipeError, _broken_pipe),
    (OSError, _os_error),
]


def outcome_of(exc: BaseException) -> Outcome:
    """Return what the user sees for `exc`: its row in the table, else an internal error (exit 1)."""
    for kind, handler in ERROR_TABLE:
        if isinstance(exc, kind):
            return handler(exc)
    return _internal(exc)
