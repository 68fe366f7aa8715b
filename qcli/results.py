"""Pydantic result models: what each command returns and what `--json` prints, as is.

The JSON contract: every top-level object carries `schema_version`, `qcli_version` and `command`;
every numeric field names its unit (`_bytes`, `_params`, `_tokens`, `_seconds`, `_percent`); memory
components carry a stable machine `kind`. Human labels are built in qcli.output, never stored here.

No `from __future__ import annotations` here: pydantic would evaluate every field's annotation from its
string when the class is created, about a third of this module's import time, which every command pays.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qcli import __version__

SCHEMA_VERSION = 2

ComponentKind = Literal[
    "weights",  # dense tensors (a `group` says which: quantized_linear, embeddings, lm_head, …)
    "quant_packed_weights",  # 4-bit packed uint8 data
    "quant_absmax",  # 4-bit absmax per 64-block (fp32, or uint8 with double quant)
    "quant_nested_absmax",  # double quant: fp32 absmax of the absmax, per 256
    "quant_nested_code",  # double quant: 256-entry fp32 map + fp32 offset, per tensor
    "quant_code",  # the 16-entry fp32 NF4/FP4 code, per tensor
    "int8_weights",
    "int8_row_scales",  # LLM.int8 SCB: one fp32 per output row
    "kv_cache",
    "lora_adapters",
    "lora_gradients",
    "gradients",
    "gradients_fp32",  # DeepSpeed's fp32 gradient partition (mixed precision with master weights)
    "master_weights",  # fp32 copy of 16-bit trainable weights (mixed precision)
    "ddp_buckets",  # DDP's all-reduce buckets: a copy of the gradients unless gradient_as_bucket_view
    "gathered_params",  # ZeRO-3 / FSDP FULL_SHARD: the largest layer gathered whole for compute
    "optimizer_state",
    "activations",
    "logits",
    "cuda_context",
    "allocator_margin",
]


class Model(BaseModel):
    """The base of every result: pydantic builds a model's validator on first use, not at import
    (`defer_build`), so `qcli estimate` does not pay for the load, verify and compare models (docs/bench.md)."""

    model_config = ConfigDict(defer_build=True)


class Result(Model):
    """The fields every `--json` object starts with."""

    schema_version: int = SCHEMA_VERSION
    qcli_version: str = __version__


class Component(Model):
    """One line of a memory breakdown: a machine kind, the tensors it covers, and its exact bytes."""

    kind: ComponentKind
    group: str | None = Field(
        default=None,
        description="which tensors: quantized_linear, linear_unquantized, embeddings, lm_head, moe_experts, "
        "moe_routers, norms_biases_other, buffers (weights); trainable (training)",
    )
    dtype: str | None = None
    format: str | None = Field(default=None, description="storage format key for quantized parts: nf4+dq, int8, …")
    size_bytes: int
    num_params: int | None = Field(default=None, description="elements covered, where that applies")
    context_tokens: int | None = None
    batch_size: int | None = None
    source: str | None = Field(default=None, description="where a figure comes from: default, measured, formula")
    formula: str | None = Field(default=None, description="the arithmetic behind the bytes, in words")
    device: Literal["gpu", "cpu"] = Field(default="gpu", description="cpu: offloaded, not on the GPU")


class DeviceFit(Model):
    """How much of a plan one device (or one offload target) holds, and whether it fits."""

    name: str
    kind: Literal["gpu", "cpu", "disk"] = "gpu"
    role: Literal["compute", "offload", "host"] = Field(
        default="compute",
        description="compute: a GPU; offload: what accelerate's device map would move off the GPUs "
        "(the plan does not fit the GPUs); host: CPU memory a strategy uses on purpose (per node)",
    )
    identical_gpus: int = Field(default=1, description="this row stands for that many identical GPUs (ranks)")
    capacity_bytes: int | None = Field(description="null when unknown (host RAM not given)")
    assigned_bytes: int = Field(description="tensor bytes placed on this device (weights, KV cache, training state)")
    overhead_bytes: int = Field(description="CUDA context + allocator margin on this device")
    required_bytes: int
    headroom_bytes: int | None
    fits: bool | None = Field(description="null when the capacity is unknown; an offload row never fits")
    blocks: list[str] = Field(default_factory=list, description="module blocks placed here (first..last)")
    compute_capability: str | None = None
    bf16: bool | None = None


class LargestLayer(Model):
    """The biggest unit that must sit whole on one GPU (accelerate's 'largest layer')."""

    name: str
    size_bytes: int
    num_params: int
    module_params: int = Field(description="largest single module's own parameters (DeepSpeed's largest_layer_params)")


class Training(Model):
    """Training state on top of the weights."""

    mode: str
    optimizer: str
    strategy: str = Field(default="single", description="single, ddp, zero1, zero2, zero3, fsdp_full_shard, …")
    total_gpus: int = 1
    node_gpus: int = Field(default=1, description="GPUs per node")
    total_nodes: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False
    mixed_precision: str = Field(default="bf16", description="compute dtype of the forward/backward: bf16, fp16, no")
    master_weights: bool = Field(default=False, description="fp32 copy of 16-bit trainable weights")
    kbit_prepared: bool = Field(default=False, description="PEFT prepare_model_for_kbit_training applied")
    upcast_params: int | None = Field(
        default=None, description="unquantized 16-bit params PEFT's k-bit preparation casts to fp32"
    )
    trainable_params: int
    lora_rank: int | None = None
    lora_targets: list[str] | None = None
    sequence_tokens: int
    batch_size: int
    gradient_checkpointing: bool
    components: list[Component]
    activation_formula: str
    total_bytes: int


class Option(Model):
    """One precision × strategy the recommendation tried."""

    preset: str
    train: str | None = None
    strategy: str | None = None
    required_bytes: int = Field(description="per GPU")
    fits: bool
    why_not: str | None = Field(default=None, description="why it does not fit")


class Recommendation(Model):
    preset: str | None
    strategy: str | None = None
    reason: str
    notes: list[str] = Field(default_factory=list)
    options: list[Option] = Field(
        default_factory=list, description="options that fit (cheapest memory first), then those that do not"
    )


class GpusNeeded(Model):
    """`--gpus auto`: the fewest GPUs of the given type a strategy needs (null: none up to the search limit)."""

    strategy: str
    total_gpus: int | None
    required_bytes: int | None = Field(description="per GPU at that count")


class CudaPrediction(Model):
    """A prediction, not a measurement: what torch.cuda's counters show after loading these weights on one GPU
    in a fresh process (PyTorch's caching-allocator rules, defaults; the CUDA context comes on top)."""

    cuda_allocated_bytes: int = Field(description="torch.cuda.memory_allocated: every storage as a 512-byte block")
    cuda_reserved_bytes: int = Field(description="torch.cuda.memory_reserved: allocator segments after the load")
    cuda_reserved_low_bytes: int = Field(description="no allocation order reserves less")
    cuda_reserved_high_bytes: int = Field(description="allowance for blocks freed during the load")
    cuda_load_peak_bytes: int = Field(description="torch.cuda.max_memory_allocated during the load")
    rule: str = Field(description="the allocator rules the figures follow")


class Plan(Model):
    """The memory one precision needs: the components add up to total_bytes."""

    format: str = Field(description="storage format of the quantizable linears: fp32, bf16, int8, nf4, nf4+dq, …")
    preset: str | None = Field(default=None, description="the preset this plan follows, when one was given")
    load_dtype: str = Field(description="dtype of every tensor that stays unquantized")
    total_params: int
    quantized_params: int = Field(description="parameters stored in the quantized format")
    bits_per_param: float = Field(description="weight bytes × 8 / params (quantization constants included)")
    weight_bytes: int
    total_bytes: int = Field(description="every tensor: weights, KV cache, training state")
    components: list[Component]
    kv_cache_bytes: int | None = Field(
        default=None, description="the cache right after a prompt of context_tokens: the peak, what the total counts"
    )
    kv_cache_decode_bytes: int | None = Field(
        default=None, description="the cache while decoding at context_tokens (sliding windows hold only the window)"
    )
    training: Training | None = None
    overheads: list[Component] = Field(default_factory=list)
    overhead_bytes: int = 0
    required_bytes: int = Field(default=0, description="total_bytes + overhead_bytes")
    devices: list[DeviceFit] = Field(default_factory=list)
    fits: bool | None = None
    offloaded_bytes: int | None = Field(default=None, description="bytes that fit on no device (would go to CPU)")
    verdict: Literal["fits", "offload", "does_not_fit"] | None = Field(
        default=None, description="fits: every row fits; offload: part would leave the GPUs; null without devices"
    )
    per_gpu: bool = Field(default=False, description="components are what one GPU (rank) holds, not the model")
    kv_in_fit: bool = Field(default=False, description="the KV cache is part of the fit (a --context was given)")
    largest_layer: LargestLayer | None = None
    max_context_tokens: int | None = Field(
        default=None, description="longest context the devices' memory holds (not capped by the model's limit)"
    )
    context_limit_tokens: int | None = Field(
        default=None, description="the model's own limit (max_position_embeddings)"
    )
    context_binding: Literal["memory", "model"] | None = Field(
        default=None, description="which limit binds: the smaller of max_context_tokens and context_limit_tokens"
    )
    max_batch_size: int | None = Field(default=None, description="largest batch that fits at the plan's context")
    cuda_prediction: CudaPrediction | None = Field(
        default=None, description="predicted torch.cuda counters after loading the weights on one GPU"
    )


class SourceInfo(Model):
    """Where the model's config came from, and for a hub repo the commit it resolved to."""

    config_from: Literal["builtin", "local", "cache", "hub"]
    repo_id: str | None = None
    revision: str | None = Field(default=None, description="the revision asked for (default main)")
    commit_sha: str | None = Field(default=None, description="the commit the revision resolved to")


class Prequantized(Model):
    """A checkpoint saved already quantized (its config.json carries a quantization_config)."""

    quant_method: str = Field(description="the config's quant_method: bitsandbytes, gptq, awq, fp8, …")
    format: str | None = Field(default=None, description="qcli's format key for bitsandbytes: nf4, nf4+dq, int8")
    loadable: bool = Field(description="whether qcli load supports it (bitsandbytes checkpoints)")


class ModelInfo(Model):
    """What was planned for: a real config, or a bare parameter count."""

    name: str | None = Field(default=None, description="the MODEL argument; null for --params")
    model_type: str | None = None
    count_method: Literal["analytic", "meta", "params"]
    model_class: str | None = Field(default=None, description="the transformers class counted: the one `load` builds")
    total_params: int
    params_by_group: dict[str, int] | None = None
    context_limit_tokens: int | None = Field(default=None, description="the config's max_position_embeddings")
    stored_bytes_by_dtype: dict[str, int] | None = Field(
        default=None, description="safetensors bytes per stored dtype: the sum of the headers' data_offsets spans"
    )
    stored_bytes: int | None = Field(default=None, description="safetensors bytes in all: the checkpoint's size")
    source: SourceInfo | None = Field(default=None, description="null for --params")
    prequantized: Prequantized | None = None


class EstimateReport(Result):
    """`qcli estimate`: one shape whatever the inputs; `plans` holds one plan per precision asked for."""

    command: Literal["estimate"] = "estimate"
    model: ModelInfo
    context_tokens: int | None = None
    batch_size: int = 1
    plans: list[Plan]
    gpus_needed: list[GpusNeeded] | None = Field(default=None, description="--gpus auto: GPUs each strategy needs")
    recommendation: Recommendation | None = None
    notes: list[str] = Field(default_factory=list)


class PresetInfo(Model):
    """A preset as transformers receives it."""

    name: str
    source: str | None
    description: str
    dtype: str
    format: str
    bitsandbytes_config: dict | None


class PresetsReport(Result):
    """`qcli presets` and `qcli presets show`: one object either way."""

    command: Literal["presets"] = "presets"
    presets: list[PresetInfo]


class CudaMemory(Model):
    """torch.cuda figures of one device after the load; the context is total − free − reserved."""

    device: str
    allocated_bytes: int
    reserved_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    total_bytes: int
    free_bytes: int
    cuda_context_bytes: int = Field(description="total − free − reserved: context plus other processes")


class QuantGroup(Model):
    """Modules that carry the same quantization, read back from the loaded modules themselves."""

    layer: str = Field(description="the module class: Linear4bit or Linear8bitLt")
    quantized: bool = Field(
        description="false when the module holds a plain weight (tied to the embeddings, offloaded unquantized)"
    )
    quant_type: str | None = Field(default=None, description="4-bit: nf4 or fp4, from the weight's quant_state")
    double_quant: bool | None = Field(default=None, description="4-bit: quant_state.nested (absmax quantized again)")
    compute_dtype: str | None = Field(default=None, description="4-bit: Linear4bit.compute_dtype")
    block_size: int | None = Field(default=None, description="4-bit: quant_state.blocksize")
    absmax_dtype: str | None = Field(default=None, description="4-bit: dtype of quant_state.absmax")
    storage_dtype: str | None = Field(default=None, description="dtype the packed or int8 weight is stored in")
    outlier_threshold: float | None = Field(default=None, description="int8: Linear8bitLt.state.threshold")
    has_fp16_weights: bool | None = Field(default=None, description="int8: Linear8bitLt.state.has_fp16_weights")
    modules: list[str]


class Census(Model):
    """What the loaded model is made of and where it went."""

    linear4bit: int
    linear8bit: int
    linear_unquantized: int
    quantizable_linears: int = Field(description="weights the preset's rules quantize (the estimate's count)")
    unquantized_modules: list[str]
    quantization: list[QuantGroup] = Field(
        default_factory=list, description="the quantization each module really has, grouped"
    )
    kept_params_by_dtype: dict[str, int] = Field(description="unquantized parameter count per dtype")
    placement_bytes_by_device: dict[str, int] = Field(
        description="tensor bytes per place: cpu, cuda:N, disk (offloaded by accelerate), meta (never loaded)"
    )
    device_map: dict[str, str] | None = None
    offloaded: list[str] = Field(default_factory=list, description="modules the device map put on cpu or disk")
    meta_tensors: int = Field(default=0, description="tensors on the meta device that no offload accounts for")
    linear4bit_by_quant_type: dict[str, int] = Field(
        default_factory=dict, description="Linear4bit count per quant type (+dq)"
    )
    linear4bit_by_compute_dtype: dict[str, int] = Field(
        default_factory=dict, description="Linear4bit count per compute dtype"
    )


class Generation(Model):
    prompt: str
    text: str
    new_tokens: int
    generate_seconds: float


MEASURED_AT = "after the load, before the first forward pass"


class LoadReport(Result):
    """`qcli load`: what the loaded modules hold, read back from them, next to the estimate."""

    command: Literal["load"] = "load"
    model: str
    preset: str
    device: str
    dtype: str
    quantization: dict | None = Field(description="the BitsAndBytesConfig transformers applied (model.config)")
    preset_quantization: dict | None = Field(default=None, description="what the preset asked for")
    checkpoint_quantization: dict | None = Field(
        default=None, description="the checkpoint's own quantization_config (pre-quantized checkpoints)"
    )
    preset_overridden: bool = Field(
        default=False, description="the checkpoint's quantization_config replaced the preset's quantization"
    )
    memory_bytes: int = Field(
        description="every tensor of the model once, wherever it is (devices, cpu offload, disk): "
        "params, buffers, 4-bit quant_state, int8 SCB"
    )
    memory_bytes_by_device: dict[str, int] = Field(
        default_factory=dict, description="memory_bytes per place: cpu, cuda:N, disk, meta"
    )
    offloaded_bytes: int = Field(default=0, description="bytes on disk, or on the CPU when the model is on a GPU")
    memory_bytes_by_kind: dict[str, int]
    footprint_bytes: int = Field(description="transformers get_memory_footprint(): misses the 4-bit quant_state")
    estimate_bytes: int | None = Field(description="the estimate's weight bytes for the same model, preset and dtype")
    estimate_error_percent: float | None = Field(description="(estimate − measured) / measured × 100")
    measured_at: str = Field(default=MEASURED_AT, description="when the figures were read")
    load_seconds: float
    cuda: list[CudaMemory] | None = Field(description="null on CPU: no CUDA allocator")
    cuda_prediction: CudaPrediction | None = Field(
        default=None, description="what qcli predicted for `cuda` (one GPU, no device_map); null otherwise"
    )
    rss_bytes: int | None = Field(description="resident memory of this process")
    census: Census
    generation: Generation | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class CompareRow(Model):
    preset: str
    memory_bytes: int | None = None
    allocated_bytes: int | None = None
    reserved_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    estimate_bytes: int | None = None
    estimate_error_percent: float | None = None
    load_seconds: float | None = None
    prefill_seconds: float | None = None
    prefill_min_seconds: float | None = None
    prefill_max_seconds: float | None = None
    tokens_per_second: float | None = None
    min_tokens_per_second: float | None = None
    max_tokens_per_second: float | None = None
    perplexity: float | None = None
    top1_agreement: float | None = None
    kl_divergence: float | None = None
    memory_saved_ratio: float | None = Field(default=None, description="reference memory_bytes / this memory_bytes")
    delta_perplexity: float | None = None
    continuation: str | None = None
    device: str | None = None
    error: str | None = None
    traceback: str | None = Field(default=None, description="the worker's traceback, with --debug only")


class CompareReport(Result):
    command: Literal["compare"] = "compare"
    model: str
    reference: str
    device: str
    text: str = Field(description="the evaluation text: 'built-in sample' or a file path")
    scored_tokens: int | None = None
    prompt: str
    speed_method: str | None = None
    results: list[CompareRow]
    created_at: str | None = Field(default=None, description="when the comparison ran, ISO 8601 UTC")
    model_commit: str | None = Field(default=None, description="the hub commit of the model, when known")
    environment: "Environment | None" = None  # defined below, with the other environment models
    notes: list[str] = Field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.error for r in self.results)


class GPUInfo(Model):
    """One GPU as torch (or, without torch, nvidia-smi) sees it."""

    device: str = Field(description="cuda:N as torch numbers it (nvidia-smi's index without torch)")
    name: str
    memory_bytes: int | None = None
    compute_capability: str | None = None


class Environment(Model):
    """The software and hardware a result was made on: what a bug report or a pasted table needs."""

    python_version: str
    platform: str
    packages: dict[str, str | None] = Field(description="distribution -> version; null when not installed")
    torch_cuda_version: str | None = Field(default=None, description="the CUDA torch was built with; null: CPU build")
    cuda_available: bool | None = Field(default=None, description="torch.cuda.is_available(); null: not probed")
    gpus: list[GPUInfo] = Field(default_factory=list)
    gpu_source: str | None = Field(default=None, description="torch, nvidia-smi, or null when none was asked")


class EnvReport(Environment, Result):
    """`qcli env`: versions and GPUs, for bug reports."""

    command: Literal["env"] = "env"


CheckOutcome = Literal["passed", "failed", "warning", "skipped", "error"]


class CheckResult(Model):
    """One verify check: its name, its outcome, one line of detail and how long it took."""

    name: str
    passed: bool = Field(description="false only for failed and error: skipped and warning do not fail the gate")
    detail: str
    warning: bool = False
    skipped: bool = False
    error: bool = Field(default=False, description="the check could not run (an exception, not a wrong value)")
    duration_seconds: float | None = None

    @property
    def outcome(self) -> CheckOutcome:
        if self.error:
            return "error"
        if self.skipped:
            return "skipped"
        if not self.passed:
            return "failed"
        return "warning" if self.warning else "passed"


class VerifyReport(Result):
    """`qcli verify`: every check, and the load report they were made on."""

    command: Literal["verify"] = "verify"
    model: str | None = None
    preset: str | None = None
    passed: bool
    checks: list[CheckResult]
    load: LoadReport | None = None
    reference: CompareRow | None = Field(default=None, description="the --reference preset's worker result")
    error: str | None = None
