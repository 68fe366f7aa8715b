"""`qcli estimate`: turns the command's options into plans. No torch import on this path
(the meta-device fallback for unknown architectures imports transformers lazily)."""

from __future__ import annotations

from dataclasses import dataclass, field

from qcli.errors import UsageError
from qcli.formats import COMPARISON_FORMATS, Format, normalize_dtype, parse_format
from qcli.gpus import Device, resolve_gpu
from qcli.modelspec import ModelSpec, from_config, params_only
from qcli.planner import (
    DEFAULT_CUDA_CONTEXT_BYTES,
    DEFAULT_MARGIN_FRACTION,
    PlanRequest,
    build_plan,
    check_request,
    max_context,
    weight_layout,
)
from qcli.presets import Preset, load_preset
from qcli.recommend import recommend
from qcli.report import EstimateReport, Plan
from qcli.training import DEFAULT_TRAIN_SEQUENCE, TrainingRequest
from qcli.units import parse_bytes, parse_params

PARAMS_NOTE = (
    "bare --params: every parameter is taken as one quantized tensor; real models keep "
    "embeddings, lm_head and norms unquantized — use --model for the exact split"
)


@dataclass
class EstimateOptions:
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


def _devices(opts: EstimateOptions) -> list[Device]:
    devices = [resolve_gpu(g) for g in opts.gpus]
    if opts.gpu_count is not None:
        if opts.gpu_count < 1:
            raise UsageError("--gpus must be at least 1")
        if len(devices) != 1:
            raise UsageError("--gpus N needs exactly one --gpu to repeat", "e.g. --gpu A100-80GB --gpus 2")
        devices = [devices[0].model_copy(update={"name": f"{devices[0].name} #{i}"}) for i in range(opts.gpu_count)]
    return devices


def _dtype_or_none(name: str | None, flag: str) -> str | None:
    if name is None:
        return None
    dtype = normalize_dtype(name)
    if dtype not in {"float32", "float16", "bfloat16"}:
        raise UsageError(f"{flag} {name!r} is not a load dtype", "use float32, float16 or bfloat16")
    return dtype


def _base_request(opts: EstimateOptions, devices: list[Device]) -> dict:
    cuda_context = parse_bytes(opts.cuda_context, "--cuda-context") if opts.cuda_context else DEFAULT_CUDA_CONTEXT_BYTES
    return {
        "batch": opts.batch,
        "context": opts.context,
        "devices": devices,
        "cuda_context_bytes": cuda_context,
        "margin_fraction": opts.margin,
        "kv_dtype": _dtype_or_none(opts.kv_dtype, "--kv-dtype"),
    }


def _training(opts: EstimateOptions, mode: str | None = None) -> TrainingRequest | None:
    mode = mode or opts.train
    if mode is None:
        return None
    if mode not in {"full", "lora", "qlora"}:
        raise UsageError(f"--train {mode!r} is not a training mode", "use full, lora or qlora")
    return TrainingRequest(
        mode=mode,
        optimizer=opts.optimizer,
        lora_rank=opts.lora_rank,  # type: ignore[arg-type]
        lora_targets=opts.lora_targets,
        gradient_checkpointing=opts.grad_checkpointing,
        sequence_length=opts.context or DEFAULT_TRAIN_SEQUENCE,
        batch=opts.batch,
    )


def _config_load_dtype(spec: ModelSpec) -> str:
    dtype = spec.config_dtype
    return dtype if dtype in {"float32", "float16", "bfloat16"} else "bfloat16"


def run_estimate(opts: EstimateOptions) -> EstimateReport:
    """Return the estimate report for the options of `qcli estimate`."""
    if opts.params is None and opts.model is None:
        raise UsageError("give --params (e.g. --params 8b) or --model (a directory, config.json or hub id)")
    if opts.params is not None and opts.model is not None:
        raise UsageError("give either --params or --model, not both")
    if opts.preset and opts.bits:
        raise UsageError("give either --preset or --bits, not both")
    if opts.double_quant and not opts.bits:
        raise UsageError("--double-quant goes with --bits 4 (or use --preset qlora)")
    devices = _devices(opts)
    base = _base_request(opts, devices)
    preset: Preset | None = load_preset(opts.preset, opts.sets) if opts.preset else None
    if opts.sets and not preset:
        raise UsageError("--set overrides a preset's fields: give --preset too")
    fmt: Format | None = parse_format(opts.bits, opts.double_quant) if opts.bits else None
    dtype_flag = _dtype_or_none(opts.dtype, "--dtype")
    notes: list[str] = []
    source = None
    if opts.model is None:
        spec = params_only(parse_params(opts.params or ""))
        if opts.context or opts.train:
            raise UsageError("--context and --train need layer shapes: use --model instead of --params")
        notes.append(PARAMS_NOTE)
    else:
        from qcli.hub import resolve

        source = resolve(opts.model, opts.revision)
        spec = from_config(source.config)
        notes.extend(spec.notes)
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

    train_mode = opts.train
    if preset is None and fmt is None and train_mode == "qlora":
        preset = load_preset("qlora")

    def request(
        f: Format, load: str, label: str, skip: list[str] | None = None, mode: str | None = None
    ) -> PlanRequest:
        req = PlanRequest(
            fmt=f, load_dtype=load, label=label, skip_modules=skip, training=_training(opts, mode), **base
        )
        check_request(req)
        return req

    report = EstimateReport(
        source="params" if opts.model is None else "model",
        model=opts.model,
        model_type=None if opts.model is None else spec.model_type,
        count_method=None if opts.model is None else spec.source,
        params=spec.params,
        groups=None if opts.model is None else spec.groups(),
        context=opts.context,
        batch=opts.batch if opts.context else None,
        notes=notes,
        stored=(source.stored_bytes or None) if source else None,
    )

    if preset is None and fmt is None:
        load = dtype_flag or (_config_load_dtype(spec) if opts.model else "float16")
        plans = []
        for f in COMPARISON_FORMATS:
            dense_load = f.dtype if f.kind == "dense" else load
            plans.append(build_plan(spec, request(f, dense_load or load, f.label)))
        report.plans = plans
        report.load_dtype = load
        return report

    if preset is not None:
        f, load, label, skip = preset.weight_format(), dtype_flag or preset.dtype, preset.name, preset.skip_modules
        report.preset = preset.name
    else:
        assert fmt is not None
        load = (
            (fmt.dtype if fmt.kind == "dense" else None)
            or dtype_flag
            or (_config_load_dtype(spec) if opts.model else "float16")
        )
        f, label, skip = fmt, fmt.label, None
    req = request(f, load, label, skip)
    layout = weight_layout(spec, f, load, skip)
    plan = build_plan(spec, req, layout)
    _flatten(report, plan)
    report.load_dtype = load
    if devices and opts.model is not None:
        report.max_context = max_context(spec, req, layout)
        bf16_ok = all(d.bf16 for d in devices) if all(d.bf16 is not None for d in devices) else None

        def fits(name: str, mode: str | None) -> Plan:
            p = load_preset(name)
            return build_plan(spec, request(p.weight_format(), p.dtype, name, p.skip_modules, mode))

        report.recommendation = recommend(spec.params, train_mode, bf16_ok, fits)
        if preset is not None and preset.compute_dtype == "bfloat16" and bf16_ok is False:
            report.notes.append(
                f"preset {preset.name} computes in bf16, which this GPU lacks: use nf4-fp16 "
                "or --set quantization.bnb_4bit_compute_dtype=float16"
            )
    return report


def _flatten(report: EstimateReport, plan: Plan) -> None:
    for key in (
        "format",
        "label",
        "bits_per_param",
        "weight_bytes",
        "total_bytes",
        "components",
        "kv_cache_bytes",
        "training",
        "overheads",
        "overhead_bytes",
        "required_bytes",
        "fits",
        "offloaded_bytes",
    ):
        setattr(report, key, getattr(plan, key))
    report.devices = plan.devices or None
