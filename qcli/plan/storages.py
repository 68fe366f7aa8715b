"""The tensor storages a load creates, one entry per allocation, in the order transformers loads them.
Pure Python: the input of the CUDA allocator prediction (qcli.plan.allocator).

bitsandbytes keeps every part of a quantized weight in a tensor of its own (checked on bitsandbytes 0.50.2,
tests/test_allocator.py): 4-bit is the packed weight, absmax and the 16-entry code; double quant adds the
offset (a 0-d fp32 tensor), the nested absmax and a per-tensor copy of the 256-entry nested code
(`quantize_blockwise` returns `code.to(device, copy=True)`); LLM.int8 is the int8 weight (`CB` is the same
storage) and the per-row scales `SCB`. The parts sum to qcli.plan.formats.storage_parts, byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import ceil

from qcli.model.spec import ModelSpec, TensorSpec
from qcli.plan.allocator import RESERVED_RULE, SMALL_BUFFER_BYTES, Event, play, reserved_lower_bound, transient_headroom
from qcli.plan.formats import (
    BLOCKSIZE_4BIT,
    CODE_4BIT_BYTES,
    NESTED_BLOCKSIZE,
    NESTED_CODE_BYTES,
    OFFSET_BYTES,
    SCB_BYTES_PER_ROW,
    Format,
    dtype_bytes,
)
from qcli.plan.planner import kept_in_fp32, quantized_tensors, stored_dtype
from qcli.results.plan import CudaPrediction

# bitsandbytes caches the 256-entry fp32 dynamic map in `functional.name2qmap["dynamic"]` the first time a
# process double-quantizes on a device; it stays allocated (not a model tensor, once per process).
DYNAMIC_MAP_BYTES = 256 * 4


@dataclass(frozen=True)
class Storage:
    """One allocation: the tensor it belongs to, which part, and its bytes."""

    tensor: str
    part: str  # weight, absmax, code, offset, nested_absmax, nested_code, scb
    nbytes: int


def weight_storages(fmt: Format, numel: int, out_features: int) -> list[tuple[str, int]]:
    """Return (part, bytes) for each storage one weight of `numel` elements occupies in `fmt`, in creation order."""
    if numel <= 0:
        return []
    if fmt.kind == "dense":
        return [("weight", numel * dtype_bytes(fmt.dtype or "float32"))]
    if fmt.kind == "int8":
        return [("weight", numel), ("scb", SCB_BYTES_PER_ROW * out_features)]
    blocks = ceil(numel / BLOCKSIZE_4BIT)
    if not fmt.double_quant:
        # quantize_4bit: the kernel returns (packed, absmax); get_4bit_type then builds the code.
        return [("weight", ceil(numel / 2)), ("absmax", 4 * blocks), ("code", CODE_4BIT_BYTES)]
    # Double quant: offset = absmax.mean(), then quantize_blockwise(absmax - offset) returns the uint8 absmax,
    # the nested fp32 absmax and a copy of the nested code.
    return [
        ("weight", ceil(numel / 2)),
        ("code", CODE_4BIT_BYTES),
        ("offset", OFFSET_BYTES),
        ("absmax", blocks),
        ("nested_absmax", 4 * ceil(blocks / NESTED_BLOCKSIZE)),
        ("nested_code", NESTED_CODE_BYTES),
    ]


def load_order_key(name: str) -> list[tuple[int, str] | tuple[int, int] | tuple[int, str, int]]:
    """Return the sort key transformers 5 loads a checkpoint's tensors by (core_model_loading.dot_natural_key):
    numbers compare as numbers, so layers.2 precedes layers.10."""
    key: list[tuple[int, str] | tuple[int, int] | tuple[int, str, int]] = []
    for part in name.split("."):
        if part.isdigit():
            key.append((0, int(part)))
            continue
        text = part.rstrip("0123456789")
        digits = part[len(text) :]
        key.append((1, text, int(digits)) if digits else (1, text))
    return key


def _tensor_storages(
    t: TensorSpec, fmt: Format, load_dtype: str, quantized: set[str], fp32: re.Pattern[str] | None
) -> list[Storage]:
    if t.name in quantized:
        return [Storage(t.name, part, size) for part, size in weight_storages(fmt, t.numel, t.rows)]
    size = t.numel * dtype_bytes(stored_dtype(t, load_dtype, fp32))
    return [Storage(t.name, "weight" if t.role != "buffer" else "buffer", size)]


def model_storages(
    spec: ModelSpec, fmt: Format, load_dtype: str, skip_modules: list[str] | None = None
) -> list[Storage]:
    """Return every storage a load of `spec` creates (tied weights once), parameters in load order, then buffers.

    Buffers come last: transformers builds them with the model, outside the checkpoint loop; their place only
    changes how small blocks pack, not their sum.
    """
    quantized = quantized_tensors(spec, fmt, skip_modules)
    params = sorted((t for t in spec.tensors if t.role != "buffer"), key=lambda t: load_order_key(t.name))
    buffers = [t for t in spec.tensors if t.role == "buffer"]
    fp32 = kept_in_fp32(spec, load_dtype)
    return [s for t in [*params, *buffers] for s in _tensor_storages(t, fmt, load_dtype, quantized, fp32)]


def process_storages(fmt: Format) -> list[Storage]:
    """Return the allocations bitsandbytes keeps once per process for `fmt` (the cached dynamic map)."""
    if fmt.kind == "4bit" and fmt.double_quant:
        return [Storage("bitsandbytes.functional.name2qmap['dynamic']", "dynamic_map", DYNAMIC_MAP_BYTES)]
    return []


def warmup_bytes(
    spec: ModelSpec,
    fmt: Format,
    load_dtype: str,
    skip_modules: list[str] | None = None,
    device_total: int | None = None,
) -> int:
    """Return the bytes of transformers' caching-allocator warm-up before a load (0 if it makes none).

    transformers 5 `caching_allocator_warmup` allocates `torch.empty(int(B // 2), dtype=float16)` on the device
    and frees it at once, where B sums numel × element size over the state-dict parameters (tied weights once;
    0.5 for a weight bnb quantizes to 4 bits, 1 for int8, the parameter's dtype otherwise), capped at the
    device's total memory − 1.2 GiB. The freed segment stays cached and later tensors are carved out of it.
    Non-persistent buffers (rotary inv_freq) are not state-dict keys and are not counted.
    """
    quantized = quantized_tensors(spec, fmt, skip_modules)
    fp32 = kept_in_fp32(spec, load_dtype)
    half_bytes = 0  # B in units of half a byte, so that 4-bit counts stay integers
    for t in spec.parameters:
        if t.name in quantized and fmt.kind == "4bit":
            half_bytes += t.numel
        elif t.name in quantized and fmt.kind == "int8":
            half_bytes += 2 * t.numel
        else:
            half_bytes += 2 * t.numel * dtype_bytes(stored_dtype(t, load_dtype, fp32))
    count = half_bytes / 2
    if device_total is not None:
        count = min(count, device_total - 1.2 * 1024**3)
    return 2 * int(count // 2) if count > 0 else 0


def _quantize_events(t: TensorSpec, fmt: Format, load_dtype: str, first: list[bool]) -> list[Event]:
    """Return the allocations and frees bitsandbytes makes while quantizing one weight on the device.

    Order as in bitsandbytes 0.50: transformers materializes the weight in the load dtype; the CUDA
    `quantize_4bit` kernel allocates absmax then the packed output; `get_4bit_type` builds the code (its
    `abs().max()` temporaries are left out: 512-byte blocks freed at once); double quant takes the mean
    (offset), allocates `absmax - offset`, and `quantize_blockwise` allocates the nested absmax, the uint8
    absmax and a copy of the nested code, after caching the dynamic map once per process; then the fp32 absmax
    and the temporaries are freed. LLM.int8 (`Int8Params._quantize`) copies the weight to fp16 on the device,
    allocates the row scales (SCB) then the int8 weight, and frees the fp16 copy. The source weight is freed
    when transformers' conversion returns.
    """
    n, name = t.numel, t.name
    parts = dict(weight_storages(fmt, n, t.rows))
    events: list[Event] = [("alloc", f"{name}:source", n * dtype_bytes(load_dtype))]
    if fmt.kind == "int8":
        events += [
            ("alloc", f"{name}:fp16", 2 * n),
            ("alloc", f"{name}:scb", parts["scb"]),
            ("alloc", f"{name}:weight", parts["weight"]),
            ("free", f"{name}:fp16", 0),
        ]
    else:
        fp32_absmax = 4 * ceil(n / BLOCKSIZE_4BIT)
        events += [
            ("alloc", f"{name}:absmax32", fp32_absmax),
            ("alloc", f"{name}:weight", parts["weight"]),
            ("alloc", f"{name}:code", parts["code"]),
        ]
        if fmt.double_quant:
            events += [("alloc", f"{name}:offset", parts["offset"]), ("alloc", f"{name}:centered", fp32_absmax)]
            if first[0]:
                events.append(("alloc", "bitsandbytes:dynamic_map", DYNAMIC_MAP_BYTES))
                first[0] = False
            events += [
                ("alloc", f"{name}:nested_absmax", parts["nested_absmax"]),
                ("alloc", f"{name}:absmax", parts["absmax"]),
                ("alloc", f"{name}:nested_code", parts["nested_code"]),
                ("free", f"{name}:centered", 0),
                ("free", f"{name}:absmax32", 0),
            ]
    return [*events, ("free", f"{name}:source", 0)]


def load_events(
    spec: ModelSpec,
    fmt: Format,
    load_dtype: str,
    skip_modules: list[str] | None = None,
    *,
    first_in_process: bool = True,
    device_total: int | None = None,
) -> list[Event]:
    """Return the device allocations and frees of a load, in order: transformers' warm-up, each parameter in
    load order (quantized ones through bitsandbytes' steps), then the non-persistent buffers."""
    warm = warmup_bytes(spec, fmt, load_dtype, skip_modules, device_total)
    events: list[Event] = [("alloc", "warmup", warm), ("free", "warmup", 0)] if warm else []
    quantized = quantized_tensors(spec, fmt, skip_modules) if fmt.kind != "dense" else set()
    fp32 = kept_in_fp32(spec, load_dtype)
    first = [first_in_process]
    for t in sorted(spec.parameters, key=lambda t: load_order_key(t.name)):
        if t.name in quantized:
            events += _quantize_events(t, fmt, load_dtype, first)
        else:
            events.append(("alloc", t.name, t.numel * dtype_bytes(stored_dtype(t, load_dtype, fp32))))
    return events + [("alloc", t.name, t.numel * dtype_bytes(t.dtype or "float32")) for t in spec.tensors
                     if t.role == "buffer"]  # fmt: skip


def transient_storages(
    spec: ModelSpec, fmt: Format, load_dtype: str, skip_modules: list[str] | None = None
) -> list[int]:
    """Return the bytes of every tensor a load allocates and frees again (warm-up, source weights, temporaries)."""
    events = load_events(spec, fmt, load_dtype, skip_modules)
    freed = {key for action, key, _ in events if action == "free"}
    return [nbytes for action, key, nbytes in events if action == "alloc" and key in freed]


@dataclass(frozen=True)
class LoadPrediction:
    """What torch.cuda's counters should show after a load on one device: a prediction, with its rule."""

    tensor_bytes: int  # the storages' own bytes
    allocated_bytes: int  # memory_allocated: blocks as the caching allocator counts them
    reserved_bytes: int  # memory_reserved after the modelled load sequence
    peak_allocated_bytes: int  # max_memory_allocated during the load (the warm-up block included)
    reserved_low_bytes: int  # no allocation order can reserve less for the tensors that stay
    reserved_high_bytes: int  # reserved_bytes + one segment per distinct size freed again + one small segment
    warmup_bytes: int
    storages: int
    rule: str


LOAD_RULE = (
    "; load sequence: transformers' caching-allocator warm-up (freed, stays cached), then each tensor in "
    "load order, bitsandbytes quantizing from the dense weight on the device; high bound: plus one segment "
    "per distinct size of the tensors freed again and one 2 MiB segment (threaded loading reorders small blocks)"
)


def predict_load(
    spec: ModelSpec,
    fmt: Format,
    load_dtype: str,
    skip_modules: list[str] | None = None,
    *,
    first_in_process: bool = True,
    device_total: int | None = None,
) -> LoadPrediction:
    """Return the predicted CUDA allocator figures of loading `spec` on one device in a fresh allocator."""
    storages = [
        *(process_storages(fmt) if first_in_process else []),
        *model_storages(spec, fmt, load_dtype, skip_modules),
    ]
    sizes = [s.nbytes for s in storages]
    events = load_events(spec, fmt, load_dtype, skip_modules, first_in_process=first_in_process,
                         device_total=device_total)  # fmt: skip
    sim = play(events)
    freed = {key for action, key, _ in events if action == "free"} - {"warmup"}  # its segment is in `sim` already
    headroom = transient_headroom(n for action, key, n in events if action == "alloc" and key in freed)
    return LoadPrediction(
        tensor_bytes=sum(sizes),
        allocated_bytes=sim.allocated_bytes,
        reserved_bytes=sim.reserved_bytes,
        peak_allocated_bytes=sim.peak_allocated_bytes,
        reserved_low_bytes=reserved_lower_bound(sizes),
        reserved_high_bytes=sim.reserved_bytes + headroom + SMALL_BUFFER_BYTES,
        warmup_bytes=warmup_bytes(spec, fmt, load_dtype, skip_modules, device_total),
        storages=len(storages),
        rule=RESERVED_RULE + LOAD_RULE,
    )


def cuda_prediction(
    spec: ModelSpec,
    fmt: Format,
    load_dtype: str,
    skip_modules: list[str] | None = None,
    device_total: int | None = None,
) -> CudaPrediction:
    """Return the result-model form of `predict_load` for a load in a fresh process."""
    p = predict_load(spec, fmt, load_dtype, skip_modules, device_total=device_total)
    return CudaPrediction(
        cuda_allocated_bytes=p.allocated_bytes,
        cuda_reserved_bytes=p.reserved_bytes,
        cuda_reserved_low_bytes=p.reserved_low_bytes,
        cuda_reserved_high_bytes=p.reserved_high_bytes,
        cuda_load_peak_bytes=p.peak_allocated_bytes,
        rule=p.rule,
    )
