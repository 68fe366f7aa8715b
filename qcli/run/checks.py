"""verify's checks: each a small function returning a CheckResult (name, passed, one-line detail)."""

from __future__ import annotations

import math
from typing import Any

from qcli.results import CheckResult, LoadReport


def placement(report: LoadReport, allow_offload: bool) -> CheckResult:
    c = report.census
    where = set(c.placement_bytes_by_device)
    off = [d for d in where if d != report.device and not (d.startswith("cuda") and report.device.startswith("cuda"))]
    ok = c.meta_tensors == 0 and (allow_offload or (not c.offloaded and not off))
    detail = f"tensors on {', '.join(sorted(where))}"
    if c.meta_tensors:
        detail += f"; {c.meta_tensors} left on meta"
    if c.offloaded or off:
        detail += f"; offloaded: {', '.join(c.offloaded or off)[:120]}"
    return CheckResult(name="placement", passed=ok, detail=detail)


def quantization(report: LoadReport, model: Any, preset: Any) -> CheckResult:
    q = preset.quantization
    c = report.census
    if q is None:
        ok = c.linear4bit == 0 and c.linear8bit == 0
        return CheckResult(name="quantization", passed=ok, detail=f"unquantized preset: {c.linear_unquantized} Linear")
    got = c.linear4bit if q.load_in_4bit else c.linear8bit
    problems = []
    if got != c.quantizable_linears:
        problems.append(f"{got} quantized modules, expected {c.quantizable_linears}")
    if q.load_in_4bit:
        want_type = q.format().key
        if set(c.linear4bit_by_quant_type) - {want_type}:
            problems.append(f"quant types {c.linear4bit_by_quant_type}, expected {want_type}")
        want_compute = q.bnb_4bit_compute_dtype or "float32"
        if set(c.linear4bit_by_compute_dtype) - {want_compute}:
            problems.append(f"compute dtypes {c.linear4bit_by_compute_dtype}, expected {want_compute}")
    kind = "Linear4bit" if q.load_in_4bit else "Linear8bitLt"
    detail = "; ".join(problems) or (
        f"{got} {kind} = quantizable linears; kept unquantized: {', '.join(c.unquantized_modules) or 'none'}"
    )
    return CheckResult(name="quantization", passed=not problems, detail=detail)


def memory_vs_estimate(report: LoadReport, tolerance_pct: float) -> CheckResult:
    if report.estimate_bytes is None:
        return CheckResult(
            name="memory_vs_estimate",
            passed=True,
            warning=True,
            detail="no estimate for this architecture: not compared",
        )
    err = abs(report.estimate_error_percent or 0.0)
    detail = (
        f"measured {report.memory_bytes:,} B vs estimate {report.estimate_bytes:,} B "
        f"({report.estimate_error_percent:+.3f}%, tolerance {tolerance_pct}%)"
    )
    if report.cuda:
        alloc = sum(c.allocated_bytes for c in report.cuda)
        detail += f"; CUDA allocated {alloc:,} B"
        err = max(err, abs(alloc - report.estimate_bytes) / report.estimate_bytes * 100)
    return CheckResult(name="memory_vs_estimate", passed=err <= tolerance_pct, detail=detail)


def budget(report: LoadReport, budget_bytes: int) -> CheckResult:
    used = sum(c.reserved_bytes for c in report.cuda) if report.cuda else report.memory_bytes
    what = "CUDA reserved" if report.cuda else "tensor bytes"
    return CheckResult(
        name="budget", passed=used <= budget_bytes, detail=f"{what} {used:,} B vs budget {budget_bytes:,} B"
    )


def forward_finite(model: Any, tokenizer: Any, device: str) -> CheckResult:
    import torch

    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").to(device)
    with torch.no_grad():
        logits = model(**ids).logits
    finite = bool(torch.isfinite(logits).all())
    return CheckResult(
        name="forward_finite",
        passed=finite,
        detail=f"logits {tuple(logits.shape)} {str(logits.dtype).removeprefix('torch.')}, "
        + ("all finite" if finite else "NaN/inf present"),
    )


def generation(text: str, new_tokens: int, expect: str | None) -> CheckResult:
    ok = new_tokens > 0 and (expect is None or expect in text)
    detail = f"{new_tokens} new tokens: {text.strip()[:80]!r}"
    if expect is not None:
        detail += f"; expected {expect!r} " + ("found" if expect in text else "absent")
    return CheckResult(name="generation", passed=ok, detail=detail)


def reference(agreement: float, kl: float, min_agreement: float, max_kl: float, ref: str) -> CheckResult:
    ok = agreement >= min_agreement and kl <= max_kl and not math.isnan(kl)
    return CheckResult(
        name="reference",
        passed=ok,
        detail=f"vs {ref}: top-1 agreement {agreement:.3f} (min {min_agreement}), KL {kl:.4f} (max {max_kl})",
    )


def dtype_warnings(preset: Any, device: str) -> list[CheckResult]:
    out = []
    q = preset.quantization
    if device.startswith("cuda") and preset.compute_dtype == "bfloat16":
        import torch

        if not torch.cuda.is_bf16_supported():
            out.append(
                CheckResult(
                    name="bf16_support",
                    passed=True,
                    warning=True,
                    detail="bf16 compute on a GPU without bf16: use nf4-fp16",
                )
            )
    if (
        q is not None
        and q.load_in_4bit
        and preset.dtype == "float16"
        and (q.bnb_4bit_compute_dtype or "float32") == "float32"
    ):
        out.append(
            CheckResult(
                name="compute_dtype",
                passed=True,
                warning=True,
                detail="fp16 inputs with fp32 compute: bitsandbytes' slow path",
            )
        )
    return out
