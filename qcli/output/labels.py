"""Human labels of the machine fields in the results (component kinds, groups): built here, never
stored in the results, so the JSON stays stable while the wording can change."""

from __future__ import annotations

from qcli.results.plan import Component

GROUP_LABELS: dict[str, str] = {
    "quantized_linear": "quantized linears",
    "quantizable_linear": "linear weights",
    "linear_unquantized": "linears kept unquantized",
    "linear_not_converted": "linears kept unquantized (nn.Linear subclasses)",
    "embeddings": "embeddings",
    "lm_head": "lm_head",
    "moe_experts": "MoE experts (fused, not quantized)",
    "moe_routers": "MoE routers",
    "norms_biases_other": "norms, biases, other",
    "buffers": "buffers",
}

_QUANT_PART_LABELS: dict[str, str] = {
    "quant_packed_weights": "packed 4-bit weights",
    "quant_nested_absmax": "nested absmax (fp32, per 256 absmax)",
    "quant_nested_code": "nested code + offset (257 fp32, per tensor)",
    "quant_code": "4-bit code (16 fp32, per tensor)",
    "int8_weights": "int8 weights",
    "int8_row_scales": "row scales (fp32 SCB, per output row)",
}


STRATEGY_LABELS: dict[str, str] = {
    "single": "one GPU",
    "ddp": "DDP",
    "zero1": "ZeRO-1",
    "zero2": "ZeRO-2",
    "zero3": "ZeRO-3",
    "fsdp": "FSDP FULL_SHARD",
    "fsdp_shard_grad_op": "FSDP SHARD_GRAD_OP",
}

FORMAT_LABELS: dict[str, str] = {
    "int8": "int8 (LLM.int8)",
    "nf4+dq": "nf4 + double quant",
    "fp4+dq": "fp4 + double quant",
}


def format_label(key: str) -> str:
    """Return the human name of a storage format key: 'nf4+dq' -> 'nf4 + double quant'."""
    return FORMAT_LABELS.get(key, key)


def component_label(c: Component) -> str:
    """Return the one-line human label of a memory component."""
    if c.kind == "weights":
        return f"{GROUP_LABELS.get(c.group or '', c.group or 'weights')} ({c.dtype})"
    if c.kind == "quant_absmax":
        per = "uint8" if (c.format or "").endswith("+dq") else "fp32"
        return f"{c.format}: absmax ({per}, per 64-block)"
    if c.kind in _QUANT_PART_LABELS:
        prefix = f"{c.format}: " if c.format and c.kind.startswith("quant") else ""
        return prefix + _QUANT_PART_LABELS[c.kind]
    if c.kind == "kv_cache":
        return f"KV cache ({c.dtype}, {c.context_tokens:,} tokens × batch {c.batch_size}, after the prompt)"
    if c.kind == "lora_adapters":
        return f"LoRA adapters ({c.dtype})"
    if c.kind == "lora_gradients":
        return f"LoRA gradients ({c.dtype})"
    if c.kind == "gradients":
        return f"gradients ({c.dtype})"
    if c.kind == "gradients_fp32":
        return "fp32 gradient partition (DeepSpeed)"
    if c.kind == "master_weights":
        return "fp32 master weights"
    if c.kind == "ddp_buckets":
        return "DDP gradient buckets"
    if c.kind == "gathered_params":
        return "gathered largest layer (all-gather)"
    if c.kind == "optimizer_state":
        return f"optimizer state ({c.source})"
    if c.kind == "activations":
        how = "checkpointed" if (c.source or "").startswith("full activation") else "no recomputation"
        return f"activations ({how}; seq {c.context_tokens:,} × batch {c.batch_size})"
    if c.kind == "logits":
        return f"logits for the loss ({c.dtype})"
    if c.kind == "cuda_context":
        return f"CUDA context ({c.source or 'default'}, not counted by torch)"
    if c.kind == "allocator_margin":
        return f"allocator margin ({c.source})"
    return c.kind
