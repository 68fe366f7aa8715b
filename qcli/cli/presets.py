"""`qcli presets` and `qcli presets show NAME`."""

from typing import Annotated

import typer

from qcli.cli._options import JsonOpt, SetOpt

# The line `qcli --help` lists it with (the docstring's first sentence would be cut with "...").
SHORT_HELP = "List the presets, or show one."
app = typer.Typer(
    help="List the presets or show one as a BitsAndBytesConfig.", no_args_is_help=False, invoke_without_command=True
)


@app.callback()
def presets_list(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List the built-in presets with a one-line description each."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"json": json_}  # `qcli presets --json show NAME` means JSON too
        return
    from qcli.output.console import console, print_json  # here: see qcli.cli.estimate
    from qcli.output.info_views import render_presets
    from qcli.plan.presets import presets_report

    report = presets_report()
    if json_:
        print_json(report)
    else:
        render_presets(report, console())


@app.command("show", short_help="Show a preset as its BitsAndBytesConfig.")
def presets_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", hidden=True, show_default=False)],
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print a preset resolved as the BitsAndBytesConfig qcli passes to transformers.

    NAME is a built-in preset (see `qcli presets`) or a YAML file.
    """
    from qcli.output.console import console, print_json
    from qcli.output.info_views import render_preset_code
    from qcli.plan.presets import presets_report

    report = presets_report([name], set_)
    if json_ or (ctx.obj or {}).get("json"):
        print_json(report)
    else:
        render_preset_code(report.presets[0], console())
