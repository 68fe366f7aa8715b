"""`qcli env`: versions and GPUs for a bug report (transformers, accelerate and hf have one too)."""

from qcli.cli._options import JsonOpt

# The line `qcli --help` lists it with (the docstring's first sentence would be cut with "...").
SHORT_HELP = "Versions and GPUs, for bug reports."
EPILOG = """Examples:

\b
  qcli env
  qcli env --json
"""


def env(json_: JsonOpt = False) -> None:
    """Print qcli's, Python's and the libraries' versions and the GPUs torch sees; paste it into bug reports."""
    from qcli.environment import env_report  # here, not at the top: see qcli.cli.estimate
    from qcli.output.console import console, print_json
    from qcli.output.info_views import render_env

    report = env_report(probe_torch=True)
    if json_:
        print_json(report)
    else:
        render_env(report, console())
