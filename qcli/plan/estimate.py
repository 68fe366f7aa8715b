"""`qcli estimate`: turns the command's options into plans. No torch import on this path
(the meta-device fallback for unknown architectures imports transformers lazily)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from qcli.errors import UsageError
from qcli.model.describe import from_config
from qcli.model.resolve import ModelSource, resolve
from qcli.model.spec import ModelSpec, params_only
from qcli.plan.formats import COMPARISON_FORMATS, LOAD_DTYPES, Format, parse_format, parse_load_dtype
from qcli.plan.gpus import Device, resolve_gpu
from qcli.plan.limits import MAX_BATCH, MAX_CONTEXT, MAX_GPUS, MAX_LORA_RANK, check_int
from qcli.plan.planner import (
    DEFAULT_CUDA_CONTEXT_BYTES,
    DEFAULT_MARGIN_FRACTION,
    PlanRequest,
    build_plan,
    check_request,
    max_context,
    weight_layout,
)
from qcli.plan.presets import Preset, load_preset
from qcli.plan.recommend import recommend
from qcli.plan.training import DEFAULT_TRAIN_SEQUENCE, TrainingRequest
from qcli.results import EstimateReport, ModelInfo, Plan
from qcli.units import parse_bytes, parse_params

PARAMS_NOTE = (
    "bare --params: every parameter is taken as one quantized tensor; real models keep "
    "embeddings, lm_head and norms unquantized — use a MODEL for the exact split"
)
# A checkpoint that names no dtype, or an exotic one, is planned in bf16 (what `qcli load` passes then).
FALLBACK_LOAD_DTYPE = "bfloat16"


@dataclass
class EstimateOptions:
    """Everything `qcli estimate` takes; the defaults here are the only ones (flags left unset are None)."""

    params: str | None = None
    model: str | None = None
    bits: str | None = None
    double_quant: bool = False
    preset: str | None = None
    sets: list[str] = field(default_factory=list)
    dtype: str | None = None
    gpus: list[str] = field(default_factory=list)
    gpu_count: int | None = None
    context: int | None = None
    batch: int = 1
    kv_dtype: str | None = None
    train: str | None = None
    lora_rank: int = 16
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"])
    optimizer: str = "adamw"
    grad_checkpointing: bool = False
    cuda_context: str | None = None
    margin: float = DEFAULT_MARGIN_FRACTION
    revision: str | None = None

    @classmethod
    def from_cli(cls, **given: Any) -> EstimateOptions:
        """Return options from the CLI's keyword arguments: None means "not given" and keeps the default."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in given.items() if k in names and v is not None})


def default_load_dtype(spec: ModelSpec) -> str:
    """Return the dtype unquantized tensors load in when none is asked for: the checkpoint's own."""
    return spec.config_dtype if spec.config_dtype in LOAD_DTYPES else FALLBACK_LOAD_DTYPE


def preset_plan(spec: ModelSpec, preset: Preset, dtype: str | None = None) -> Plan:
    """Return the weights-only plan of a model loaded with a preset (what `qcli load` builds).

    `dtype` overrides the preset's dtype, as `qcli load --dtype` does.
    """
    fmt, load_dtype = preset.weight_format(dtype), dtype or preset.dtype
    req = PlanRequest(fmt=fmt, load_dtype=load_dtype, preset=preset.name, skip_modules=preset.skip_modules)
    return build_plan(spec, req)


def describe(model: str, revision: str | None = None) -> tuple[ModelSource, ModelSpec]:
    """Return the model's source and description: resolved once, described once."""
    source = resolve(model, revision)
    return source, from_config(source.config)


def _devices(opts: EstimateOptions) -> list[Device]:
    devices = [resolve_gpu(g) for g in opts.gpus]
    if opts.gpu_count is not None:
        if opts.gpu_count < 1:
            raise UsageError("--gpus must be at least 1")
        if len(devices) != 1:
            raise UsageError("--gpus N needs exactly one --gpu to repeat", "e.g. --gpu A100-80GB --gpus 2")
        devices = [devices[0].model_copy(update={"name": f"{devices[0].name} #{i}"}) for i in range(opts.gpu_count)]
    return devices


def _training(opts: EstimateOptions, mode: str | None = None) -> TrainingRequest | None:
    mode = mode or opts.train
    if mode is None:
        return None
    if mode not in {"full", "lora", "qlora"}:
        raise UsageError(f"--train {mode!r} is not a training mode", "use full, lora or qlora")
    return TrainingRequest(
        mode=mode,  # type: ignore[arg-type]
        optimizer=opts.optimizer,
        lora_rank=opts.lora_rank,
        lora_targets=opts.lora_targets,
        gradient_checkpointing=opts.grad_checkpointing,
        sequence_length=opts.context or DEFAULT_TRAIN_SEQUENCE,
        batch=opts.batch,
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
    if source.quantization_config:
        method = source.quantization_config.get("quant_method", "unknown")
        stored = sum(source.stored_bytes.values())
        notes.append(
            f"pre-quantized checkpoint ({method}): its stored size is "
            + (f"{stored:,} bytes (safetensors)" if stored else "unknown (no safetensors metadata)")
            + "; the plan below sizes it from the config"
        )
    return notes


def _check_flags(opts: EstimateOptions) -> None:
    if opts.params is None and opts.model is None:
        raise UsageError("give a MODEL (a directory, config.json, hub id or demo) or --params (e.g. --params 8b)")
    if opts.params is not None and opts.model is not None:
        raise UsageError("give either a MODEL or --params, not both")
    if opts.preset and opts.bits:
        raise UsageError("give either --preset or --bits, not both")
    if opts.double_quant and not opts.bits:
        raise UsageError("--double-quant goes with --bits 4 (or use --preset qlora)")
    if opts.sets and not opts.preset:
        raise UsageError("--set overrides a preset's fields: give --preset too")
    if opts.model is None and (opts.context or opts.train):
        raise UsageError("--context and --train need layer shapes: give a MODEL instead of --params")
    check_int("--gpus", opts.gpu_count, 1, MAX_GPUS)
    check_int("--context", opts.context, 1, MAX_CONTEXT)
    check_int("--batch", opts.batch, 1, MAX_BATCH)
    check_int("--lora-rank", opts.lora_rank, 1, MAX_LORA_RANK)


def run_estimate(opts: EstimateOptions) -> EstimateReport:
    """Return the estimate report for the options of `qcli estimate`."""
    _check_flags(opts)
    devices = _devices(opts)
    preset: Preset | None = load_preset(opts.preset, opts.sets) if opts.preset else None
    fmt: Format | None = parse_format(opts.bits, opts.double_quant) if opts.bits else None
    dtype_flag = parse_load_dtype(opts.dtype, "--dtype")
    kv_dtype = parse_load_dtype(opts.kv_dtype, "--kv-dtype")
    cuda_context = parse_bytes(opts.cuda_context, "--cuda-context") if opts.cuda_context else None
    if opts.model is None:
        source, spec = None, params_only(parse_params(opts.params or ""))
        notes = [PARAMS_NOTE]
    else:
        source, spec = describe(opts.model, opts.revision)
        notes = _model_notes(source, spec)
    if preset is None and fmt is None and opts.train == "qlora":
        preset = load_preset("qlora")

    def request(f: Format, load: str, name: str | None, skip: list[str] | None, mode: str | None) -> PlanRequest:
        req = PlanRequest(
            fmt=f,
            load_dtype=load,
            preset=name,
            skip_modules=skip,
            training=_training(opts, mode),
            batch=opts.batch,
            context=opts.context,
            devices=devices,
            cuda_context_bytes=cuda_context if cuda_context is not None else DEFAULT_CUDA_CONTEXT_BYTES,
            cuda_context_given=cuda_context is not None,
            margin_fraction=opts.margin,
            kv_dtype=kv_dtype,
        )
        check_request(req)
        return req

    model_dtype = dtype_flag or (default_load_dtype(spec) if opts.model else "float16")
    report = EstimateReport(
        model=ModelInfo(
            name=opts.model,
            model_type=None if opts.model is None else spec.model_type,
            count_method=spec.source,
            total_params=spec.params,
            params_by_group=None if opts.model is None else spec.groups(),
            context_limit_tokens=spec.max_position_embeddings,
            stored_bytes_by_dtype=(source.stored_bytes or None) if source else None,
        ),
        context_tokens=opts.context,
        batch_size=opts.batch,
        plans=[],
        notes=notes,
    )
    if preset is None and fmt is None:
        for f in COMPARISON_FORMATS:
            load = f.dtype if f.kind == "dense" else model_dtype
            report.plans.append(build_plan(spec, request(f, load or model_dtype, None, None, opts.train)))
        return report

    if preset is not None:
        f, load = preset.weight_format(dtype_flag), dtype_flag or preset.dtype
        name, skip = preset.name, preset.skip_modules
    else:
        assert fmt is not None
        f, load, name, skip = fmt, (fmt.dtype if fmt.kind == "dense" else None) or model_dtype, None, None
    req = request(f, load, name, skip, opts.train)
    layout = weight_layout(spec, f, load, skip)
    plan = build_plan(spec, req, layout)
    report.plans.append(plan)
    if devices and opts.model is not None:
        plan.max_context_tokens = max_context(spec, req, layout)
        bf16_ok = all(d.bf16 for d in devices) if all(d.bf16 is not None for d in devices) else None

        def fits(preset_name: str, mode: str | None) -> Plan:
            p = load_preset(preset_name)
            return build_plan(spec, request(p.weight_format(), p.dtype, preset_name, p.skip_modules, mode))

        report.recommendation = recommend(spec.params, opts.train, bf16_ok, fits)
        if preset is not None and preset.compute_dtype == "bfloat16" and bf16_ok is False:
            report.notes.append(
                f"preset {preset.name} computes in bf16, which this GPU lacks: use nf4-fp16 "
                "or --set quantization.bnb_4bit_compute_dtype=float16"
            )
    return report
