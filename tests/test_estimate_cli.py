"""`qcli estimate` through the real CLI entry point."""

import json
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES, plan

LLAMA = str(FIXTURES / "llama3-8b.json")


def test_params_4bit_totals(cli):
    r = cli("estimate", "--params", "8b", "--bits", "4", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["model"]["total_params"] == 8_000_000_000
    assert plan(data)["total_bytes"] == 4_500_000_064  # 4.500 GB = 4.19 GiB
    assert round(plan(data)["total_bytes"] / 2**30, 2) == 4.19
    assert sum(c["size_bytes"] for c in plan(data)["components"]) == plan(data)["total_bytes"]
    assert [c["kind"] for c in plan(data)["components"]] == ["quant_packed_weights", "quant_absmax", "quant_code"]
    assert data["schema_version"] >= 2 and data["qcli_version"] and data["command"] == "estimate"


def test_params_double_quant(cli):
    data = cli("estimate", "--params", "8b", "--bits", "4", "--double-quant", "--json").json()
    assert round(plan(data)["total_bytes"] / 1e9, 3) == 4.127
    assert any(c["kind"] == "quant_nested_absmax" for c in plan(data)["components"])


def test_params_fp16_and_int8(cli):
    assert plan(cli("estimate", "--params", "8b", "--bits", "16", "--json").json())["total_bytes"] == 16 * 10**9
    int8 = cli("estimate", "--params", "8b", "--bits", "int8", "--json").json()
    assert plan(int8)["total_bytes"] > 8 * 10**9
    assert any(c["kind"] == "int8_row_scales" for c in plan(int8)["components"])


def test_without_bits_one_plan_per_precision(cli):
    data = cli("estimate", "--params", "7b", "--json").json()
    formats = [p["format"] for p in data["plans"]]
    assert formats == ["fp32", "bf16", "int8", "nf4", "nf4+dq"]
    totals = [p["total_bytes"] for p in data["plans"]]
    assert totals == sorted(totals, reverse=True)
    for p in data["plans"]:
        assert {"total_params", "quantized_params", "total_bytes", "components"} <= p.keys()


def test_table_output_labels_units(cli):
    r = cli("estimate", "--params", "8b", "--bits", "4")
    assert r.code == 0
    assert "GiB" in r.out and "GB" in r.out and "4.19" in r.out and "4.500" in r.out
    assert "use a MODEL" in r.out  # the bare-params assumption is stated


def test_gpu_fit_and_headroom(cli):
    data = cli("estimate", "--params", "8b", "--bits", "16", "--gpu", "T4", "--json").json()
    assert plan(data)["fits"] is False
    data = cli("estimate", "--params", "8b", "--bits", "4", "--gpu", "24GB", "--json").json()
    dev = plan(data)["devices"][0]
    assert plan(data)["fits"] is True and dev["capacity_bytes"] == 24 * 10**9
    assert dev["headroom_bytes"] == dev["capacity_bytes"] - plan(data)["required_bytes"]
    assert plan(data)["required_bytes"] == plan(data)["total_bytes"] + plan(data)["overhead_bytes"]


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
    r = cli("--debug", "estimate", "--params", "banana")
    assert r.code == 2
    assert "Traceback" in r.err and "UsageError" in r.err
    assert r.err.strip().splitlines()[-1].startswith("Error: --params 'banana'")


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
    from qcli.resources import config_files

    names = {f.name for f in config_files()}
    assert {"fp32.yaml", "fp16.yaml", "bf16.yaml", "int8.yaml", "nf4.yaml", "fp4.yaml", "qlora.yaml"} <= names
