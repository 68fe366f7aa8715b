"""One preset in its own process (clean allocator state): load, measure memory, quality and speed,
write a JSON result and the log-probs. Run as `python -m qcli.run.worker SPEC.json`; used by compare
and by verify --reference."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from qcli.run.loader import LoadOptions, generate, load_report
from qcli.run.quality import perplexity_and_logprobs, speed, token_ids


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import torch


    opts = LoadOptions(model=spec["model"], preset=spec["preset"], device=spec.get("device", "auto"))
    report, loaded = load_report(opts)
    ids = token_ids(loaded.tokenizer, spec["text"])
    ppl, logp = perplexity_and_logprobs(loaded.model, ids, loaded.device)
    torch.save(logp.to(torch.float16 if logp.numel() > 50_000_000 else torch.float32), spec["logits_path"])
    result: dict[str, Any] = {
        "preset": spec["preset"],
        "memory_bytes": report.memory_bytes,
        "estimate_bytes": report.estimate_bytes,
        "estimate_error_percent": report.estimate_error_percent,
        "load_seconds": report.load_seconds,
        "allocated_bytes": report.cuda[0].allocated_bytes if report.cuda else None,
        "reserved_bytes": report.cuda[0].reserved_bytes if report.cuda else None,
        "peak_allocated_bytes": report.cuda[0].peak_allocated_bytes if report.cuda else None,
        "perplexity": ppl,
        "scored_tokens": int(ids.numel() - 1),
        "device": loaded.device,
    }
    if spec.get("speed", True):
        result |= speed(loaded.model, loaded.tokenizer, spec["prompt"], loaded.device, spec["max_new_tokens"])
    result["continuation"] = generate(loaded, spec["prompt"], spec["max_new_tokens"]).text
    return result


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(spec["result_path"])
    try:
        if spec.get("fail_for_test"):
            raise RuntimeError("failure injected by the test suite")
        result = run(spec)
    except BaseException as exc:  # every failure is recorded for the parent, which keeps going
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {line}"
        out.write_text(
            json.dumps({"preset": spec["preset"], "error": message[:500], "traceback": traceback.format_exc()[-4000:]})
        )
        return 1
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
