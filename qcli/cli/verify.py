"""`qcli verify MODEL --preset P`: the CI gate."""

import contextlib
from typing import Annotated

import typer

from qcli.cli._errors import outcome_of
from qcli.cli._options import (
    DeviceMapOpt,
    DeviceOpt,
    JsonOpt,
    MaxMemoryOpt,
    ModelArg,
    PresetOpt,
    PromptOpt,
    QuietOpt,
    RevisionOpt,
    SetOpt,
    TokenOpt,
    TrustOpt,
)
from qcli.errors import ExitCode, Terminated
from qcli.extras import require_load_extra

# The line `qcli --help` lists it with (the docstring's first sentence would be cut with "...").
SHORT_HELP = "Pass/fail checks of a real load, for CI."
EPILOG = """Example:

\b
  qcli verify demo --preset qlora --expect Paris --budget 5GiB --junit verify.xml
"""


def verify(
    model: ModelArg,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    trust_remote_code: TrustOpt = False,
    prompt: PromptOpt = None,
    expect: Annotated[
        str | None, typer.Option("--expect", metavar="TEXT", help="Substring the generation must contain.")
    ] = None,
    budget: Annotated[str | None, typer.Option("--budget", metavar="TEXT", help="Memory budget, e.g. 5GiB.")] = None,
    tolerance: Annotated[
        str | None, typer.Option("--tolerance", metavar="TEXT", help="Allowed measured-vs-estimate gap (default 5%).")
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", metavar="TEXT", help="Reference preset for agreement/KL.")
    ] = None,
    min_agreement: Annotated[
        float | None, typer.Option("--min-agreement", metavar="FLOAT", help="Top-1 agreement threshold (default 0.9).")
    ] = None,
    max_kl: Annotated[
        float | None, typer.Option("--max-kl", metavar="FLOAT", help="KL divergence threshold (default 0.1).")
    ] = None,
    allow_offload: Annotated[
        bool, typer.Option("--allow-offload", help="Pass even if modules are on CPU/disk.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="FLOAT", help="Seconds the --reference run may take (default 1800)."),
    ] = None,
    junit: Annotated[str | None, typer.Option("--junit", metavar="TEXT", help="Write JUnit XML here.")] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> int:
    """Pass/fail gate for a quantized model: exit 0 when every check passes, 1 otherwise.

    MODEL is a model directory, a config.json, a hub id (org/name) or URL, or demo (a tiny built-in model).
    """
    # Imported here, not at module level: `qcli --help` and `qcli estimate` never pay for the loading side.
    from qcli.model.demo import DEMO_NAME
    from qcli.output.console import console, print_json
    from qcli.output.files import check_output_path, check_outputs_apart, write_junit, writing
    from qcli.output.progress import progress_line, progress_wanted
    from qcli.output.run_views import render_verify
    from qcli.plan.presets import preset_file
    from qcli.run.demo import ensure_demo
    from qcli.run.loader import DEFAULT_PRESET, LoadOptions, prepare
    from qcli.run.verify import VerifyOptions, check_reference_flags, run_verify, validate

    if junit is not None:
        check_output_path(junit, "--junit")  # before any work: a bad path is exit 2 at once
        reads = [preset_file(preset), preset_file(reference)]
        check_outputs_apart({"--junit": junit}, reads, None if model == DEMO_NAME else model, json_)
    interactive = progress_wanted(json_, quiet)
    try:
        check_reference_flags(reference, {"--min-agreement": min_agreement, "--max-kl": max_kl, "--timeout": timeout})
        require_load_extra("qcli verify")
        opts = VerifyOptions.from_cli(
            load=LoadOptions.from_cli(
                model=model,
                preset=preset,
                sets=set_,
                device=device,
                device_map=device_map,
                max_memory=max_memory,
                revision=revision,
                token=token,
                trust_remote_code=trust_remote_code,
                prompt=prompt,
                progress=interactive,
            ),
            expect=expect,
            budget=budget,
            tolerance=tolerance,
            reference=reference,
            min_agreement=min_agreement,
            max_kl=max_kl,
            allow_offload=allow_offload,
            timeout_seconds=timeout,
        )
        validate(opts)  # bad thresholds, sizes and presets: exit 2 before anything is built or loaded
        prepared = prepare(opts.load)
        with progress_line(interactive) as line:
            if opts.load.model == DEMO_NAME:
                ensure_demo(line.demo_step)
            line.step(f"verifying {opts.load.model} with preset {opts.load.preset}")
            report = run_verify(opts, prepared)  # resolved and described once
    except (Exception, KeyboardInterrupt, Terminated) as exc:
        if junit is not None:  # a CI reporter still gets a result: one errored testcase naming the cause
            outcome = outcome_of(exc)
            with contextlib.suppress(OSError):  # the cause stays the error shown, not a full disk after it
                write_junit(None, junit, model, preset or DEFAULT_PRESET, error=outcome.line() or type(exc).__name__)
        raise
    if junit is not None:
        with writing(junit, "--junit"):
            write_junit(report, junit, opts.load.model, opts.load.preset)
    if json_:
        print_json(report)
    else:
        render_verify(report, console())
    return ExitCode.OK if report.passed else ExitCode.FAILED
