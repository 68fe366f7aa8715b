"""Rich views of the result objects. Nothing is computed here but unit conversions and labels; every
string a user or a model supplied (paths, preset names, prompts, generated text) is escaped."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qcli.output.labels import GROUP_LABELS, STRATEGY_LABELS, component_label, format_label
from qcli.results import (
    CompareReport,
    CudaPrediction,
    DeviceFit,
    EstimateReport,
    LoadReport,
    Option,
    Plan,
    PresetInfo,
    PresetsReport,
    VerifyReport,
)
from qcli.units import gb, gib, human_bytes, human_params


def console(stderr: bool = False) -> Console:
    """Return the console the views print to (120 columns when not a terminal)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=None if stream.isatty() else 120)


def stderr_is_terminal() -> bool:
    """Return whether stderr is a terminal (progress and spinners go there, and only then)."""
    return sys.stderr.isatty()


def print_json(obj: BaseModel) -> None:
    """Print a pydantic result as one JSON object on stdout, nothing else."""
    sys.stdout.write(obj.model_dump_json(indent=2) + "\n")
    sys.stdout.flush()


def status(message: str, enabled: bool) -> Any:
    """Return a spinner on stderr while work runs (a no-op when piped or with --json)."""
    if not enabled:
        return contextlib.nullcontext()
    return Console(stderr=True).status(escape(message))


def _size_cells(n_bytes: int | None) -> tuple[str, str]:
    if n_bytes is None:
        return ("—", "—")
    return (gib(n_bytes), gb(n_bytes))


def components_table(plan: Plan, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column("bytes", justify="right")
    table.add_column("GiB (2^30)", justify="right")
    table.add_column("GB (10^9)", justify="right")
    formulas = any(c.formula for c in plan.components)
    if formulas:
        table.add_column("formula")
    for c in plan.components:
        label = component_label(c) + (" [on CPU]" if c.device == "cpu" else "")
        row = [escape(label), f"{c.size_bytes:,}", *_size_cells(c.size_bytes)]
        table.add_row(*row, *([escape(c.formula or "")] if formulas else []))
    table.add_section()
    what = "total on each GPU (tensors)" if plan.training else "total (tensors)"
    table.add_row(f"[bold]{what}[/bold]", f"{plan.total_bytes:,}", *_size_cells(plan.total_bytes))
    if plan.devices:
        for c in plan.overheads:
            table.add_row(escape(component_label(c)), f"{c.size_bytes:,}", *_size_cells(c.size_bytes))
        table.add_row(
            "[bold]required (total + overheads)[/bold]", f"{plan.required_bytes:,}", *_size_cells(plan.required_bytes)
        )
    return table


def _fits_cell(d: DeviceFit) -> str:
    if d.role == "offload":
        return "[red]no: offloaded[/red]"
    if d.fits is None:
        return "unknown (give --cpu-memory)"
    return "[green]yes[/green]" if d.fits else "[red]no[/red]"


def devices_table(plan: Plan) -> Table:
    table = Table(title="fit (every row must fit)", title_justify="left")
    for col in ("device", "capacity", "required", "headroom", "fits", "holds"):
        table.add_column(col, justify="left" if col in {"device", "holds", "fits"} else "right")
    for d in plan.devices:
        name = escape(d.name) + (f" ×{d.identical_gpus} (each)" if d.identical_gpus > 1 else "")
        table.add_row(
            name,
            "—" if d.capacity_bytes is None else gib(d.capacity_bytes),
            gib(d.required_bytes),
            "—" if d.headroom_bytes is None else gib(d.headroom_bytes),
            _fits_cell(d),
            escape(" … ".join(d.blocks)),
        )
    return table


def verdict_line(plan: Plan) -> str:
    """Return the one verdict, worded from the device rows."""
    if plan.verdict == "fits":
        return "[green]fits[/green]"
    bad = [r for r in plan.devices if r.fits is False and r.role != "offload"]
    text = "[red]does not fit[/red]"
    if plan.verdict == "offload":
        text += f" on the GPUs: {human_bytes(plan.offloaded_bytes or 0)} would be offloaded to CPU (slow)"
    elif bad:
        text += ": " + ", ".join(f"{escape(r.name)} needs {gib(r.required_bytes)}" for r in bad)
    return text


def _plan_name(p: Plan) -> str:
    return p.preset or format_label(p.format)


def comparison_table(report: EstimateReport) -> Table:
    params = report.model.total_params
    table = Table(title=f"{human_params(params)} parameters ({params:,})", title_justify="left")
    for col in ("precision", "bits/param", "weights GiB", "weights GB", "total GiB", "total GB"):
        table.add_column(col, justify="left" if col == "precision" else "right")
    with_fit = any(p.devices for p in report.plans)
    if with_fit:
        table.add_column("required GiB", justify="right")
        table.add_column("fits", justify="left")
    for p in report.plans:
        row = [
            escape(_plan_name(p)),
            f"{p.bits_per_param:.3f}",
            f"{p.weight_bytes / 2**30:,.2f}",
            f"{p.weight_bytes / 1e9:,.3f}",
            f"{p.total_bytes / 2**30:,.2f}",
            f"{p.total_bytes / 1e9:,.3f}",
        ]
        if with_fit:
            row += [f"{p.required_bytes / 2**30:,.2f}", "[green]yes[/green]" if p.fits else "[red]no[/red]"]
        table.add_row(*row)
    return table


def cuda_prediction_line(p: CudaPrediction) -> str:
    """Return the one-line view of the predicted torch.cuda counters."""
    return (
        f"predicted torch.cuda after loading the weights on one GPU (fresh process; the CUDA context comes on top): "
        f"allocated {p.cuda_allocated_bytes:,} B ({human_bytes(p.cuda_allocated_bytes)}), reserved "
        f"{human_bytes(p.cuda_reserved_bytes)} (range {human_bytes(p.cuda_reserved_low_bytes)}–"
        f"{human_bytes(p.cuda_reserved_high_bytes)}), load peak {human_bytes(p.cuda_load_peak_bytes)}"
    )


def render_estimate(report: EstimateReport, out: Console) -> None:
    m = report.model
    head = escape(m.name) if m.name else "bare parameter count"
    if m.params_by_group:
        groups = Table(
            title=f"{head}: {escape(m.model_type or '?')}, {human_params(m.total_params)} parameters "
            f"({m.total_params:,}; counted {m.count_method}"
            f"{' as ' + escape(m.model_class) if m.model_class else ''})",
            title_justify="left",
        )
        groups.add_column("group")
        groups.add_column("params", justify="right")
        groups.add_column("share", justify="right")
        for name, count in m.params_by_group.items():
            share = f"{count / m.total_params:.1%}" if m.total_params else "—"
            groups.add_row(GROUP_LABELS.get(name, name), f"{count:,}", share)
        out.print(groups)
    if len(report.plans) != 1:
        out.print(comparison_table(report))
    else:
        plan = report.plans[0]
        title = f"{escape(_plan_name(plan))}: {human_params(plan.total_params)} parameters, "
        title += f"{plan.bits_per_param:.3f} bits/param"
        if m.params_by_group:
            kept = plan.load_dtype
            if plan.training and plan.training.kbit_prepared:
                kept = "float32: PEFT's k-bit preparation upcasts them"
            title += f" for the weights (unquantized modules in {kept})"
        out.print(components_table(plan, title))
        if plan.cuda_prediction:
            out.print(cuda_prediction_line(plan.cuda_prediction))
        if plan.training:
            t = plan.training
            where = STRATEGY_LABELS.get(t.strategy, t.strategy)
            if t.total_gpus > 1:
                where += f" on {t.total_gpus} GPUs ({t.total_nodes} node{'s' if t.total_nodes > 1 else ''})"
            out.print(
                f"training: {t.mode}, {human_params(t.trainable_params)} trainable params, optimizer "
                f"{t.optimizer}, {where}; mixed precision {t.mixed_precision}"
                f"{', fp32 master weights' if t.master_weights else ''}; "
                f"gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}"
            )
        if plan.devices:
            out.print(devices_table(plan))
            out.print(f"verdict: {verdict_line(plan)}")
            if plan.largest_layer:
                ll = plan.largest_layer
                out.print(
                    f"largest layer: {escape(ll.name)}, {human_bytes(ll.size_bytes)} — must fit whole on one GPU "
                    "(offloaded blocks are streamed through GPU 0)"
                )
            if plan.max_context_tokens is not None or plan.context_binding:
                out.print(_context_line(plan, report.batch_size))
            if plan.max_batch_size is not None:
                ctx = plan.training.sequence_tokens if plan.training else report.context_tokens
                out.print(f"max batch that fits: {plan.max_batch_size:,} at {ctx:,} tokens")
    if report.gpus_needed:
        table = Table(title="GPUs needed (--gpus auto)", title_justify="left")
        for col in ("strategy", "GPUs", "per GPU"):
            table.add_column(col, justify="left" if col == "strategy" else "right")
        for g in report.gpus_needed:
            table.add_row(
                escape(STRATEGY_LABELS.get(g.strategy, g.strategy)),
                "—" if g.total_gpus is None else str(g.total_gpus),
                "does not fit" if g.required_bytes is None else gib(g.required_bytes),
            )
        out.print(table)
    for line in _checkpoint_lines(report):
        out.print(line)
    if report.recommendation:
        rec = report.recommendation
        out.print(f"recommendation: [bold]{escape(rec.preset or 'none')}[/bold] — {escape(rec.reason)}")
        for n in rec.notes:
            out.print(f"  note: {escape(n)}")
        if rec.options:
            out.print(options_table(rec.options))
    for n in report.notes:
        out.print(f"note: {escape(n)}")


def _checkpoint_lines(report: EstimateReport) -> list[str]:
    """Return the lines on the checkpoint itself: its commit, and the bytes it stores next to the plan's."""
    m, lines = report.model, []
    src = m.source
    if src is not None and src.repo_id:
        commit = f"commit {src.commit_sha[:12]}" if src.commit_sha else "commit unknown"
        lines.append(
            f"hub: {escape(src.repo_id)} @ {escape(src.revision or 'main')} = {commit} (config from {src.config_from})"
        )
    if m.stored_bytes is not None and m.stored_bytes_by_dtype:
        by_dtype = ", ".join(f"{escape(k)} {v:,}" for k, v in sorted(m.stored_bytes_by_dtype.items()))
        line = f"stored: {m.stored_bytes:,} bytes ({human_bytes(m.stored_bytes)}) in safetensors: {by_dtype}"
        if len(report.plans) == 1:
            line += f"; planned weights: {report.plans[0].weight_bytes:,} bytes"
        lines.append(line)
    return lines


def _context_line(plan: Plan, batch: int) -> str:
    limit = plan.context_limit_tokens
    mem = "memory does not bind" if plan.max_context_tokens is None else f"{plan.max_context_tokens:,} tokens"
    line = f"max context the memory holds: {mem} (batch {batch})"
    if limit:
        line += f"; the model's own limit: {limit:,} tokens"
    if plan.context_binding:
        line += f" — the {'model limit' if plan.context_binding == 'model' else 'memory'} binds"
    return line


def options_table(options: list[Option]) -> Table:
    table = Table(title="options (those that fit, least memory per GPU first)", title_justify="left")
    for col in ("preset", "train", "strategy", "per GPU", "fits", "why not"):
        table.add_column(col, justify="right" if col == "per GPU" else "left")
    for o in options:
        table.add_row(
            escape(o.preset),
            o.train or "—",
            escape(STRATEGY_LABELS.get(o.strategy or "", o.strategy or "—")),
            gib(o.required_bytes),
            "[green]yes[/green]" if o.fits else "[red]no[/red]",
            escape(o.why_not or ""),
        )
    return table


def render_presets(report: PresetsReport, out: Console) -> None:
    table = Table(title="presets (configs/; a YAML file path works wherever a name does)", title_justify="left")
    for col in ("name", "weights", "dtype", "description"):
        table.add_column(col)
    for p in report.presets:
        table.add_row(escape(p.name), format_label(p.format), p.dtype, escape(p.description))
    out.print(table)


def _py(value: object) -> str:
    if isinstance(value, str) and value in {"float32", "float16", "bfloat16", "uint8", "int8"}:
        return f"torch.{value}"
    return repr(value)


def render_preset_code(preset: PresetInfo, out: Console) -> None:
    """Print the preset as the Python that builds the same BitsAndBytesConfig."""
    lines = [f"# {preset.name} ({preset.source}): {preset.description}", f"dtype=torch.{preset.dtype}"]
    if preset.bitsandbytes_config is None:
        lines.append("quantization_config=None  # no quantization")
    else:
        args = ",\n".join(f"    {k}={_py(v)}" for k, v in preset.bitsandbytes_config.items())
        lines.append(f"quantization_config=BitsAndBytesConfig(\n{args},\n)")
    out.print("\n".join(lines), markup=False)


def quantization_table(report: LoadReport) -> Table | None:
    """Return the quantization read back from the loaded modules, one row per distinct setting."""
    groups = report.census.quantization
    if not groups:
        return None
    table = Table(title="quantization read from the loaded modules", title_justify="left")
    for col in ("modules", "layer", "quantized", "type", "double quant", "compute", "block", "absmax", "storage"):
        table.add_column(col, justify="right" if col in {"modules", "block"} else "left")

    def cell(v: object) -> str:
        return "—" if v is None else escape(str(v))

    for g in groups:
        first = g.modules[0] + (" …" if len(g.modules) > 1 else "")
        kind = g.quant_type if g.layer == "Linear4bit" else f"int8, threshold {g.outlier_threshold}"
        table.add_row(
            f"{len(g.modules)} ({escape(first)})",
            g.layer,
            "yes" if g.quantized else "[red]no[/red]",
            cell(kind),
            cell(g.double_quant),
            cell(g.compute_dtype),
            cell(g.block_size),
            cell(g.absmax_dtype),
            cell(g.storage_dtype),
        )
    return table


def render_load(report: LoadReport, out: Console) -> None:
    if report.preset_overridden:
        out.print(
            f"[bold red]WARNING: the checkpoint's own quantization_config overrode preset "
            f"{escape(report.preset)}[/bold red]: what loaded is below, read from the modules"
        )
    table = Table(
        title=f"{escape(report.model)} · preset {escape(report.preset)} · {report.device} · "
        f"loaded in {report.load_seconds:.2f} s · measured {escape(report.measured_at)}",
        title_justify="left",
    )
    table.add_column("measure")
    table.add_column("bytes", justify="right")
    table.add_column("size (binary units)", justify="right")
    table.add_column("what it is")
    table.add_row(
        "memory_bytes",
        f"{report.memory_bytes:,}",
        human_bytes(report.memory_bytes),
        "every tensor once, wherever it is: params, buffers, quant_state, SCB",
    )
    for place, size in sorted(report.memory_bytes_by_device.items()):
        what = {"disk": "offloaded to disk by accelerate", "meta": "never loaded (meta device)"}.get(place, "")
        table.add_row(f"  on {escape(place)}", f"{size:,}", human_bytes(size), what)
    for kind, size in sorted(report.memory_bytes_by_kind.items()):
        table.add_row(f"  {kind}", f"{size:,}", human_bytes(size), "")
    if report.offloaded_bytes:
        table.add_row(
            "[yellow]offloaded_bytes[/yellow]",
            f"{report.offloaded_bytes:,}",
            human_bytes(report.offloaded_bytes),
            "off the load device (disk, or CPU for a GPU load)",
        )
    table.add_row(
        "footprint_bytes",
        f"{report.footprint_bytes:,}",
        human_bytes(report.footprint_bytes),
        "transformers get_memory_footprint() (misses 4-bit quant_state)",
    )
    if report.estimate_bytes is not None:
        error = report.estimate_error_percent
        table.add_row(
            "estimate_bytes",
            f"{report.estimate_bytes:,}",
            human_bytes(report.estimate_bytes),
            f"qcli estimate, {error:+.3f}% vs measured" if error is not None else "qcli estimate",
        )
    pred = report.cuda_prediction
    for c in report.cuda or []:
        table.add_section()
        table.add_row(
            f"{c.device} allocated", f"{c.allocated_bytes:,}", human_bytes(c.allocated_bytes), "torch allocator"
        )
        if pred is not None and c.device == report.device:
            table.add_row(
                "  predicted",
                f"{pred.cuda_allocated_bytes:,}",
                human_bytes(pred.cuda_allocated_bytes),
                f"qcli's allocator model, {c.allocated_bytes - pred.cuda_allocated_bytes:+,} B vs measured",
            )
        table.add_row(
            f"{c.device} reserved", f"{c.reserved_bytes:,}", human_bytes(c.reserved_bytes), "allocator segments"
        )
        if pred is not None and c.device == report.device:
            table.add_row(
                "  predicted",
                f"{pred.cuda_reserved_bytes:,}",
                human_bytes(pred.cuda_reserved_bytes),
                f"range {human_bytes(pred.cuda_reserved_low_bytes)}–{human_bytes(pred.cuda_reserved_high_bytes)}",
            )
        table.add_row(
            f"{c.device} peak allocated",
            f"{c.peak_allocated_bytes:,}",
            human_bytes(c.peak_allocated_bytes),
            "during the load",
        )
        table.add_row(f"{c.device} peak reserved", f"{c.peak_reserved_bytes:,}", human_bytes(c.peak_reserved_bytes), "")
        table.add_row(
            f"{c.device} CUDA context",
            f"{c.cuda_context_bytes:,}",
            human_bytes(c.cuda_context_bytes),
            "total − free − reserved (incl. other processes)",
        )
        table.add_row(
            f"{c.device} free / total",
            f"{c.free_bytes:,}",
            f"{human_bytes(c.free_bytes)} / {human_bytes(c.total_bytes)}",
            "",
        )
    if report.cuda is None:
        table.add_row("CUDA allocated / reserved", "—", "—", "absent: no CUDA device")
    if report.rss_bytes is not None:
        table.add_row("process RSS", f"{report.rss_bytes:,}", human_bytes(report.rss_bytes), "resident memory (CPU)")
    out.print(table)
    quant = quantization_table(report)
    if quant is not None:
        out.print(quant)
    c = report.census
    out.print(
        f"modules: {c.linear4bit} Linear4bit, {c.linear8bit} Linear8bitLt, {c.linear_unquantized} unquantized "
        f"Linear ({escape(', '.join(c.unquantized_modules[:4])) or 'none'}"
        f"{' …' if len(c.unquantized_modules) > 4 else ''})"
    )
    out.print(
        "unquantized tensors by dtype: "
        + ", ".join(f"{k} {human_params(v)}" for k, v in c.kept_params_by_dtype.items())
    )
    if report.generation:
        g = report.generation
        out.print(
            f"generation ({g.new_tokens} tokens, {g.generate_seconds:.2f} s): "
            f"[bold]{escape(g.prompt)}[/bold]{escape(g.text)}"
        )
    for n in report.notes:
        out.print(f"note: {escape(n)}")


CHECK_MARKS = {
    "passed": "[green]pass[/green]",
    "failed": "[red]FAIL[/red]",
    "warning": "[yellow]warn[/yellow]",
    "skipped": "[dim]skip[/dim]",
    "error": "[red]ERROR[/red]",
}


def render_verify(report: VerifyReport, out: Console) -> None:
    table = Table(
        title="qcli verify: " + ("[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]"),
        title_justify="left",
    )
    table.add_column("check")
    table.add_column("result")
    table.add_column("s", justify="right")
    table.add_column("detail")
    for c in report.checks:
        seconds = "" if c.duration_seconds is None else f"{c.duration_seconds:.2f}"
        table.add_row(c.name, CHECK_MARKS[c.outcome], seconds, escape(c.detail))
    out.print(table)
    if report.load is not None and report.load.preset_overridden:
        out.print("[bold red]the checkpoint's own quantization_config overrode the preset[/bold red]")


def render_compare(report: CompareReport, out: Console) -> None:
    table = Table(
        title=f"qcli compare {escape(report.model)} on {report.device} (reference {escape(report.reference)})",
        title_justify="left",
    )
    for col in (
        "preset",
        "memory",
        "saved ×",
        "est. err",
        "load s",
        "prefill s",
        "decode tok/s",
        "perplexity",
        "Δ ppl",
        "top-1 agree",
        "KL",
    ):
        table.add_column(col, justify="left" if col == "preset" else "right")

    def f(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    for r in report.results:
        if r.error:
            table.add_row(escape(r.preset), f"[red]error: {escape(r.error)}[/red]", *[""] * 9)
            continue
        table.add_row(
            escape(r.preset),
            human_bytes(r.memory_bytes),
            f(r.memory_saved_ratio, ".2f"),
            f(r.estimate_error_percent, "+.2f") + "%",
            f(r.load_seconds, ".2f"),
            f(r.prefill_seconds, ".4f"),
            f(r.tokens_per_second, ".1f"),
            f(r.perplexity, ".3f"),
            f(r.delta_perplexity, "+.3f"),
            f(r.top1_agreement, ".3f"),
            f(r.kl_divergence, ".4f"),
        )
    out.print(table)
    out.print(f"speed: {report.speed_method}; quality on {escape(report.text)} ({report.scored_tokens} scored tokens)")
    for r in report.results:
        if r.traceback:
            out.print(f"--- {escape(r.preset)} worker traceback ---\n{escape(r.traceback)}")
    for r in report.results:
        if r.continuation is not None:
            out.print(f"  {escape(r.preset):>9}: {escape(report.prompt)}[bold]{escape(r.continuation)}[/bold]")
    for n in report.notes:
        out.print(f"note: {escape(n)}")
