"""The Typer app: wires the command modules, runs them, and maps every exception to an exit code.

Only Typer's public API is used (typer.Typer, calling the app with standalone_mode=False,
typer.TyperException / Exit / Abort); pyproject bounds the Typer version so that stays true.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Annotated, Any

import typer

from qcli.cli import compare, env, estimate, load, presets, verify
from qcli.cli._errors import outcome_of
from qcli.environment import environment
from qcli.errors import ExitCode, Terminated
from qcli.output.console import console, env_text

app = typer.Typer(
    name="qcli",
    help="Will this model fit, at which precision, and does it really work once loaded?",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        # Versions from package metadata and GPUs from nvidia-smi: no torch import, so this stays quick
        # and works without the `load` extra. `qcli env` asks torch itself.
        console().print(env_text(environment(probe_torch=False)), markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the versions qcli runs with and exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    """qcli: exact VRAM planning, real quantized loads, CI gates."""


app.command(epilog=estimate.EPILOG)(estimate.estimate)
app.command(epilog=load.EPILOG)(load.load)
app.command(epilog=verify.EPILOG)(verify.verify)
app.command(epilog=compare.EPILOG)(compare.compare)
app.add_typer(presets.app, name="presets")
app.command(epilog=env.EPILOG)(env.env)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (qcli.errors.ExitCode)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("QCLI_DEBUG", "") not in {"", "0"}
    args = [a for a in args if a != "--debug"]  # accepted anywhere, not only before the command
    if debug:
        os.environ["QCLI_DEBUG"] = "1"  # so that the progress line keeps the libraries' warnings
    if not args:
        args = ["--help"]  # bare `qcli` prints help and succeeds
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        result = app(args=args, prog_name="qcli", standalone_mode=False)
        return int(result) if isinstance(result, int) else int(ExitCode.OK)
    except (Exception, KeyboardInterrupt, Terminated) as exc:
        outcome = outcome_of(exc)
        if debug and outcome.message:
            traceback.print_exception(exc)
        line = outcome.line()
        if line:
            sys.stderr.write(line + "\n")
        return outcome.code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
