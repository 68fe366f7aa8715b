"""`qcli estimate` through the real CLI entry point."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

LLAMA = str(FIXTURES / "llama3-8b.json")


def test_params_4bit_totals(cli):
    r = cli("estimate", "--params", "8b", "--bits", "4", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["params"] == 8_000_000_000
    assert data["total_bytes"] == 4_500_000_064  # 4.500 GB = 4.19 GiB
    assert round(data["total_bytes"] / 2**30, 2) == 4.19
    assert sum(c["bytes"] for c in data["components"]) == data["total_bytes"]
    assert {c["name"] for c in data["components"]} >= {"packed 4-bit weights", "absmax (fp32, per 64-block)"}


def test_params_double_quant(cli):
    data = cli("estimate", "--params", "8b", "--bits", "4", "--double-quant", "--json").json()
    assert round(data["total_bytes"] / 1e9, 3) == 4.127
    assert any("nested absmax" in c["name"] for c in data["components"])


def test_params_fp16_and_int8(cli):
    assert cli("estimate", "--params", "8b", "--bits", "16", "--json").json()["total_bytes"] == 16 * 10**9
    int8 = cli("estimate", "--params", "8b", "--bits", "int8", "--json").json()
    assert int8["total_bytes"] > 8 * 10**9
    assert any("row scales" in c["name"] for c in int8["components"])


def test_without_bits_one_plan_per_precision(cli):
    data = cli("estimate", "--params", "7b", "--json").json()
    formats = [p["format"] for p in data["plans"]]
    assert formats == ["fp32", "bf16", "int8", "nf4", "nf4+dq"]
    totals = [p["total_bytes"] for p in data["plans"]]
    assert totals == sorted(totals, reverse=True)
    for p in data["plans"]:
        assert {"params", "total_bytes", "components"} <= p.keys()


def test_table_output_labels_units(cli):
    r = cli("estimate", "--params", "8b", "--bits", "4")
    assert r.code == 0
    assert "GiB" in r.out and "GB" in r.out and "4.19" in r.out and "4.500" in r.out
    assert "--model" in r.out  # the bare-params assumption is stated


def test_gpu_fit_and_headroom(cli):
    data = cli("estimate", "--params", "8b", "--bits", "16", "--gpu", "T4", "--json").json()
    assert data["fits"] is False
    data = cli("estimate", "--params", "8b", "--bits", "4", "--gpu", "24GB", "--json").json()
    dev = data["devices"][0]
    assert data["fits"] is True and dev["capacity_bytes"] == 24 * 10**9
    assert dev["headroom_bytes"] == dev["capacity_bytes"] - data["required_bytes"]
    assert data["required_bytes"] == data["total_bytes"] + data["overhead_bytes"]


@pytest.mark.parametrize(
    "args",
    [
        ["--params", "banana", "--bits", "4"],
        ["--params", "8b", "--bits", "3"],
        ["--params", "-1b"],
        ["--params", "nan"],
        ["--params", "inf"],
        ["--params", "0"],
        ["--params", "1e400"],
        [],
        ["--params", "8b", "--gpu", "GTX 9999"],
        ["--params", "8b", "--bits", "8", "--double-quant"],
        ["--params", "8b", "--no-such-flag"],
        ["--params", "8b", "--context", "4096"],
        ["--params", "8b", "--model", LLAMA],
        ["--params", "8b", "--gpu", "24"],
    ],
)
def test_bad_input_exit_2_one_line(cli, args):
    r = cli("estimate", *args)
    assert r.code == 2
    assert "Traceback" not in r.err + r.out
    assert r.err.startswith("Error: ") and len(r.err.strip().splitlines()) == 1
    assert r.out == ""


def test_debug_shows_traceback(cli):
    from qcli.errors import UsageError

    with pytest.raises(UsageError):
        cli("--debug", "estimate", "--params", "banana")


def test_json_is_the_only_stdout(cli):
    r = cli("estimate", "--model", LLAMA, "--preset", "qlora", "--gpu", "T4", "--context", "8192", "--json")
    assert r.code == 0
    json.loads(r.out)


def _imported_modules(*args: str) -> str:
    code = "import sys; from qcli.cli import main; rc = main(list(sys.argv[1:])); sys.exit(rc)"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        env={"NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("estimate", "--params", "8b", "--bits", "4"),
        ("estimate", "--model", LLAMA, "--preset", "qlora", "--context", "8192", "--gpu", "T4", "--train", "qlora"),
        ("estimate", "--model", "demo", "--gpu", "T4"),
    ],
)
def test_estimate_never_imports_torch(args):
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in _imported_modules(*args).splitlines()
        if line.startswith("import time:")
    }
    assert "qcli" in imported  # the measurement sees our own imports
    for heavy in ("torch", "transformers", "bitsandbytes", "accelerate"):
        assert heavy not in imported


def test_presets_ship_with_the_package():
    import qcli.configs

    names = {p.name for p in Path(qcli.configs.__file__).parent.glob("*.yaml")}
    assert {"fp32.yaml", "fp16.yaml", "bf16.yaml", "int8.yaml", "nf4.yaml", "fp4.yaml", "qlora.yaml"} <= names
