"""`qcli compare MODEL --presets …`: each preset in its own worker process."""

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from qcli.cli._options import DeviceOpt, JsonOpt, MaxNewTokensOpt, ModelArg, PromptOpt, QuietOpt, RevisionOpt, TokenOpt
from qcli.errors import ExitCode, UsageError
from qcli.extras import require_load_extra

# The line `qcli --help` lists it with (the docstring's first sentence would be cut with "...").
SHORT_HELP = "Memory, speed and quality of several presets."
EPILOG = """Example:

\b
  qcli compare demo --presets bf16,int8,nf4,qlora --markdown report.md
"""


def compare(
    model: ModelArg,
    presets: Annotated[
        str | None,
        typer.Option("--presets", metavar="TEXT", help="Comma-separated presets (default bf16,int8,nf4,qlora)."),
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", metavar="TEXT", help="Reference preset (default: the first).")
    ] = None,
    device: DeviceOpt = None,
    text: Annotated[
        str | None, typer.Option("--text", metavar="TEXT", help="Text file for perplexity (default: built-in).")
    ] = None,
    prompt: PromptOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="FLOAT", help="Seconds per preset before it is stopped (default 1800)."),
    ] = None,
    csv: Annotated[str | None, typer.Option("--csv", metavar="TEXT", help="Write CSV here.")] = None,
    markdown: Annotated[
        str | None, typer.Option("--markdown", metavar="TEXT", help="Write a Markdown report here.")
    ] = None,
    plot: Annotated[
        str | None, typer.Option("--plot", metavar="TEXT", help="Write memory-vs-quality PNG (needs matplotlib).")
    ] = None,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> int:
    """Memory, speed and quality of several presets side by side, each in its own process.

    MODEL is a model directory, a config.json, a hub id (org/name) or URL, or demo (a tiny built-in model).
    """
    # Imported here, not at module level: `qcli --help` and `qcli estimate` never pay for the loading side.
    from qcli.model.demo import DEMO_NAME
    from qcli.output.console import console, print_json
    from qcli.output.files import (
        check_output_path,
        check_outputs_apart,
        compare_csv,
        compare_markdown,
        compare_plot,
        writing,
    )
    from qcli.output.progress import progress_line, progress_wanted
    from qcli.output.run_views import render_compare
    from qcli.plan.presets import preset_file
    from qcli.run.compare import CompareOptions, run_compare, validate
    from qcli.run.demo import ensure_demo

    require_load_extra("qcli compare")
    for flag, path in (("--csv", csv), ("--markdown", markdown), ("--plot", plot)):
        if path is not None:
            check_output_path(path, flag)  # before any work: not after a long compare
    reads = [text, preset_file(reference), *(preset_file(p.strip()) for p in (presets or "").split(","))]
    outputs = {"--csv": csv, "--markdown": markdown, "--plot": plot}
    check_outputs_apart(outputs, reads, None if model == DEMO_NAME else model, json_)
    opts = CompareOptions.from_cli(
        model=model,
        presets=presets.split(",") if presets is not None else None,
        reference=reference,
        device=device,
        text=text,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        timeout_seconds=timeout,
        revision=revision,
        token=token,
    )
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib", "pip install 'qcli[plot]'")
    checked = validate(opts)  # bad flags, presets and paths: exit 2 before anything is built or loaded
    with progress_line(progress_wanted(json_, quiet)) as line:
        if opts.model == DEMO_NAME:
            ensure_demo(line.demo_step)  # once, here, rather than racing in the first worker
        report = run_compare(opts, progress=line.step, checked=checked)
    if csv is not None:
        with writing(csv, "--csv"):
            compare_csv(report, csv)
    if markdown is not None:
        with writing(markdown, "--markdown"):
            Path(markdown).write_text(compare_markdown(report), encoding="utf-8")
    if plot is not None:
        with writing(plot, "--plot"):
            compare_plot(report, plot)
    if json_:
        print_json(report)
    else:
        render_compare(report, console())
    return ExitCode.FAILED if report.failed else ExitCode.OK
