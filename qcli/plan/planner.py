"""`qcli estimate`: weights with their quantization constants, KV cache, training state,
overheads, placement on devices and the fit check. Pure Python: no torch import.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from qcli.errors import UsageError
from qcli.model.spec import GROUP_OF_ROLE, ModelSpec, TensorSpec
from qcli.plan.formats import Format, dtype_bytes, storage_parts
from qcli.plan.gpus import Device
from qcli.plan.training import TrainingRequest, training_state
from qcli.results import Component, DeviceFit, Plan
from qcli.units import MIB

# The CUDA context (driver, kernels, cuBLAS workspace) never shows in torch's counters: 300-700 MiB
# is typical (pytorch issue 28113). `qcli load` measures yours; override with --cuda-context.
DEFAULT_CUDA_CONTEXT_BYTES = 512 * MIB
# Room for allocator fragmentation: reserved memory exceeds allocated after a load
# (transformers issue 37436). A fraction of the tensor bytes, overridable with --margin.
DEFAULT_MARGIN_FRACTION = 0.05
_LAYER_RE = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")


@dataclass
class PlanRequest:
    """Everything a plan depends on besides the model."""

    fmt: Format  # storage of quantizable linear weights
    load_dtype: str  # every tensor that stays unquantized
    preset: str | None = None  # the preset's name, when the plan follows one
    skip_modules: list[str] | None = None  # llm_int8_skip_modules: replaces transformers' default list
    context: int | None = None
    batch: int = 1
    kv_dtype: str | None = None
    training: TrainingRequest | None = None
    devices: list[Device] = field(default_factory=list)
    cuda_context_bytes: int = DEFAULT_CUDA_CONTEXT_BYTES
    cuda_context_given: bool = False  # False: the default above, not a measurement
    margin_fraction: float = DEFAULT_MARGIN_FRACTION


def should_convert(module: str, patterns: list[str]) -> bool:
    """Return whether transformers' bnb integration quantizes `module` given the skip patterns.

    Mirrors transformers 5 `should_convert_module`: a pattern matches from the start up to a
    module boundary (also as a regex), or as a suffix.
    """
    boundary = r"(?:(?<=\.)|(?=\.|$))"
    for key in patterns:
        try:
            if re.match(rf"(?:{key}){boundary}", module):
                return False
        except re.error:
            pass
        if module.endswith(key):
            return False
    return True


def default_skip_modules(spec: ModelSpec) -> list[str]:
    """Return the modules transformers keeps unquantized by default: the output head, modules tied
    to the embeddings, the module of the last parameter, and `_keep_in_fp32_modules`."""
    if spec.source == "params":
        return []  # a bare count: every parameter is taken as quantizable
    skips = {t.module for t in spec.parameters if t.role == "lm_head"}
    if spec.tied_embeddings:
        skips |= {t.module for t in spec.parameters if t.role == "embedding"}
        skips.add("lm_head")
    if spec.parameters:
        skips.add(spec.parameters[-1].module)
    return sorted(skips | set(spec.keep_in_fp32))


def quantized_tensors(spec: ModelSpec, fmt: Format, skip_modules: list[str] | None) -> set[str]:
    """Return the names of the weight tensors bitsandbytes quantizes for this format."""
    if fmt.kind == "dense":  # every linear is stored in the dense format
        return {t.name for t in spec.tensors if t.role == "linear"}
    patterns = default_skip_modules(spec) if skip_modules is None else [*skip_modules, *spec.keep_in_fp32]
    # lm_head is an nn.Linear too: only the default skip list keeps it unquantized.
    return {
        t.name
        for t in spec.tensors
        if (t.role == "linear" or (t.role == "lm_head" and len(t.shape) == 2)) and should_convert(t.module, patterns)
    }


ComponentKey = tuple[str, str | None, str | None, str | None]  # kind, group, dtype, format


def tensor_parts(
    t: TensorSpec, fmt: Format, load_dtype: str, quantized: set[str]
) -> list[tuple[ComponentKey, int]]:
    """Return the ((kind, group, dtype, format), bytes) parts one tensor occupies."""
    if t.name in quantized:
        group = "quantized_linear" if fmt.kind != "dense" else GROUP_OF_ROLE[t.role]
        dtype = fmt.dtype if fmt.kind == "dense" else None
        fkey = fmt.key if fmt.kind != "dense" else None
        return [((kind, group, dtype, fkey), size) for kind, size in storage_parts(fmt, t.numel, t.rows)]
    dtype = t.dtype or load_dtype
    group = "linear_unquantized" if t.role == "linear" else GROUP_OF_ROLE[t.role]
    return [(("weights", group, dtype, None), t.numel * dtype_bytes(dtype))]


def _block_of(t: TensorSpec, seen_layers: bool) -> str:
    match = _LAYER_RE.search(t.name)
    if match:
        return f"layer {int(match.group(1))}"
    return "head" if seen_layers else "embeddings"


@dataclass
class WeightLayout:
    """Weights broken down by component and by placement block, computed once per format."""

    components: list[Component]
    blocks: dict[str, int]  # block -> weight bytes, in module order
    quantized: set[str]
    quantized_params: int

    @property
    def total(self) -> int:
        return sum(c.size_bytes for c in self.components)


def weight_layout(spec: ModelSpec, fmt: Format, load_dtype: str, skip_modules: list[str] | None) -> WeightLayout:
    """Return the weight bytes of a model in a format, per component and per block."""
    quantized = quantized_tensors(spec, fmt, skip_modules)
    sizes: dict[ComponentKey, int] = defaultdict(int)
    params: dict[ComponentKey, int] = defaultdict(int)
    blocks: dict[str, int] = {}
    seen_layers = False
    for t in spec.tensors:
        block = _block_of(t, seen_layers)
        seen_layers = seen_layers or block.startswith("layer")
        for i, (key, size) in enumerate(tensor_parts(t, fmt, load_dtype, quantized)):
            sizes[key] += size
            if i == 0 and t.role != "buffer":  # a tensor's elements are counted on its first part
                params[key] += t.numel
            blocks[block] = blocks.get(block, 0) + size
    # The output head runs last: with tied weights it shares the embeddings' block.
    if "head" in blocks:
        blocks["head"] = blocks.pop("head")
    components = [
        Component(kind=k[0], group=k[1], dtype=k[2], format=k[3], size_bytes=size, num_params=params.get(k) or None)
        for k, size in sizes.items()
    ]
    qparams = sum(t.numel for t in spec.tensors if t.name in quantized) if fmt.kind != "dense" else 0
    return WeightLayout(components, blocks, quantized, qparams)


def kv_per_layer(spec: ModelSpec, context: int, batch: int, kv_dtype: str) -> list[int]:
    """Return each layer's KV cache: 2 · kv_heads · head_dim · bytes · batch · min(context, window)."""
    att = spec.attention
    if att is None:
        return []
    per_token = 2 * att.kv_heads * att.head_dim * dtype_bytes(kv_dtype) * batch
    windows = att.windows or [None] * att.layers
    return [per_token * (min(context, w) if w else context) for w in windows]


def place(
    blocks: dict[str, int], devices: list[Device], cuda_context: int, margin: float
) -> tuple[list[DeviceFit], int]:
    """Place blocks in order on devices, each filled before the next (accelerate's 'sequential'
    device map). Return the per-device figures and the bytes that fit nowhere (CPU offload)."""
    fits: list[DeviceFit] = []
    queue = list(blocks.items())
    for dev in devices:
        assigned, names = 0, []
        while queue:
            name, size = queue[0]
            need = cuda_context + int((assigned + size) * (1 + margin))
            if need > dev.capacity_bytes and names:
                break
            if need > dev.capacity_bytes and dev is not devices[-1]:
                break  # even alone it does not fit here: try the next device
            assigned += size
            names.append(name)
            queue.pop(0)
            if need > dev.capacity_bytes:
                break
        overhead = cuda_context + int(assigned * margin)
        required = assigned + overhead
        fits.append(
            DeviceFit(
                name=dev.name,
                capacity_bytes=dev.capacity_bytes,
                assigned_bytes=assigned,
                overhead_bytes=overhead,
                required_bytes=required,
                headroom_bytes=dev.capacity_bytes - required,
                fits=required <= dev.capacity_bytes,
                blocks=[names[0], names[-1]] if names else [],
                compute_capability=dev.compute_capability,
                bf16=dev.bf16,
            )
        )
    offloaded = sum(size for _, size in queue)
    return fits, offloaded


def build_plan(spec: ModelSpec, req: PlanRequest, layout: WeightLayout | None = None) -> Plan:
    """Return the full plan of one model under one request."""
    layout = layout or weight_layout(spec, req.fmt, req.load_dtype, req.skip_modules)
    components = list(layout.components)
    blocks = dict(layout.blocks)
    kv_total: int | None = None
    kv_dtype = req.kv_dtype or req.load_dtype
    if req.context and spec.attention is not None and req.training is None:
        per_layer = kv_per_layer(spec, req.context, req.batch, kv_dtype)
        kv_total = sum(per_layer)
        components.append(
            Component(
                kind="kv_cache",
                dtype=kv_dtype,
                size_bytes=kv_total,
                context_tokens=req.context,
                batch_size=req.batch,
                source="formula",
            )
        )
        layer_blocks = [b for b in blocks if b.startswith("layer")]
        for b, kv in zip(layer_blocks, per_layer, strict=False):
            blocks[b] += kv
    training = None
    if req.training is not None:
        training = training_state(spec, req.training, req.fmt, req.load_dtype, layout.quantized)
        components.extend(training.components)
        layer_blocks = [b for b in blocks if b.startswith("layer")] or list(blocks)
        share = training.total_bytes // len(layer_blocks)
        for b in layer_blocks:
            blocks[b] += share
        blocks[layer_blocks[-1]] += training.total_bytes - share * len(layer_blocks)
    total = sum(c.size_bytes for c in components)
    params = spec.params
    plan = Plan(
        format=req.fmt.key,
        preset=req.preset,
        load_dtype=req.load_dtype,
        total_params=params,
        quantized_params=layout.quantized_params,
        bits_per_param=round(layout.total * 8 / params, 4) if params else 0.0,
        weight_bytes=layout.total,
        total_bytes=total,
        components=components,
        kv_cache_bytes=kv_total,
        training=training,
    )
    context_source = "given" if req.cuda_context_given else "default"
    if req.devices:
        fits, offloaded = place(blocks, req.devices, req.cuda_context_bytes, req.margin_fraction)
        used = [f for f in fits if f.assigned_bytes] or fits[:1]
        plan.devices = fits
        context_bytes = req.cuda_context_bytes * len(used)
        margin_bytes = sum(f.overhead_bytes for f in used) - context_bytes
        plan.offloaded_bytes = offloaded
        plan.fits = offloaded == 0 and all(f.fits for f in used)
    else:
        context_bytes = req.cuda_context_bytes
        margin_bytes = int(total * req.margin_fraction)
    plan.overheads = [
        Component(kind="cuda_context", size_bytes=context_bytes, source=context_source),
        Component(kind="allocator_margin", size_bytes=margin_bytes, source=f"{req.margin_fraction:g} of tensor bytes"),
    ]
    plan.overhead_bytes = context_bytes + margin_bytes
    plan.required_bytes = total + plan.overhead_bytes
    return plan


def max_context(spec: ModelSpec, req: PlanRequest, layout: WeightLayout) -> int | None:
    """Return the longest context (tokens) whose plan fits the devices, or None when none fits."""
    if not req.devices or spec.attention is None:
        return None
    limit = spec.max_position_embeddings or 2**20

    def fits(context: int) -> bool:
        trial = PlanRequest(**{**req.__dict__, "context": context})
        if trial.training is not None:
            trial.training = TrainingRequest(**{**req.training.__dict__, "sequence_length": context})
        return bool(build_plan(spec, trial, layout).fits)

    if not fits(1):
        return None
    lo, hi = 1, limit
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def check_request(req: PlanRequest) -> None:
    """Raise a UsageError for requests no plan can satisfy."""
    if req.batch < 1:
        raise UsageError("--batch must be at least 1")
    if req.context is not None and req.context < 1:
        raise UsageError("--context must be at least 1 token")
    if not 0 <= req.margin_fraction < 1:
        raise UsageError("--margin must be a fraction between 0 and 1, e.g. 0.05")
