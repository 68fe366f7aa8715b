"""The conventions of the ecosystem's CLIs (issue 15): readable help, completion, versions for bug
reports, and forgiving spellings of what people type."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qcli.cli.app import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [(), ("--help",), *[(c, "--help") for c in COMMANDS], ("presets", "show", "--help")])
def test_help_names_types_the_click_way(cli, args):
    r = cli(*args)
    assert r.code == 0, r.err
    assert "Usage: qcli" in r.out
    for python_type in ("<str>", "<int>", "<float>", "<list", "<bool>"):
        assert python_type not in r.out, (args, python_type)


@pytest.mark.parametrize("args", [(), ("presets", "--help")])
def test_command_lists_are_not_cut(cli, args):
    """Click cuts a docstring's first sentence with "..." in a command list: each command has a SHORT_HELP."""
    listed = cli(*args).out.split("Commands:")[1]
    assert "..." not in listed and "…" not in listed, listed


def test_model_is_described_the_same_way_everywhere(cli):
    """Every command that takes MODEL accepts the same kinds of it, so their help says the same thing."""
    said = "MODEL is a model directory, a config.json, a hub id (org/name) or URL, or demo (a tiny built-in model)"
    for command in ("estimate", "load", "verify", "compare"):
        assert said in " ".join(cli(command, "--help").out.split()), command


def test_a_parse_error_points_to_that_commands_help(cli):
    r = cli("load")
    assert r.code == 2 and "Missing argument 'MODEL'" in r.err and "see `qcli load --help`" in r.err, r.err
    assert "see `qcli --help`" in cli("estimat").err  # no command was reached: the root's help


def test_examples_are_one_per_line(cli):
    out = cli("estimate", "--help").out
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("qcli estimate ")]
    assert len(lines) >= 3 and not any(" | " in line for line in lines)
    assert "--params TEXT" in out and "--context INTEGER" in out and "--margin FLOAT" in out


def test_completion_is_on():
    env = {**os.environ, "_QCLI_COMPLETE": "complete_bash", "COMP_WORDS": "qcli est", "COMP_CWORD": "1"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "qcli"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.split() == ["estimate"], (out.stdout, out.stderr)


def test_version_and_env_list_the_stack(cli):
    r = cli("--version")
    assert r.code == 0
    for name in ("qcli", "Python", "torch", "transformers", "accelerate", "bitsandbytes", "huggingface_hub", "GPUs"):
        assert any(line.startswith(name) for line in r.out.splitlines()), name
    data = cli("env", "--json").json()
    assert data["command"] == "env" and data["packages"]["transformers"] and data["gpu_source"] == "torch"
    assert isinstance(data["gpus"], list) and data["cuda_available"] in (True, False)


@pytest.mark.parametrize("bits", ["int4", "4bit", "4", "NF4"])
def test_bits_spellings(cli, bits):
    data = cli("estimate", "--params", "8b", "--bits", bits, "--json").json()
    assert data["plans"][0]["format"] == "nf4"


def test_names_are_case_insensitive_and_misses_get_a_suggestion(cli):
    data = cli("estimate", "demo", "--preset", "QLoRA", "--gpu", "rtx 4090", "--json").json()
    assert data["plans"][0]["preset"] == "qlora" and data["plans"][0]["devices"][0]["name"] == "RTX 4090"
    r = cli("estimate", "--params", "8b", "--gpu", "4090")
    assert r.code == 2 and "did you mean RTX 4090?" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("estimate", "demo", "--preset", "qlroa")
    assert r.code == 2 and "did you mean qlora?" in r.err


def _run_with(redirect: str) -> subprocess.CompletedProcess:
    """Run `qcli` through a shell with stdout or stderr closed or full (what `>&-` and `> /dev/full` do)."""
    cmd = f"{sys.executable} -m qcli estimate --params 8b --json {redirect}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    ("redirect", "needle"), [(">&-", "stdout is closed"), ("> /dev/full", "No space left on device")]
)
def test_an_output_that_cannot_be_written_is_a_failed_run_not_a_bug(redirect, needle):
    proc = _run_with(redirect)
    assert proc.returncode == 1
    assert needle in proc.stderr and "internal error" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", ["--help", "estimate --help", "--version"])
def test_help_with_stdout_closed_is_a_failed_run(args):
    cmd = f"{sys.executable} -m qcli {args} >&-"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 1 and "stdout is closed" in proc.stderr  # was exit 0, the help printed into nothing


def test_bad_input_with_stderr_closed_is_still_exit_2():
    proc = _run_with("--bits 3 2>&-")
    assert proc.returncode == 2


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("estimate", "--params", "8b", "--params", "70b"), "--params is given 2 times"),
        (("estimate", "--params=8b", "--bits", "4", "-b", "8"), "--bits is given 2 times"),
        (("estimate", "demo", "--context", "100", "--context=200"), "--context is given 2 times"),
        (("estimate", "demo", "--train", "full", "--train", "lora"), "--train is given 2 times"),
        (
            ("estimate", "demo", "--train", "full", "--master-weights", "--no-master-weights"),
            "--master-weights and --no-master-weights are both given",
        ),
        (("load", "demo", "--preset", "qlora", "--preset", "nf4"), "--preset is given 2 times"),
        (("compare", "demo", "--presets", "bf16,nf4", "--presets", "nf4"), "--presets is given 2 times"),
    ],
)
def test_a_single_value_option_given_twice_is_refused(cli, args, named):
    """Click keeps the last value silently: a plan for 70b was shown to someone who had also typed 8b."""
    r = cli(*args)
    assert r.code == 2 and named in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_repeatable_options_and_a_repeated_plain_flag_still_pass(cli):
    assert cli("estimate", "demo", "--train", "full", "--master-weights", "--master-weights").code == 0
    r = cli("estimate", "--params", "8b", "--params", "70b", "--help")  # help wins, as anywhere
    assert r.code == 0 and "--params" in r.out and not r.err
    r = cli("estimate", "demo", "--gpu", "T4", "--gpu", "A100-80GB", "--json", "--json")
    assert r.code == 0, r.err
    assert [d["name"] for d in r.json()["plans"][0]["devices"]] == ["T4", "A100-80GB"]
    assert cli("estimate", "demo", "--preset", "qlora", "--set", "dtype=bfloat16", "--set", "name=x").code == 0


def test_master_weights_with_lora_is_refused(cli):
    r = cli("estimate", "demo", "--train", "lora", "--master-weights")
    assert r.code == 2 and "--master-weights is for --train full" in r.err, r.err
    assert cli("estimate", "demo", "--train", "full", "--master-weights").code == 0


def _text_options() -> list[tuple[str, str]]:
    """Every option of every command that takes a value (not a flag), read from the Click commands."""
    import typer

    from qcli.cli.app import build_app

    group = typer.main.get_command(build_app())
    out = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if param.param_type_name == "option" and not param.is_flag and name != "presets":
                out.append((name, max(param.opts, key=len)))
    return out


@pytest.mark.parametrize("value", ["", " \t"])
@pytest.mark.parametrize(("command", "option"), _text_options())
def test_every_option_refuses_an_empty_value(cli, command, option, value):
    """An empty value is a value someone typed (an unset shell variable): `verify --budget ''` passed
    with no budget checked and `estimate --strategy ''` planned none, because `if value:` read '' as
    "not given". The check runs before any model is built or loaded, so the demo is never touched."""
    r = cli(command, "demo", option, value)
    if r.code == 2 and "is given 2 times" in r.err:  # -m/--model beside MODEL: say it once
        r = cli(command, option, value)
    assert r.code == 2, (command, option, r.out[-300:], r.err)
    assert f"{option} is empty" in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_a_token_that_cannot_be_one_is_refused_for_a_local_model_too(cli):
    r = cli("estimate", "demo", "--token", "hf_a b")
    assert r.code == 2 and "--token holds spaces" in r.err and "hf_a b" not in r.err, r.err
