"""The floor under qcli's start-up: a two-option Typer app that prints one line with rich.

`make bench` times it beside qcli's commands, so the ratio a CLI on this stack cannot go below is
measured in the same run as qcli's own.
"""

import gc
import os
import sys

import typer

app = typer.Typer()


@app.command()
def estimate(params: str = typer.Option("8b"), bits: int = typer.Option(4)) -> None:
    from rich.console import Console

    Console().print(f"{params} at {bits} bits")


@app.command()
def presets() -> None:  # a second command, so that Typer builds a group as qcli's app is
    pass


if __name__ == "__main__":
    gc.disable()  # as a `qcli` planning process runs
    app(standalone_mode=False)
    sys.stdout.flush()
    os._exit(0)  # as `qcli` ends: without the interpreter's teardown (qcli.cli.app._end_process)
