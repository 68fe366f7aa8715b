"""One load on CUDA in a process of its own, measured against qcli's prediction of the allocator counters.

Run as `python -m qcli.run.cuda_probe SPEC.json` (prints one JSON object); tests/test_gpu.py and
benchmarks/gpu_truth.py start one process per measurement, so every load meets a fresh caching allocator
and a CUDA context of its own. Imports torch inside functions only.

What is measured and how:
- allocated / reserved: `torch.cuda.memory_allocated` / `memory_reserved` after the load minus before it.
- peak: `torch.cuda.max_memory_allocated` during the load (peak stats reset just before).
- context: device total − free − reserved (`torch.cuda.mem_get_info`), after the load; it includes
  whatever other processes hold on the device, so it is exact only on an otherwise idle GPU.
- replay: the allocator's own trace (`torch.cuda.memory._record_memory_history`) replayed through
  qcli.plan.allocator.CachingAllocator; it must end at the measured allocated and reserved bytes, which
  checks the allocator rules independently of the storage list.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from qcli.errors import RunError
from qcli.model.spec import ModelSpec
from qcli.plan.allocator import CachingAllocator, allocated_lower_bound
from qcli.plan.planner import kv_per_layer
from qcli.plan.presets import Preset
from qcli.plan.storages import model_storages, predict_load, process_storages
from qcli.run.loader import LoadOptions, load, prepare

TRACE_ENTRIES = 2_000_000


def replay(trace: list[dict[str, Any]]) -> dict[str, int]:
    """Return the allocator model's figures after replaying a device trace from torch.cuda.memory._snapshot()."""
    alloc = CachingAllocator()
    live: dict[int, int | None] = {}
    segments = Counter()
    for entry in trace:
        action = entry["action"]
        if action == "alloc":
            live[entry["addr"]] = alloc.malloc(entry["size"])
        elif action == "free_completed" and entry["addr"] in live:
            alloc.free(live.pop(entry["addr"]))
        elif action in ("segment_alloc", "segment_free"):
            segments[action] += entry["size"]
    return {
        "allocated_bytes": alloc.allocated_bytes,
        "reserved_bytes": alloc.reserved_bytes,
        "peak_allocated_bytes": alloc.peak_allocated_bytes,
        "trace_segment_bytes": segments["segment_alloc"] - segments["segment_free"],
        "trace_events": len(trace),
    }


def loaded_storages(model: Any) -> list[int]:
    """Return the bytes of every distinct storage of a loaded model: parameters, buffers, quant_state parts."""
    seen: dict[tuple[str, int], int] = {}
    for p in [*model.parameters(), *model.buffers()]:
        tensors = [p]
        state = getattr(p, "quant_state", None)
        if state is not None:
            tensors += [state.absmax, state.code]
            if state.nested:
                tensors += [state.offset, state.state2.absmax, state.state2.code]
        if getattr(p, "SCB", None) is not None:
            tensors.append(p.SCB)
        for t in tensors:
            storage = t.untyped_storage()
            seen[(str(t.device), storage.data_ptr())] = storage.nbytes()
    return sorted(seen.values())


def _counters(torch: Any, index: int) -> dict[str, int]:
    free, total = torch.cuda.mem_get_info(index)
    reserved = torch.cuda.memory_reserved(index)
    return {
        "allocated_bytes": torch.cuda.memory_allocated(index),
        "reserved_bytes": reserved,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(index),
        "free_bytes": free,
        "total_bytes": total,
        "cuda_context_bytes": total - free - reserved,
    }


def _kv_point(torch: Any, model: Any, spec: ModelSpec, preset: Preset, batch: int, context: int) -> dict[str, Any]:
    """Return KV-cache bytes, prefill time and decode speed for one batch × context point."""
    device = next(model.parameters()).device
    index = device.index or 0
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, context), generator=gen).to(device)
    kv_sizes = [size // 2 for size in kv_per_layer(spec, context, batch, preset.dtype) for _ in range(2)]
    with torch.no_grad():
        model(input_ids=ids[:, :8], logits_to_keep=1)  # warm-up: kernels, cuBLAS workspace
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(index)
        torch.cuda.reset_peak_memory_stats(index)
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        torch.cuda.synchronize(device)
        prefill = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(index) - before
        cache = out.get("cache", out.get("past_key_values"))  # `cache` from transformers 5.24 on
        del out  # ModelOutput refuses `del out.logits`; dropping it frees the logits, the cache stays
        kv_measured = torch.cuda.memory_allocated(index) - before
        del cache
        new_tokens = 32
        timings = []
        for _ in range(3):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            model.generate(
                input_ids=ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
            )
            torch.cuda.synchronize(device)
            timings.append(time.perf_counter() - start)
    decode = max(statistics.median(timings) - prefill, 1e-9)
    return {
        "batch": batch,
        "context_tokens": context,
        "kv_predicted_bytes": sum(kv_sizes),
        # blocks rounded to 512 B; a block carved from a cached free one may also take its <= 1 MiB rest
        "kv_predicted_allocated_bytes": allocated_lower_bound(kv_sizes),
        "kv_tensors": len(kv_sizes),
        "kv_measured_bytes": kv_measured,
        "prefill_peak_bytes": peak,
        "prefill_seconds": round(prefill, 5),
        "decode_tokens_per_second": round(new_tokens * batch / decode, 2),
        "decode_method": f"median of 3 greedy generate() of {new_tokens} new tokens minus one prefill, cuda-synced",
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Return predicted and measured figures for one load described by `spec` (model, preset, device_map, kv)."""
    import torch

    devices = list(range(int(spec.get("devices", 1))))
    opts = LoadOptions(
        model=spec["model"], preset=spec["preset"], device="cuda:0", device_map="balanced" if len(devices) > 1 else None
    )
    prepared = prepare(opts)  # the same description and preset `qcli load` uses
    if prepared.spec is None:
        raise RunError(f"{spec['model']}: qcli cannot describe this architecture, so it has nothing to predict")
    model_spec, preset, dtype = prepared.spec, prepared.preset, prepared.dtype
    fmt = preset.weight_format(dtype)
    total = torch.cuda.mem_get_info(0)[1]
    predicted = predict_load(model_spec, fmt, dtype, preset.skip_modules, device_total=total)
    storages = model_storages(model_spec, fmt, dtype, preset.skip_modules)
    before = {i: _counters(torch, i) for i in devices}
    trace = spec.get("trace", True) and len(devices) == 1
    if trace:
        torch.cuda.memory._record_memory_history(enabled="all", context=None, max_entries=TRACE_ENTRIES)
    loaded = load(opts, prepared)  # resets the peak counters, synchronizes after the load
    model, load_seconds = loaded.model, loaded.load_seconds
    for i in devices:
        torch.cuda.synchronize(i)
    after = {i: _counters(torch, i) for i in devices}
    result: dict[str, Any] = {
        "model": spec.get("label", spec["model"]),
        "preset": preset.name,
        "devices": len(devices),
        "device_name": torch.cuda.get_device_name(0),
        "load_seconds": round(load_seconds, 4),
        "predicted": predicted.__dict__,
        "predicted_storages": sorted(s.nbytes for s in storages),
        "process_storages": [s.nbytes for s in process_storages(fmt)],
        "measured_storages": loaded_storages(model),
        "measured": {
            "allocated_bytes": sum(after[i]["allocated_bytes"] - before[i]["allocated_bytes"] for i in devices),
            "reserved_bytes": sum(after[i]["reserved_bytes"] - before[i]["reserved_bytes"] for i in devices),
            # the highest of the devices' load peaks, above what each held before
            "peak_allocated_bytes": max(
                after[i]["peak_allocated_bytes"] - before[i]["allocated_bytes"] for i in devices
            ),
            "cuda_context_bytes": after[0]["cuda_context_bytes"],
            "per_device": {f"cuda:{i}": after[i] for i in devices},
        },
    }
    if trace:
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        result["replay"] = replay(snapshot["device_traces"][0])
    result["kv"] = [
        _kv_point(torch, model, model_spec, preset, batch, context) for batch, context in spec.get("kv_points", [])
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    """Read SPEC.json, print the result as one JSON object; exit 3 without CUDA."""
    import torch

    args = sys.argv[1:] if argv is None else argv
    if not torch.cuda.is_available():
        print("cuda_probe: no CUDA GPU here", file=sys.stderr)
        return 3
    spec = json.loads(Path(args[0]).read_text())
    print(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
