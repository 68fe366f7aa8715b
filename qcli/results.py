"""Pydantic result models: what each command returns and what `--json` prints, as is.

The JSON contract: every top-level object carries `schema_version`, `qcli_version` and `command`;
every numeric field names its unit (`_bytes`, `_params`, `_tokens`, `_seconds`, `_percent`); memory
components carry a stable machine `kind`. Human labels are built in qcli.output, never stored here.
"""

from __future__ import annotations

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


class DeviceFit(Model):
    """How much of a plan one device holds, and whether it fits."""

    name: str
    capacity_bytes: int
    assigned_bytes: int = Field(description="tensor bytes placed on this device (weights, KV cache, training state)")
    overhead_bytes: int = Field(description="CUDA context + allocator margin on this device")
    required_bytes: int
    headroom_bytes: int
    fits: bool
    blocks: list[str] = Field(default_factory=list, description="module blocks placed here (first..last)")
    compute_capability: str | None = None
    bf16: bool | None = None


class Training(Model):
    """Training state on top of the weights."""

    mode: str
    optimizer: str
    trainable_params: int
    lora_rank: int | None = None
    lora_targets: list[str] | None = None
    sequence_tokens: int
    batch_size: int
    gradient_checkpointing: bool
    components: list[Component]
    activation_formula: str
    total_bytes: int


class Recommendation(Model):
    preset: str | None
    reason: str
    notes: list[str] = Field(default_factory=list)


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
    kv_cache_bytes: int | None = None
    training: Training | None = None
    overheads: list[Component] = Field(default_factory=list)
    overhead_bytes: int = 0
    required_bytes: int = Field(default=0, description="total_bytes + overhead_bytes")
    devices: list[DeviceFit] = Field(default_factory=list)
    fits: bool | None = None
    offloaded_bytes: int | None = Field(default=None, description="bytes that fit on no device (would go to CPU)")
    max_context_tokens: int | None = Field(default=None, description="longest context that fits the devices")


class ModelInfo(Model):
    """What was planned for: a real config, or a bare parameter count."""

    name: str | None = Field(default=None, description="the MODEL argument; null for --params")
    model_type: str | None = None
    count_method: Literal["analytic", "meta", "params"]
    total_params: int
    params_by_group: dict[str, int] | None = None
    context_limit_tokens: int | None = Field(default=None, description="the config's max_position_embeddings")
    stored_bytes_by_dtype: dict[str, int] | None = Field(
        default=None, description="safetensors bytes per stored dtype, from the headers"
    )


class EstimateReport(Result):
    """`qcli estimate`: one shape whatever the inputs; `plans` holds one plan per precision asked for."""

    command: Literal["estimate"] = "estimate"
    model: ModelInfo
    context_tokens: int | None = None
    batch_size: int = 1
    plans: list[Plan]
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


class Census(Model):
    """What the loaded model is made of and where it went."""

    linear4bit: int
    linear8bit: int
    linear_unquantized: int
    quantizable_linears: int = Field(description="nn.Linear/Conv1D modules before quantization")
    unquantized_modules: list[str]
    kept_params_by_dtype: dict[str, int] = Field(description="unquantized parameter count per dtype")
    placement_bytes_by_device: dict[str, int] = Field(description="tensor bytes per device (cpu, cuda:0, disk…)")
    device_map: dict[str, str] | None = None
    offloaded: list[str] = Field(default_factory=list)
    meta_tensors: int = 0
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


class LoadReport(Result):
    """`qcli load`: the bytes the model really holds, next to the estimate."""

    command: Literal["load"] = "load"
    model: str
    preset: str
    device: str
    dtype: str
    quantization: dict | None
    memory_bytes: int = Field(description="every tensor once: params, buffers, 4-bit quant_state, int8 SCB")
    memory_bytes_by_kind: dict[str, int]
    footprint_bytes: int = Field(description="transformers get_memory_footprint(): misses the 4-bit quant_state")
    estimate_bytes: int | None = Field(description="the estimate's weight bytes for the same model, preset and dtype")
    estimate_error_percent: float | None = Field(description="(estimate − measured) / measured × 100")
    load_seconds: float
    cuda: list[CudaMemory] | None = Field(description="null on CPU: no CUDA allocator")
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
    environment: Environment | None = None
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


class CheckResult(Model):
    """One verify check: its name, whether it passed, one line of detail."""

    name: str
    passed: bool
    detail: str
    warning: bool = False
    skipped: bool = False
    duration_seconds: float | None = None


class VerifyReport(Result):
    """`qcli verify`: every check, and the load report they were made on."""

    command: Literal["verify"] = "verify"
    passed: bool
    checks: list[CheckResult]
    load: LoadReport | None = None
    error: str | None = None
