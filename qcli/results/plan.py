"""The results of `qcli estimate` and `qcli presets`: plans, their components, fit and recommendations."""

from typing import Literal

from pydantic import Field

from qcli.results import Model, Result

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
    compute_dtype: str | None = Field(
        default=None,
        description="dtype the layers compute in (a 4-bit preset's bnb_4bit_compute_dtype, else the load dtype); "
        "null for 4-bit without a preset (transformers' default then is float32)",
    )
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
