"""verify's checks: each a small function returning a CheckResult (name, outcome, one-line detail).

Every check reads what the load report read back from the loaded modules, never what the preset asked
for, so each one can fail (tests/test_verify_checks.py makes each fail on a tiny real checkpoint).
"""

from __future__ import annotations

import math
from typing import Any

from qcli.errors import UsageError
from qcli.plan.presets import Preset
from qcli.results.run import CheckResult, LoadReport, QuantGroup
from qcli.run.kernels import failure_text
from qcli.units import human_bytes


def offloaded_places(report: LoadReport) -> dict[str, int]:
    """Return {place: bytes} held off the load device: disk always, cpu when the model is on a GPU."""
    out = {}
    for place, size in report.memory_bytes_by_device.items():
        if place == "disk" or (place == "cpu" and report.device != "cpu"):
            out[place] = size
    return out


def placement(report: LoadReport, allow_offload: bool) -> CheckResult:
    c = report.census
    where = ", ".join(f"{d} {human_bytes(n)}" for d, n in sorted(report.memory_bytes_by_device.items()))
    detail = f"tensors on {where or 'nothing'}"
    off = offloaded_places(report)
    problems = []
    if c.meta_tensors:
        problems.append(f"{c.meta_tensors} tensor(s) left on the meta device (never loaded)")
    if off:
        modules = ", ".join(c.offloaded)[:120] or "?"
        text = f"offloaded {', '.join(f'{d} {n:,} B' for d, n in off.items())} ({modules})"
        if allow_offload:
            detail += f"; {text}: allowed by --allow-offload"
        else:
            problems.append(f"{text}; pass --allow-offload to accept it")
    if problems:
        detail += "; " + "; ".join(problems)
    return CheckResult(name="placement", passed=not problems, detail=detail)


def _layer_of(preset: Preset) -> str | None:
    q = preset.quantization
    if q is None:
        return None
    return "Linear4bit" if q.load_in_4bit else "Linear8bitLt"


def _group_problems(g: QuantGroup, preset: Preset) -> list[str]:
    """Return how one group of loaded modules differs from what the preset asks for."""
    q = preset.quantization
    assert q is not None
    where = f"{len(g.modules)} {g.layer} ({g.modules[0]}{', …' if len(g.modules) > 1 else ''})"
    out = []
    if g.layer == "Linear4bit" and q.load_in_4bit:
        if g.quant_type != q.bnb_4bit_quant_type:
            out.append(f"{where}: quant type {g.quant_type}, preset {preset.name} asks {q.bnb_4bit_quant_type}")
        if q.bnb_4bit_use_double_quant and not g.double_quant:
            out.append(f"{where}: double quantization expected but absent")
        elif not q.bnb_4bit_use_double_quant and g.double_quant:
            out.append(f"{where}: double quantized, preset {preset.name} does not ask for it")
        want = q.bnb_4bit_compute_dtype or "float32"  # BitsAndBytesConfig's default compute dtype
        if g.compute_dtype != want:
            out.append(f"{where}: compute dtype {g.compute_dtype}, preset {preset.name} asks {want}")
    elif (
        g.layer == "Linear8bitLt"
        and q.load_in_8bit
        and g.outlier_threshold is not None
        and not math.isclose(g.outlier_threshold, q.llm_int8_threshold)
    ):
        out.append(f"{where}: outlier threshold {g.outlier_threshold}, preset asks {q.llm_int8_threshold}")
    return out


def quantization(report: LoadReport, preset: Preset) -> CheckResult:
    """Pass when the loaded modules carry exactly the quantization the preset asks for."""
    c = report.census
    want_layer = _layer_of(preset)
    loaded_q = [g for g in c.quantization if g.quantized]
    problems: list[str] = []
    if report.preset_overridden:
        problems.append("the checkpoint's own quantization_config overrode the preset")
    if want_layer is None:
        if loaded_q:
            n = sum(len(g.modules) for g in loaded_q)
            problems.append(f"unquantized preset {preset.name}, but {n} module(s) are {loaded_q[0].layer}")
        detail = "; ".join(problems) or f"unquantized preset: {c.linear_unquantized} Linear, none quantized"
        return CheckResult(name="quantization", passed=not problems, detail=detail)
    mine = [g for g in loaded_q if g.layer == want_layer]
    got = sum(len(g.modules) for g in mine)
    others = [g for g in loaded_q if g.layer != want_layer]
    if got == 0:
        kept = ", ".join(sorted({m.rsplit(".", 1)[-1] for m in c.unquantized_modules}))[:100]
        problems.append(
            f"preset {preset.name} quantizes, but no module was converted to {want_layer} "
            f"({c.linear_unquantized} linear module(s) stay unquantized: {kept or 'none'}); transformers "
            "converts only nn.Linear modules it recognises"
        )
    elif c.quantizable_linears and got != c.quantizable_linears:
        problems.append(f"{got} {want_layer}, the estimate expects {c.quantizable_linears}")
    for g in others:
        problems.append(f"{len(g.modules)} module(s) are {g.layer}, preset {preset.name} asks {want_layer}")
    for g in mine:
        problems += _group_problems(g, preset)
    plain = [m for g in c.quantization if not g.quantized for m in g.modules]
    if problems:
        detail = "; ".join(problems)
    else:
        g = mine[0]
        how = (
            f"{g.quant_type}{'+dq' if g.double_quant else ''}, compute {g.compute_dtype}, block {g.block_size}"
            if want_layer == "Linear4bit"
            else f"threshold {g.outlier_threshold}"
        )
        detail = f"{got} {want_layer} ({how}); kept unquantized: {', '.join(c.unquantized_modules) or 'none'}"
    if plain:
        detail += f"; {len(plain)} {want_layer} hold an unquantized weight (tied or offloaded): {', '.join(plain)}"
    return CheckResult(name="quantization", passed=not problems, detail=detail)


def memory_vs_estimate(report: LoadReport, tolerance_pct: float) -> CheckResult:
    if report.estimate_bytes is None or report.estimate_error_percent is None:
        return CheckResult(
            name="memory_vs_estimate",
            passed=True,
            warning=True,
            detail="no estimate for this architecture (or nothing measured): not compared",
        )
    err = abs(report.estimate_error_percent)
    detail = (
        f"measured {report.memory_bytes:,} B vs estimate {report.estimate_bytes:,} B "
        f"({report.estimate_error_percent:+.3f}%, tolerance {tolerance_pct}%)"
    )
    if report.offloaded_bytes:
        detail += f"; includes {report.offloaded_bytes:,} B offloaded"
    if report.cuda:
        alloc = sum(c.allocated_bytes for c in report.cuda)
        detail += f"; CUDA allocated {alloc:,} B"
        err = max(err, abs(alloc + report.offloaded_bytes - report.estimate_bytes) / report.estimate_bytes * 100)
    return CheckResult(name="memory_vs_estimate", passed=err <= tolerance_pct, detail=detail)


def budget(report: LoadReport, budget_bytes: int) -> CheckResult:
    """Pass when the memory the model holds (CUDA reserved, or resident tensor bytes on the CPU) fits."""
    if report.cuda:
        used, what = sum(c.reserved_bytes for c in report.cuda), "CUDA reserved"
    else:
        used = report.memory_bytes - report.memory_bytes_by_device.get("disk", 0)
        what = "tensor bytes in memory"
    return CheckResult(
        name="budget", passed=used <= budget_bytes, detail=f"{what} {used:,} B vs budget {budget_bytes:,} B"
    )


def weights_finite(problem: UsageError | None) -> CheckResult:
    """Fail when the loaded weights hold NaN or inf (the load's own reading of every parameter and of
    bitsandbytes' quantization state, run.checkpoint.non_finite_weights)."""
    if problem is None:
        return CheckResult(name="weights_finite", passed=True, detail="every loaded weight is finite")
    return CheckResult(name="weights_finite", passed=False, detail=problem.line())


FORWARD_TEXT = "The quick brown fox jumps over the lazy dog."


def forward_finite(model: Any, tokenizer: Any, device: str) -> CheckResult:
    """Pass when one forward pass runs and every logit is finite."""
    import torch

    if tokenizer is None:
        return CheckResult(name="forward_finite", passed=False, error=True, detail="no tokenizer: cannot run")
    ids = tokenizer(FORWARD_TEXT, return_tensors="pt").to(device)
    try:
        with torch.no_grad():
            logits = model(**ids).logits
    except Exception as exc:
        return CheckResult(
            name="forward_finite", passed=False, error=True, detail=f"forward failed: {failure_text(exc, model)}"
        )
    bad = int((~torch.isfinite(logits)).sum())
    shape = f"logits {tuple(logits.shape)} {str(logits.dtype).removeprefix('torch.')}"
    detail = f"{shape}, all finite" if not bad else f"{shape}: {bad:,} of {logits.numel():,} are NaN/inf"
    return CheckResult(name="forward_finite", passed=not bad, detail=detail)


def generation(text: str, new_tokens: int, expect: str | None) -> CheckResult:
    """Pass when the expected text appears; skipped (not passed) when nothing is expected."""
    detail = f"{new_tokens} new tokens: {text.strip()[:80]!r}"
    if expect is None:
        return CheckResult(name="generation", passed=True, skipped=True, detail=f"skipped: no --expect given; {detail}")
    found = new_tokens > 0 and expect in text
    detail += f"; expected {expect!r} " + ("found" if found else "absent")
    return CheckResult(name="generation", passed=found, detail=detail)


def reference(agreement: float, kl: float, min_agreement: float, max_kl: float, ref: str) -> CheckResult:
    ok = agreement >= min_agreement and kl <= max_kl and not math.isnan(kl)
    return CheckResult(
        name="reference",
        passed=ok,
        detail=f"vs {ref} (measured first, in its own process): top-1 agreement {agreement:.4f} "
        f"(min {min_agreement}), KL {kl:.3g} (max {max_kl})",
    )


def dtype_warnings(preset: Preset, device: str) -> list[CheckResult]:
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
