"""The Typer app: wires the command modules, runs them, and maps every exception to an exit code.

Only Typer's public API is used (typer.Typer, calling the app with standalone_mode=False,
typer.TyperException / Exit / Abort); pyproject bounds the Typer version so that stays true.

The command modules do not use `from __future__ import annotations`: Typer reads a command's signature
on every run, and string annotations would be evaluated again each time (typing.get_type_hints), which
was ~40 ms of `qcli estimate`'s start-up (docs/bench.md).
"""

import atexit
import contextlib
import gc
import importlib
import os
import signal
import sys
import traceback
from collections import Counter
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from qcli.cli._errors import outcome_of
from qcli.errors import ExitCode, StdoutClosed, Terminated, UsageError, debug_enabled

# command name -> the module that defines it, in the order `qcli --help` lists them. Each module has a
# function of the same name (or, for a group, a Typer app named `app`), an EPILOG of examples and the
# SHORT_HELP line the root help lists it with.
COMMANDS: dict[str, str] = {
    "estimate": "qcli.cli.estimate",
    "load": "qcli.cli.load",
    "verify": "qcli.cli.verify",
    "compare": "qcli.cli.compare",
    "presets": "qcli.cli.presets",
    "env": "qcli.cli.env",
}
# The commands that load a model: their processes keep the garbage collector (cycles may hold tensors).
LOADING_COMMANDS = frozenset({"load", "verify", "compare"})
HELP = "Will this model fit, at which precision, and does it really work once loaded?"


def _version(value: bool) -> None:
    if value:
        from qcli.environment import environment
        from qcli.output.console import console
        from qcli.output.info_views import env_text

        # Versions from package metadata and GPUs from nvidia-smi: no torch import, so this stays quick
        # and works without the `load` extra. `qcli env` asks torch itself.
        console().print(env_text(environment(probe_torch=False)), markup=False)
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the versions qcli runs with and exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    """qcli: exact VRAM planning, real quantized loads, CI gates."""


class OnceCommand(TyperCommand):
    """A command whose single-value options may be given once: Click keeps the last of `--params 8b
    --params 70b` silently, and a plan for 70b would be shown to someone who also typed 8b. A flag and its
    negation together (`--master-weights --no-master-weights`) are refused the same way; a flag given twice
    (`--json --json`) means the same thing and passes, and so does anything with --help."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        words = args[: args.index("--")] if "--" in args else args
        # completion parses half-typed lines; --help shows the help whatever else the line holds
        if not ctx.resilient_parsing and not set(words) & set(ctx.help_option_names):
            try:
                raw, _, order = self.make_parser(ctx).parse_args(args=list(args))
            except typer.TyperException:  # the real parse below reports it, in Click's words
                raw, order = {}, []
            given = {w.split("=", 1)[0] for w in words if w.startswith("-")}
            for param, n in Counter(p for p in order if p.param_type_name == "option").items():
                if param.multiple or param.count:
                    continue
                if param.is_flag:
                    both = given & set(param.opts) and given & set(param.secondary_opts)
                    if both:
                        raise UsageError(
                            f"{param.opts[0]} and {param.secondary_opts[0]} are both given", "give one of them"
                        )
                elif n > 1:
                    raise UsageError(f"{param.opts[0]} is given {n} times", "give it once: only the last would count")
            refuse_blank(self, raw)  # before conversion: `--nodes ''` is empty, not "not a valid integer"
        return super().parse_args(ctx, args)


# What to give instead of an empty value, where a plain "give a value" says too little.
BLANK_HINTS = {
    "--gpu": "give a GPU name such as T4, or a size such as 24GB",
    "--model": "give a model directory, a config.json, a hub id or a hub URL",
    "--revision": "give a branch, tag or commit, or leave --revision out for main",
    "--token": "give a hub token, or leave --token out to use HF_TOKEN or `hf auth login`",
    "--junit": "give a file path, e.g. --junit verify.xml",
    "--csv": "give a file path, e.g. --csv compare.csv",
    "--markdown": "give a file path, e.g. --markdown report.md",
    "--plot": "give a file path, e.g. --plot compare.png",
    "--prompt": "give some text, e.g. --prompt 'The capital of France is'",
    "--expect": "give the text the generation must contain, e.g. --expect Paris",
}


def refuse_blank(command: TyperCommand, raw: dict[str, Any]) -> None:
    """Raise a UsageError for an option given an empty or blank value (`--budget ''`, `--gpu ' '`).

    Checked here, once for every option of every command, because a command that tests `if value:` reads
    '' as "not given": `verify --budget ''` passed with no budget checked, `--strategy ''` planned no
    strategy. An option left out is None, never '', so '' is always a value someone typed (an unset
    shell variable, usually). `raw` is the parser's unconverted values (param name -> value or list).
    """
    for param in command.params:
        if param.param_type_name != "option" or getattr(param, "is_flag", False):
            continue
        value = raw.get(param.name or "")
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            flag = max(param.opts, key=len)
            raise UsageError(f"{flag} is empty", BLANK_HINTS.get(flag, "give a value, or leave the option out"))


def build_app(names: list[str] | None = None) -> typer.Typer:
    """Return the Typer app with the named commands (default: all).

    `main` registers only the command being run: Typer builds the Click parameters of every registered
    command on each call, and the command modules of load/verify/compare import their heavy halves, so
    `qcli estimate` would pay for all of them (about a third of its start-up; docs/bench.md).
    """
    app = typer.Typer(
        name="qcli",
        help=HELP,
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for name in names or list(COMMANDS):
        module = importlib.import_module(COMMANDS[name])
        if isinstance(getattr(module, "app", None), typer.Typer):
            app.add_typer(module.app, name=name, short_help=module.SHORT_HELP)
        else:
            app.command(name, epilog=module.EPILOG, short_help=module.SHORT_HELP, cls=OnceCommand)(
                getattr(module, name)
            )
    return app


def _commands_for(args: list[str]) -> list[str] | None:
    """Return the one command `args` runs, or None (all) for root help, --version and completion."""
    completing = any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)
    return [args[0]] if args and args[0] in COMMANDS and not completing else None


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (qcli.errors.ExitCode). As the process's entry point (argv None),
    a run that leaves nothing to tear down ends the process here (`_end_process`)."""
    if argv is not None:
        return _run(list(argv))
    args = sys.argv[1:]
    if not set(args) & LOADING_COMMANDS:
        # A planning process allocates ~40k objects that live until it ends (modules, classes, schemas) and
        # no garbage worth collecting: the collector's ~100 passes over them are ~5 % of an estimate
        # (docs/bench.md). Commands that hold a model's tensors keep it.
        gc.disable()
    code = _run(args)
    if _main_thread():  # the run is over and its result written: a late Ctrl-C has nothing left to stop, and
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # would only turn the exit into a death by SIGINT
    return _end_process(code)


def _end_process(code: int) -> int:
    """End the process the way CPython's exit does (atexit functions, then the standard streams flushed),
    without what it does next: tearing the interpreter down, a garbage collection of every module's objects
    that is a fifth of a `qcli estimate` (docs/bench.md) and that a process about to end has no use for.

    Return `code` instead (a normal exit) where the teardown may matter or is being watched: torch loaded
    (CUDA and the loading stack clean up there), a thread still running, a tracer or profiler (coverage,
    cProfile) whose results are written at exit, or a standard stream that cannot be flushed (the normal
    exit reports it as it always has).
    """
    import threading

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)  # what Py_FinalizeEx calls; CPython only
    if (
        run_exitfuncs is None
        or "torch" in sys.modules
        or threading.active_count() > 1
        or sys.gettrace() is not None
        or sys.getprofile() is not None
    ):
        return code
    run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return code
    os._exit(code)


def _run(args: list[str]) -> int:
    """Run the command line `args`; return the exit code."""
    debug = "--debug" in args or debug_enabled()
    args = [a for a in args if a != "--debug"]  # accepted anywhere, not only before the command
    if debug:
        os.environ["QCLI_DEBUG"] = "1"  # workers report their tracebacks; the progress line keeps warnings
    if not args:
        args = ["--help"]  # bare `qcli` prints help and succeeds
    if sys.stderr is None:  # `2>&-`: errors cannot be shown, but the exit code must still say what happened
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    _tolerate_narrow_encodings()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    # Pydantic plugins are found by scanning every installed distribution's entry points on the first
    # model build (~10 ms with the `load` extra installed); qcli's result models are not a user's to
    # instrument. Typer switches them off the same way while it builds its option parsers.
    plugins_unset = "PYDANTIC_DISABLE_PLUGINS" not in os.environ
    if plugins_unset:
        os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    try:
        _check_utf8(args)
        if sys.stdout is None and set(args) & {"-h", "--help", "--version"}:
            raise StdoutClosed()  # Click would print the help into nothing and exit 0
        result = build_app(_commands_for(args))(args=args, prog_name="qcli", standalone_mode=False)
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
        if plugins_unset:
            os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _tolerate_narrow_encodings() -> None:
    """Print what an ASCII or Latin-1 terminal cannot show as `?` (LC_ALL=C, PYTHONIOENCODING=latin-1):
    qcli's tables use `≤`, `—` and `→`, and a UnicodeEncodeError after a whole load would lose the result."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("_", "-")
        if reconfigure is not None and encoding not in {"utf-8", "utf8"}:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="replace")


def _check_utf8(args: list[str]) -> None:
    """Refuse an argument that is not UTF-8 (Python keeps its raw bytes as lone surrogates): it would
    fail deep inside a library, or be written into a report, instead of here with its position."""
    for i, arg in enumerate(args, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "backslashreplace").decode("ascii", "replace")[:60]
            raise UsageError(
                f"argument {i} ({shown}) is not valid UTF-8", "use UTF-8 text, and UTF-8 file names"
            ) from None


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
