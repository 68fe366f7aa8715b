"""File writers: CSV and Markdown of a comparison, its plot, and verify's JUnit XML. Views of result
objects only; nothing is measured here."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from qcli.errors import UsageError
from qcli.results import CompareReport, CompareRow, VerifyReport


def compare_csv(report: CompareReport, path: str) -> None:
    import csv

    fields = [f for f in CompareRow.model_fields if f != "continuation"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in report.results:
            writer.writerow({f: getattr(row, f) for f in fields})


def compare_markdown(report: CompareReport) -> str:
    def fmt(v: object, spec: str = "") -> str:
        return "—" if v is None else format(v, spec)

    lines = [
        f"# qcli compare: {report.model} on {report.device}",
        "",
        f"Reference: {report.reference}. Text: {report.text} ({report.scored_tokens} scored tokens). "
        f"Speed: {report.speed_method}.",
        "",
        "| preset | memory (MiB) | saved × | estimate error % | load s | prefill s | decode tok/s | perplexity "
        "| Δ ppl | top-1 agreement | KL | error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report.results:
        mem = None if r.memory_bytes is None else r.memory_bytes / 2**20
        lines.append(
            f"| {r.preset} | {fmt(mem, ',.2f')} | {fmt(r.memory_saved_ratio, '.2f')} | "
            f"{fmt(r.estimate_error_percent, '+.3f')} | {fmt(r.load_seconds, '.2f')} | "
            f"{fmt(r.prefill_seconds, '.4f')} | {fmt(r.tokens_per_second, '.1f')} | {fmt(r.perplexity, '.3f')}"
            f" | {fmt(r.delta_perplexity, '+.3f')} | {fmt(r.top1_agreement, '.3f')} | "
            f"{fmt(r.kl_divergence, '.4f')} | {r.error or ''} |"
        )
    return "\n".join(lines) + "\n"


def compare_plot(report: CompareReport, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib", "pip install 'qcli[plot]'") from None
    rows = [r for r in report.results if r.memory_bytes and r.perplexity is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r.memory_bytes / 2**20 for r in rows], [r.perplexity for r in rows])
    for r in rows:
        ax.annotate(r.preset, (r.memory_bytes / 2**20, r.perplexity))
    ax.set_xlabel("memory (MiB, all tensors)")
    ax.set_ylabel("perplexity")
    ax.set_title(f"{report.model}: memory vs quality")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_junit(report: VerifyReport, path: str, name: str) -> None:
    """Write JUnit XML: one testcase per check, failures as <failure>, warnings as system-out."""
    failures = sum(not c.passed for c in report.checks)
    suite = ET.Element(
        "testsuite",
        name=f"qcli verify {name}",
        tests=str(len(report.checks)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    for c in report.checks:
        case = ET.SubElement(suite, "testcase", classname="qcli.run.verify", name=c.name)
        if not c.passed:
            ET.SubElement(case, "failure", message=c.detail).text = c.detail
        else:
            ET.SubElement(case, "system-out").text = ("warning: " if c.warning else "") + c.detail
    root = ET.Element("testsuites")
    root.append(suite)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
