"""`qcli estimate`: weights with their quantization constants, KV cache, training state,
overheads, placement on devices and the fit check. Pure Python: no torch import.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from qcli.errors import UsageError
from qcli.model.spec import GROUP_OF_ROLE, CacheLayer, ModelSpec, TensorSpec
from qcli.plan.distributed import host_bytes_per_node
from qcli.plan.formats import Format, dtype_bytes, storage_parts
from qcli.plan.gpus import Device
from qcli.plan.placement import DeviceMap, block_of, infer_device_map, is_layer, largest_layer
from qcli.plan.training import TrainingRequest, kbit_prepared, training_state
from qcli.results.plan import Component, DeviceFit, LargestLayer, Plan
from qcli.units import MIB

# The CUDA context (driver, kernels, cuBLAS workspace) never shows in torch's counters: 300-700 MiB
# is typical (pytorch issue 28113). `qcli load` measures yours; override with --cuda-context.
DEFAULT_CUDA_CONTEXT_BYTES = 512 * MIB
# Room for allocator fragmentation: reserved memory exceeds allocated after a load
# (transformers issue 37436). A fraction of the tensor bytes, overridable with --margin.
DEFAULT_MARGIN_FRACTION = 0.05


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
    cuda_context_source: str | None = None  # "given", or "measured (FILE)" from an earlier `qcli load --json`
    margin_fraction: float = DEFAULT_MARGIN_FRACTION
    # accelerate's device map for inference: auto, balanced, sequential; None: what `qcli load` does without
    # --device-map (the whole model on the one GPU; "auto" across several)
    device_map: str | None = None
    max_memory: list[int] | None = None  # per-GPU budgets for the device map (default: capacity - CUDA context)
    cpu_memory: int | None = None  # host RAM per node, when known


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
    """Return the modules transformers keeps unquantized by default: the output head, both ends of
    every tie, the module of the last parameter before tying, and `_keep_in_fp32_modules`.

    The model description carries transformers' own list (`default_skips`, from get_keys_to_not_convert
    on the meta build, or the analytic builder's equivalent); the rest is a fallback for specs without it.
    """
    if spec.source == "params":
        return []  # a bare count: every parameter is taken as quantizable
    if spec.default_skips is not None:
        return sorted(set(spec.default_skips) | set(spec.keep_in_fp32))
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
    # llm_int8_skip_modules replaces the default list; _keep_in_fp32_modules is added either way
    # (transformers' HfQuantizer.get_modules_to_not_convert).
    patterns = default_skip_modules(spec) if skip_modules is None else [*skip_modules, *spec.keep_in_fp32]
    # lm_head is an nn.Linear too: only the default skip list keeps it unquantized.
    return {
        t.name
        for t in spec.tensors
        if (t.role == "linear" or (t.role == "lm_head" and t.convertible and len(t.shape) == 2))
        and should_convert(t.module, patterns)
    }


ComponentKey = tuple[str, str | None, str | None, str | None]  # kind, group, dtype, format


def tensor_parts(t: TensorSpec, fmt: Format, load_dtype: str, quantized: set[str]) -> list[tuple[ComponentKey, int]]:
    """Return the ((kind, group, dtype, format), bytes) parts one tensor occupies."""
    if t.name in quantized:
        group = "quantized_linear" if fmt.kind != "dense" else GROUP_OF_ROLE[t.role]
        dtype = fmt.dtype if fmt.kind == "dense" else None
        fkey = fmt.key if fmt.kind != "dense" else None
        return [((kind, group, dtype, fkey), size) for kind, size in storage_parts(fmt, t.numel, t.rows)]
    dtype = t.dtype or load_dtype
    group = "linear_unquantized" if t.role == "linear" else GROUP_OF_ROLE[t.role]
    return [(("weights", group, dtype, None), t.numel * dtype_bytes(dtype))]


def kept_in_fp32(spec: ModelSpec, load_dtype: str) -> re.Pattern[str] | None:
    """Return the pattern of tensors transformers loads in float32 whatever the load dtype, or None.

    Mirrors `PreTrainedModel._get_dtype_plan`: `_keep_in_fp32_modules` under float16 loads,
    `_keep_in_fp32_modules_strict` under float16 and bfloat16; each pattern is searched in the tensor
    name as a glob (core_model_loading.build_glob_alternation).
    """
    patterns = list(spec.keep_in_fp32_strict) if load_dtype in {"float16", "bfloat16"} else []
    if load_dtype == "float16":
        patterns += spec.keep_in_fp32
    return re.compile("|".join(p.replace("*", ".*") for p in patterns)) if patterns else None


def stored_dtype(t: TensorSpec, load_dtype: str, fp32: re.Pattern[str] | None) -> str:
    """Return the dtype an unquantized tensor is loaded in: its own fixed dtype, float32 when the model keeps
    it there (`kept_in_fp32`), else the load dtype."""
    if t.dtype is not None:
        return t.dtype
    return "float32" if fp32 is not None and fp32.search(t.name) else load_dtype


@dataclass
class WeightLayout:
    """Weights broken down by component and by placement block, computed once per format."""

    components: list[Component]
    blocks: dict[str, int]  # placement block (decoder layer or top-level module) -> weight bytes, in module order
    quantized: set[str]
    quantized_params: int
    params: int  # the model's unique parameters (tied weights once): the same for every format

    # largest_layer() of these blocks, once: fit.py's binary searches build dozens of plans on one layout
    largest: tuple[LargestLayer | None] | None = field(default=None, repr=False, compare=False)

    @property
    def total(self) -> int:
        return sum(c.size_bytes for c in self.components)


def weight_layout(spec: ModelSpec, fmt: Format, load_dtype: str, skip_modules: list[str] | None) -> WeightLayout:
    """Return the weight bytes of a model in a format, per component and per block."""
    quantized = quantized_tensors(spec, fmt, skip_modules)
    fp32 = kept_in_fp32(spec, load_dtype)
    sizes: dict[ComponentKey, int] = defaultdict(int)
    params: dict[ComponentKey, int] = defaultdict(int)
    blocks: dict[str, int] = {}
    total_params = 0
    for t in spec.tensors:
        block = block_of(t.name)
        dtype = stored_dtype(t, load_dtype, fp32)
        numel = t.numel
        if t.role != "buffer":
            total_params += numel
        for i, (key, size) in enumerate(tensor_parts(t, fmt, dtype, quantized)):
            sizes[key] += size
            if i == 0 and t.role != "buffer":  # a tensor's elements are counted on its first part
                params[key] += numel
            blocks[block] = blocks.get(block, 0) + size
    components = [
        Component(kind=k[0], group=k[1], dtype=k[2], format=k[3], size_bytes=size, num_params=params.get(k) or None)
        for k, size in sizes.items()
    ]
    qparams = sum(t.numel for t in spec.tensors if t.name in quantized) if fmt.kind != "dense" else 0
    return WeightLayout(components, blocks, quantized, qparams, total_params)


def cache_layers(spec: ModelSpec) -> list[CacheLayer]:
    """Return what each layer of the model's cache stores: measured on the meta build, else from the config."""
    if spec.cache is not None:
        return spec.cache
    att = spec.attention
    if att is None:
        return []
    per_token = ((2 * att.kv_heads * att.head_dim, None),)  # K and V, one head_dim vector per KV head each
    windows = att.windows or [None] * att.layers
    return [CacheLayer("sliding" if w else "full", per_token=per_token, window=w) for w in windows]


def cache_layer_bytes(layer: CacheLayer, tokens: int, batch: int, kv_dtype: str, *, prefill: bool) -> int:
    """Return one cache layer's bytes holding `tokens` tokens of `batch` sequences.

    transformers' DynamicSlidingWindowLayer keeps a view of the last W-1 tokens: right after a prefill
    that view still holds the whole prompt's storage (the peak); while decoding, a W-token tensor.
    Compressing layers add their entries, buffer and carried state (CacheLayer.counts).
    """
    counts = layer.counts(tokens, prefill=prefill)
    parts = (
        (layer.per_token, counts.tokens),
        (layer.per_entry, counts.entries),
        (layer.pending, counts.pending),
        (layer.carried, counts.carried),
        (layer.state, 1),
    )
    return batch * sum(n * dtype_bytes(dt or kv_dtype) * times for elems, times in parts for n, dt in elems)


def kv_per_layer(spec: ModelSpec, context: int, batch: int, kv_dtype: str, *, prefill: bool = False) -> list[int]:
    """Return each cache layer's bytes at `context` tokens: while decoding (the steady state), or right
    after a prefill of `context` tokens (prefill=True: the peak of sliding-window and compressing layers)."""
    return [cache_layer_bytes(c, context, batch, kv_dtype, prefill=prefill) for c in cache_layers(spec)]


def plan_layout(spec: ModelSpec, req: PlanRequest) -> WeightLayout:
    """Return the weights as the request holds them: PEFT's k-bit preparation casts every unquantized
    16-bit parameter to fp32 (`prepare_model_for_kbit_training`)."""
    upcast = req.training is not None and kbit_prepared(req.training, req.fmt)
    return weight_layout(spec, req.fmt, "float32" if upcast else req.load_dtype, req.skip_modules)


def _row(dev: Device, assigned: int, overhead: int, blocks: list[str], count: int = 1) -> DeviceFit:
    required = assigned + overhead
    return DeviceFit(
        name=dev.name,
        identical_gpus=count,
        capacity_bytes=dev.capacity_bytes,
        assigned_bytes=assigned,
        overhead_bytes=overhead,
        required_bytes=required,
        headroom_bytes=dev.capacity_bytes - required,
        fits=required <= dev.capacity_bytes,
        blocks=[blocks[0], blocks[-1]] if len(blocks) > 1 else blocks,
        compute_capability=dev.compute_capability,
        bf16=dev.bf16,
    )


def _inference_rows(req: PlanRequest, blocks: dict[str, int], kv: list[int]) -> tuple[list[DeviceFit], int]:
    """Return one row per GPU (accelerate's device map over the weights, KV with its layer) and an
    offload row for whatever the map sends to the CPU; and the room GPU 0 keeps to stream offloaded
    blocks back in (the largest of them)."""
    n = len(req.devices)
    if req.device_map is None and n == 1:
        dm = DeviceMap(dict.fromkeys(blocks, 0), [req.devices[0].capacity_bytes])  # device_map={"": 0}
    else:
        budgets = req.max_memory or [d.capacity_bytes - req.cuda_context_bytes for d in req.devices]
        mode = req.device_map or "auto"
        dm = infer_device_map(blocks, budgets, mode, req.max_memory is not None, req.fmt.kind != "dense")
    kv_of = dict(zip([b for b in blocks if is_layer(b)], kv, strict=False))
    assigned = [0] * (n + 1)
    names: list[list[str]] = [[] for _ in range(n + 1)]
    for b, dev in dm.assignment.items():
        assigned[dev] += blocks[b]
        names[dev].append(b)
        # An offloaded layer runs on the first GPU (accelerate's execution device): its KV cache lives there.
        assigned[0 if dev == n else dev] += kv_of.get(b, 0)
    offloaded = [b for b, dev in dm.assignment.items() if dev == n]
    stream = max((blocks[b] for b in offloaded), default=0)  # streamed back onto GPU 0 one at a time
    rows = []
    for i, dev in enumerate(req.devices):
        used = assigned[i] > 0 or i == 0
        overhead = (req.cuda_context_bytes if used else 0) + int(assigned[i] * req.margin_fraction)
        rows.append(_row(dev, assigned[i], overhead + (stream if i == 0 else 0), names[i]))

    if offloaded:
        size = sum(blocks[b] for b in offloaded)
        rows.append(
            DeviceFit(
                name="cpu (offload)",
                kind="cpu",
                role="offload",
                capacity_bytes=req.cpu_memory,
                assigned_bytes=size,
                overhead_bytes=0,
                required_bytes=size,
                headroom_bytes=None if req.cpu_memory is None else req.cpu_memory - size,
                fits=False,  # the plan does not fit the GPUs: accelerate would offload these blocks
                blocks=[offloaded[0], offloaded[-1]] if len(offloaded) > 1 else offloaded,
            )
        )
    return rows, stream


def _training_rows(req: PlanRequest, plan: Plan, host: tuple[int, str] | None) -> list[DeviceFit]:
    """Return one row per kind of GPU (every rank holds the same) and a host row per node."""
    gpu_bytes = plan.total_bytes
    overhead = req.cuda_context_bytes + int(gpu_bytes * req.margin_fraction)
    groups: dict[tuple[str, int], list[Device]] = {}
    for d in req.devices:
        groups.setdefault((d.name.split(" #")[0], d.capacity_bytes), []).append(d)
    rows = []
    for (name, _), devs in groups.items():
        dev = devs[0].model_copy(update={"name": name})
        rows.append(_row(dev, gpu_bytes, overhead, ["the same on every rank"], len(devs)))
    if host is not None:
        need, _how = host
        cap = req.cpu_memory
        rows.append(
            DeviceFit(
                name="cpu per node",
                kind="cpu",
                role="host",
                capacity_bytes=cap,
                assigned_bytes=need,
                overhead_bytes=0,
                required_bytes=need,
                headroom_bytes=None if cap is None else cap - need,
                fits=None if cap is None else need <= cap,
            )
        )
    return rows


def verdict(rows: list[DeviceFit]) -> tuple[bool, str]:
    """Return (fits, verdict): fits is the AND of the rows that know their capacity."""
    fits = all(r.fits for r in rows if r.fits is not None)
    if fits:
        return True, "fits"
    gpus_fit = all(r.fits is not False for r in rows if r.kind == "gpu")
    return False, "offload" if gpus_fit and any(r.role == "offload" for r in rows) else "does_not_fit"


def build_plan(spec: ModelSpec, req: PlanRequest, layout: WeightLayout | None = None) -> Plan:
    """Return the full plan of one model under one request."""
    layout = layout or plan_layout(spec, req)
    params = layout.params
    components = list(layout.components)
    blocks = dict(layout.blocks)
    if layout.largest is None:
        layout.largest = (largest_layer(spec, layout.blocks),)
    largest = layout.largest[0]
    kv: list[int] = []
    kv_total: int | None = None
    kv_decode: int | None = None
    kv_dtype = req.kv_dtype or req.load_dtype
    if req.context and cache_layers(spec) and req.training is None:
        # Counted at its peak: right after a prompt of `context` tokens every layer holds all of them,
        # sliding-window layers included; decoding, those keep only their window.
        kv = kv_per_layer(spec, req.context, req.batch, kv_dtype, prefill=True)
        kv_total = sum(kv)
        kv_decode = sum(kv_per_layer(spec, req.context, req.batch, kv_dtype))
        components.append(
            Component(
                kind="kv_cache",
                dtype=kv_dtype,
                size_bytes=kv_total,
                context_tokens=req.context,
                batch_size=req.batch,
                source="meta forward" if spec.cache is not None else "formula",
                formula=None if spec.cache is not None else "2 · layers · kv_heads · head_dim · bytes · batch · tokens",
            )
        )
    training = None
    host = None
    if req.training is not None:
        t = req.training
        if largest is None:
            raise UsageError("training estimates need a model's layers: give a MODEL")
        if t.strategy.startswith("zero"):  # DeepSpeed gathers the largest module's 16-bit weights: 2 B/param
            unit = (largest.module_params, 2.0)
        else:  # FSDP gathers one wrapped unit (a decoder layer, or the root's leftovers) as stored
            unit = (largest.num_params, largest.size_bytes / max(largest.num_params, 1))
        weights_pg, training = training_state(spec, t, req.fmt, req.load_dtype, layout.components, unit)
        components = weights_pg + training.components
        if t.strategy.startswith("zero") or any(c.device == "cpu" for c in components):
            host = host_bytes_per_node(t.strategy, components, t.node_gpus, params, largest.module_params)
    total = sum(c.size_bytes for c in components if c.device == "gpu")
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
        kv_cache_decode_bytes=kv_decode,
        training=training,
        per_gpu=training is not None and training.total_gpus > 1,
        kv_in_fit=kv_total is not None,
        largest_layer=largest,
        context_limit_tokens=spec.max_position_embeddings,
    )
    context_source = req.cuda_context_source or ("given" if req.cuda_context_given else "default")
    overheads: list[Component] = []
    if req.devices:
        stream = 0
        if training is not None:
            rows = _training_rows(req, plan, host)
        else:
            rows, stream = _inference_rows(req, blocks, kv)
        plan.devices = rows
        plan.fits, plan.verdict = verdict(rows)
        plan.offloaded_bytes = sum(r.assigned_bytes for r in rows if r.role == "offload")
        first = rows[0]
        used = [r for r in rows if r.kind == "gpu" and (r.assigned_bytes or r is first)]
        context_bytes = req.cuda_context_bytes * (1 if training is not None else len(used))
        margin_bytes = sum(int(r.assigned_bytes * req.margin_fraction) for r in used)
        if stream:
            overheads.append(
                Component(
                    kind="allocator_margin",
                    size_bytes=stream,
                    source="room on GPU 0 to stream the largest offloaded block back in, as accelerate does",
                )
            )
        overheads.insert(0, Component(kind="cuda_context", size_bytes=context_bytes, source=context_source))
    else:
        # No GPU asked about: no CUDA context (a CPU-only question).
        margin_bytes = int(total * req.margin_fraction)
    overheads.insert(
        1 if req.devices else 0,
        Component(kind="allocator_margin", size_bytes=margin_bytes, source=f"{req.margin_fraction:g} of tensor bytes"),
    )
    plan.overheads = overheads
    plan.overhead_bytes = sum(c.size_bytes for c in overheads)
    plan.required_bytes = total + plan.overhead_bytes
    return plan
