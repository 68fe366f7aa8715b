"""Option aliases shared by the commands (huggingface_hub's _cli_utils idea): one definition each.

Every option defaults to None, meaning "not given": the defaults live in the options dataclasses
(qcli.plan.estimate.EstimateOptions, qcli.run.loader.LoadOptions, …), never here.
"""

from __future__ import annotations

from typing import Annotated

import typer

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display (the result is still printed).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
PresetOpt = Annotated[
    str | None, typer.Option("--preset", "-p", metavar="TEXT", help="Preset name (see `qcli presets`) or a YAML file.")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", metavar="TEXT", help="Override a preset field: key=value (repeatable).")
]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", metavar="TEXT", help="Hub revision: branch, tag or commit.")
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TEXT",
        help="Hub token for gated or private repos (default: HF_TOKEN or `hf auth login`).",
        show_default=False,
    ),
]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", metavar="TEXT", help="dtype of the unquantized modules (default: the preset's)."),
]
# Arguments are hidden from the options list (Typer 0.29 prints their Python type there, `<str>`); each
# command's docstring says what MODEL is, and the usage line still shows it.
ModelArg = Annotated[str, typer.Argument(metavar="MODEL", hidden=True, show_default=False)]
DeviceOpt = Annotated[str | None, typer.Option("--device", metavar="TEXT", help="auto (default), cpu, cuda or cuda:N.")]
DeviceMapOpt = Annotated[
    str | None, typer.Option("--device-map", metavar="TEXT", help="accelerate device map: auto, balanced, sequential.")
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option("--max-memory", metavar="TEXT", help="Per-device caps for the device map, e.g. 0=20GiB,cpu=64GiB."),
]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the repo's own modelling code.")]
PromptOpt = Annotated[
    str | None, typer.Option("--prompt", metavar="TEXT", help="Prompt for a short greedy generation.")
]
MaxNewTokensOpt = Annotated[
    int | None, typer.Option("--max-new-tokens", metavar="INTEGER", help="Tokens to generate (default 16).")
]
