"""The tensor storages a load creates, one entry per allocation, in the order transformers loads them.
Pure Python: the input of the CUDA allocator prediction (qcli.plan.allocator).

bitsandbytes keeps every part of a quantized weight in a tensor of its own (checked on bitsandbytes 0.50.2,
tests/test_allocator.py): 4-bit is the packed weight, absmax and the 16-entry code; double quant adds the
offset (a 0-d fp32 tensor), the nested absmax and a per-tensor copy of the 256-entry nested code
(`quantize_blockwise` returns `code.to(device, copy=True)`); LLM.int8 is the int8 weight (`CB` is the same
storage) and the per-row scales `SCB`. The parts sum to qcli.formats.storage_parts, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from qcli.formats import (
    BLOCKSIZE_4BIT,
    CODE_4BIT_BYTES,
    NESTED_BLOCKSIZE,
    NESTED_CODE_BYTES,
    OFFSET_BYTES,
    SCB_BYTES_PER_ROW,
    Format,
    dtype_bytes,
)
from qcli.modelspec import ModelSpec, TensorSpec
from qcli.plan.allocator import predict, reserved_lower_bound, transient_headroom
from qcli.planner import quantized_tensors

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


def _tensor_storages(t: TensorSpec, fmt: Format, load_dtype: str, quantized: set[str]) -> list[Storage]:
    if t.name in quantized:
        return [Storage(t.name, part, size) for part, size in weight_storages(fmt, t.numel, t.rows)]
    return [Storage(t.name, "weight" if t.role != "buffer" else "buffer", t.numel * dtype_bytes(t.dtype or load_dtype))]


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
    return [s for t in [*params, *buffers] for s in _tensor_storages(t, fmt, load_dtype, quantized)]


def process_storages(fmt: Format) -> list[Storage]:
    """Return the allocations bitsandbytes keeps once per process for `fmt` (the cached dynamic map)."""
    if fmt.kind == "4bit" and fmt.double_quant:
        return [Storage("bitsandbytes.functional.name2qmap['dynamic']", "dynamic_map", DYNAMIC_MAP_BYTES)]
    return []


def transient_storages(
    spec: ModelSpec, fmt: Format, load_dtype: str, skip_modules: list[str] | None = None
) -> list[int]:
    """Return the bytes of tensors a load allocates and frees again: the dense weight bitsandbytes quantizes
    from (in the load dtype; LLM.int8 also makes an fp16 copy), and the fp32 absmax that double quant
    replaces (plus its `absmax - offset` copy)."""
    if fmt.kind == "dense":
        return []
    quantized = quantized_tensors(spec, fmt, skip_modules)
    out: list[int] = []
    for t in spec.tensors:
        if t.name not in quantized:
            continue
        out.append(t.numel * dtype_bytes(load_dtype))
        if fmt.kind == "int8":
            out.append(t.numel * 2)  # Int8Params._quantize: data.to(device, dtype=torch.float16)
        elif fmt.double_quant:
            out += [4 * ceil(t.numel / BLOCKSIZE_4BIT)] * 2
    return out


TRANSIENT_RULE = "; high bound: plus one segment per distinct size of the dense weights quantized and freed"


@dataclass(frozen=True)
class LoadPrediction:
    """What torch.cuda's counters should show after a load: a prediction, with the rule it follows."""

    tensor_bytes: int  # the storages' own bytes
    allocated_bytes: int  # memory_allocated: blocks as the caching allocator counts them
    reserved_bytes: int  # memory_reserved if nothing were freed during the load
    reserved_low_bytes: int  # no allocation order can reserve less
    reserved_high_bytes: int  # reserved_bytes plus one segment per transient size the load frees again
    storages: int
    rule: str


def predict_load(
    spec: ModelSpec,
    fmt: Format,
    load_dtype: str,
    skip_modules: list[str] | None = None,
    *,
    first_in_process: bool = True,
) -> LoadPrediction:
    """Return the predicted CUDA allocator figures of loading `spec` on one device (no other allocations)."""
    storages = [
        *(process_storages(fmt) if first_in_process else []),
        *model_storages(spec, fmt, load_dtype, skip_modules),
    ]
    sizes = [s.nbytes for s in storages]
    sim = predict(sizes)
    headroom = transient_headroom(transient_storages(spec, fmt, load_dtype, skip_modules))
    return LoadPrediction(
        tensor_bytes=sum(sizes),
        allocated_bytes=sim.allocated_bytes,
        reserved_bytes=sim.reserved_bytes,
        reserved_low_bytes=reserved_lower_bound(sizes),
        reserved_high_bytes=sim.reserved_bytes + headroom,
        storages=len(storages),
        rule=sim.rule + (TRANSIENT_RULE if headroom else ""),
    )
