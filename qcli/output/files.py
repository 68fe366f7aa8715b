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


def check_output_path(path: str, flag: str) -> Path:
    """Return the path once it is known to be writable; UsageError (exit 2) before any work otherwise.

    A missing parent directory, a directory where a file is expected, or a place this process cannot
    create a file in are bad input. The probe really opens the file for appending (never truncating) and
    removes it again when it did not exist, so permissions, read-only mounts and root all answer truly.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a directory", "give a file name inside it")
    parent = target.parent
    if not parent.exists():
        raise UsageError(f"{flag} {path}: the directory {parent} does not exist", "create it first")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is not a directory")
    existed = target.exists()
    try:
        with open(target, "ab"):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot be written ({exc.strerror or exc})") from None
    if not existed:
        target.unlink(missing_ok=True)
    return target


def _classname(model: str, preset: str) -> str:
    """Return the JUnit classname: model and preset, so that matrix runs merged into one report differ."""
    return f"qcli.verify[{model}][{preset}]"


def write_junit(report: VerifyReport | None, path: str, model: str, preset: str, error: str | None = None) -> None:
    """Write JUnit XML: one testcase per check (failure, error or skipped), or, when verify stopped
    before or during its checks (`error`), the checks so far plus one errored testcase naming the cause."""
    checks = list(report.checks) if report else []
    cause = error or (report.error if report else None)
    classname = _classname(model, preset)
    suite = ET.Element("testsuite", name=f"qcli verify {model} --preset {preset}")
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    for c in checks:
        seconds = c.duration_seconds or 0.0
        total += seconds
        case = ET.SubElement(suite, "testcase", classname=classname, name=c.name, time=f"{seconds:.3f}")
        outcome = c.outcome
        if outcome == "error":
            counts["errors"] += 1
            ET.SubElement(case, "error", message=c.detail, type=c.name).text = c.detail
        elif outcome == "failed":
            counts["failures"] += 1
            ET.SubElement(case, "failure", message=c.detail).text = c.detail
        elif outcome == "skipped":
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=c.detail)
        else:
            ET.SubElement(case, "system-out").text = ("warning: " if c.warning else "") + c.detail
    if cause and not any(c.outcome == "error" for c in checks):
        counts["errors"] += 1
        case = ET.SubElement(suite, "testcase", classname=classname, name="verify", time="0.000")
        ET.SubElement(case, "error", message=cause, type="qcli").text = cause
    n = len(suite.findall("testcase"))
    suite.attrib.update(tests=str(n), time=f"{total:.3f}", **{k: str(v) for k, v in counts.items()})
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
