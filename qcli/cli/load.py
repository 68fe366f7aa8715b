"""`qcli load MODEL --preset P`."""

from __future__ import annotations

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
    RevisionOpt,
    SetOpt,
    TrustOpt,
)
from qcli.extras import require_load_extra
from qcli.output.console import console, print_json, render_load, status, stderr_is_terminal
from qcli.run.loader import LoadOptions, load_report

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
    trust_remote_code: TrustOpt = False,
    prompt: PromptOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Load a model with a preset and report the memory it really takes.

    MODEL is a model directory, a config.json, a hub id (org/name), or demo (a tiny built-in model).
    """
    require_load_extra("qcli load")
    interactive = stderr_is_terminal() and not json_
    opts = LoadOptions.from_cli(
        model=model,
        preset=preset,
        sets=set_,
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        dtype=dtype,
        revision=revision,
        trust_remote_code=trust_remote_code,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        progress=interactive,
    )
    with status(f"loading {opts.model} with preset {opts.preset}", enabled=interactive):
        report, _ = load_report(opts)
    if json_:
        print_json(report)
    else:
        render_load(report, console())
