"""`qcli compare`: every preset in its own subprocess (clean memory figures), then agreement and KL
against the reference preset on the same token positions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qcli.errors import UsageError
from qcli.presets import load_preset
from qcli.report import CompareReport, CompareRow
from qcli.resources import data_text


@dataclass
class CompareOptions:
    model: str
    presets: list[str]
    reference: str | None = None
    device: str = "auto"
    text: str | None = None
    prompt: str = "The capital of France is"
    max_new_tokens: int = 16
    timeout_seconds: float = 1800
    speed: bool = True
    inject_failure: set[str] = field(default_factory=set)  # tests: presets whose worker must fail


def validate(opts: CompareOptions) -> tuple[list[str], str, str]:
    """Check everything before anything loads; return (presets, reference, text)."""
    presets = [p.strip() for p in opts.presets if p.strip()]
    if not presets:
        raise UsageError("--presets is empty", "e.g. --presets bf16,int8,nf4,qlora")
    if len(set(presets)) != len(presets):
        raise UsageError("--presets lists a preset twice")
    for p in presets:
        load_preset(p)  # unknown names and invalid files: exit 2 now
    reference = opts.reference or presets[0]
    if reference not in presets:
        presets.insert(0, reference)
    if opts.text is not None:
        path = Path(opts.text)
        if not path.is_file():
            raise UsageError(f"--text {opts.text!r}: no such file")
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise UsageError(f"--text {opts.text!r} is empty")
    else:
        text = data_text("sample.txt")
    from qcli.loader import model_path, resolve_device

    model_path(opts.model, None)  # a missing model is bad input before any preset runs
    resolve_device(opts.device)
    return presets, reference, text


def run_compare(opts: CompareOptions, progress: Callable[[str], None] | None = None) -> CompareReport:
    """Return the comparison; a preset that fails gets its error in its row and the others still run."""
    import torch

    from qcli.quality import agreement_and_kl

    presets, reference, text = validate(opts)
    rows: dict[str, CompareRow] = {}
    logits: dict[str, object] = {}
    speed_method: str | None = None
    scored: int | None = None
    with tempfile.TemporaryDirectory(prefix="qcli-compare-") as tmp:
        for i, preset in enumerate(presets, 1):
            if progress:
                progress(f"[{i}/{len(presets)}] {preset}: load, perplexity, speed")
            spec = {
                "model": opts.model,
                "preset": preset,
                "device": opts.device,
                "text": text,
                "prompt": opts.prompt,
                "max_new_tokens": opts.max_new_tokens,
                "speed": opts.speed,
                "logits_path": str(Path(tmp) / f"{i}.pt"),
                "result_path": str(Path(tmp) / f"{i}.json"),
                "fail_for_test": preset in opts.inject_failure,
            }
            spec_path = Path(tmp) / f"{i}.spec.json"
            spec_path.write_text(json.dumps(spec))
            try:
                subprocess.run(
                    [sys.executable, "-m", "qcli.worker", str(spec_path)],
                    capture_output=True,
                    timeout=opts.timeout_seconds,
                    check=False,
                    env=dict(os.environ),
                )
                data = json.loads(Path(spec["result_path"]).read_text())
            except subprocess.TimeoutExpired:
                data = {"preset": preset, "error": f"timed out after {opts.timeout_seconds:.0f} s"}
            except (OSError, json.JSONDecodeError) as exc:
                data = {"preset": preset, "error": f"the worker died without a result ({type(exc).__name__})"}
            data.pop("traceback", None)
            method = data.pop("speed_method", None)
            rows[preset] = CompareRow.model_validate({k: v for k, v in data.items() if k in CompareRow.model_fields})
            speed_method = method or speed_method
            if not rows[preset].error:
                logits[preset] = torch.load(spec["logits_path"])
                scored = data.get("scored_tokens") or scored
    ref = rows[reference]
    for preset, row in rows.items():
        if row.error or reference not in logits:
            continue
        row.top1_agreement, row.kl_divergence = agreement_and_kl(logits[reference], logits[preset])
        if preset == reference:
            row.top1_agreement, row.kl_divergence = 1.0, 0.0
        if ref.memory_bytes and row.memory_bytes:
            row.memory_saved_x = round(ref.memory_bytes / row.memory_bytes, 4)
        if ref.perplexity is not None and row.perplexity is not None:
            row.delta_perplexity = row.perplexity - ref.perplexity
    report = CompareReport(
        model=opts.model,
        reference=reference,
        device=next((r.device for r in rows.values() if r.device), opts.device),
        text=opts.text or "built-in sample",
        prompt=opts.prompt,
        results=[rows[p] for p in presets],
    )
    report.speed_method, report.scored_tokens = speed_method, scored
    if rows[reference].error:
        report.notes.append(f"the reference {reference} failed: no agreement or KL figures")
    return report


def to_csv(report: CompareReport, path: str) -> None:
    import csv

    fields = [f for f in CompareRow.model_fields if f != "continuation"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in report.results:
            writer.writerow({f: getattr(row, f) for f in fields})


def to_markdown(report: CompareReport) -> str:
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
            f"| {r.preset} | {fmt(mem, ',.2f')} | {fmt(r.memory_saved_x, '.2f')} | "
            f"{fmt(r.estimate_error_pct, '+.3f')} | {fmt(r.load_seconds, '.2f')} | "
            f"{fmt(r.prefill_seconds, '.4f')} | {fmt(r.tokens_per_second, '.1f')} | {fmt(r.perplexity, '.3f')}"
            f" | {fmt(r.delta_perplexity, '+.3f')} | {fmt(r.top1_agreement, '.3f')} | "
            f"{fmt(r.kl_divergence, '.4f')} | {r.error or ''} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: CompareReport, path: str) -> None:
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
