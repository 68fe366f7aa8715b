"""Quality and speed of a loaded model: sliding-window perplexity, the log-probabilities used for
top-1 agreement and KL divergence against a reference, prefill latency and decode speed."""

from __future__ import annotations

import statistics
import time
from typing import Any

from qcli.errors import UsageError

EVAL_TOKENS = 512  # tokens of the text that are scored
WINDOW = 256  # sliding window; the stride is half of it
SPEED_METHOD_CPU = "time.perf_counter, 1 warm-up + {n} timed runs, median (min–max)"
SPEED_METHOD_CUDA = "CUDA events, 1 warm-up + {n} timed runs, median (min–max)"


def token_ids(tokenizer: Any, text: str) -> Any:
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0][:EVAL_TOKENS]
    if ids.numel() < 2:
        raise UsageError("the evaluation text has fewer than 2 tokens", "give a longer --text file")
    return ids


def perplexity_and_logprobs(model: Any, ids: Any, device: str) -> tuple[float, Any]:
    """Return (perplexity, fp32 log-probs of the first window's positions).

    Sliding windows of WINDOW tokens with stride WINDOW/2; each token is scored once; NLL summed
    in fp32 and divided by the scored tokens.
    """
    import torch

    window = min(WINDOW, getattr(model.config, "max_position_embeddings", WINDOW) or WINDOW)
    stride = max(1, window // 2)
    nll_sum, scored, prev_end, first = 0.0, 0, 0, None
    with torch.no_grad():
        for begin in range(0, ids.numel(), stride):
            end = min(begin + window, ids.numel())
            chunk = ids[begin:end].unsqueeze(0).to(device)
            logits = model(chunk).logits[0].float()
            bad = int((~torch.isfinite(logits)).sum())
            if bad:  # no perplexity, agreement or KL can be measured on them: say so, not "KL is NaN"
                from qcli.errors import RunError

                raise RunError(
                    f"the forward pass gives non-finite logits ({bad:,} of {logits.numel():,} NaN/inf, tokens "
                    f"{begin} to {end} of the evaluation text): its activations overflow in this precision",
                    "`qcli verify` names the check that fails; try a preset with a wider dtype (bf16 or fp32)",
                )
            logp = torch.log_softmax(logits, dim=-1)
            if first is None:
                first = logp[:-1].cpu()
            targets = chunk[0, 1:]
            new_from = max(prev_end, begin + 1) - begin  # score each target once
            token_nll = -logp[:-1].gather(1, targets.unsqueeze(1)).squeeze(1)
            nll_sum += float(token_nll[new_from - 1 :].sum())
            scored += int(token_nll[new_from - 1 :].numel())
            prev_end = end
            if end == ids.numel():
                break
    return float(torch.exp(torch.tensor(nll_sum / scored))), first


# fp32 log_softmax rounds each log-prob by ~1e-7 relative; a mean KL below -KL_NOISE is not rounding
# but log-probs that do not sum to one (or different tokenizations), and is reported as an error.
KL_NOISE = 1e-5


def agreement_and_kl(ref_logp: Any, logp: Any) -> tuple[float, float]:
    """Return top-1 agreement and mean KL(reference ‖ candidate) over the same positions, as measured.

    A KL below -KL_NOISE is an error (RunError), never clamped to zero.
    """
    from qcli.errors import RunError

    n = min(ref_logp.shape[0], logp.shape[0])
    if n == 0 or ref_logp.shape[-1] != logp.shape[-1]:
        raise RunError(
            f"cannot compare log-probs of shapes {tuple(ref_logp.shape)} and {tuple(logp.shape)}",
            "the presets must score the same text with the same tokenizer",
        )
    ref, cand = ref_logp[:n].float(), logp[:n].float()
    agree = float((ref.argmax(-1) == cand.argmax(-1)).float().mean())
    kl = float((ref.exp() * (ref - cand)).sum(-1).mean())
    if kl < -KL_NOISE or kl != kl:
        raise RunError(
            f"KL divergence measured as {kl:.3g}: a negative or NaN KL means the log-probs are not normalised",
            "this is a bug in qcli or non-finite logits; run verify to see which",
        )
    return agree, kl


def _timed(fn: Any, device: str, runs: int) -> list[float]:
    import torch

    fn()  # warm-up
    times = []
    for _ in range(runs):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def speed(model: Any, tokenizer: Any, prompt: str, device: str, new_tokens: int, runs: int = 3) -> dict[str, Any]:
    """Return prefill latency (s) and decode tokens/s, medians with min/max, and the method."""
    import torch

    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        prefill = _timed(lambda: model(**inputs), device, runs)
        total = _timed(
            lambda: model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad
            ),
            device,
            runs,
        )
    method = (SPEED_METHOD_CUDA if device.startswith("cuda") else SPEED_METHOD_CPU).format(n=runs)
    return {
        "prefill_seconds": statistics.median(prefill),
        "prefill_min_seconds": min(prefill),
        "prefill_max_seconds": max(prefill),
        **decode_rates(new_tokens, prefill, total),
        "speed_method": method,
    }


def decode_rates(new_tokens: int, prefill: list[float], total: list[float]) -> dict[str, float | None]:
    """Return decode tokens/s (median, min, max) of the generate runs: each run's time less the median
    prefill. A run no longer than the prefill (a busy CPU slowed the prefill runs, not that one) has no
    decode time to divide by and is left out; with none left the rates are unknown (None), never the
    1.6e10 tokens/s that dividing by a floor of 1e-9 s printed."""
    decode = [t - statistics.median(prefill) for t in total]
    tps = [new_tokens / d for d in decode if d > 0]
    if not tps:
        return {"tokens_per_second": None, "min_tokens_per_second": None, "max_tokens_per_second": None}
    return {
        "tokens_per_second": statistics.median(tps),
        "min_tokens_per_second": min(tps),
        "max_tokens_per_second": max(tps),
    }
