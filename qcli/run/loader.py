"""Loading a model with a preset: device choice, placement through accelerate's device maps,
the load itself, measurement and an optional greedy generation. Imports torch lazily."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcli.errors import QcliError, RunError, UsageError
from qcli.model.config_schema import validate_config
from qcli.model.demo import DEMO_NAME, DEMO_PROMPT
from qcli.model.describe import from_config
from qcli.model.meta import UnknownModelType
from qcli.model.resolve import ModelSource, resolve
from qcli.model.spec import ModelSpec
from qcli.options import FromCli
from qcli.plan.estimate import preset_plan
from qcli.plan.formats import parse_load_dtype
from qcli.plan.planner import quantized_tensors, should_convert
from qcli.plan.prequantized import checked_format, prequant_of
from qcli.plan.presets import Preset, load_preset
from qcli.plan.storages import cuda_prediction
from qcli.results.plan import CudaPrediction, Plan
from qcli.results.run import MEASURED_AT, Generation, LoadReport
from qcli.run.checkpoint import (
    check_causal_lm,
    check_generation_config,
    check_loaded_weights,
    check_prequantized_state,
    check_remote_code,
    check_token_ids,
    check_tokenizer_fits,
    check_weight_dtypes,
    load_tokenizer,
    missing_file,
    non_finite_error,
    unreadable_weights,
)
from qcli.run.demo import ensure_demo
from qcli.run.flags import (
    check_device_map,
    check_new_tokens,
    check_prompt,
    check_weights_present,
    parse_max_memory,
    resolve_device,
)
from qcli.run.kernels import cpu_4bit_misfits, failure_text
from qcli.run.measure import (
    applied_quantization,
    census,
    cuda_memory,
    override_of,
    reset_cuda_peaks,
    rss_bytes,
    tensor_memory,
)

DEFAULT_PRESET = "qlora"
DEFAULT_MAX_NEW_TOKENS = 16
DEFAULT_PROMPT = DEMO_PROMPT  # what verify and compare prompt with when not told


@dataclass
class LoadOptions(FromCli):
    """Everything a load takes; the defaults here are the only ones (flags left unset are None)."""

    model: str
    preset: str = DEFAULT_PRESET
    sets: list[str] = field(default_factory=list)
    device: str = "auto"
    device_map: str | None = None
    max_memory: str | None = None
    dtype: str | None = None
    revision: str | None = None
    token: str | None = field(default=None, repr=False)  # a hub token: never printed
    trust_remote_code: bool = False
    prompt: str | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    progress: bool = False
    offload_dir: str | None = None  # accelerate's offload_folder; a private temp dir when not given


@dataclass
class Prepared:
    """A model resolved once and described once, with the preset and dtype the load will use."""

    source: ModelSource
    spec: ModelSpec | None  # None when qcli cannot describe the architecture
    preset: Preset
    dtype: str
    plan: Plan | None  # the estimate for exactly this load (same spec, preset and dtype)
    quantizable: list[str]  # weight tensors bitsandbytes will quantize, by the same rules as the plan
    prequantized: bool = False  # a bitsandbytes checkpoint: loads as stored, with its own quantization_config
    tokenizer: Any = None  # loaded up front by require_tokenizer when the run needs one; load() reuses it
    # why qcli could not describe it (the meta-device build failed): when from_pretrained fails too, the config
    # is what transformers cannot build, and this is the error the user sees (exit 2)
    describe_error: UsageError | None = None


def prepare(opts: LoadOptions) -> Prepared:
    """Return the resolved model, its description, the preset and the matching estimate; no torch."""
    check_device_map(opts.device_map)
    parse_max_memory(opts.max_memory, opts.device_map)
    check_prompt(opts.prompt)
    check_new_tokens(opts.max_new_tokens)
    if opts.device not in ("auto", "cpu"):
        resolve_device(opts.device)  # a missing GPU is bad input before the model is built or read
    preset = load_preset(opts.preset, opts.sets)
    dtype = parse_load_dtype(opts.dtype) or preset.dtype
    source = resolve(opts.model, opts.revision, token=opts.token)  # bad input: exit 2 now
    if source.local_dir is not None and Path(opts.model).is_file():
        raise UsageError(f"{opts.model}: load needs the model directory, not its config.json")
    pre = prequant_of(source.quantization_config, opts.model)
    if pre is not None and pre.quantization is None:
        raise UsageError(
            f"{opts.model} is a pre-quantized {pre.method} checkpoint: qcli loads bitsandbytes ones only",
            f"`qcli estimate {opts.model}` still reports its stored bytes",
        )
    check_weights_present(source)
    check_remote_code(source.local_dir, source.config, opts.trust_remote_code)
    check_causal_lm(opts.model, source.config, opts.trust_remote_code)
    validate_config(source.config)  # a config qcli cannot read is bad input, not "no estimate"
    check_token_ids(opts.model, source.config)
    check_generation_config(opts.model, source.local_dir)
    check_weight_dtypes(opts.model, source, opts.token)
    check_prequantized_state(opts.model, source)
    spec: ModelSpec | None
    describe_error: UsageError | None = None
    try:
        spec = from_config(source.config, trust_remote_code=opts.trust_remote_code, code_dir=source.local_dir)
    except UnknownModelType:
        if not opts.trust_remote_code:
            raise  # transformers cannot build it either
        spec = None
    except UsageError as exc:
        spec, describe_error = None, exc
    if opts.prompt is not None:
        check_new_tokens(opts.max_new_tokens, spec)
    plan, quantizable = None, []
    if spec is not None:
        plan = preset_plan(spec, preset, dtype, pre)
        fmt, skip = preset.weight_format(), preset.skip_modules
        if pre is not None:
            fmt, _ = checked_format(pre, fmt, f"preset {preset.name}")
            skip = pre.skip_modules
        if fmt.kind != "dense":
            quantizable = sorted(quantized_tensors(spec, fmt, skip))
            if pre is None:
                check_skip_modules(opts.model, preset, spec)
    prepared = Prepared(
        source, spec, preset, dtype, plan, quantizable, prequantized=pre is not None, describe_error=describe_error
    )
    if opts.prompt is not None:
        require_tokenizer(opts, prepared)  # before the load: a missing or damaged tokenizer is bad input now
    return prepared


def check_skip_modules(model: str, preset: Preset, spec: ModelSpec) -> None:
    """Raise a UsageError when an llm_int8_skip_modules entry of the preset matches no module of the model (by
    transformers' own rule, should_convert): the list REPLACES transformers' default one, so a misspelt entry
    keeps nothing unquantized it meant to, and quantizes lm_head besides."""
    modules = set()
    for t in spec.tensors:
        parts = t.module.split(".")
        modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    for entry in preset.skip_modules or []:
        if all(should_convert(m, [entry]) for m in modules):
            heads = sorted({t.module for t in spec.tensors if t.role == "lm_head"}) or ["lm_head"]
            raise UsageError(
                f"preset {preset.name}: llm_int8_skip_modules entry {entry!r} matches no module of {model}",
                f"name modules the model has (e.g. {heads[0]}); the list replaces transformers' default, so list "
                f"{heads[0]} too to keep it unquantized",
            )


def require_tokenizer(opts: LoadOptions, prepared: Prepared) -> None:
    """Load the model's tokenizer into `prepared` (once); UsageError naming the problem when there is none.
    The demo's is built with it."""
    source = prepared.source
    if prepared.tokenizer is not None or source.name == DEMO_NAME:
        return
    tokenizer = _tokenizer(opts, prepared, model_path(source))
    check_tokenizer_fits(opts.model, tokenizer, source.config)
    prepared.tokenizer = tokenizer


def _tokenizer(opts: LoadOptions, prepared: Prepared, path: str) -> Any:
    source = prepared.source
    revision = source.commit_sha or opts.revision
    return load_tokenizer(path, opts.model, source.local_dir, revision, opts.token, opts.trust_remote_code)


@dataclass
class Loaded:
    """A loaded model and what it took to load it."""

    model: Any
    tokenizer: Any
    path: str
    device: str
    preset: Preset
    load_seconds: float
    notes: list[str] = field(default_factory=list)
    offload_dir: Any = None  # a TemporaryDirectory kept alive as long as the model (disk-offloaded weights)
    tokenizer_problem: str | None = None  # why `tokenizer` is None
    weight_problem: UsageError | None = None  # weights holding NaN or inf (non_finite_error)


def quiet_libraries(progress: bool = False) -> None:
    """Silence library chatter that is not ours: bnb's optional-kernel notice, int8 cast warnings."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    warnings.filterwarnings("ignore", message=".*inputs will be cast.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if not progress:
            hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def model_path(source: ModelSource) -> str:
    """Return the local path or hub id to load; `demo` is built on first use."""
    if source.name == DEMO_NAME:
        return str(ensure_demo())
    if source.local_dir is not None:
        return str(source.local_dir)
    return source.repo_id or source.name


def _error_for(exc: BaseException, opts: LoadOptions, directory: Path | None) -> QcliError:
    """Return the error to raise for an exception of from_pretrained: a damaged or incomplete checkpoint is bad
    input naming the file, an out-of-memory or a bitsandbytes set-up failure says so, the rest is a run error."""
    bad = unreadable_weights(exc, opts.model, directory) or missing_file(exc, opts.model)
    if bad is not None:
        return bad
    text = f"{type(exc).__name__}: {exc}"
    if "dispatched on the CPU or the disk" in text:  # transformers' bnb quantizer refuses to offload quantized modules
        placed = f"--device-map {opts.device_map} placed" if opts.device_map else "accelerate placed"
        within = f" within --max-memory {opts.max_memory}" if opts.max_memory else ""
        return UsageError(
            f"{placed} part of {opts.model} on the CPU or disk{within}, and preset {opts.preset} quantizes with "
            "bitsandbytes, which cannot offload quantized modules",
            "give --max-memory more room, or offload with an unquantized preset such as bf16",
        )
    if "OutOfMemory" in type(exc).__name__ or "out of memory" in str(exc).lower():
        hint = (
            f"`qcli estimate --model {opts.model} --preset {opts.preset}` shows what it needs; try a smaller "
            "preset (int8, qlora) or --max-memory to offload"
        )
        return RunError(f"out of memory while loading {opts.model} with preset {opts.preset}", hint)
    if "libbitsandbytes" in text or "CUDA Setup failed" in text or ("bitsandbytes" in text and "CUDA" in text):
        return RunError(
            f"bitsandbytes cannot find its CUDA library ({str(exc).splitlines()[0][:200]})",
            "install a bitsandbytes wheel built for your CUDA version, or use --device cpu",
        )
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return RunError(
        f"loading {opts.model} failed: {type(exc).__name__}: {first}",
        "is the checkpoint complete? re-download it, or run with --debug",
    )


def load(opts: LoadOptions, prepared: Prepared) -> Loaded:
    """Return the model loaded with the prepared preset and dtype on the chosen device."""
    preset = prepared.preset
    max_memory = parse_max_memory(opts.max_memory, opts.device_map)
    path = model_path(prepared.source)
    quiet_libraries(opts.progress)
    import torch
    from transformers import AutoModelForCausalLM

    device = resolve_device(opts.device)
    notes = []
    if device == "cpu":
        notes.append("no CUDA: loaded on the CPU (bitsandbytes quantizes there too); CUDA figures are absent")
    offload_dir: Any = None
    if opts.device_map:
        device_map: Any = opts.device_map
    else:
        device_map = {"": device}
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, prepared.dtype),
        "device_map": device_map,
        # The commit the estimate was made for, so that both describe the same files.
        "revision": prepared.source.commit_sha or opts.revision,
        "token": opts.token,
        "trust_remote_code": opts.trust_remote_code,
        # transformers' own report of missing, unexpected and mismatched weights, checked below; mismatched
        # sizes are reported by qcli (exit 2 naming them) rather than raised mid-load with no names.
        "output_loading_info": True,
        "ignore_mismatched_sizes": True,
    }
    # A pre-quantized checkpoint's own quantization_config is the one transformers uses: pass none.
    bnb = None if prepared.prequantized else preset.to_bnb_config()
    if bnb is not None:
        kwargs["quantization_config"] = bnb
    if max_memory:
        kwargs["max_memory"] = max_memory
    if opts.device_map:
        # accelerate writes disk-offloaded weights here; without a folder a map that spills to disk fails.
        if opts.offload_dir:
            kwargs["offload_folder"] = opts.offload_dir
        else:
            offload_dir = tempfile.TemporaryDirectory(prefix="qcli-offload-")
            kwargs["offload_folder"] = offload_dir.name
    reset_cuda_peaks()
    start = time.perf_counter()
    try:
        model, loading_info = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (UsageError, RunError):
        raise
    except Exception as exc:
        error = _error_for(exc, opts, prepared.source.local_dir)
        if isinstance(error, RunError) and prepared.describe_error is not None:
            raise prepared.describe_error from exc  # the meta build failed the same way: the config is at fault
        raise error from exc
    check_loaded_weights(opts.model, model, loading_info, prepared.prequantized)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    tokenizer, tokenizer_problem = prepared.tokenizer, None
    if tokenizer is None:  # not needed up front (load without --prompt): its absence is only noted
        try:
            tokenizer = _tokenizer(opts, prepared, path)
        except UsageError as exc:
            tokenizer_problem = exc.message
    return Loaded(
        model=model,
        tokenizer=tokenizer,
        tokenizer_problem=tokenizer_problem,
        path=path,
        device=device,
        preset=preset,
        load_seconds=seconds,
        notes=notes,
        offload_dir=offload_dir,
    )


def generate(loaded: Loaded, prompt: str, max_new_tokens: int) -> Generation:
    """Return a greedy continuation of the prompt."""
    import torch

    if loaded.tokenizer is None:
        raise UsageError(loaded.tokenizer_problem or f"{loaded.path}: no tokenizer")
    inputs = loaded.tokenizer(prompt, return_tensors="pt").to(loaded.device)
    start = time.perf_counter()
    with torch.no_grad():
        out = loaded.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id,
        )
    seconds = time.perf_counter() - start
    new = out[0][inputs["input_ids"].shape[1] :]
    text = loaded.tokenizer.decode(new, skip_special_tokens=True)
    return Generation(prompt=prompt, text=text, new_tokens=int(new.numel()), generate_seconds=round(seconds, 4))


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "accelerate", "bitsandbytes"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _cuda_prediction(prepared: Prepared, device: str) -> CudaPrediction | None:
    """Return qcli's prediction of this load's torch.cuda counters (one GPU, a process that loaded nothing before)."""
    import torch

    assert prepared.spec is not None
    total = torch.cuda.mem_get_info(torch.device(device))[1]
    preset = prepared.preset
    return cuda_prediction(
        prepared.spec, preset.weight_format(prepared.dtype), prepared.dtype, preset.skip_modules, total
    )


CPU_FIRST_FORWARD_NOTE = (
    "on the CPU backend bitsandbytes rewrites a module's quantization state on its first forward pass "
    "(nf4/fp4 absmax fp32 -> bf16, double quantization undone, int8 row scales moved), so figures read "
    "after a forward differ"
)


def load_report(
    opts: LoadOptions, prepared: Prepared | None = None, keep_non_finite: bool = False
) -> tuple[LoadReport, Loaded]:
    """Return the load report (and the loaded model): what the loaded modules hold, read back from them
    after the load and before any forward pass. Weights holding NaN or inf are a UsageError naming the first
    one, unless `keep_non_finite` (verify, which reports them as a failed check): then they are a note."""
    prepared = prepared or prepare(opts)
    loaded = load(opts, prepared)
    model = loaded.model
    memory = tensor_memory(model)  # before any forward: see CPU_FIRST_FORWARD_NOTE
    model_census = census(model, prepared.quantizable)
    footprint = int(model.get_memory_footprint())
    estimate = prepared.plan.weight_bytes if prepared.plan else None
    preset = prepared.preset
    checkpoint_q = prepared.source.quantization_config
    overridden = override_of(preset.bnb_kwargs(), checkpoint_q)
    offloaded = memory.by_device.get("disk", 0)
    if loaded.device.startswith("cuda"):
        offloaded += memory.by_device.get("cpu", 0)
    error = None
    if estimate is not None and memory.total_bytes > 0:
        error = round((estimate - memory.total_bytes) / memory.total_bytes * 100, 4)
    report = LoadReport(
        model=opts.model,
        preset=preset.name,
        device=loaded.device,
        dtype=prepared.dtype,
        quantization=applied_quantization(model),
        preset_quantization=preset.bnb_kwargs(),
        checkpoint_quantization=checkpoint_q,
        preset_overridden=bool(overridden),
        memory_bytes=memory.total_bytes,
        memory_bytes_by_device=memory.by_device,
        offloaded_bytes=offloaded,
        memory_bytes_by_kind=memory.by_kind,
        footprint_bytes=footprint,
        estimate_bytes=estimate,
        estimate_error_percent=error,
        measured_at=MEASURED_AT,
        load_seconds=round(loaded.load_seconds, 4),
        cuda=cuda_memory(),
        rss_bytes=rss_bytes(),
        census=model_census,
        versions=versions(),
        notes=[],
    )
    # Read after the figures above, so that the scan's temporaries show in no CUDA reserved or peak figure.
    loaded.weight_problem = non_finite_error(opts.model, model, prepared.source.local_dir, prepared.dtype)
    if loaded.weight_problem is not None and not keep_non_finite:
        raise loaded.weight_problem
    if overridden:
        change = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in overridden.items())
        report.notes.append(
            f"THE CHECKPOINT'S OWN quantization_config OVERRODE PRESET {preset.name}: {change} "
            "(transformers keeps a pre-quantized checkpoint's quantization; the estimate follows the preset)"
        )
    report.notes += loaded.notes
    if loaded.weight_problem is not None:
        report.notes.append(f"WEIGHTS HOLD NaN OR inf: {loaded.weight_problem.message}")
    if prepared.spec is None:
        report.notes.append("qcli cannot describe this architecture: no estimate to compare with")
    elif report.cuda and loaded.device.startswith("cuda") and not opts.device_map:
        report.cuda_prediction = _cuda_prediction(prepared, loaded.device)
    if offloaded:
        places = ", ".join(f"{d} {n:,} B" for d, n in memory.by_device.items() if d in ("cpu", "disk"))
        report.notes.append(
            f"{len(model_census.offloaded)} module(s) offloaded ({places}): slow, and accelerate keeps offloaded "
            "modules' weights unquantized"
        )
    if memory.meta_tensors:
        report.notes.append(f"{memory.meta_tensors} tensor(s) left on the meta device: never loaded")
    report.notes.append(f"figures taken {MEASURED_AT}")
    if loaded.device == "cpu" and (model_census.linear4bit or model_census.linear8bit):
        report.notes.append(CPU_FIRST_FORWARD_NOTE)
        misfits = cpu_4bit_misfits(loaded.model)
        if misfits:
            report.notes.append(f"a forward pass on this CPU will fail: {failure_text(None, loaded.model)}")
    if opts.prompt:
        try:
            report.generation = generate(loaded, opts.prompt, opts.max_new_tokens)
        except (RunError, UsageError):
            raise
        except Exception as exc:
            hint = "`qcli verify` reports each step"
            if offloaded:
                hint = f"offloaded bitsandbytes modules cannot always run on the CPU; {hint}"
            raise RunError(
                f"{opts.model} loaded, but generating from --prompt failed: {failure_text(exc, loaded.model)}", hint
            ) from exc
    return report, loaded
