"""`qcli compare`: every preset in its own subprocess (clean memory figures), then agreement and KL
against the reference preset on the same token positions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qcli.environment import environment
from qcli.errors import UsageError
from qcli.model.resolve import resolve
from qcli.plan.presets import load_preset
from qcli.resources import data_text
from qcli.results import CompareReport, CompareRow
from qcli.run.loader import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, resolve_device


@dataclass
class CompareOptions:
    """Everything compare takes; the defaults here are the only ones (flags left unset are None)."""

    model: str
    presets: list[str] = field(default_factory=lambda: ["bf16", "int8", "nf4", "qlora"])
    reference: str | None = None
    device: str = "auto"
    text: str | None = None
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    timeout_seconds: float = 1800
    speed: bool = True
    inject_failure: set[str] = field(default_factory=set)  # tests: presets whose worker must fail

    @classmethod
    def from_cli(cls, **given: Any) -> CompareOptions:
        """Return options from the CLI's keyword arguments: None means "not given" and keeps the default."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in given.items() if k in names and v is not None})


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
    resolve(opts.model, read_safetensors=False)  # a missing model is bad input before any preset runs
    resolve_device(opts.device)
    return presets, reference, text


def run_compare(opts: CompareOptions, progress: Callable[[str], None] | None = None) -> CompareReport:
    """Return the comparison; a preset that fails gets its error in its row and the others still run."""
    import torch

    from qcli.run.quality import agreement_and_kl

    presets, reference, text = validate(opts)
    source = resolve(opts.model, read_safetensors=False)
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
                    [sys.executable, "-m", "qcli.run.worker", str(spec_path)],
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
            row.memory_saved_ratio = round(ref.memory_bytes / row.memory_bytes, 4)
        if ref.perplexity is not None and row.perplexity is not None:
            row.delta_perplexity = row.perplexity - ref.perplexity
    report = CompareReport(
        model=opts.model,
        reference=reference,
        device=next((r.device for r in rows.values() if r.device), opts.device),
        text=opts.text or "built-in sample",
        prompt=opts.prompt,
        results=[rows[p] for p in presets],
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model_commit=getattr(source, "commit", None),  # the hub snapshot's commit, where resolve records it
        environment=environment(probe_torch=True),
    )
    report.speed_method, report.scored_tokens = speed_method, scored
    if rows[reference].error:
        report.notes.append(f"the reference {reference} failed: no agreement or KL figures")
    return report
