"""Pydantic result models: what each command returns and what --json prints, as is."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Component(BaseModel):
    """One line of a memory breakdown."""

    name: str
    bytes: int


class DeviceFit(BaseModel):
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


class Training(BaseModel):
    """Training state on top of the weights."""

    mode: str
    optimizer: str
    trainable_params: int
    lora_rank: int | None = None
    lora_targets: list[str] | None = None
    sequence_length: int
    batch: int
    gradient_checkpointing: bool
    components: list[Component]
    activation_formula: str
    total_bytes: int


class Recommendation(BaseModel):
    preset: str | None
    reason: str
    notes: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    """The memory one precision needs: the components add up to total_bytes."""

    format: str
    label: str
    params: int
    bits_per_param: float = Field(description="weight bytes × 8 / params (quantization constants included)")
    weight_bytes: int
    total_bytes: int
    components: list[Component]
    kv_cache_bytes: int | None = None
    training: Training | None = None
    overheads: list[Component] = Field(default_factory=list)
    overhead_bytes: int = 0
    required_bytes: int = 0
    devices: list[DeviceFit] = Field(default_factory=list)
    fits: bool | None = None
    offloaded_bytes: int | None = Field(default=None, description="bytes that fit on no device (would go to CPU)")


class EstimateReport(BaseModel):
    """`qcli estimate`: one plan (top-level fields) or a comparison (`plans`)."""

    source: str = Field(description="'params' (bare count) or 'model' (a real config)")
    model: str | None = None
    model_type: str | None = None
    count_method: str | None = Field(default=None, description="analytic (config.json) or meta (transformers)")
    params: int
    groups: dict[str, int] | None = None
    preset: str | None = None
    load_dtype: str | None = None
    format: str | None = None
    label: str | None = None
    bits_per_param: float | None = None
    weight_bytes: int | None = None
    total_bytes: int | None = None
    components: list[Component] | None = None
    kv_cache_bytes: int | None = None
    context: int | None = None
    batch: int | None = None
    training: Training | None = None
    overheads: list[Component] | None = None
    overhead_bytes: int | None = None
    required_bytes: int | None = None
    devices: list[DeviceFit] | None = None
    fits: bool | None = None
    offloaded_bytes: int | None = None
    max_context: int | None = None
    recommendation: Recommendation | None = None
    stored: dict[str, int] | None = Field(default=None, description="safetensors bytes per stored dtype")
    plans: list[Plan] | None = None
    notes: list[str] = Field(default_factory=list)


class CudaMemory(BaseModel):
    """torch.cuda figures of one device after the load; the context is total − free − reserved."""

    device: str
    allocated_bytes: int
    reserved_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    total_bytes: int
    free_bytes: int
    cuda_context_bytes: int = Field(description="total − free − reserved: context plus other processes")


class Census(BaseModel):
    """What the loaded model is made of and where it went."""

    linear4bit: int
    linear8bit: int
    linear_unquantized: int
    quantizable_linears: int = Field(description="nn.Linear/Conv1D modules before quantization")
    unquantized_modules: list[str]
    kept_dtypes: dict[str, int] = Field(description="unquantized parameter count per dtype")
    placement: dict[str, int] = Field(description="tensor bytes per device (cpu, cuda:0, disk…)")
    device_map: dict[str, str] | None = None
    offloaded: list[str] = Field(default_factory=list)
    meta_tensors: int = 0
    quant_types: dict[str, int] = Field(default_factory=dict, description="Linear4bit count per quant type (+dq)")
    compute_dtypes: dict[str, int] = Field(default_factory=dict, description="Linear4bit count per compute dtype")


class Generation(BaseModel):
    prompt: str
    text: str
    new_tokens: int
    seconds: float


class LoadReport(BaseModel):
    """`qcli load`: the bytes the model really holds, next to the estimate."""

    model: str
    preset: str
    device: str
    dtype: str
    quantization: dict | None
    memory_bytes: int = Field(description="every tensor once: params, buffers, 4-bit quant_state, int8 SCB")
    memory_breakdown: dict[str, int]
    footprint_bytes: int = Field(description="transformers get_memory_footprint(): misses the 4-bit quant_state")
    estimate_bytes: int | None = Field(description="`qcli estimate --model M --preset P` weight bytes")
    estimate_error_pct: float | None = Field(description="(estimate − measured) / measured × 100")
    load_seconds: float
    cuda: list[CudaMemory] | None = Field(description="null on CPU: no CUDA allocator")
    rss_bytes: int | None = Field(description="resident memory of this process")
    census: Census
    generation: Generation | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class CompareRow(BaseModel):
    preset: str
    memory_bytes: int | None = None
    allocated_bytes: int | None = None
    reserved_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    estimate_bytes: int | None = None
    estimate_error_pct: float | None = None
    load_seconds: float | None = None
    prefill_seconds: float | None = None
    prefill_seconds_min: float | None = None
    prefill_seconds_max: float | None = None
    tokens_per_second: float | None = None
    tokens_per_second_min: float | None = None
    tokens_per_second_max: float | None = None
    perplexity: float | None = None
    top1_agreement: float | None = None
    kl_divergence: float | None = None
    memory_saved_x: float | None = Field(default=None, description="reference memory_bytes / this memory_bytes")
    delta_perplexity: float | None = None
    continuation: str | None = None
    device: str | None = None
    error: str | None = None


class CompareReport(BaseModel):
    model: str
    reference: str
    device: str
    text: str = Field(description="the evaluation text: 'built-in sample' or a file path")
    scored_tokens: int | None = None
    prompt: str
    speed_method: str | None = None
    results: list[CompareRow]
    notes: list[str] = Field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.error for r in self.results)
