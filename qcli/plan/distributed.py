"""Training state per GPU under the engines users scale out with: single GPU, DDP, PyTorch FSDP
(FULL_SHARD / SHARD_GRAD_OP, ± CPU offload) and DeepSpeed ZeRO stages 1-3 (± optimizer / parameter
offload). Pure Python.

The ZeRO figures follow DeepSpeed's own accounting (deepspeed/runtime/zero/stage_1_and_2.py
`estimate_zero2_model_states_mem_needs`, stage3.py `estimate_zero3_model_states_mem_needs`): with 16-bit
weights and fp32 master weights, ZeRO-2 keeps the 16-bit weights whole (2 B/param) and shards 18 B/param
(16-bit grads 2 + fp32 grads 4 + fp32 master 4 + Adam moments 8); ZeRO-3 shards 18 B/param (16-bit weights
2 + fp32 grads 4 + master 4 + moments 8: its 16-bit grads are reduce-scattered in buckets straight into the
fp32 partition) and gathers the largest module's weights and grads (4 B/param of it). CPU per node takes
DeepSpeed's 1.5 buffer factor. tests/test_distributed.py pins these against DeepSpeed's outputs;
docs/planning.md lists where qcli deliberately differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qcli.errors import UsageError
from qcli.results.plan import Component

Strategy = Literal["single", "ddp", "zero1", "zero2", "zero3", "fsdp", "fsdp_shard_grad_op"]
STRATEGIES: tuple[str, ...] = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp", "fsdp_shard_grad_op")
ZERO = ("zero1", "zero2", "zero3")
# DeepSpeed's `additional_buffer_factor` default: pinned CPU buffers on top of the offloaded states.
DEEPSPEED_CPU_BUFFER_FACTOR = 1.5


@dataclass(frozen=True)
class Sharding:
    """Which model states a strategy splits across the GPUs."""

    weights: bool  # the model's weights (ZeRO-3, FSDP FULL_SHARD)
    grads: bool  # gradients (ZeRO-2/3, FSDP)
    optimizer: bool  # optimizer state, master weights, fp32 grads (ZeRO-1+, FSDP)
    gathers: bool  # the largest unit is gathered whole for compute


SHARDING: dict[str, Sharding] = {
    "single": Sharding(False, False, False, False),
    "ddp": Sharding(False, False, False, False),
    "zero1": Sharding(False, False, True, False),
    "zero2": Sharding(False, True, True, False),
    "zero3": Sharding(True, True, True, True),
    "fsdp": Sharding(True, True, True, True),  # ShardingStrategy.FULL_SHARD
    "fsdp_shard_grad_op": Sharding(False, True, True, False),  # weights stay gathered between forward and backward
}


def parse_strategy(text: str | None, gpus: int) -> str:
    """Return the strategy key for `--strategy` (default: single on one GPU, ddp on more)."""
    if text is None:
        return "single" if gpus == 1 else "ddp"
    key = text.strip().lower().replace("-", "_")
    key = {"fsdp_full_shard": "fsdp", "full_shard": "fsdp", "shard_grad_op": "fsdp_shard_grad_op"}.get(key, key)
    if key not in STRATEGIES:
        raise UsageError(
            f"--strategy {text!r} is not known", "use ddp, fsdp, fsdp_shard_grad_op, zero1, zero2 or zero3"
        )
    return key


def check_offload(strategy: str, offload_optimizer: bool, offload_params: bool) -> None:
    """Raise a UsageError for offload flags the strategy does not have."""
    if offload_params and strategy not in {"zero3", "fsdp"}:
        raise UsageError(
            "--offload-params needs a strategy that shards the weights", "use --strategy zero3 or --strategy fsdp"
        )
    if offload_optimizer and strategy not in ZERO:
        hint = (
            "FSDP offloads weights, grads and optimizer together: use --offload-params"
            if "fsdp" in strategy
            else ("use --strategy zero1, zero2 or zero3")
        )
        raise UsageError("--offload-optimizer is DeepSpeed's ZeRO-Offload", hint)


@dataclass
class StateInput:
    """What the model states of one training run depend on (counts and bytes of the whole model)."""

    strategy: str
    total_gpus: int
    weights: list[Component]  # every weight in its stored format (quantized base included), whole model
    trainable_params: int
    trainable_dtype: str  # dtype of the trainable weights and their grads
    trainable_dtype_bytes: int
    full: bool  # full fine-tune: the weights are the trainable parameters
    master_weights: bool  # fp32 copy of 16-bit trainable weights
    optimizer: str
    optimizer_bytes_per_param: int
    gathered_params: int  # params of the largest unit gathered whole (ZeRO-3: largest module; FSDP: largest layer)
    gathered_bytes_per_param: float  # bytes of one gathered param (its storage)
    offload_optimizer: bool = False
    offload_params: bool = False


def _share(total: float, parts: int, sharded: bool) -> int:
    return int(total / parts) if sharded else int(total)


def model_states(s: StateInput) -> list[Component]:
    """Return the model states one GPU (rank) holds, with offloaded ones marked device='cpu'.

    Weights, gradients, master weights, fp32 grads and optimizer state: each a Component whose
    `formula` names the arithmetic; activations are not model states (see training.py).
    """
    shard = SHARDING[s.strategy]
    n = s.total_gpus
    zero = s.strategy in ZERO
    # FSDP's CPUOffload(offload_params=True) moves weights, grads and the optimizer step to the CPU.
    fsdp_offload = s.strategy == "fsdp" and s.offload_params
    opt_cpu = s.offload_optimizer or fsdp_offload or (s.strategy == "zero3" and s.offload_params)
    out: list[Component] = []

    def add(
        kind: str,
        size: float,
        sharded: bool,
        on_cpu: bool,
        formula: str,
        dtype: str | None = None,
        params: int | None = None,
        source: str | None = None,
    ) -> None:
        per = f" / {n} GPUs" if sharded and n > 1 else ""
        out.append(
            Component(
                kind=kind,  # type: ignore[arg-type]
                dtype=dtype,
                size_bytes=_share(size, n, sharded),
                num_params=params,
                source=source,
                formula=formula + per,
                device="cpu" if on_cpu else "gpu",
            )
        )

    P, w = s.trainable_params, s.trainable_dtype_bytes
    weights_cpu = s.offload_params
    for c in s.weights:
        per = f"{c.format or c.dtype} weights / {n} GPUs" if shard.weights and n > 1 else None
        out.append(
            c.model_copy(
                update={
                    "size_bytes": _share(c.size_bytes, n, shard.weights),
                    "formula": per,
                    "device": "cpu" if weights_cpu else "gpu",
                }
            )
        )
    if s.full:
        # 16-bit grads: ZeRO-3 and ZeRO-Offload reduce them in buckets straight into the fp32 partition.
        transient = zero and s.master_weights and (s.strategy == "zero3" or s.offload_optimizer)
        if not transient:
            add("gradients", w * P, shard.grads, fsdp_offload, f"{w} B × trainable params", s.trainable_dtype, P)
        if s.master_weights:
            if zero:
                add("gradients_fp32", 4 * P, shard.optimizer, opt_cpu, "4 B × trainable params", "float32", P)
            add("master_weights", 4 * P, shard.optimizer, opt_cpu, "4 B × trainable params", "float32", P)
    else:
        add("lora_adapters", 4 * P, shard.weights, weights_cpu, "4 B × LoRA params", "float32", P)
        add("lora_gradients", 4 * P, shard.grads, fsdp_offload, "4 B × LoRA params", "float32", P)
    add(
        "optimizer_state",
        s.optimizer_bytes_per_param * P,
        shard.optimizer,
        opt_cpu,
        f"{s.optimizer_bytes_per_param} B × trainable params",
        params=P,
        source=s.optimizer,
    )
    if s.strategy == "ddp" and n > 1:
        grad_bytes = w * P if s.full else 4 * P
        add("ddp_buckets", grad_bytes, False, False, "a copy of the gradients (gradient_as_bucket_view=False)")
    # DeepSpeed counts ZeRO-3's gathered module even on one GPU (its fetch buffers exist regardless);
    # FSDP on one GPU keeps the flat parameters whole, so nothing extra is gathered.
    if shard.gathers and (n > 1 or zero):
        size = s.gathered_params * s.gathered_bytes_per_param
        grads = s.gathered_params * w if s.full else 0
        what = "largest module (DeepSpeed)" if zero else "largest layer (FSDP unit)"
        add("gathered_params", size + grads, False, False, f"weights{' + grads' if s.full else ''} of the {what}")
    return out


def host_bytes_per_node(
    strategy: str, states: list[Component], node_gpus: int, total_params: int, largest_module_params: int
) -> tuple[int, str]:
    """Return the CPU memory one node needs and how it was counted.

    DeepSpeed's convention for ZeRO: every local rank first materializes the model in fp32 (4 B/param;
    with zero.Init under ZeRO-3 only the largest module), and the offloaded states replace that peak;
    both × 1.5 for pinned buffers. Otherwise: the offloaded states of the node's ranks.
    """
    offloaded = sum(c.size_bytes for c in states if c.device == "cpu") * node_gpus
    if strategy not in ZERO:
        return offloaded, "offloaded states of the node's ranks"
    if strategy == "zero3":
        load = 4 * largest_module_params * node_gpus
        peak = offloaded if offloaded else load
        how = "zero.Init: fp32 largest module per rank" if not offloaded else "offloaded states"
    else:
        load = 4 * total_params * node_gpus
        peak = max(load, offloaded)
        how = "max(fp32 model per local rank, offloaded states)"
    return int(peak * DEEPSPEED_CPU_BUFFER_FACTOR), f"{how} × {DEEPSPEED_CPU_BUFFER_FACTOR} (DeepSpeed's buffer factor)"
