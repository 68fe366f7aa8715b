"""`qcli estimate`: flags -> EstimateOptions -> run_estimate -> a view or JSON."""

import contextlib
import sys
from typing import Annotated

import typer

from qcli.cli._options import DeviceMapOpt, DtypeOpt, JsonOpt, MaxMemoryOpt, PresetOpt, RevisionOpt, SetOpt, TokenOpt

# The line `qcli --help` lists it with (the docstring's first sentence would be cut with "...").
SHORT_HELP = "Memory a model needs, and whether it fits."
EPILOG = """Examples:

\b
  qcli estimate --params 8b --bits 4
  qcli estimate --params 70b --gpu A100-80GB
  qcli estimate meta-llama/Meta-Llama-3-8B --preset qlora --context 8192 --gpu T4
  qcli estimate meta-llama/Meta-Llama-3-8B --train full --gpu A100-80GB --gpus 8 --strategy zero3
  qcli estimate meta-llama/Meta-Llama-3-70B --train qlora --gpu RTX-4090 --gpus auto --strategy fsdp
"""


def estimate(
    model_arg: Annotated[
        str | None,
        typer.Argument(metavar="MODEL", hidden=True, show_default=False),
    ] = None,
    params: Annotated[
        str | None, typer.Option("--params", metavar="TEXT", help="Parameter count: 8b, 7.24B, 125m, 8e9.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", metavar="TEXT", help="The MODEL, given as an option.")
    ] = None,
    bits: Annotated[
        str | None,
        typer.Option(
            "--bits",
            "-b",
            metavar="TEXT",
            help="32, 16, 8, 4, or fp32, fp16, bf16, int8, int4, nf4, fp4 (8bit, 4bit too).",
        ),
    ] = None,
    double_quant: Annotated[bool, typer.Option("--double-quant", help="4-bit with double quantization.")] = False,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    dtype: DtypeOpt = None,
    gpu: Annotated[
        list[str] | None,
        typer.Option("--gpu", metavar="TEXT", help="GPU name (T4, H100…) or size (24GB, 80GiB); repeatable."),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option("--gpus", metavar="TEXT", help="Identical --gpu devices per node: N, or auto (fewest that fit)."),
    ] = None,
    nodes: Annotated[
        int | None, typer.Option("--nodes", metavar="INTEGER", help="Nodes of --gpus GPUs each (training).")
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            metavar="TEXT",
            help="Training across GPUs: ddp, fsdp, fsdp_shard_grad_op, zero1, zero2, zero3.",
        ),
    ] = None,
    offload_optimizer: Annotated[
        bool, typer.Option("--offload-optimizer", help="ZeRO-Offload: optimizer state (and fp32 grads) on CPU.")
    ] = False,
    offload_params: Annotated[
        bool, typer.Option("--offload-params", help="ZeRO-3 / FSDP: weights (and optimizer) on CPU.")
    ] = False,
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    cpu_memory: Annotated[
        str | None, typer.Option("--cpu-memory", metavar="TEXT", help="Host RAM per node, e.g. 256GiB.")
    ] = None,
    mixed_precision: Annotated[
        str | None, typer.Option("--mixed-precision", metavar="TEXT", help="Training compute: bf16, fp16 or no (fp32).")
    ] = None,
    master_weights: Annotated[
        bool | None,
        typer.Option("--master-weights/--no-master-weights", help="fp32 master copy of 16-bit weights (full FT)."),
    ] = None,
    context: Annotated[
        int | None, typer.Option("--context", metavar="INTEGER", help="Context length in tokens (KV cache).")
    ] = None,
    batch: Annotated[int | None, typer.Option("--batch", metavar="INTEGER", help="Batch size (default 1).")] = None,
    kv_dtype: Annotated[
        str | None, typer.Option("--kv-dtype", metavar="TEXT", help="KV cache dtype (default: load dtype).")
    ] = None,
    train: Annotated[str | None, typer.Option("--train", metavar="TEXT", help="full, lora or qlora.")] = None,
    lora_rank: Annotated[
        int | None, typer.Option("--lora-rank", metavar="INTEGER", help="LoRA rank r (default 16).")
    ] = None,
    lora_targets: Annotated[
        str | None, typer.Option("--lora-targets", metavar="TEXT", help="all-linear (default) or q_proj,v_proj,…")
    ] = None,
    optimizer: Annotated[
        str | None,
        typer.Option("--optimizer", metavar="TEXT", help="adamw (default), adamw8bit, paged_adamw8bit, sgd."),
    ] = None,
    grad_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--grad-checkpointing/--no-grad-checkpointing",
            help="Full activation checkpointing (default: on for QLoRA, as PEFT does).",
        ),
    ] = None,
    attention: Annotated[
        str | None,
        typer.Option(
            "--attention", metavar="TEXT", help="Training activations: eager (scores stored, default) or sdpa (fused)."
        ),
    ] = None,
    cuda_context: Annotated[
        str | None,
        typer.Option(
            "--cuda-context",
            metavar="TEXT",
            help="CUDA context per GPU: a size (default 512MiB), or an earlier `qcli load --json` file to reuse.",
        ),
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option("--margin", metavar="FLOAT", help="Allocator margin, a fraction of tensor bytes (default 0.05)."),
    ] = None,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Memory a model needs at a precision: weights with quantization constants, KV cache, training.

    MODEL is a model directory, a config.json, a hub id (org/name) or URL, or demo (a tiny built-in model);
    or give --params instead.
    """
    # Imported here, not at the top: `qcli --help` and completion import every command module, and these
    # (rich, the result models, the planner) were most of their start-up (docs/bench.md).
    from qcli.output.console import console, print_json
    from qcli.output.estimate_view import render_estimate
    from qcli.plan.estimate import EstimateOptions, run_estimate

    if model_arg is not None and model is not None and model_arg != model:
        raise typer.BadParameter("give the MODEL once: positionally or with --model")
    targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets is not None else None
    opts = EstimateOptions.from_cli(
        params=params,
        model=model_arg or model,
        bits=bits,
        double_quant=double_quant,
        preset=preset,
        sets=set_,
        dtype=dtype,
        gpus=gpu,
        gpu_count=gpus,
        nodes=nodes,
        strategy=strategy,
        offload_optimizer=offload_optimizer,
        offload_params=offload_params,
        device_map=device_map,
        max_memory=max_memory,
        cpu_memory=cpu_memory,
        mixed_precision=mixed_precision,
        master_weights=master_weights,
        attention=attention,
        context=context,
        batch=batch,
        kv_dtype=kv_dtype,
        train=train,
        lora_rank=lora_rank,
        lora_targets=targets,
        optimizer=optimizer,
        grad_checkpointing=grad_checkpointing,
        cuda_context=cuda_context,
        margin=margin,
        revision=revision,
        token=token,
    )
    with contextlib.redirect_stdout(sys.stderr):  # the meta-device path runs transformers: stdout stays ours
        report = run_estimate(opts)
    if json_:
        print_json(report)
    else:
        render_estimate(report, console())
