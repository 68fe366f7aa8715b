"""`qcli verify`: load once, run every check, report pass/fail (JUnit XML for CI)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qcli.errors import RunError, UsageError
from qcli.options import FromCli
from qcli.plan.limits import check_float
from qcli.plan.presets import load_preset
from qcli.resources import data_text
from qcli.results import CheckResult, VerifyReport
from qcli.run import checks
from qcli.run.flags import worker_command
from qcli.run.loader import DEFAULT_PROMPT, LoadOptions, load_report
from qcli.run.quality import agreement_and_kl, perplexity_and_logprobs, token_ids
from qcli.units import parse_bytes

# A KL divergence threshold past this passes anything: almost surely a typo.
MAX_KL = 1e6


@dataclass
class VerifyOptions(FromCli):
    """Everything verify takes besides the load; the defaults here are the only ones."""

    load: LoadOptions
    expect: str | None = None
    budget: str | None = None
    tolerance: str = "5%"
    reference: str | None = None
    min_agreement: float = 0.9
    max_kl: float = 0.1
    allow_offload: bool = False


def parse_tolerance(text: str) -> float:
    raw = text.strip().removesuffix("%")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--tolerance {text!r} is not a percentage", "e.g. --tolerance 5%") from None
    if not 0 <= value < 1000:
        raise UsageError(f"--tolerance {text!r} is out of range")
    return value


def _reference_logprobs(opts: VerifyOptions, text: str) -> Any:
    import torch

    with tempfile.TemporaryDirectory(prefix="qcli-verify-") as tmp:
        spec = {
            "model": opts.load.model,
            "revision": opts.load.revision,
            "preset": opts.reference,
            "device": opts.load.device,
            "text": text,
            "prompt": opts.load.prompt or "Hello",
            "max_new_tokens": 1,
            "speed": False,
            "logits_path": str(Path(tmp) / "ref.pt"),
            "result_path": str(Path(tmp) / "ref.json"),
        }
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        subprocess.run(
            worker_command(Path(tmp) / "spec.json"),
            capture_output=True,
            check=False,
            env=dict(os.environ) | ({"HF_TOKEN": opts.load.token} if opts.load.token else {}),  # not in the spec
        )
        result = json.loads(Path(spec["result_path"]).read_text())
        if "error" in result:
            raise RunError(f"reference preset {opts.reference} failed: {result['error']}")
        return torch.load(spec["logits_path"])


def run_verify(opts: VerifyOptions) -> VerifyReport:
    check_float("--min-agreement", opts.min_agreement, 0, 1)
    check_float("--max-kl", opts.max_kl, 0, MAX_KL)
    tolerance = parse_tolerance(opts.tolerance)
    budget_bytes = parse_bytes(opts.budget, "--budget") if opts.budget else None
    preset = load_preset(opts.load.preset, opts.load.sets)
    if opts.reference:
        load_preset(opts.reference)
    if opts.load.prompt is None:
        opts.load.prompt = DEFAULT_PROMPT
    results: list[CheckResult] = []
    try:
        report, loaded = load_report(opts.load)
    except RunError as exc:
        results.append(CheckResult(name="load", passed=False, detail=exc.line()))
        return VerifyReport(passed=False, checks=results, error=exc.line())
    results.append(
        CheckResult(
            name="load", passed=True, detail=f"{report.preset} on {report.device} in {report.load_seconds:.2f} s"
        )
    )
    results.append(checks.placement(report, opts.allow_offload))
    results.append(checks.quantization(report, loaded.model, preset))
    results.append(checks.memory_vs_estimate(report, tolerance))
    if budget_bytes is not None:
        results.append(checks.budget(report, budget_bytes))
    results.append(checks.forward_finite(loaded.model, loaded.tokenizer, loaded.device))
    gen = report.generation
    results.append(checks.generation(gen.text if gen else "", gen.new_tokens if gen else 0, opts.expect))
    if opts.reference:
        text = data_text("sample.txt")
        _, logp = perplexity_and_logprobs(loaded.model, token_ids(loaded.tokenizer, text), loaded.device)
        agree, kl = agreement_and_kl(_reference_logprobs(opts, text), logp)
        results.append(checks.reference(agree, kl, opts.min_agreement, opts.max_kl, opts.reference))
    results.extend(checks.dtype_warnings(preset, loaded.device))
    return VerifyReport(passed=all(c.passed for c in results), checks=results, load=report)
