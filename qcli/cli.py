"""The Typer app: parses flags, calls one core function, hands the result to a renderer.

No arithmetic, no torch and no tables here. Errors become one stderr line and an exit code
(qcli.errors.ExitCode); `--debug` (or QCLI_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from qcli import __version__
from qcli.errors import ExitCode, QcliError, UsageError

app = typer.Typer(
    name="qcli",
    help="Will this model fit, at which precision, and does it really work once loaded?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
presets_app = typer.Typer(
    help="List the presets or show one as a BitsAndBytesConfig.", no_args_is_help=False, invoke_without_command=True
)
app.add_typer(presets_app, name="presets")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="Preset name (see `qcli presets`) or YAML file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a preset field: key=value (repeatable).")]
RevisionOpt = Annotated[str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    """qcli: exact VRAM planning, real quantized loads, CI gates."""


@app.command(
    epilog="Examples: qcli estimate --params 8b --bits 4 | qcli estimate --params 70b --gpu A100-80GB | "
    "qcli estimate --model meta-llama/Meta-Llama-3-8B --preset qlora --context 8192 --gpu T4"
)
def estimate(
    params: Annotated[str | None, typer.Option("--params", help="Parameter count: 8b, 7.24B, 125m, 8e9.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model dir, config.json, hub id or demo.")] = None,
    bits: Annotated[
        str | None, typer.Option("--bits", "-b", help="32, 16, 8, 4 or fp32/fp16/bf16/int8/nf4/fp4.")
    ] = None,
    double_quant: Annotated[bool, typer.Option("--double-quant", help="4-bit with double quantization.")] = False,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="Load dtype of unquantized modules.")] = None,
    gpu: Annotated[
        list[str] | None, typer.Option("--gpu", help="GPU name (T4, H100…) or size (24GB, 80GiB); repeatable.")
    ] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="Number of identical --gpu devices.")] = None,
    context: Annotated[int | None, typer.Option("--context", help="Context length in tokens (KV cache).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Batch size.")] = 1,
    kv_dtype: Annotated[str | None, typer.Option("--kv-dtype", help="KV cache dtype (default: load dtype).")] = None,
    train: Annotated[str | None, typer.Option("--train", help="full, lora or qlora.")] = None,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank r.")] = 16,
    lora_targets: Annotated[str, typer.Option("--lora-targets", help="all-linear or q_proj,v_proj,…")] = "all-linear",
    optimizer: Annotated[str, typer.Option("--optimizer", help="adamw, adamw8bit, paged_adamw8bit, sgd.")] = "adamw",
    grad_checkpointing: Annotated[
        bool, typer.Option("--grad-checkpointing", help="Full activation checkpointing.")
    ] = False,
    cuda_context: Annotated[
        str | None, typer.Option("--cuda-context", help="CUDA context per GPU (default 512MiB).")
    ] = None,
    margin: Annotated[float, typer.Option("--margin", help="Allocator margin, a fraction of tensor bytes.")] = 0.05,
    revision: RevisionOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Memory a model needs at a precision: weights with quantization constants, KV cache, training."""
    from qcli.estimate import EstimateOptions, run_estimate
    from qcli.render import console, print_json, render_estimate

    report = run_estimate(
        EstimateOptions(
            params=params,
            model=model,
            bits=bits,
            double_quant=double_quant,
            preset=preset,
            sets=set_ or [],
            dtype=dtype,
            gpus=gpu or [],
            gpu_count=gpus,
            context=context,
            batch=batch,
            kv_dtype=kv_dtype,
            train=train,
            lora_rank=lora_rank,
            lora_targets=[t.strip() for t in lora_targets.split(",") if t.strip()],
            optimizer=optimizer,
            grad_checkpointing=grad_checkpointing,
            cuda_context=cuda_context,
            margin=margin,
            revision=revision,
        )
    )
    if json_:
        print_json(report)
    else:
        render_estimate(report, console())


@presets_app.callback()
def presets_list(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List the built-in presets with a one-line description each."""
    if ctx.invoked_subcommand is not None:
        return
    from qcli.presets import builtin_names, load_preset
    from qcli.render import console, presets_table

    presets = [load_preset(n) for n in builtin_names()]
    if json_:
        sys.stdout.write("[" + ",".join(p.model_dump_json() for p in presets) + "]\n")
    else:
        console().print(presets_table(presets))


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="Preset name or YAML file.")],
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print a preset resolved as the BitsAndBytesConfig qcli passes to transformers."""
    import json

    from qcli.presets import load_preset

    preset = load_preset(name, set_ or [])
    data = {
        "name": preset.name,
        "source": preset.source,
        "description": preset.description,
        "dtype": preset.dtype,
        "bitsandbytes_config": preset.bnb_kwargs(),
    }
    if json_:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    typer.echo(f"# {preset.name} ({preset.source}): {preset.description}")
    typer.echo(f"dtype=torch.{preset.dtype}")
    if preset.quantization is None:
        typer.echo("quantization_config=None  # no quantization")
    else:
        args = ",\n".join(f"    {k}={_py(v)}" for k, v in (preset.bnb_kwargs() or {}).items())
        typer.echo(f"quantization_config=BitsAndBytesConfig(\n{args},\n)")


DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DeviceMapOpt = Annotated[
    str | None, typer.Option("--device-map", help="accelerate device map: auto, balanced, sequential.")
]
MaxMemoryOpt = Annotated[str | None, typer.Option("--max-memory", help="Per-device caps, e.g. 0=20GiB,cpu=64GiB.")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the repo's own modelling code.")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="Override the preset's dtype.")]


def _tty() -> bool:
    return sys.stderr.isatty()


@app.command(
    epilog="Examples: qcli load demo --preset qlora --prompt 'The capital of France is' | "
    "qcli load meta-llama/Llama-3.2-1B --preset int8 --json"
)
def load(
    model: Annotated[str, typer.Argument(help="Model directory, hub id, or demo.")],
    preset: Annotated[str, typer.Option("--preset", "-p", help="Preset name or YAML file.")] = "qlora",
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    dtype: DtypeOpt = None,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Run a short greedy generation.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens to generate.")] = 16,
    json_: JsonOpt = False,
) -> None:
    """Load a model with a preset and report the memory it really takes."""
    from qcli.loader import LoadOptions, load_report
    from qcli.render import console, print_json, render_load, status

    opts = LoadOptions(
        model=model,
        preset=preset,
        sets=set_ or [],
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        dtype=dtype,
        revision=revision,
        trust_remote_code=trust_remote_code,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        progress=_tty() and not json_,
    )
    with status(f"loading {model} with preset {preset}", enabled=_tty() and not json_):
        report, _ = load_report(opts)
    if json_:
        print_json(report)
    else:
        render_load(report, console())


@app.command(epilog="Example: qcli verify demo --preset qlora --expect Paris --budget 5GiB --junit verify.xml")
def verify(
    model: Annotated[str, typer.Argument(help="Model directory, hub id, or demo.")],
    preset: Annotated[str, typer.Option("--preset", "-p", help="Preset name or YAML file.")] = "qlora",
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Prompt for the generation check.")] = None,
    expect: Annotated[str | None, typer.Option("--expect", help="Substring the generation must contain.")] = None,
    budget: Annotated[str | None, typer.Option("--budget", help="Memory budget, e.g. 5GiB.")] = None,
    tolerance: Annotated[str, typer.Option("--tolerance", help="Allowed measured-vs-estimate gap.")] = "5%",
    reference: Annotated[str | None, typer.Option("--reference", help="Reference preset for agreement/KL.")] = None,
    min_agreement: Annotated[float, typer.Option("--min-agreement", help="Top-1 agreement threshold.")] = 0.9,
    max_kl: Annotated[float, typer.Option("--max-kl", help="KL divergence threshold.")] = 0.1,
    allow_offload: Annotated[
        bool, typer.Option("--allow-offload", help="Pass even if modules are on CPU/disk.")
    ] = False,
    junit: Annotated[str | None, typer.Option("--junit", help="Write JUnit XML here.")] = None,
    json_: JsonOpt = False,
) -> int:
    """Pass/fail gate for a quantized model: exit 0 when every check passes, 1 otherwise."""
    from qcli.loader import LoadOptions
    from qcli.render import console, print_json, render_verify, status
    from qcli.verify import VerifyOptions, run_verify, write_junit

    opts = VerifyOptions(
        load=LoadOptions(
            model=model,
            preset=preset,
            sets=set_ or [],
            device=device,
            device_map=device_map,
            max_memory=max_memory,
            revision=revision,
            trust_remote_code=trust_remote_code,
            prompt=prompt,
            progress=_tty() and not json_,
        ),
        expect=expect,
        budget=budget,
        tolerance=tolerance,
        reference=reference,
        min_agreement=min_agreement,
        max_kl=max_kl,
        allow_offload=allow_offload,
    )
    with status(f"verifying {model} with preset {preset}", enabled=_tty() and not json_):
        report = run_verify(opts)
    if junit:
        write_junit(report, junit, f"{model} {preset}")
    if json_:
        print_json(report)
    else:
        render_verify(report, console())
    return ExitCode.OK if report.passed else ExitCode.FAILED


@app.command(epilog="Example: qcli compare demo --presets bf16,int8,nf4,qlora --markdown report.md")
def compare(
    model: Annotated[str, typer.Argument(help="Model directory, hub id, or demo.")],
    presets: Annotated[str, typer.Option("--presets", help="Comma-separated presets.")] = "bf16,int8,nf4,qlora",
    reference: Annotated[str | None, typer.Option("--reference", help="Reference preset (default: the first).")] = None,
    device: DeviceOpt = "auto",
    text: Annotated[str | None, typer.Option("--text", help="Text file for perplexity (default: built-in).")] = None,
    prompt: Annotated[
        str, typer.Option("--prompt", help="Prompt for speed and continuations.")
    ] = "The capital of France is",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Decode length.")] = 16,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per preset before it is stopped.")] = 1800,
    csv: Annotated[str | None, typer.Option("--csv", help="Write CSV here.")] = None,
    markdown: Annotated[str | None, typer.Option("--markdown", help="Write a Markdown report here.")] = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Write memory-vs-quality PNG (needs matplotlib).")] = None,
    json_: JsonOpt = False,
) -> int:
    """Memory, speed and quality of several presets side by side, each in its own process."""
    from qcli import compare as cmp
    from qcli.render import console, print_json, render_compare

    opts = cmp.CompareOptions(
        model=model,
        presets=presets.split(","),
        reference=reference,
        device=device,
        text=text,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        timeout_seconds=timeout,
    )
    if plot:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib", "pip install 'qcli[plot]'")
    tty = _tty() and not json_
    err = console(stderr=True)
    report = cmp.run_compare(opts, progress=(lambda m: err.print(m)) if tty else None)
    if csv:
        cmp.to_csv(report, csv)
    if markdown:
        Path(markdown).write_text(cmp.to_markdown(report), encoding="utf-8")
    if plot:
        cmp.plot(report, plot)
    if json_:
        print_json(report)
    else:
        render_compare(report, console())
    return ExitCode.FAILED if report.failed else ExitCode.OK


def _py(value: object) -> str:
    if isinstance(value, str) and value in {"float32", "float16", "bfloat16", "uint8", "int8"}:
        return f"torch.{value}"
    return repr(value)


def _err(line: str) -> None:
    sys.stderr.write(line.rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 failed run, 2 bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("QCLI_DEBUG", "") not in {"", "0"}
    if "--debug" in args:
        args.remove("--debug")
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="qcli", standalone_mode=False)
        return int(result) if isinstance(result, int) else ExitCode.OK
    except QcliError as exc:
        if debug:
            raise
        _err(f"Error: {exc.line()}")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _err("Interrupted.")
        return 130
    except Exception as exc:
        # Click's usage errors (unknown option, bad value) carry exit_code 2 and format_message().
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int) and hasattr(exc, "format_message"):
            if debug:
                raise
            _err(f"Error: {exc.format_message()} (see `qcli --help`)")
            return code
        if type(exc).__name__ == "Abort":
            return 130
        if debug:
            raise
        _err(f"Error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return int(ExitCode.FAILED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
