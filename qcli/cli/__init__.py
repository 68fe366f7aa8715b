"""The command line: Typer wiring only. `qcli.cli:main` is the console entry point."""

from qcli.cli.app import app, main

__all__ = ["app", "main"]
