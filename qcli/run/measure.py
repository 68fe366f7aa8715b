"""What is really in memory: every tensor of a loaded model counted once (4-bit quant_state and
int8 SCB included), the census of its modules, CUDA allocator figures, and the quantization config
transformers applied, compared with the preset's. Imports torch inside functions."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from qcli.plan.formats import Format
from qcli.results.run import Census, CudaMemory, QuantGroup

OFFLOAD_PLACES = ("cpu", "disk")  # accelerate device-map values that keep a module's weights off the GPU


def _quant_state_tensors(weight: Any) -> list[tuple[str, Any]]:
    """Return the tensors a Params4bit's quant_state holds (absmax, code, nested absmax/code, offset).

    A Linear4bit whose weight was never quantized (offloaded to disk, or tied to the embeddings) has
    no quant_state: nothing to add.
    """
    state = getattr(weight, "quant_state", None)
    if state is None:
        return []
    out = [("4-bit absmax", state.absmax), ("4-bit code", state.code)]
    if getattr(state, "nested", False) and getattr(state, "state2", None) is not None:
        out += [
            ("4-bit offset", state.offset),
            ("4-bit nested absmax", state.state2.absmax),
            ("4-bit nested code", state.state2.code),
        ]
    return [(k, v) for k, v in out if v is not None]


def _offload_place(module_name: str, device_map: dict[str, Any] | None) -> str | None:
    """Return 'cpu' or 'disk' when the device map offloads the module (or a parent of it), else None."""
    if not device_map:
        return None
    best, place = -1, None
    for prefix, where in device_map.items():
        covers = prefix == "" or module_name == prefix or module_name.startswith(prefix + ".")
        if covers and len(prefix) > best:
            best, place = len(prefix), str(where)
    return place if place in OFFLOAD_PLACES else None


@dataclass
class Memory:
    """Every tensor of a model counted once: total, per kind, per place (cpu, cuda:N, disk, meta)."""

    total_bytes: int
    by_kind: dict[str, int]
    by_device: dict[str, int]
    meta_tensors: int  # on meta and accounted for by no offload: never loaded


def _param_kind(param: Any) -> str:
    return {"Params4bit": "4-bit packed weights", "Int8Params": "int8 weights"}.get(
        type(param).__name__, f"parameters ({str(param.dtype).removeprefix('torch.')})"
    )


def tensor_memory(model: Any) -> Memory:
    """Return the bytes of every tensor, each storage once, by kind and by place.

    Tensors accelerate offloaded sit on the meta device in the model (their data lives in a CPU map
    or in files of the offload folder): they are counted at their shape × dtype under 'cpu' or 'disk',
    never dropped. A meta tensor no offload accounts for is counted under 'meta'.
    """
    device_map = getattr(model, "hf_device_map", None)
    seen: set[tuple[str, int]] = set()
    seen_objects: set[int] = set()
    by_kind: dict[str, int] = defaultdict(int)
    by_device: dict[str, int] = defaultdict(int)
    meta_tensors = 0

    def count(kind: str, t: Any, module_name: str) -> None:
        nonlocal meta_tensors
        if id(t) in seen_objects:  # a tied parameter is one object in several modules
            return
        seen_objects.add(id(t))
        size = t.numel() * t.element_size()
        if t.device.type == "meta":
            place = _offload_place(module_name, device_map)
            if place is None:
                meta_tensors += 1
                place = "meta"
            by_kind[kind] += size
            by_device[place] += size
            return
        key = (str(t.device), t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size())
        if key in seen and t.numel():
            return
        seen.add(key)
        by_kind[kind] += size
        by_device[str(t.device)] += size

    for name, module in model.named_modules():
        for _, param in module.named_parameters(recurse=False):
            count(_param_kind(param), param, name)
            for kind, t in _quant_state_tensors(param):
                count(kind, t, name)
            scb = getattr(param, "SCB", None)
            if scb is not None:
                count("int8 row scales (SCB)", scb, name)
        for _, buf in module.named_buffers(recurse=False):
            count("buffers", buf, name)
    return Memory(sum(by_kind.values()), dict(by_kind), dict(by_device), meta_tensors)


def _dtype_name(dtype: Any) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _quant_group(module: Any) -> dict[str, Any]:
    """Return the quantization one bitsandbytes module really carries, read from it (not the preset)."""
    kind = type(module).__name__
    weight = module.weight
    out: dict[str, Any] = {"layer": kind, "storage_dtype": _dtype_name(weight.dtype)}
    if kind == "Linear4bit":
        # Read at load: bitsandbytes' CPU path repacks quant_state on the first forward.
        state = getattr(weight, "quant_state", None)
        out["quantized"] = state is not None and weight.device.type != "meta"
        out["compute_dtype"] = _dtype_name(getattr(module, "compute_dtype", None))
        if state is not None:
            out |= {
                "quant_type": state.quant_type,
                "double_quant": bool(state.nested),
                "block_size": int(state.blocksize),
                "absmax_dtype": _dtype_name(state.absmax.dtype),
            }
    else:  # Linear8bitLt
        state = module.state
        out["quantized"] = type(weight).__name__ == "Int8Params" and weight.dtype == _int8()
        out["outlier_threshold"] = float(state.threshold)
        out["has_fp16_weights"] = bool(state.has_fp16_weights)
    return out


def _int8() -> Any:
    import torch

    return torch.int8


def census(model: Any, quantizable_names: list[str]) -> Census:
    """Return the modules by kind with the quantization each really has, the dtypes of the kept
    tensors, and where every tensor went (devices, cpu/disk offload, meta)."""
    from torch import nn

    counts: Counter[str] = Counter()
    unquantized: list[str] = []
    kept: Counter[str] = Counter()
    qtypes: Counter[str] = Counter()
    cdtypes: Counter[str] = Counter()
    groups: dict[tuple, QuantGroup] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("Linear4bit", "Linear8bitLt"):
            counts["4bit" if kind == "Linear4bit" else "8bit"] += 1
            info = _quant_group(module)
            key = tuple(sorted(info.items()))
            groups.setdefault(key, QuantGroup(**info, modules=[])).modules.append(name)
            if kind == "Linear4bit" and info.get("quant_type"):
                fmt = Format(info["quant_type"], "4bit", double_quant=info["double_quant"])
                qtypes[fmt.key] += 1
                cdtypes[str(info["compute_dtype"])] += 1
        elif isinstance(module, nn.Linear) or kind == "Conv1D":
            counts["linear"] += 1
            unquantized.append(name)
        for _, p in module.named_parameters(recurse=False):
            if type(p).__name__ in ("Params4bit", "Int8Params") and p.device.type != "meta":
                continue  # quantized storage, not a kept dtype
            kept[_dtype_name(p.dtype) or "?"] += p.numel()
    memory = tensor_memory(model)
    device_map = getattr(model, "hf_device_map", None)
    offloaded = sorted(k for k, v in (device_map or {}).items() if str(v) in OFFLOAD_PLACES)
    return Census(
        linear4bit=counts["4bit"],
        linear8bit=counts["8bit"],
        linear_unquantized=counts["linear"],
        quantizable_linears=len(quantizable_names),
        unquantized_modules=unquantized,
        quantization=list(groups.values()),
        kept_params_by_dtype=dict(kept),
        placement_bytes_by_device=memory.by_device,
        device_map={k: str(v) for k, v in device_map.items()} if device_map else None,
        offloaded=offloaded,
        meta_tensors=memory.meta_tensors,
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


# The BitsAndBytesConfig keys that decide what a module becomes (others only tune loading).
DECIDING_KEYS = (
    "load_in_4bit",
    "load_in_8bit",
    "bnb_4bit_quant_type",
    "bnb_4bit_use_double_quant",
    "bnb_4bit_compute_dtype",
    "llm_int8_threshold",
)


def applied_quantization(model: Any) -> dict[str, Any] | None:
    """Return the quantization config transformers applied to the loaded model (model.config), as a dict."""
    q = getattr(model.config, "quantization_config", None)
    if q is None:
        return None
    data = q.to_dict() if hasattr(q, "to_dict") else dict(q)
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _deciding(q: dict[str, Any] | None) -> dict[str, Any]:
    """Return the keys of a quantization config that decide the module types, normalised for comparison."""
    if not q:
        return {"load_in_4bit": False, "load_in_8bit": False}
    out = {"load_in_4bit": bool(q.get("load_in_4bit")), "load_in_8bit": bool(q.get("load_in_8bit"))}
    if out["load_in_4bit"]:
        out |= {
            "bnb_4bit_quant_type": q.get("bnb_4bit_quant_type", "fp4"),
            "bnb_4bit_use_double_quant": bool(q.get("bnb_4bit_use_double_quant")),
            "bnb_4bit_compute_dtype": str(q.get("bnb_4bit_compute_dtype") or "float32").removeprefix("torch."),
        }
    elif out["load_in_8bit"]:
        out["llm_int8_threshold"] = float(q.get("llm_int8_threshold", 6.0))
    return out


def override_of(preset_q: dict[str, Any] | None, checkpoint_q: dict[str, Any] | None) -> dict[str, tuple]:
    """Return {key: (preset's value, checkpoint's value)} where a pre-quantized checkpoint's own
    quantization_config replaces the preset's (transformers keeps the checkpoint's and warns)."""
    if checkpoint_q is None:
        return {}
    want, got = _deciding(preset_q), _deciding(checkpoint_q)
    return {k: (want.get(k), got.get(k)) for k in dict.fromkeys([*want, *got]) if want.get(k) != got.get(k)}
