"""What is really in memory: every tensor of a loaded model counted once (4-bit quant_state and
int8 SCB included), the census of its modules, and CUDA allocator figures. Imports torch."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from typing import Any

from qcli.plan.formats import Format
from qcli.results import Census, CudaMemory


def _quant_state_tensors(weight: Any) -> list[tuple[str, Any]]:
    """Return the tensors a Params4bit's quant_state holds (absmax, code, nested absmax/code, offset)."""
    state = getattr(weight, "quant_state", None)
    if state is None:
        return []
    out = [("4-bit absmax", state.absmax), ("4-bit code", state.code)]
    if getattr(state, "nested", False):
        out += [
            ("4-bit offset", state.offset),
            ("4-bit nested absmax", state.state2.absmax),
            ("4-bit nested code", state.state2.code),
        ]
    return [(k, v) for k, v in out if v is not None]


def tensor_memory(model: Any) -> tuple[int, dict[str, int], dict[str, int]]:
    """Return (total bytes, bytes per kind, bytes per device) over every tensor, each storage once."""
    import torch

    seen: set[tuple[str, int]] = set()
    by_kind: dict[str, int] = defaultdict(int)
    by_device: dict[str, int] = defaultdict(int)

    def count(kind: str, t: torch.Tensor) -> None:
        if t.device.type == "meta":
            return
        key = (str(t.device), t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size())
        if key in seen and t.numel():
            return
        seen.add(key)
        size = t.numel() * t.element_size()
        by_kind[kind] += size
        by_device[str(t.device)] += size

    for module in model.modules():
        for _, param in module.named_parameters(recurse=False):
            kind = {"Params4bit": "4-bit packed weights", "Int8Params": "int8 weights"}.get(
                type(param).__name__, f"parameters ({str(param.dtype).removeprefix('torch.')})"
            )
            count(kind, param)
            for name, t in _quant_state_tensors(param):
                count(name, t)
            scb = getattr(param, "SCB", None)
            if scb is not None:
                count("int8 row scales (SCB)", scb)
        for _, buf in module.named_buffers(recurse=False):
            count("buffers", buf)
    return sum(by_kind.values()), dict(by_kind), dict(by_device)


def census(model: Any, quantizable_names: list[str]) -> Census:
    """Return module counts by kind, the dtypes of kept modules, and where the tensors went."""
    import torch
    from torch import nn

    counts: Counter[str] = Counter()
    unquantized: list[str] = []
    kept: Counter[str] = Counter()
    meta = 0
    qtypes: Counter[str] = Counter()
    cdtypes: Counter[str] = Counter()
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind == "Linear4bit":
            counts["4bit"] += 1
            st = module.weight.quant_state  # read at load: bnb's CPU path repacks it after a forward
            qtypes[Format(st.quant_type, "4bit", double_quant=bool(st.nested)).key] += 1
            cdtypes[str(module.compute_dtype).removeprefix("torch.")] += 1
        elif kind == "Linear8bitLt":
            counts["8bit"] += 1
        elif isinstance(module, nn.Linear) or kind == "Conv1D":
            counts["linear"] += 1
            unquantized.append(name)
        for _, p in module.named_parameters(recurse=False):
            if p.device.type == "meta":
                meta += 1
            if p.dtype not in (torch.uint8, torch.int8):
                kept[str(p.dtype).removeprefix("torch.")] += p.numel()
    _, _, placement = tensor_memory(model)
    device_map = getattr(model, "hf_device_map", None)
    offloaded = sorted(k for k, v in (device_map or {}).items() if str(v) in {"cpu", "disk"})
    return Census(
        linear4bit=counts["4bit"],
        linear8bit=counts["8bit"],
        linear_unquantized=counts["linear"],
        quantizable_linears=len(quantizable_names),
        unquantized_modules=unquantized,
        kept_params_by_dtype=dict(kept),
        placement_bytes_by_device=placement,
        device_map={k: str(v) for k, v in device_map.items()} if device_map else None,
        offloaded=offloaded,
        meta_tensors=meta,
        linear4bit_by_quant_type=dict(qtypes),
        linear4bit_by_compute_dtype=dict(cdtypes),
    )


def reset_cuda_peaks() -> None:
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


def cuda_memory() -> list[CudaMemory] | None:
    """Return allocator figures per CUDA device, or None without CUDA (never zeros)."""
    import torch

    if not torch.cuda.is_available():
        return None
    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        reserved = torch.cuda.memory_reserved(i)
        out.append(
            CudaMemory(
                device=f"cuda:{i}",
                allocated_bytes=torch.cuda.memory_allocated(i),
                reserved_bytes=reserved,
                peak_allocated_bytes=torch.cuda.max_memory_allocated(i),
                peak_reserved_bytes=torch.cuda.max_memory_reserved(i),
                total_bytes=total,
                free_bytes=free,
                cuda_context_bytes=total - free - reserved,
            )
        )
    return out


def rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:
        return None
