"""The views people read and paste (issue 15): at 80 columns nothing is cut, units scale per row, the
answer comes first; compare's files carry the environment and the schema version; JUnit is publishable."""

from __future__ import annotations

import csv
import io
import re
from xml.etree import ElementTree as ET

import pytest
from rich.console import Console

from qcli.output.estimate_view import render_estimate
from qcli.output.files import compare_csv, compare_markdown, write_junit
from qcli.output.run_views import render_compare
from qcli.plan.estimate import EstimateOptions, run_estimate
from qcli.results.run import CheckResult, CompareReport, CompareRow, Environment, GPUInfo, VerifyReport
from qcli.units import decimal_bytes, human_bytes

LLAMA = "tests/fixtures/configs/llama3-8b.json"


def text_of(render, report, width: int = 80) -> str:
    out = io.StringIO()
    render(report, Console(file=out, width=width, no_color=True, highlight=False, soft_wrap=False, emoji=False))
    return out.getvalue()


# A line that ends in a number whose unit starts the next line: "reserved 5.45" / "GiB (range …".
UNIT_SPLIT = re.compile(r"\d[ ]*\n[ ]*(?:[KMGT]i?B|[kMGT]B|B|tokens|params|s|ms)\b")


def assert_fits(text: str, width: int = 80) -> None:
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, long
    assert "…" not in re.sub(r"embeddings … \w+", "", text)  # rich's truncation mark never cuts a number
    split = UNIT_SPLIT.search(text)
    assert not split, text[max(0, split.start() - 60) : split.end() + 20]


def test_units_scale_per_row():
    assert human_bytes(64) == "64 B" and human_bytes(1536) == "1.50 KiB"
    assert human_bytes(476.84 * 2**20) == "476.84 MiB" and human_bytes(1_050_673_152) == "0.98 GiB"
    assert decimal_bytes(5_702_540_672) == "5.70 GB" and decimal_bytes(14_336) == "14.34 kB"


@pytest.mark.parametrize(
    "opts",
    [
        {"params": "8b", "bits": "4"},
        {"model": LLAMA, "preset": "qlora", "context": 8192, "gpus": ["T4"]},
        {"model": LLAMA, "gpus": ["L4"]},
        {"model": "demo", "preset": "qlora", "gpus": ["T4"], "train": "qlora"},
        {"model": LLAMA, "preset": "bf16", "gpus": ["A100-80GB"], "gpu_count": "2"},
    ],
)
def test_estimate_reads_at_80_columns(opts):
    report = run_estimate(EstimateOptions(**opts))
    text = text_of(render_estimate, report)
    assert_fits(text)
    assert not re.search(r"(?<![\d.,])0\.00 GiB|(?<![\d.,])0\.00 GB", text)  # small parts get a smaller unit
    first = text.splitlines()[0]
    assert "GiB" in first or "MiB" in first or "fits" in first  # the answer first, not a table


def test_the_one_line_answer_and_the_weights_subtotal():
    report = run_estimate(EstimateOptions(model=LLAMA, preset="qlora", context=8192, gpus=["T4"]))
    text = text_of(render_estimate, report)
    answer = " ".join(text.split("\n\n")[0].split())  # the one-line answer, however it wraps
    assert answer.startswith("llama3-8b in qlora needs 7.13 GiB on one T4: fits, 7.87 GiB free")
    assert "7.87 GiB free, but the T4 has no bf16 (see the notes) recommendation:" in answer  # qlora computes in bf16
    weights = next(line for line in text.splitlines() if line.startswith("weights ("))
    assert "5.31 GiB" in weights and "5.70 GB" in weights  # the README's "5.70 GB" is in the output
    wide = text_of(render_estimate, report, width=120)
    assert "5,702,540,672" in wide  # exact bytes where there is room


def _compare_report() -> CompareReport:
    rows = [
        CompareRow(
            preset=p,
            memory_bytes=m,
            estimate_error_percent=0.0,
            load_seconds=1.5,
            prefill_seconds=0.004,
            prefill_min_seconds=0.0039,
            prefill_max_seconds=0.0051,
            tokens_per_second=500.0,
            min_tokens_per_second=450.0,
            max_tokens_per_second=520.0,
            perplexity=ppl,
            delta_perplexity=ppl - 2.0,
            top1_agreement=0.99,
            kl_divergence=0.001,
            memory_saved_ratio=6_428_672 / m,
            continuation=" Paris.\nThe capital | of",
        )
        for p, m, ppl in (("bf16", 6_428_672, 2.0), ("qlora", 2_081_088, 2.0042))
    ]
    rows.append(CompareRow(preset="fp4", error="RuntimeError: injected"))
    env = Environment(
        python_version="3.11.7",
        platform="Linux x86_64",
        packages={"qcli": "0.1.0", "torch": "2.13.0+cu128", "transformers": "5.23.0"},
        torch_cuda_version="12.8",
        cuda_available=True,
        gpus=[GPUInfo(device="cuda:0", name="NVIDIA H100 80GB HBM3", memory_bytes=85_000_000_000)],
        gpu_source="torch",
    )
    return CompareReport(
        model="demo",
        reference="bf16",
        device="cuda:0",
        text="built-in sample",
        scored_tokens=511,
        prompt="The capital of France is",
        speed_method="CUDA events, 1 warm-up + 3 timed runs, median (min–max)",
        results=rows,
        created_at="2026-11-24T12:00:00Z",
        model_commit="0123abc",
        environment=env,
    )


def test_compare_fits_80_columns_and_shows_the_spread():
    text = text_of(render_compare, _compare_report())
    assert_fits(text)
    assert "4.0 (3.9–5.1)" in text and "500 (450–520)" in text  # median (min–max), as the title says
    assert "+0.004" in text and "failed" in text
    assert "Paris.⏎The capital | of" in text  # a multi-line generation stays on its line


def test_compare_files_carry_the_environment(tmp_path):
    report = _compare_report()
    md = compare_markdown(report)
    for needle in ("schema_version | 2", "torch_version | 2.13.0+cu128", "NVIDIA H100", "2026-11-24", "0123abc"):
        assert needle in md, needle
    assert "Paris" not in md or "\\|" in md
    path = tmp_path / "c.csv"
    compare_csv(report, str(path))
    header = next(csv.reader(path.open()))
    assert len(header) == len(set(header)), header  # every column named once
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 3 and {r["schema_version"] for r in rows} == {"2"}
    assert rows[0]["transformers_version"] == "5.23.0" and rows[0]["gpu"] == "NVIDIA H100 80GB HBM3"
    assert rows[2]["error"] == "RuntimeError: injected"


def test_junit_is_what_ci_reporters_read(tmp_path):
    report = VerifyReport(
        passed=False,
        checks=[
            CheckResult(name="load", passed=True, detail="ok", duration_seconds=1.25),
            CheckResult(name="budget", passed=False, detail="3 GiB > 1 GiB", duration_seconds=0.0),
            CheckResult(name="reference", passed=True, detail="no --reference", skipped=True),
        ],
    )
    path = tmp_path / "r.xml"
    write_junit(report, str(path), "demo", "qlora")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    assert root.get("skipped") == "1" and float(root.get("time")) == pytest.approx(1.25)
    suite = root.find("testsuite")
    assert suite.get("timestamp") and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["load"].get("time") == "1.250" and cases["budget"].find("failure") is not None
    assert cases["reference"].find("skipped") is not None


def test_plot_has_two_panels(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from qcli.output.files import compare_plot

    seen = []
    real = plt.Figure.savefig

    def keep(fig, *a, **k):
        seen.append([(ax.get_title(), ax.get_ylabel()) for ax in fig.axes])
        return real(fig, *a, **k)

    plt.Figure.savefig = keep
    try:
        compare_plot(_compare_report(), str(tmp_path / "p.png"))
    finally:
        plt.Figure.savefig = real
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    (mem_title, mem_unit), (q_title, _) = seen[0]
    assert "memory" in mem_title and "MiB" in mem_unit and "lower is better" in q_title


def test_decode_rate_is_unknown_rather_than_absurd():
    """A busy CPU can make the prefill runs slower than a whole generate run: that run has no decode time,
    and compare printed 16,000,000,000 tokens/s for it (16 tokens over a 1e-9 s floor)."""
    from qcli.run.quality import decode_rates

    assert decode_rates(16, [0.2, 0.2, 0.2], [0.1, 0.15, 0.2]) == dict.fromkeys(
        ("tokens_per_second", "min_tokens_per_second", "max_tokens_per_second")
    )
    rates = decode_rates(16, [0.2, 0.2, 0.2], [0.1, 0.36, 0.52])  # the first run is left out
    assert rates == pytest.approx(
        {"tokens_per_second": 75.0, "min_tokens_per_second": 50.0, "max_tokens_per_second": 100.0}
    )


def test_load_reads_at_80_columns(qcli_cache):
    """`make demo` ends with `qcli load demo`: the first report a newcomer reads. The answer comes first,
    no description is cut with "…", and sizes carry GB beside GiB as estimate's do."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "QCLI_CACHE": str(qcli_cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    env |= {"COLUMNS": "80", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "qcli", "load", "demo", "--preset", "qlora", "--prompt", "The capital of France is"],
        capture_output=True, text=True, env=env, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_fits(proc.stdout)
    assert re.match(r"demo in qlora on cpu: \d+\.\d\d MiB of tensors \(\d+\.\d\d MB\), estimate", proc.stdout)
    assert "GB (10^9)" in proc.stdout and "get_memory_footprint()" in proc.stdout
