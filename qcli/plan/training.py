"""Training state on top of the weights: trainable parameters, gradients, optimizer state and
activations. Pure Python.

Per trainable parameter: gradients in the weights' dtype (fp32 for LoRA adapters, which PEFT
creates in fp32), AdamW's two fp32 moments (8 B), 8-bit AdamW's two 8-bit moments (2 B), SGD's fp32
momentum (4 B). So a bf16 full fine-tune costs 2 + 2 + 8 = 12 B/param and an fp32 one 16 B/param.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from qcli.errors import UsageError
from qcli.model.spec import ModelSpec
from qcli.plan.formats import Format, dtype_bytes
from qcli.results import Component, Training

TrainMode = Literal["full", "lora", "qlora"]
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw8bit": 2, "paged_adamw8bit": 2, "sgd": 4}
LORA_DTYPE = "float32"
DEFAULT_TRAIN_SEQUENCE = 2048
KORTHIKANTI = "Korthikanti et al. 2022: s·b·h·(34 + 5·a·s/h) bytes per layer, 16-bit, no recomputation"
CHECKPOINTED = "full activation checkpointing: 2·s·b·h bytes per layer (the layer inputs kept)"


@dataclass
class TrainingRequest:
    mode: TrainMode
    optimizer: str = "adamw"
    lora_rank: int = 16
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"])
    gradient_checkpointing: bool = False
    sequence_length: int = DEFAULT_TRAIN_SEQUENCE
    batch: int = 1


def lora_params(spec: ModelSpec, rank: int, targets: list[str]) -> tuple[int, list[str]]:
    """Return the LoRA parameter count r·(in + out) over the targeted linears, and their names."""
    all_linear = "all-linear" in targets
    count, hit = 0, []
    for t in spec.tensors:
        if t.role not in {"linear", "linear_subclass"} or len(t.shape) != 2:
            continue
        leaf = t.module.rsplit(".", 1)[-1]
        if all_linear or leaf in targets:
            out_f = t.rows
            in_f = t.numel // out_f
            count += rank * (in_f + out_f)
            hit.append(t.module)
    if not hit:
        raise UsageError(
            f"--lora-targets {','.join(targets)} matches no linear layer of this model",
            "use all-linear or module names such as q_proj,v_proj",
        )
    return count, hit


def training_state(
    spec: ModelSpec, req: TrainingRequest, fmt: Format, load_dtype: str, quantized: set[str]
) -> Training:
    """Return the training components (bytes) for a model whose weights are already planned."""
    if req.optimizer not in OPTIMIZER_STATE_BYTES:
        raise UsageError(f"--optimizer {req.optimizer!r} is not known", f"use {', '.join(OPTIMIZER_STATE_BYTES)}")
    att = spec.attention
    if att is None:
        raise UsageError(f"training estimates need a decoder's shapes; {spec.model_type} has none here")
    components: list[Component] = []
    targets = None
    if req.mode == "full":
        if fmt.kind != "dense":
            raise UsageError(
                "a quantized model cannot be fully fine-tuned with bitsandbytes",
                "use --train qlora, or a 16-bit preset for --train full",
            )
        trainable = spec.params
        components.append(
            Component(
                kind="gradients", dtype=load_dtype, size_bytes=trainable * dtype_bytes(load_dtype), num_params=trainable
            )
        )
    else:
        if req.lora_rank < 1:
            raise UsageError("--lora-rank must be at least 1")
        trainable, targets = lora_params(spec, req.lora_rank, req.lora_targets)
        components.append(
            Component(kind="lora_adapters", dtype=LORA_DTYPE, size_bytes=trainable * 4, num_params=trainable)
        )
        components.append(
            Component(kind="lora_gradients", dtype=LORA_DTYPE, size_bytes=trainable * 4, num_params=trainable)
        )
    per_param = OPTIMIZER_STATE_BYTES[req.optimizer]
    components.append(
        Component(kind="optimizer_state", size_bytes=trainable * per_param, num_params=trainable, source=req.optimizer)
    )
    s, b, h, a = req.sequence_length, req.batch, att.hidden_size, att.heads
    if req.gradient_checkpointing:
        per_layer, formula = 2 * s * b * h, CHECKPOINTED
    else:
        per_layer, formula = int(s * b * h * (34 + 5 * a * s / h)), KORTHIKANTI
    components.append(
        Component(kind="activations", size_bytes=per_layer * att.layers, context_tokens=s, batch_size=b, source=formula)
    )
    if spec.vocab_size:
        components.append(
            Component(
                kind="logits", dtype="float32", size_bytes=s * b * spec.vocab_size * 4, context_tokens=s, batch_size=b
            )
        )
    return Training(
        mode=req.mode,
        optimizer=req.optimizer,
        trainable_params=trainable,
        lora_rank=req.lora_rank if req.mode != "full" else None,
        lora_targets=sorted({m.rsplit(".", 1)[-1] for m in targets}) if targets else None,
        sequence_tokens=s,
        batch_size=b,
        gradient_checkpointing=req.gradient_checkpointing,
        components=components,
        activation_formula=formula,
        total_bytes=sum(c.size_bytes for c in components),
    )
