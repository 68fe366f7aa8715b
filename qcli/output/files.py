"""File writers: CSV and Markdown of a comparison, its plot, and verify's JUnit XML. Views of result
objects only; nothing is measured here."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from xml.etree import ElementTree as ET

from qcli.errors import RunError, UsageError
from qcli.results.run import CompareReport, CompareRow, VerifyReport

# The environment columns every CSV row carries (so a row stands alone when rows are concatenated).
ENV_PACKAGES = ("torch", "transformers", "accelerate", "bitsandbytes", "huggingface_hub")


def environment_fields(report: CompareReport) -> dict[str, str | int | None]:
    """Return the environment of a comparison as flat fields: schema, versions, device, date, model, commit."""
    env = report.environment
    fields: dict[str, str | int | None] = {
        "schema_version": report.schema_version,
        "qcli_version": report.qcli_version,
        "created_at": report.created_at,
        "model": report.model,
        "model_commit": report.model_commit,
        "device": report.device,
        "gpu": ", ".join(g.name for g in env.gpus) if env and env.gpus else None,
        "python_version": env.python_version if env else None,
    }
    for name in ENV_PACKAGES:
        fields[f"{name}_version"] = env.packages.get(name) if env else None
    fields["cuda_version"] = env.torch_cuda_version if env else None
    return fields


def compare_csv(report: CompareReport, path: str) -> None:
    """Write one row per preset: the measured fields, then the environment columns (the same on every row)."""
    import csv

    measured = [f for f in CompareRow.model_fields if f != "continuation"]
    # A column name once: a row's own `device` stays, the environment's same-named one is not repeated
    # (csv.DictReader keeps only the last of two `device` columns).
    env = {k: v for k, v in environment_fields(report).items() if k not in measured}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*measured, *env])
        writer.writeheader()
        for row in report.results:
            writer.writerow({**{f: getattr(row, f) for f in measured}, **env})


def _md(text: object) -> str:
    """Return text safe inside a Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def compare_markdown(report: CompareReport) -> str:
    """Return the comparison as Markdown: the table, then the environment block people paste into issues."""

    def fmt(v: object, spec: str = "") -> str:
        return "—" if v is None else format(v, spec)

    def spread(median: float | None, lo: float | None, hi: float | None, spec: str, scale: float = 1) -> str:
        if median is None:
            return "—"
        if lo is None or hi is None:
            return format(median * scale, spec)
        return f"{median * scale:{spec}} ({lo * scale:{spec}}–{hi * scale:{spec}})"

    lines = [
        f"# qcli compare: {_md(report.model)} on {_md(report.device)}",
        "",
        f"Reference: {_md(report.reference)}. Text: {_md(report.text)} ({report.scored_tokens} scored tokens). "
        f"Speed: {_md(report.speed_method)}. Lower perplexity, Δ perplexity and KL are better.",
        "",
        "| preset | memory (MiB) | saved × | estimate error % | load s | prefill ms, median (min–max) "
        "| decode tok/s, median (min–max) | perplexity | Δ ppl | top-1 agreement | KL | error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report.results:
        mem = None if r.memory_bytes is None else r.memory_bytes / 2**20
        lines.append(
            f"| {_md(r.preset)} | {fmt(mem, ',.2f')} | {fmt(r.memory_saved_ratio, '.2f')} | "
            f"{fmt(r.estimate_error_percent, '+.3f')} | {fmt(r.load_seconds, '.2f')} | "
            f"{spread(r.prefill_seconds, r.prefill_min_seconds, r.prefill_max_seconds, '.2f', 1000)} | "
            f"{spread(r.tokens_per_second, r.min_tokens_per_second, r.max_tokens_per_second, '.1f')} | "
            f"{fmt(r.perplexity, '.3f')} | {fmt(r.delta_perplexity, '+.3f')} | {fmt(r.top1_agreement, '.3f')} | "
            f"{fmt(r.kl_divergence, '.4f')} | {_md(r.error or '')} |"
        )
    lines += ["", "## Environment", "", "| | |", "|---|---|"]
    for key, value in environment_fields(report).items():
        lines.append(f"| {key} | {_md('—' if value is None else value)} |")
    return "\n".join(lines) + "\n"


def compare_plot(report: CompareReport, path: str) -> None:
    """Write a two-panel PNG: memory per preset (bars), and perplexity Δ vs the reference (lower is better)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib", "pip install 'qcli[plot]'") from None
    rows = [r for r in report.results if r.memory_bytes]
    names = [r.preset for r in rows]
    fig, (mem_ax, q_ax) = plt.subplots(1, 2, figsize=(10, 4))
    mib = [r.memory_bytes / 2**20 for r in rows if r.memory_bytes]
    bars = mem_ax.bar(names, mib, color="#4c72b0")
    mem_ax.bar_label(bars, labels=[f"{m:,.2f}" for m in mib], padding=2, fontsize=9)
    mem_ax.set_ylabel("memory (MiB = 2^20 bytes, every tensor)")
    mem_ax.set_title("memory by preset")
    mem_ax.margins(y=0.15)
    deltas = [r.delta_perplexity if r.delta_perplexity is not None else float("nan") for r in rows]
    q_bars = q_ax.bar(names, deltas, color="#dd8452")
    q_ax.bar_label(q_bars, labels=[f"{d:+.3f}" for d in deltas], padding=2, fontsize=9)
    q_ax.axhline(0, color="black", linewidth=0.8)
    q_ax.set_ylabel(f"perplexity − {report.reference}'s perplexity")
    q_ax.set_title(f"quality Δ vs {report.reference} (lower is better)")
    q_ax.margins(y=0.2)
    for ax in (mem_ax, q_ax):
        ax.set_xlabel("preset")
        ax.tick_params(axis="x", labelrotation=0)
    fig.suptitle(f"qcli compare: {report.model} on {report.device}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


EXAMPLE_NAMES = {"--junit": "verify.xml", "--csv": "compare.csv", "--markdown": "report.md", "--plot": "compare.png"}


def check_output_path(path: str, flag: str) -> Path:
    """Return the path once it is known to be writable; UsageError (exit 2) before any work otherwise.

    A missing parent directory, a directory where a file is expected, or a place this process cannot
    create a file in are bad input. The probe really opens the file for appending (never truncating) and
    removes it again when it did not exist, so permissions, read-only mounts and root all answer truly.
    """
    if not path.strip():  # Path("") is the current directory: an empty value would write nothing, silently
        raise UsageError(f"{flag} needs a file path", f"e.g. {flag} {EXAMPLE_NAMES.get(flag, 'out.txt')}")
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


def _stat(path: str | Path) -> os.stat_result | None:
    try:
        return os.stat(Path(path).expanduser())
    except (OSError, ValueError, RuntimeError):  # missing, a loop, a NUL, `~nouser`: nothing to collide with
        return None


# What transformers reads from a model directory (config, weights, tokenizer, remote code): a report written
# over one of these destroys the model; a report.md or verify.xml beside the weights is fine.
MODEL_FILE_SUFFIXES = {".json", ".safetensors", ".bin", ".pt", ".pth", ".model", ".py", ".txt", ".tiktoken"}


def _model_dir(model: str | None) -> str | None:
    """Return the local directory a model is read from (a config.json path reads its directory), or None."""
    st = _stat(model) if model else None
    if model is None or st is None:
        return None
    path = Path(model).expanduser()
    return os.path.realpath(path if stat.S_ISDIR(st.st_mode) else path.parent)


def check_outputs_apart(
    outputs: dict[str, str | None], reads: list[str | None], model: str | None, json_: bool
) -> None:
    """Raise a UsageError (exit 2, before any work) when a report file would overwrite something it should not:
    another report of the same run (`--csv r.md --markdown r.md` kept only the last), a file the run reads
    (`reads`: the --text, preset files; and the model's config, weights and tokenizer files: `--junit
    m/config.json` destroyed the model), or, with --json, the standard output (`--junit /dev/stdout` put XML
    beside the JSON). Character devices (/dev/null) are sinks, never collisions."""
    seen: dict[tuple[int, int] | str, str] = {}
    stdout = None
    with contextlib.suppress(OSError, ValueError):
        stdout = os.fstat(1)
    home = _model_dir(model)
    for flag, path in outputs.items():
        if path is None:
            continue
        real = os.path.realpath(Path(path).expanduser())
        st = _stat(path)
        if json_ and st is not None and stdout is not None and (st.st_dev, st.st_ino) == (stdout.st_dev, stdout.st_ino):
            raise UsageError(
                f"{flag} {path} is the standard output, where --json prints its one object",
                f"give {flag} a file, or leave --json out",
            )
        if st is not None and stat.S_ISCHR(st.st_mode):
            continue
        key: tuple[int, int] | str = (st.st_dev, st.st_ino) if st is not None else real
        if key in seen:
            raise UsageError(f"{seen[key]} and {flag} name the same file {path}", "give each report its own file")
        seen[key] = flag
        if st is None:
            continue  # a new file overwrites nothing the run reads
        for given in reads:
            source = _stat(given) if given else None
            if source is not None and (source.st_dev, source.st_ino) == key:
                raise UsageError(f"{flag} {path} would overwrite {given}, which this run reads", "write it elsewhere")
        of_model = home is not None and os.path.commonpath([home, real]) == home
        if of_model and Path(real).suffix.lower() in MODEL_FILE_SUFFIXES:
            raise UsageError(f"{flag} {path} would overwrite a file of the model {model}", "write the report elsewhere")


@contextlib.contextmanager
def writing(path: str, flag: str) -> Iterator[None]:
    """Turn an OSError while writing `path` (a full disk, /dev/full, a quota) into a RunError naming the flag:
    check_output_path found the place writable before the work, so what failed is the write itself (exit 1)."""
    try:
        yield
    except OSError as exc:
        raise RunError(
            f"{flag} {path}: writing it failed ({exc.strerror or exc})", "free some space, or give another path"
        ) from exc


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
    # The counts and times on <testsuites> and <testsuite> are what CI reporters read (GitHub's
    # test-reporter actions, GitLab's `artifacts:reports:junit`, Jenkins' junit step).
    n = len(suite.findall("testcase"))
    attrs = {"tests": str(n), "time": f"{total:.3f}", **{k: str(v) for k, v in counts.items()}}
    suite.attrib.update(timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), **attrs)
    root = ET.Element("testsuites", name="qcli verify", **attrs)
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
