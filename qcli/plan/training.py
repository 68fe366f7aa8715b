"""Training state on top of the weights: trainable parameters, gradients, optimizer state, master
weights and activations, per GPU under a strategy (qcli.plan.distributed). Pure Python.

Defaults follow the libraries people train with:
- QLoRA (and LoRA on a 4/8-bit base) goes through PEFT's `prepare_model_for_kbit_training`: gradient
  checkpointing on (`use_gradient_checkpointing=True`), and every unquantized fp16/bf16 parameter
  (embeddings, lm_head, norms, biases — everything but Params4bit/Int8Params) cast to fp32.
- LoRA adapters are fp32 (PEFT's `autocast_adapter_dtype=True`); `all-linear` targets every nn.Linear
  (Conv1D) but the output head, as PEFT's `_maybe_include_all_linear_layers` resolves it.
- Optimizers: AdamW two fp32 moments (8 B/param), bitsandbytes 8-bit AdamW two uint8 moments (2 B/param;
  paged variants the same bytes in CUDA unified memory), SGD momentum 4 B/param.
- Mixed precision: weights and grads in the load dtype; `--master-weights` adds an fp32 copy (4 B/param).
  DeepSpeed ZeRO always keeps fp32 master weights for 16-bit training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from qcli.errors import UsageError
from qcli.model.spec import ModelSpec
from qcli.plan.distributed import ZERO, StateInput, model_states
from qcli.plan.formats import Format, dtype_bytes
from qcli.results.plan import Component, Training

TrainMode = Literal["full", "lora", "qlora"]
OPTIMIZER_STATE_BYTES = {"adamw": 8, "paged_adamw": 8, "adamw8bit": 2, "paged_adamw8bit": 2, "sgd": 4}
MIXED_PRECISION = {"bf16": "bfloat16", "fp16": "float16", "no": "float32"}
LORA_DTYPE = "float32"
DEFAULT_TRAIN_SEQUENCE = 2048
KORTHIKANTI = "Korthikanti et al. 2022, no recomputation: L·s·b·h·(34 + 5·a·s/h) bytes (16-bit)"
CHECKPOINTED = (
    "full activation checkpointing (Korthikanti et al. 2022): L·2·s·b·h bytes of layer inputs + one layer "
    "recomputed, s·b·h·(34 + 5·a·s/h)"
)
SDPA = (
    "Korthikanti et al. 2022 without the a·s² attention terms (fused SDPA/flash kernels never store the scores): "
    "L·34·s·b·h bytes (16-bit)"
)
SDPA_CHECKPOINTED = "full activation checkpointing: L·2·s·b·h bytes of layer inputs + one layer recomputed, 34·s·b·h"
LOGITS = "b·s·vocab × 4 B (logits upcast to fp32 for the loss)"


@dataclass
class TrainingRequest:
    mode: TrainMode
    optimizer: str = "adamw"
    lora_rank: int = 16
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"])
    gradient_checkpointing: bool | None = None  # None: on for k-bit training (PEFT's default), else off
    sequence_length: int = DEFAULT_TRAIN_SEQUENCE
    batch: int = 1
    attention: str = "eager"  # eager: scores stored (Korthikanti's a·s² term); sdpa: fused kernels, no scores
    mixed_precision: str | None = None  # bf16, fp16, no; None: bf16 unless the load dtype is fp16
    master_weights: bool | None = None  # None: on under ZeRO (DeepSpeed always), off otherwise
    strategy: str = "single"
    total_gpus: int = 1
    node_gpus: int = 1
    nodes: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False


def kbit_prepared(req: TrainingRequest, fmt: Format) -> bool:
    """Return whether PEFT's k-bit preparation applies (LoRA on a 4- or 8-bit base)."""
    return req.mode != "full" and fmt.kind != "dense"


def lora_params(spec: ModelSpec, rank: int, targets: list[str]) -> tuple[int, list[str]]:
    """Return the LoRA parameter count r·(in + out) over the targeted linears, and their modules.

    `all-linear` is every nn.Linear (quantized or not, routers included) except the output head.
    """
    all_linear = "all-linear" in targets
    count, hit = 0, []
    for t in spec.tensors:
        if t.role not in {"linear", "linear_subclass", "router"} or len(t.shape) != 2:
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


def activation_components(
    spec: ModelSpec, s: int, b: int, checkpointing: bool, precision: str, attention: str = "eager"
) -> list[Component]:
    """Return the activations (Korthikanti et al. 2022, or its checkpointed form) and the fp32 logits."""
    att = spec.attention
    assert att is not None
    h, a, layers = att.hidden_size, att.heads, att.layers
    scale = 2 if precision == "no" else 1  # the formula counts 16-bit activations
    scores = 0 if attention == "sdpa" else 5 * a * s / h
    one_layer = int(s * b * h * (34 + scores)) * scale
    if checkpointing:
        size = layers * 2 * s * b * h * scale + one_layer
        formula = SDPA_CHECKPOINTED if attention == "sdpa" else CHECKPOINTED
    else:
        size, formula = layers * one_layer, SDPA if attention == "sdpa" else KORTHIKANTI
    out = [
        Component(kind="activations", size_bytes=size, context_tokens=s, batch_size=b, source=formula, formula=formula)
    ]
    if spec.vocab_size:
        out.append(
            Component(
                kind="logits",
                dtype="float32",
                size_bytes=s * b * spec.vocab_size * 4,
                context_tokens=s,
                batch_size=b,
                formula=LOGITS,
            )
        )
    return out


def _precision(req: TrainingRequest, load_dtype: str) -> str:
    if req.mixed_precision is None:
        return "fp16" if load_dtype == "float16" else ("no" if load_dtype == "float32" else "bf16")
    if req.mixed_precision not in MIXED_PRECISION:
        raise UsageError(f"--mixed-precision {req.mixed_precision!r} is not known", "use bf16, fp16 or no")
    return req.mixed_precision


def training_state(
    spec: ModelSpec,
    req: TrainingRequest,
    fmt: Format,
    load_dtype: str,
    weights: list[Component],
    gathered: tuple[int, float],
) -> tuple[list[Component], Training]:
    """Return the weights one GPU holds and the training state on top (per GPU, offloaded parts marked cpu).

    `weights` are the whole model's weight components (already upcast for k-bit training);
    `gathered` is (params, bytes per param) of the unit a sharded strategy gathers whole.
    """
    if req.optimizer not in OPTIMIZER_STATE_BYTES:
        raise UsageError(f"--optimizer {req.optimizer!r} is not known", f"use {', '.join(OPTIMIZER_STATE_BYTES)}")
    if spec.attention is None:
        raise UsageError(f"training estimates need a decoder's shapes; {spec.model_type} has none here")
    precision = _precision(req, load_dtype)
    prepared = kbit_prepared(req, fmt)
    checkpointing = prepared if req.gradient_checkpointing is None else req.gradient_checkpointing
    targets = None
    if req.mode == "full":
        if fmt.kind != "dense":
            raise UsageError(
                "a quantized model cannot be fully fine-tuned with bitsandbytes",
                "use --train qlora, or a 16-bit preset for --train full",
            )
        trainable, t_dtype = spec.params, load_dtype
    elif req.mode == "qlora" and fmt.kind == "dense":
        # Planned as asked, it would be LoRA on a 16-bit base reported as QLoRA.
        raise UsageError(
            f"--train qlora trains LoRA adapters on a quantized base (4-bit, or int8), and this precision is {fmt.key}",
            "use a 4-bit preset (qlora, nf4) or --bits 4 with it, or --train lora for a 16-bit base",
        )
    else:
        if req.lora_rank < 1:
            raise UsageError("--lora-rank must be at least 1")
        trainable, targets = lora_params(spec, req.lora_rank, req.lora_targets)
        t_dtype = LORA_DTYPE
    sixteen = dtype_bytes(t_dtype) == 2
    master = req.master_weights if req.master_weights is not None else (req.strategy in ZERO and sixteen)
    master = master and sixteen and req.mode == "full"
    states = model_states(
        StateInput(
            strategy=req.strategy,
            total_gpus=req.total_gpus,
            weights=weights,
            trainable_params=trainable,
            trainable_dtype=t_dtype,
            trainable_dtype_bytes=dtype_bytes(t_dtype),
            full=req.mode == "full",
            master_weights=master,
            optimizer=req.optimizer,
            optimizer_bytes_per_param=OPTIMIZER_STATE_BYTES[req.optimizer],
            gathered_params=gathered[0],
            gathered_bytes_per_param=gathered[1],
            offload_optimizer=req.offload_optimizer,
            offload_params=req.offload_params,
        )
    )
    per_gpu_weights, components = states[: len(weights)], states[len(weights) :]  # model_states keeps the order
    if req.attention not in {"eager", "sdpa"}:
        raise UsageError(f"--attention {req.attention!r} is not known", "use eager or sdpa")
    components += activation_components(spec, req.sequence_length, req.batch, checkpointing, precision, req.attention)
    upcast = sum(c.num_params or 0 for c in weights if c.kind == "weights" and c.dtype == "float32") if prepared else 0
    training = Training(
        mode=req.mode,
        optimizer=req.optimizer,
        strategy=req.strategy,
        total_gpus=req.total_gpus,
        node_gpus=req.node_gpus,
        total_nodes=req.nodes,
        offload_optimizer=req.offload_optimizer,
        offload_params=req.offload_params,
        mixed_precision=precision,
        master_weights=master,
        kbit_prepared=prepared,
        upcast_params=upcast or None,
        trainable_params=trainable,
        lora_rank=req.lora_rank if req.mode != "full" else None,
        lora_targets=sorted({m.rsplit(".", 1)[-1] for m in targets}) if targets else None,
        sequence_tokens=req.sequence_length,
        batch_size=req.batch,
        gradient_checkpointing=checkpointing,
        components=components,
        activation_formula=components[-2 if spec.vocab_size else -1].formula or "",
        total_bytes=sum(c.size_bytes for c in components if c.device == "gpu"),
    )
    return per_gpu_weights, training
