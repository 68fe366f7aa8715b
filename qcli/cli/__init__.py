"""The command line: Typer wiring only. `qcli.cli:main` is the console entry point."""

from qcli.cli.app import build_app, main

__all__ = ["build_app", "main"]
