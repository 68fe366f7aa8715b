"""The results of `qcli load`, `verify`, `compare` and `env`: what was loaded, read back from the modules."""

from typing import Literal

from pydantic import Field

from qcli.results import Model, Result
from qcli.results.plan import CudaPrediction


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
