"""`qcli verify`: load once, run every check, report pass/fail (JUnit XML for CI)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qcli.errors import RunError, UsageError, debug_enabled
from qcli.options import FromCli
from qcli.plan.limits import MAX_TIMEOUT_SECONDS, check_float
from qcli.plan.presets import Preset, load_preset
from qcli.resources import data_text
from qcli.results.run import CheckResult, VerifyReport
from qcli.run import checks
from qcli.run.flags import parse_max_memory
from qcli.run.kernels import failure_text
from qcli.run.loader import (
    DEFAULT_PROMPT,
    LoadOptions,
    Prepared,
    generate,
    load_report,
    prepare,
    require_tokenizer,
)
from qcli.run.worker import WorkerResult, WorkerSpec, run_worker
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
    timeout_seconds: float = 1800  # the reference worker's limit, as compare's per preset


def check_reference_flags(reference: str | None, given: dict[str, object]) -> None:
    """Raise a UsageError when flags that only the --reference check reads are given without --reference.

    `given` maps each such flag to its value (None: not given): --min-agreement and --max-kl are the
    reference check's thresholds, --timeout the reference worker's limit; without a reference nothing reads them.
    """
    named = [flag for flag, value in given.items() if value is not None]
    if named and reference is None:
        it = "it" if len(named) == 1 else "them"
        raise UsageError(
            f"{' and '.join(named)} given without --reference: only the reference check uses {it}",
            f"add --reference PRESET (e.g. --reference bf16) to measure agreement and KL against it, or leave {it} out",
        )


def parse_tolerance(text: str) -> float:
    raw = text.strip().removesuffix("%")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--tolerance {text!r} is not a percentage", "e.g. --tolerance 5%") from None
    if not 0 <= value < 1000:
        raise UsageError(f"--tolerance {text!r} is out of range")
    if 0 < value < 1 and not text.strip().endswith("%"):
        # --margin takes a fraction (0.05 = 5%) and this flag a percentage: a bare 0.05 is a guess either way
        raise UsageError(
            f"--tolerance {text!r} is ambiguous: a fraction or a percentage?",
            f"write the percent sign: --tolerance {value * 100:g}% or --tolerance {value:g}%",
        )
    return value


def reference_spec(opts: VerifyOptions, text: str, work_dir: str, revision: str | None = None) -> WorkerSpec:
    """Return the reference worker's spec: the reference preset with every load flag the candidate has, at
    the commit the candidate resolved (`revision`), so a branch that moves between the two loads cannot split them."""
    assert opts.reference is not None
    lo = opts.load
    return WorkerSpec(
        model=lo.model,
        preset=opts.reference,
        sets=[],  # --set edits the candidate's preset; the reference is the named preset as it is
        device=lo.device,
        device_map=lo.device_map,
        max_memory=lo.max_memory,
        dtype=None,  # the reference preset's own dtype (fp32/bf16): --dtype belongs to the candidate
        revision=revision or lo.revision,
        trust_remote_code=lo.trust_remote_code,
        text=text,
        prompt=lo.prompt or DEFAULT_PROMPT,
        max_new_tokens=0,
        speed=False,
        work_dir=work_dir,
    )


@dataclass
class Validated:
    """verify's inputs, checked before any model is touched."""

    tolerance_pct: float
    budget_bytes: int | None
    preset: Preset


def validate(opts: VerifyOptions) -> Validated:
    """Check every input (presets, thresholds, sizes, device) before any work; UsageError on bad input."""
    check_float("--min-agreement", opts.min_agreement, 0, 1)
    check_float("--max-kl", opts.max_kl, 0, MAX_KL)
    check_float("--timeout", opts.timeout_seconds, 0, MAX_TIMEOUT_SECONDS, lo_open=True)
    if opts.expect is not None and not opts.expect.strip():  # '' is in every text: the check could never fail
        raise UsageError("--expect is empty", "give the text the generation must contain, e.g. --expect Paris")
    tolerance = parse_tolerance(opts.tolerance)
    budget_bytes = parse_bytes(opts.budget, "--budget") if opts.budget else None
    preset = load_preset(opts.load.preset, opts.load.sets)
    if opts.reference:
        load_preset(opts.reference)
    parse_max_memory(opts.load.max_memory, opts.load.device_map)
    return Validated(tolerance, budget_bytes, preset)


def _timed(fn: Callable[[], CheckResult]) -> CheckResult:
    start = time.perf_counter()
    result = fn()
    result.duration_seconds = round(time.perf_counter() - start, 4)
    return result


def _reference_check(
    opts: VerifyOptions, ref: WorkerResult, ref_logp: Any, loaded: Any, text: str, seconds: float
) -> CheckResult:
    """Return the agreement/KL check of the candidate against the reference measured before it."""
    from qcli.run.quality import agreement_and_kl, perplexity_and_logprobs, token_ids

    start = time.perf_counter()
    name = "reference"
    if not ref.ok:
        check = CheckResult(
            name=name, passed=False, error=True, detail=f"reference preset {opts.reference} failed: {ref.row.error}"
        )
    else:
        try:
            _, logp = perplexity_and_logprobs(loaded.model, token_ids(loaded.tokenizer, text), loaded.device)
            agree, kl = agreement_and_kl(ref_logp, logp)
            check = checks.reference(agree, kl, opts.min_agreement, opts.max_kl, str(opts.reference))
        except RunError as exc:
            check = CheckResult(name=name, passed=False, error=True, detail=exc.line())
    check.duration_seconds = round(seconds + time.perf_counter() - start, 4)
    return check


def _generation_check(loaded: Any, opts: VerifyOptions) -> CheckResult:
    """Return the generation check: skipped without --expect; a generation that raises is an error."""
    try:
        gen = generate(loaded, opts.load.prompt or DEFAULT_PROMPT, opts.load.max_new_tokens)
    except Exception as exc:
        return CheckResult(
            name="generation",
            passed=False,
            error=True,
            detail=f"generation failed: {failure_text(exc, loaded.model)}",
        )
    return checks.generation(gen.text, gen.new_tokens, opts.expect)


def run_verify(opts: VerifyOptions, prepared: Prepared | None = None) -> VerifyReport:
    """Return every check's outcome. The reference (if any) runs first, in its own process, and is gone
    before the candidate loads; a load failure is reported as an errored `load` check."""
    v = validate(opts)
    if opts.load.prompt is None:
        opts.load.prompt = DEFAULT_PROMPT
    prepared = prepared or prepare(opts.load)  # a bad model path is exit 2 before the reference runs
    require_tokenizer(opts.load, prepared)  # the forward and generation checks need it: exit 2 now if it is broken
    model, preset_name = opts.load.model, v.preset.name
    text = data_text("sample.txt")
    ref: WorkerResult | None = None
    ref_logp: Any = None
    ref_seconds = 0.0
    if opts.reference:
        import torch

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="qcli-verify-") as tmp:
            spec = reference_spec(opts, text, str(Path(tmp) / "reference"), prepared.source.commit_sha)
            env = {"HF_TOKEN": opts.load.token} if opts.load.token else None  # never in the spec file
            ref = run_worker(spec, opts.timeout_seconds, debug=debug_enabled(), extra_env=env)
            if ref.bad_input:  # the checkpoint (or the reference preset) cannot be used: exit 2, as for the candidate
                raise UsageError(ref.row.error or f"reference preset {opts.reference}: bad input")
            if ref.ok:
                ref_logp = torch.load(spec.logits_path)
        ref_seconds = time.perf_counter() - start
    results: list[CheckResult] = []
    start = time.perf_counter()
    try:  # the generation is a check of its own below, so that a failing forward is a result, not a crash
        report, loaded = load_report(dataclasses.replace(opts.load, prompt=None), prepared, keep_non_finite=True)
    except RunError as exc:
        results.append(
            CheckResult(
                name="load",
                passed=False,
                error=True,
                detail=exc.line(),
                duration_seconds=round(time.perf_counter() - start, 4),
            )
        )
        return VerifyReport(
            model=model, preset=preset_name, passed=False, checks=results, error=exc.line(), reference=ref and ref.row
        )
    results.append(
        CheckResult(
            name="load",
            passed=True,
            detail=f"{report.preset} on {report.device} in {report.load_seconds:.2f} s",
            duration_seconds=round(time.perf_counter() - start, 4),
        )
    )
    results.append(checks.weights_finite(loaded.weight_problem))
    results.append(_timed(lambda: checks.placement(report, opts.allow_offload)))
    results.append(_timed(lambda: checks.quantization(report, v.preset)))
    results.append(_timed(lambda: checks.memory_vs_estimate(report, v.tolerance_pct)))
    if v.budget_bytes is not None:
        budget_bytes = v.budget_bytes
        results.append(_timed(lambda: checks.budget(report, budget_bytes)))
    results.append(_timed(lambda: checks.forward_finite(loaded.model, loaded.tokenizer, loaded.device)))
    results.append(_timed(lambda: _generation_check(loaded, opts)))
    if ref is not None:
        results.append(_reference_check(opts, ref, ref_logp, loaded, text, ref_seconds))
    results.extend(checks.dtype_warnings(v.preset, loaded.device))
    return VerifyReport(
        model=model,
        preset=preset_name,
        passed=all(c.passed for c in results),
        checks=results,
        load=report,
        reference=ref.row if ref else None,
    )
