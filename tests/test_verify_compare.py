"""verify and compare on the demo model, on the CPU, for real."""

from xml.etree import ElementTree as ET

import pytest

pytestmark = pytest.mark.slow


def test_verify_passes_with_expect_and_junit(cli, tmp_path):
    junit = tmp_path / "v.xml"
    r = cli("verify", "demo", "--preset", "qlora", "--expect", "Paris", "--junit", str(junit), "--json")
    assert r.code == 0, r.out
    data = r.json()
    assert data["passed"] and {c["name"] for c in data["checks"]} >= {
        "load",
        "placement",
        "quantization",
        "memory_vs_estimate",
        "forward_finite",
        "generation",
    }
    assert data["load"]["memory_bytes"] > 0
    suite = ET.parse(junit).getroot().find("testsuite")
    assert int(suite.get("tests")) == len(suite.findall("testcase")) == len(data["checks"])
    assert suite.get("failures") == "0"


def test_verify_budget_breach_fails_but_reports_everything(cli, tmp_path):
    junit = tmp_path / "v.xml"
    r = cli("verify", "demo", "--preset", "qlora", "--budget", "1MiB", "--junit", str(junit), "--json")
    assert r.code == 1
    checks = {c["name"]: c["passed"] for c in r.json()["checks"]}
    assert checks["budget"] is False and checks["generation"] and checks["quantization"]
    failures = ET.parse(junit).getroot().find("testsuite").findall("testcase/failure")
    assert len(failures) == 1


def test_verify_missing_expect_fails(cli):
    r = cli("verify", "demo", "--preset", "nf4", "--expect", "Zanzibar")
    assert r.code == 1 and "absent" in r.out


def test_verify_reference_agreement(cli):
    data = cli("verify", "demo", "--preset", "int8", "--reference", "bf16", "--json").json()
    ref = next(c for c in data["checks"] if c["name"] == "reference")
    assert ref["passed"], ref["detail"]


def test_verify_bad_input(cli):
    assert cli("verify", "demo", "--tolerance", "lots").code == 2
    assert cli("verify", "demo", "--budget", "5").code == 2


def test_compare_orders_memory_and_keeps_going_after_a_failure(tmp_path):
    from qcli.output.files import compare_csv, compare_markdown
    from qcli.run.compare import CompareOptions, run_compare

    opts = CompareOptions(
        model="demo",
        presets=["bf16", "int8", "nf4", "qlora", "fp4"],
        speed=False,
        max_new_tokens=4,
        inject_failure={"fp4": "raise"},
    )
    report = run_compare(opts)
    rows = {r.preset: r for r in report.results}
    assert rows["fp4"].error and report.failed
    mem = [rows[p].memory_bytes for p in ("bf16", "int8", "nf4", "qlora")]
    assert mem == sorted(mem, reverse=True) and len(set(mem)) == 4
    for p in ("bf16", "int8", "nf4", "qlora"):
        assert rows[p].perplexity is not None and 1 < rows[p].perplexity < 1e6
        assert rows[p].estimate_error_percent == 0.0
    assert rows["bf16"].top1_agreement == 1.0 and rows["bf16"].kl_divergence == 0.0
    assert 0.5 < rows["qlora"].top1_agreement <= 1.0 and rows["qlora"].kl_divergence >= 0
    compare_csv(report, str(tmp_path / "c.csv"))
    assert (tmp_path / "c.csv").read_text().count("\n") == 6
    assert "| qlora |" in compare_markdown(report)


def test_compare_cli_json_and_bad_input(cli, tmp_path):
    r = cli("compare", "demo", "--presets", "bf16,qlora", "--max-new-tokens", "4", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["reference"] == "bf16" and [x["preset"] for x in data["results"]] == ["bf16", "qlora"]
    assert data["results"][0]["allocated_bytes"] is None  # no CUDA: null, never 0
    assert data["results"][1]["tokens_per_second"] > 0
    assert cli("compare", "demo", "--presets", "bf16,nope").code == 2
    assert cli("compare", "demo", "--text", str(tmp_path / "missing.txt")).code == 2


def test_compare_where_every_preset_fails_says_no_device_was_read_back():
    """The header named the request ('auto') as if it were where the presets ran."""
    from qcli.run.compare import CompareOptions, run_compare

    opts = CompareOptions(
        model="demo", presets=["bf16", "nf4"], speed=False, max_new_tokens=2,
        inject_failure={"bf16": "raise", "nf4": "raise"},
    )  # fmt: skip
    from qcli.run.flags import resolve_device

    report = run_compare(opts)
    device = resolve_device("auto")  # cpu here, cuda:0 on a GPU runner
    assert report.failed and report.device == device
    assert any(n.startswith(f"no preset loaded: {device} is where they were to load") for n in report.notes)
