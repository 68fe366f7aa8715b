"""`qcli estimate`: turns the command's options into plans. No torch import on this path
(the meta-device fallback for unknown architectures imports transformers lazily)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qcli.errors import UsageError
from qcli.model.describe import from_config
from qcli.model.resolve import ModelSource, resolve
from qcli.model.spec import ModelSpec, params_only
from qcli.options import FromCli
from qcli.paths import user_path
from qcli.plan.distributed import STRATEGIES, check_offload, parse_strategy
from qcli.plan.fit import CONTEXT_SEARCH_LIMIT, check_request, max_batch, max_context
from qcli.plan.formats import COMPARISON_FORMATS, LOAD_DTYPES, Format, parse_format, parse_load_dtype
from qcli.plan.gpus import Device, resolve_gpu
from qcli.plan.limits import MAX_BATCH, MAX_CONTEXT, MAX_GPUS, MAX_LORA_RANK, check_int
from qcli.plan.placement import MAX_MEMORY_HINT, parse_max_memory
from qcli.plan.planner import (
    DEFAULT_CUDA_CONTEXT_BYTES,
    DEFAULT_MARGIN_FRACTION,
    PlanRequest,
    build_plan,
    plan_layout,
)
from qcli.plan.prequantized import Prequant, checked_format, prequant_of
from qcli.plan.presets import Preset, load_preset
from qcli.plan.recommend import recommend
from qcli.plan.scaling import MAX_GPUS_PER_NODE, copies, how_many
from qcli.plan.storages import cuda_prediction
from qcli.plan.training import DEFAULT_TRAIN_SEQUENCE, TrainingRequest
from qcli.results.plan import EstimateReport, ModelInfo, Plan, Recommendation, SourceInfo
from qcli.units import MAX_BYTES, parse_bytes, parse_capacity, parse_params

PARAMS_NOTE = (
    "bare --params: every parameter is taken as one quantized tensor; real models keep "
    "embeddings, lm_head and norms unquantized — use a MODEL for the exact split"
)
# A checkpoint that names no dtype, or an exotic one, is planned in bf16 (what `qcli load` passes then).
FALLBACK_LOAD_DTYPE = "bfloat16"


@dataclass
class EstimateOptions(FromCli):
    """Everything `qcli estimate` takes; the defaults here are the only ones (flags left unset are None)."""

    params: str | None = None
    model: str | None = None
    bits: str | None = None
    double_quant: bool = False
    preset: str | None = None
    sets: list[str] = field(default_factory=list)
    dtype: str | None = None
    gpus: list[str] = field(default_factory=list)
    gpu_count: str | None = None  # N, or "auto": the fewest GPUs that fit
    nodes: int = 1
    strategy: str | None = None
    offload_optimizer: bool = False
    offload_params: bool = False
    device_map: str | None = None
    max_memory: str | None = None
    cpu_memory: str | None = None
    mixed_precision: str | None = None
    master_weights: bool | None = None
    attention: str = "eager"
    context: int | None = None
    batch: int = 1
    kv_dtype: str | None = None
    train: str | None = None
    lora_rank: int = 16
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"])
    optimizer: str = "adamw"
    grad_checkpointing: bool | None = None
    cuda_context: str | None = None
    margin: float = DEFAULT_MARGIN_FRACTION
    revision: str | None = None
    token: str | None = field(default=None, repr=False)  # a hub token: never printed


def default_load_dtype(spec: ModelSpec) -> str:
    """Return the dtype unquantized tensors load in when none is asked for: the checkpoint's own."""
    return spec.config_dtype if spec.config_dtype in LOAD_DTYPES else FALLBACK_LOAD_DTYPE


def preset_plan(spec: ModelSpec, preset: Preset, dtype: str | None = None, pre: Prequant | None = None) -> Plan:
    """Return the weights-only plan of a model loaded with a preset (what `qcli load` builds).

    `dtype` overrides the preset's dtype, as `qcli load --dtype` does. A pre-quantized bitsandbytes
    checkpoint (`pre`) loads in its stored format; a preset asking for another quantization is refused.
    """
    fmt, load_dtype, skip = preset.weight_format(dtype), dtype or preset.dtype, preset.skip_modules
    if pre is not None and pre.quantization is not None:
        fmt, _ = checked_format(pre, fmt, f"preset {preset.name}")
        skip = pre.skip_modules
    req = PlanRequest(fmt=fmt, load_dtype=load_dtype, preset=preset.name, skip_modules=skip)
    plan = build_plan(spec, req)
    if spec.source != "params":
        plan.cuda_prediction = cuda_prediction(spec, fmt, load_dtype, skip)
    return plan


MAX_LOAD_REPORT_BYTES = 16 * 2**20  # a `qcli load --json` report is a few kB


def measured_cuda_context(path: Path) -> int:
    """Return the CUDA context an earlier `qcli load --json` measured (the largest over its devices)."""
    import stat

    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"--cuda-context {path}: not a regular file (a directory, FIFO or device)")
        if st.st_size > MAX_LOAD_REPORT_BYTES:
            raise UsageError(f"--cuda-context {path}: {st.st_size:,} bytes is too large for a `qcli load --json` file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--cuda-context {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON, 4300+ digits
        raise UsageError(f"--cuda-context {path}: not a JSON file ({_one_line(exc)})") from None
    hint = "write one on the GPU with `qcli load MODEL --device cuda --json > FILE`"
    if not isinstance(data, dict) or data.get("command") != "load":
        raise UsageError(f"--cuda-context {path}: not the output of `qcli load --json`", hint)
    cuda = data.get("cuda") or []
    if not isinstance(cuda, list):
        raise UsageError(f"--cuda-context {path}: `cuda` must be a list of devices, as `qcli load --json` writes", hint)
    measured = [c.get("cuda_context_bytes") for c in cuda if isinstance(c, dict)]
    if not measured:
        raise UsageError(f"--cuda-context {path}: that load ran without CUDA: it measured no CUDA context", hint)
    if not all(type(v) is int and 0 <= v <= MAX_BYTES for v in measured):
        shown = ", ".join(str(v)[:20] for v in measured)
        raise UsageError(f"--cuda-context {path}: cuda[].cuda_context_bytes must be byte counts, got {shown}", hint)
    return max(measured)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:100] + ("…" if len(text) > 100 else "")


def parse_cuda_context(value: str | None) -> tuple[int | None, str | None]:
    """Return the CUDA context bytes and their source: a size ("given"), or a `qcli load --json` file whose
    measured context is reused ("measured (FILE)"); (None, None) when not given."""
    if value is None:
        return None, None
    if not value.strip():
        raise UsageError("--cuda-context is empty", "give a size such as 500MiB, or a `qcli load --json` file")
    path = user_path(value, "--cuda-context")
    if value.lower().endswith(".json") or path.is_file():
        return measured_cuda_context(path), f"measured ({path.name})"
    return parse_bytes(value, "--cuda-context"), "given"


def describe(model: str, revision: str | None = None, token: str | None = None) -> tuple[ModelSource, ModelSpec]:
    """Return the model's source and description: resolved once, described once."""
    source = resolve(model, revision, token=token)
    return source, from_config(source.config)


def source_info(source: ModelSource) -> SourceInfo:
    """Return where the model's config came from and the commit it resolved to."""
    return SourceInfo(
        config_from=source.config_from, repo_id=source.repo_id, revision=source.revision, commit_sha=source.commit_sha
    )


def _devices(opts: EstimateOptions, count: int | None = None) -> list[Device]:
    devices = [resolve_gpu(g) for g in opts.gpus]
    if count is not None:
        if count < 1:
            raise UsageError("--gpus must be at least 1 (or auto)")
        if len(devices) != 1:
            raise UsageError("--gpus N needs exactly one --gpu to repeat", "e.g. --gpu A100-80GB --gpus 2")
        devices = copies(devices[0], count)
    return devices


def _gpu_count(opts: EstimateOptions) -> int | None:
    """Return --gpus as a number (None: not given or auto)."""
    if opts.gpu_count is None or opts.gpu_count.strip().lower() == "auto":
        return None
    text = opts.gpu_count.strip()
    # ASCII digits only: int() also reads '٣', '８', '+2' and '1_0', which --params and --context refuse.
    if not re.fullmatch(r"-?[0-9]+", text):
        shown = opts.gpu_count if len(opts.gpu_count) < 40 else opts.gpu_count[:40] + "…"
        raise UsageError(f"--gpus {shown!r} is neither a number nor auto", "e.g. --gpus 4 or --gpus auto")
    if len(text) > 20:  # past any count, and int() refuses more than 4300 digits
        raise UsageError(f"--gpus {text[:12]}… ({len(text)} digits) is out of range", f"give at most {MAX_GPUS:,}")
    return check_int("--gpus", int(text), 1, MAX_GPUS)


def _max_memory(budgets: dict[int | str, int] | None, n: int) -> list[int] | None:
    """Return per-GPU budgets from the parsed --max-memory (a cpu= entry is read as --cpu-memory)."""
    if budgets is None:
        return None
    if "*" in budgets:
        return [budgets["*"]] * n
    gpus = {k: v for k, v in budgets.items() if isinstance(k, int)}
    if not gpus:
        return None
    if n == 0:
        raise UsageError("--max-memory budgets GPUs: give the --gpu to plan on", "e.g. --gpu A100-80GB --gpus 2")
    if sorted(gpus) != list(range(n)):
        raise UsageError(f"--max-memory needs a budget for each of the {n} GPU(s), {_indices(n)}", MAX_MEMORY_HINT)
    return [gpus[i] for i in range(n)]


def _indices(n: int) -> str:
    return "0" if n == 1 else f"0..{n - 1}"


def _training(opts: EstimateOptions, mode: str | None, strategy: str | None, gpus: int) -> TrainingRequest | None:
    if mode is None:
        return None
    if mode not in {"full", "lora", "qlora"}:
        raise UsageError(f"--train {mode!r} is not a training mode", "use full, lora or qlora")
    strategy = parse_strategy(strategy, gpus * opts.nodes)
    check_offload(strategy, opts.offload_optimizer, opts.offload_params)
    return TrainingRequest(
        mode=mode,  # type: ignore[arg-type]
        optimizer=opts.optimizer,
        lora_rank=opts.lora_rank,
        lora_targets=opts.lora_targets,
        gradient_checkpointing=opts.grad_checkpointing,
        sequence_length=opts.context or DEFAULT_TRAIN_SEQUENCE,
        batch=opts.batch,
        mixed_precision=opts.mixed_precision,
        attention=opts.attention,
        master_weights=opts.master_weights,
        strategy=strategy,
        total_gpus=gpus * opts.nodes,
        node_gpus=gpus,
        nodes=opts.nodes,
        offload_optimizer=opts.offload_optimizer,
        offload_params=opts.offload_params,
    )


def _model_notes(source: ModelSource, spec: ModelSpec) -> list[str]:
    notes = list(spec.notes)
    if any(t.role == "experts" for t in spec.tensors):
        notes.append(
            "MoE experts are fused 3-D tensors in transformers 5: bitsandbytes leaves them (and the "
            "routers) unquantized, so they are sized in the load dtype"
        )
    if any(t.role == "linear_subclass" for t in spec.tensors):
        notes.append(
            "this architecture's linears subclass nn.Linear; transformers 5 quantizes exact nn.Linear "
            "only, so they stay in the load dtype"
        )
    notes.extend(source.notes)
    return notes


# Options that only shape a training plan: given without --train they would change nothing.
TRAINING_ONLY = (
    "attention",
    "optimizer",
    "mixed_precision",
    "master_weights",
    "grad_checkpointing",
    "lora_rank",
    "lora_targets",
)


def _check_flags(opts: EstimateOptions) -> None:
    for flag, value in (
        ("--train", opts.train),
        ("--bits", opts.bits),
        ("--preset", opts.preset),
        ("--cpu-memory", opts.cpu_memory),
        ("--params", opts.params),
        ("--gpus", opts.gpu_count),
        ("--kv-dtype", opts.kv_dtype),
    ):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} is empty", "give a value, or leave the option out")
    if any(not g.strip() for g in opts.gpus):
        raise UsageError("--gpu is empty", "give a GPU name such as T4, or a size such as 24GB")
    defaults = EstimateOptions()
    given = [f for f in TRAINING_ONLY if getattr(opts, f) != getattr(defaults, f)]
    if given and not opts.train:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise UsageError(f"{flags} shape a training plan: add --train full|lora|qlora, or leave them out")
    if opts.params is None and opts.model is None:
        raise UsageError("give a MODEL (a directory, config.json, hub id or demo) or --params (e.g. --params 8b)")
    if opts.params is not None and opts.model is not None:
        raise UsageError("give either a MODEL or --params, not both")
    hub = [f for f, v in (("--revision", opts.revision), ("--token", opts.token)) if v is not None]
    if hub and opts.params is not None:
        verb = "read" if len(hub) > 1 else "reads"
        raise UsageError(f"{' and '.join(hub)} {verb} a model from the hub: --params has none", "give a MODEL instead")
    if opts.preset and opts.bits:
        raise UsageError("give either --preset or --bits, not both")
    if opts.double_quant and not opts.bits:
        raise UsageError("--double-quant goes with --bits 4 (or use --preset qlora)")
    if opts.sets and not opts.preset:
        raise UsageError("--set overrides a preset's fields: give --preset too")
    if opts.model is None and (opts.context or opts.train):
        raise UsageError("--context and --train need layer shapes: give a MODEL instead of --params")
    check_int("--nodes", opts.nodes, 1, MAX_GPUS)
    check_int("--context", opts.context, 1, MAX_CONTEXT)
    check_int("--batch", opts.batch, 1, MAX_BATCH)
    check_int("--lora-rank", opts.lora_rank, 1, MAX_LORA_RANK)
    if not opts.train and (opts.nodes > 1 or opts.strategy or opts.offload_optimizer or opts.offload_params):
        raise UsageError(
            "--nodes, --strategy and --offload-* plan training: add --train full|lora|qlora",
            "inference across GPUs uses --device-map",
        )
    if (opts.strategy or opts.nodes > 1) and not opts.gpus:
        raise UsageError("--strategy and --nodes need a --gpu to plan on", "e.g. --gpu A100-80GB --gpus 8")
    # Flags that would change nothing are refused, as TRAINING_ONLY ones are without --train.
    placement = [f for f, v in (("--device-map", opts.device_map), ("--cpu-memory", opts.cpu_memory)) if v is not None]
    if placement and not opts.gpus:
        need = "need" if len(placement) > 1 else "needs"
        raise UsageError(f"{' and '.join(placement)} {need} a --gpu to place the model on", "e.g. --gpu A100-80GB")
    if opts.cpu_memory is not None and not _host_memory_read(opts):
        raise UsageError(
            "--cpu-memory budgets what is offloaded to the CPU, and nothing here offloads",
            "add --device-map auto (inference), or --offload-optimizer / --strategy zero3 (training)",
        )
    if opts.master_weights and opts.train in {"lora", "qlora"}:
        raise UsageError(
            f"--master-weights is for --train full: --train {opts.train} trains fp32 LoRA adapters, "
            "which need no fp32 copy",
            "leave --master-weights out",
        )
    if opts.kv_dtype is not None and opts.context is None:
        raise UsageError("--kv-dtype sizes the KV cache: add --context", "e.g. --context 8192 --kv-dtype float16")
    if opts.batch != defaults.batch and opts.context is None and not opts.train:
        # without a context there is no KV cache and no activations: only the report's batch_size changed
        raise UsageError(
            f"--batch {opts.batch} multiplies the KV cache: add --context", "e.g. --context 8192 --batch 4"
        )


def _host_memory_read(opts: EstimateOptions) -> bool:
    """Return whether a plan for these flags has a CPU row for --cpu-memory to budget: an inference device
    map over the GPUs (what does not fit is offloaded), or training with a strategy or offload that keeps
    state in host memory (several GPUs: the strategies compared include ZeRO's)."""
    several = len(opts.gpus) > 1 or (opts.gpu_count is not None and opts.gpu_count.strip() != "1")
    if not opts.train:
        return opts.device_map is not None or several
    strategy = (opts.strategy or "").strip().lower()
    return opts.offload_optimizer or opts.offload_params or "zero" in strategy or (not strategy and several)


DENSE_PRESET = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def _context_notes(opts: EstimateOptions, spec: ModelSpec, plan: Plan, devices: list[Device]) -> list[str]:
    notes = []
    limit = spec.max_position_embeddings
    if opts.context and limit and opts.context > limit:
        notes.append(
            f"--context {opts.context:,} exceeds the model's own limit of {limit:,} tokens "
            "(max_position_embeddings): positions beyond it were never trained (or need RoPE scaling)"
        )
    if devices and not opts.train and not opts.context and spec.attention is not None:
        notes.append("no --context: the KV cache is not in the fit (weights only); give --context to include it")
    if plan.max_context_tokens is None and plan.context_binding == "model":
        notes.append("memory never binds the context here (sliding windows cap the KV cache)")
    return notes


def _set_limits(spec: ModelSpec, req: PlanRequest, plan: Plan) -> None:
    """Fill the plan's max context (from memory), which limit binds, and the max batch."""
    layout = plan_layout(spec, req)
    found = max_context(spec, req, layout)
    limit = spec.max_position_embeddings
    if found == CONTEXT_SEARCH_LIMIT:
        plan.max_context_tokens, plan.context_binding = None, "model" if limit else None
    else:
        plan.max_context_tokens = found
        if found is not None:
            plan.context_binding = "model" if limit and limit <= found else "memory"
    plan.max_batch_size = max_batch(spec, req, layout)


def _check_dtype(dtype: str | None, fmt: Format | None, preset: Preset | None, opts: EstimateOptions) -> None:
    """Refuse a --dtype that would change nothing or contradict the precision (it was dropped silently):
    a 16/32-bit --bits is already the dtype of every tensor, and --params has no unquantized modules to
    give a dtype to unless the preset itself is unquantized."""
    if dtype is None:
        return
    if fmt is not None and fmt.kind == "dense" and fmt.dtype != dtype:
        raise UsageError(
            f"--dtype {dtype} contradicts --bits {opts.bits}, which loads every tensor in {fmt.dtype}",
            f"give one of them: --bits {DENSE_PRESET.get(dtype, dtype)} alone says {dtype}",
        )
    dense_preset = preset is not None and preset.quantization is None
    if opts.model is None and not dense_preset and not (fmt is not None and fmt.kind == "dense"):
        raise UsageError(
            "--dtype sets the dtype of the modules that stay unquantized, and --params has no modules to tell apart",
            "give a MODEL to plan them, or leave --dtype out",
        )


def run_estimate(opts: EstimateOptions) -> EstimateReport:
    """Return the estimate report for the options of `qcli estimate`."""
    _check_flags(opts)
    count = _gpu_count(opts)
    auto = opts.gpu_count is not None and count is None
    if auto and len(opts.gpus) != 1:
        raise UsageError("--gpus auto needs exactly one --gpu type", "e.g. --gpu A100-80GB --gpus auto")
    devices = _devices(opts, count if not auto else 1)
    preset: Preset | None = load_preset(opts.preset, opts.sets) if opts.preset else None
    fmt: Format | None = parse_format(opts.bits, opts.double_quant) if opts.bits else None
    dtype_flag = parse_load_dtype(opts.dtype, "--dtype")
    _check_dtype(dtype_flag, fmt, preset, opts)
    kv_dtype = parse_load_dtype(opts.kv_dtype, "--kv-dtype")
    cuda_context, context_source = parse_cuda_context(opts.cuda_context)
    if cuda_context is not None and not opts.gpus:  # checked after the file: its own errors say more
        raise UsageError("--cuda-context is part of the fit on a GPU: add --gpu", "e.g. --gpu T4 --cuda-context 600MiB")
    cpu_memory = parse_capacity(opts.cpu_memory, "--cpu-memory") if opts.cpu_memory is not None else None
    budgets = parse_max_memory(opts.max_memory, opts.device_map)
    if budgets is not None and "cpu" in budgets:
        if cpu_memory is not None:
            raise UsageError("--cpu-memory and --max-memory cpu= both give the CPU budget: give one")
        cpu_memory = budgets["cpu"]
    if opts.model is None:
        source, spec, pre = None, params_only(parse_params(opts.params or "")), None
        notes = [PARAMS_NOTE]
    else:
        source, spec = describe(opts.model, opts.revision, opts.token)
        notes = _model_notes(source, spec)
        pre = prequant_of(source.quantization_config, opts.model)
        if pre is not None:
            notes.append(pre.describe())
    model_dtype = dtype_flag or (default_load_dtype(spec) if opts.model else "float16")
    if preset is None and fmt is None and opts.train:
        # --train without a precision: QLoRA's recipe, or the checkpoint's own 16-bit dtype.
        preset = load_preset("qlora" if opts.train == "qlora" else DENSE_PRESET.get(model_dtype, "bf16"))

    def request(
        f: Format,
        load: str,
        name: str | None,
        skip: list[str] | None,
        mode: str | None,
        strategy: str | None,
        devs: list[Device],
    ) -> PlanRequest:
        req = PlanRequest(
            fmt=f,
            load_dtype=load,
            preset=name,
            skip_modules=skip,
            training=_training(opts, mode, strategy, max(len(devs), 1)),
            batch=opts.batch,
            context=opts.context,
            devices=devs,
            cuda_context_bytes=cuda_context if cuda_context is not None else DEFAULT_CUDA_CONTEXT_BYTES,
            cuda_context_given=cuda_context is not None,
            cuda_context_source=context_source,
            margin_fraction=opts.margin,
            kv_dtype=kv_dtype,
            device_map=opts.device_map,
            max_memory=_max_memory(budgets, len(devs)),
            cpu_memory=cpu_memory,
        )
        check_request(req)
        return req

    report = EstimateReport(
        model=ModelInfo(
            name=opts.model,
            model_type=None if opts.model is None else spec.model_type,
            count_method=spec.source,
            model_class=spec.model_class,
            total_params=spec.params,
            params_by_group=None if opts.model is None else spec.groups(),
            context_limit_tokens=spec.max_position_embeddings,
            stored_bytes_by_dtype=source.stored_bytes if source else None,
            stored_bytes=sum(source.stored_bytes.values()) if source and source.stored_bytes is not None else None,
            source=source_info(source) if source else None,
            prequantized=pre.info() if pre else None,
        ),
        context_tokens=opts.context,
        batch_size=opts.batch,
        plans=[],
        notes=notes,
    )
    stored_fmt = pre.format if pre is not None else None
    if stored_fmt is not None and preset is None and fmt is None:
        fmt = stored_fmt  # a pre-quantized checkpoint has one format: its own
    # The allocator counters of loading the weights on one GPU (a fresh process); none for several GPUs.
    predict_cuda = opts.model is not None and len(devices) <= 1 and not auto
    device_total = devices[0].capacity_bytes if devices else None
    if preset is None and fmt is None:
        for f in COMPARISON_FORMATS:
            load = f.dtype if f.kind == "dense" else model_dtype
            report.plans.append(build_plan(spec, request(f, load or model_dtype, None, None, None, None, devices)))
            report.plans[-1].compute_dtype = None if f.kind == "4bit" else load or model_dtype
            if predict_cuda:
                report.plans[-1].cuda_prediction = cuda_prediction(spec, f, load or model_dtype, None, device_total)
        if devices and opts.model is not None:
            report.recommendation = _recommend(opts, spec, devices, request)
        report.notes += _context_notes(opts, spec, report.plans[0], devices)
        return report

    if preset is not None:
        f, load = preset.weight_format(dtype_flag), dtype_flag or preset.dtype
        name, skip = preset.name, preset.skip_modules
    else:
        assert fmt is not None
        f, load, name, skip = fmt, (fmt.dtype if fmt.kind == "dense" else None) or model_dtype, None, None
    if pre is not None and stored_fmt is not None:
        f, mismatch = checked_format(pre, f, f"preset {name}" if name else f"--bits {opts.bits}")
        skip = pre.skip_modules
        report.notes.extend(mismatch)
    strategy = opts.strategy
    if auto:
        base = _devices(opts, 1)[0]
        report.gpus_needed, best, strategy = how_many(
            lambda n, st: build_plan(spec, request(f, load, name, skip, opts.train, st, copies(base, n))),
            opts.train,
            opts.strategy,
            opts.nodes,
            (opts.offload_optimizer, opts.offload_params),
        )
        devices = copies(base, best or MAX_GPUS_PER_NODE)
        if best is None:
            report.notes.append(f"--gpus auto: nothing fits on up to {MAX_GPUS_PER_NODE} GPUs per node")
    req = request(f, load, name, skip, opts.train, strategy, devices)
    plan = build_plan(spec, req)
    four_bit = f.kind == "4bit"
    plan.compute_dtype = (preset.compute_dtype if preset is not None else None) if four_bit else load
    if predict_cuda:
        plan.cuda_prediction = cuda_prediction(spec, f, load, skip, device_total)
    report.plans.append(plan)
    peak, decode = plan.kv_cache_bytes, plan.kv_cache_decode_bytes
    if peak is not None and decode is not None and decode < peak:
        holders = "sliding-window layers"
        if any(c.compress_rate for c in spec.cache or ()):
            holders += " and compressor buffers"
        report.notes.append(
            f"KV cache: {peak / 2**30:,.2f} GiB right after a {opts.context:,}-token prompt ({holders} "
            f"still hold it all), {decode / 2**30:,.2f} GiB while decoding; the total counts the first"
        )
    if devices and opts.model is not None:
        _set_limits(spec, req, plan)
        bf16_ok = all(d.bf16 for d in devices) if all(d.bf16 is not None for d in devices) else None
        report.recommendation = _recommend(opts, spec, devices, request)
        if preset is not None and preset.compute_dtype == "bfloat16" and bf16_ok is False:
            report.notes.append(
                f"preset {preset.name} computes in bf16, which this GPU lacks: use nf4-fp16 "
                "or --set quantization.bnb_4bit_compute_dtype=float16"
            )
    if plan.training is not None and plan.training.kbit_prepared:
        report.notes.append(_kbit_note(plan))
    if (
        plan.training is not None
        and plan.training.total_gpus > 1
        and f.kind == "4bit"
        and (plan.training.strategy in {"fsdp", "zero3"})
        and (preset is None or preset.quantization is None or preset.quantization.bnb_4bit_quant_storage == "uint8")
    ):
        report.notes.append(
            "sharding a 4-bit base (FSDP/ZeRO-3 + QLoRA) needs bnb_4bit_quant_storage set to the compute dtype "
            "(e.g. --set quantization.bnb_4bit_quant_storage=bfloat16) so the packed weights can be flattened; "
            "the bytes are the same"
        )
    report.notes += _context_notes(opts, spec, plan, devices)
    return report


def _recommend(
    opts: EstimateOptions, spec: ModelSpec, devices: list[Device], request: Callable[..., PlanRequest]
) -> Recommendation:
    """Return the recommendation: every precision × strategy planned on these devices."""
    bf16_ok = all(d.bf16 for d in devices) if all(d.bf16 is not None for d in devices) else None
    n = len(devices) * opts.nodes
    strategies = ["single"] if n == 1 else [s for s in STRATEGIES if s != "single"]
    if opts.strategy:
        strategies = [parse_strategy(opts.strategy, n)]

    def plan_of(preset_name: str, mode: str | None, st: str | None) -> Plan:
        p = load_preset(preset_name)
        return build_plan(spec, request(p.weight_format(), p.dtype, preset_name, p.skip_modules, mode, st, devices))

    return recommend(spec.params, opts.train, bf16_ok, plan_of, strategies)


def _kbit_note(plan: Plan) -> str:
    t = plan.training
    assert t is not None
    ckpt = "on" if t.gradient_checkpointing else "off (--no-grad-checkpointing)"
    return (
        "PEFT prepare_model_for_kbit_training: gradient checkpointing "
        + ckpt
        + f"; every unquantized 16-bit parameter (embeddings, lm_head, norms: {t.upcast_params or 0:,} params) "
        "cast to fp32"
    )
