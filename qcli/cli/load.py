"""`qcli load MODEL --preset P`."""

from qcli.cli._options import (
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    MaxMemoryOpt,
    MaxNewTokensOpt,
    ModelArg,
    PresetOpt,
    PromptOpt,
    QuietOpt,
    RevisionOpt,
    SetOpt,
    TokenOpt,
    TrustOpt,
)
from qcli.extras import require_load_extra

# The line `qcli --help` lists it with (the docstring's first sentence would be cut with "...").
SHORT_HELP = "Load with a preset; report the real memory."
EPILOG = """Examples:

\b
  qcli load demo --preset qlora --prompt 'The capital of France is'
  qcli load meta-llama/Llama-3.2-1B --preset int8 --json
"""


def load(
    model: ModelArg,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    dtype: DtypeOpt = None,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    trust_remote_code: TrustOpt = False,
    prompt: PromptOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Load a model with a preset and report the memory it really takes.

    MODEL is a model directory, a config.json, a hub id (org/name) or URL, or demo (a tiny built-in model).
    """
    # Imported here, not at module level: `qcli --help` and `qcli estimate` never pay for the loading side.
    from qcli.model.demo import DEMO_NAME
    from qcli.output.console import console, print_json
    from qcli.output.progress import progress_line, progress_wanted
    from qcli.output.run_views import render_load
    from qcli.run.demo import ensure_demo
    from qcli.run.loader import LoadOptions, load_report, prepare

    require_load_extra("qcli load")
    interactive = progress_wanted(json_, quiet)
    opts = LoadOptions.from_cli(
        model=model,
        preset=preset,
        sets=set_,
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        dtype=dtype,
        revision=revision,
        token=token,
        trust_remote_code=trust_remote_code,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        progress=interactive,
    )
    prepared = prepare(opts)  # bad flags, presets and paths: exit 2 before anything is built or loaded
    with progress_line(interactive) as line:
        if opts.model == DEMO_NAME:
            ensure_demo(line.demo_step)
        line.step(f"loading {opts.model} with preset {opts.preset}")
        report, _ = load_report(opts, prepared)  # resolved and described once
    if json_:
        print_json(report)
    else:
        render_load(report, console())
