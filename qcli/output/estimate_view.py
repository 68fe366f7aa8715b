"""The view of `qcli estimate`: the answer first, then the weights' components, devices, the other
precisions and the recommendation; units per row, 80 columns readable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qcli.output.console import print_line
from qcli.output.labels import GROUP_LABELS, STRATEGY_LABELS, component_label, format_label
from qcli.results.plan import (
    Component,
    CudaPrediction,
    DeviceFit,
    EstimateReport,
    ModelInfo,
    Option,
    Plan,
)
from qcli.units import decimal_bytes, human_bytes, human_params

if TYPE_CHECKING:
    pass


WEIGHT_KINDS = frozenset(
    {"weights", "quant_packed_weights", "quant_absmax", "quant_nested_absmax", "quant_nested_code", "quant_code",
     "int8_weights", "int8_row_scales"}
)  # fmt: skip
# Below this width the exact-bytes column is dropped (the JSON keeps every byte); numbers never wrap.
EXACT_BYTES_MIN_WIDTH = 100


def _size_table(title: str | None, out: Console) -> Table:
    table = Table(title=title, title_justify="left", box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("component", overflow="fold", ratio=1)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("GB (10^9)", justify="right", no_wrap=True)
    if out.width >= EXACT_BYTES_MIN_WIDTH:
        table.add_column("bytes", justify="right", no_wrap=True)
    return table


def _size_row(table: Table, label: str, n_bytes: int, bold: bool = False) -> None:
    cells = [human_bytes(n_bytes), decimal_bytes(n_bytes), f"{n_bytes:,}"][: len(table.columns) - 1]
    if bold:
        label, cells = f"[bold]{label}[/bold]", [f"[bold]{c}[/bold]" for c in cells]
    table.add_row(label, *cells)


def _component_row(table: Table, c: Component) -> None:
    _size_row(table, escape(component_label(c) + (" [on CPU]" if c.device == "cpu" else "")), c.size_bytes)


def components_table(plan: Plan, out: Console, title: str | None = None) -> Table:
    """Return the memory table of one plan: weights and their subtotal, then the rest, then overheads."""
    table = _size_table(title, out)
    weights = [c for c in plan.components if c.kind in WEIGHT_KINDS]
    rest = [c for c in plan.components if c.kind not in WEIGHT_KINDS]
    for c in weights:
        _component_row(table, c)
    weights_label = "weights on each GPU" if plan.per_gpu else f"weights ({plan.bits_per_param:.3f} bits/param)"
    if rest:
        _size_row(table, weights_label, sum(c.size_bytes for c in weights), bold=True)
        table.add_section()
    for c in rest:
        _component_row(table, c)
    table.add_section()
    label = "total (tensors)" if rest else weights_label
    if plan.per_gpu:
        label = "total on each GPU (tensors)"
    _size_row(table, label, plan.total_bytes, bold=True)
    if plan.devices:
        for c in plan.overheads:
            _size_row(table, escape(component_label(c)), c.size_bytes)
        _size_row(table, "required (total + overheads)", plan.required_bytes, bold=True)
    return table


def _fits_cell(d: DeviceFit) -> str:
    if d.role == "offload":
        return "[red]no[/red]"  # the row's name says it: what the GPUs could not hold
    if d.fits is None:
        return "unknown (give --cpu-memory)"
    return "[green]yes[/green]" if d.fits else "[red]no[/red]"


def _short_blocks(blocks: list[str]) -> list[str]:
    """Return block names without the prefix they share with every block ("model.layers.5" -> "layers.5")."""
    if not blocks or any("." not in b for b in blocks):
        return blocks
    prefix = blocks[0].split(".")[0] + "."
    return [b.removeprefix(prefix) for b in blocks] if all(b.startswith(prefix) for b in blocks) else blocks


def _free_cell(headroom: int | None) -> str:
    """Return the room left on a device, or what it is short of (the JSON's negative headroom_bytes)."""
    if headroom is None:
        return "—"
    return human_bytes(headroom) if headroom >= 0 else f"short {human_bytes(-headroom)}"


def devices_table(plan: Plan) -> Table:
    """Return the fit table: one row per device (every row must fit)."""
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("device", overflow="fold")
    for col in ("capacity", "required", "free"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("fits", no_wrap=True)
    table.add_column("holds", overflow="fold")
    for d in plan.devices:
        name = escape(d.name) + (f" ×{d.identical_gpus} (each)" if d.identical_gpus > 1 else "")
        table.add_row(
            name,
            "—" if d.capacity_bytes is None else human_bytes(d.capacity_bytes),
            human_bytes(d.required_bytes),
            _free_cell(d.headroom_bytes),
            _fits_cell(d),
            escape(" to ".join(_short_blocks(d.blocks))) or "—",
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
        text += ": " + ", ".join(f"{escape(r.name)} needs {human_bytes(r.required_bytes)}" for r in bad)
    return text


def _plan_name(p: Plan) -> str:
    return p.preset or format_label(p.format)


def model_title(m: ModelInfo) -> str:
    """Return the name a person calls the model: a hub id, a directory, or a config file's folder."""
    if not m.name:
        return f"{human_params(m.total_params)} parameters"
    path = Path(m.name)
    if path.suffix == ".json":
        return path.parent.name if path.stem == "config" and path.parent.name else path.stem
    return m.name.rstrip("/") or m.name  # a directory or a hub id, as the user wrote it


def _gpu_names(plan: Plan) -> list[str]:
    """Return one name per GPU of the plan (a training row stands for identical_gpus of them)."""
    return [d.name.split(" #")[0] for d in plan.devices if d.kind == "gpu" for _ in range(d.identical_gpus)]


def _devices_phrase(plan: Plan) -> str:
    names = _gpu_names(plan)
    names = [f"{n} GPU" if n[:1].isdigit() else n for n in names]  # a bare size: "a 24GB GPU"
    if len(set(names)) == 1:
        return f"one {names[0]}" if len(names) == 1 else f"{len(names)} × {names[0]}"
    return " + ".join(names)


def estimate_answer(report: EstimateReport) -> str:
    """Return the one-line answer an estimate starts with (rich markup, user strings escaped)."""
    m = report.model
    name = escape(model_title(m))
    if len(report.plans) != 1 and any(p.devices for p in report.plans):
        fit = [escape(_short_name(p)) for p in report.plans if p.fits]
        miss = [escape(_short_name(p)) for p in report.plans if not p.fits]
        where = _devices_phrase(report.plans[0])
        if not fit:
            return f"[bold]{name}[/bold] on {where}: [red]does not fit[/red] in any precision"
        tail = f"; not in {', '.join(miss)}" if miss else ""
        return f"[bold]{name}[/bold] on {where}: [green]fits[/green] in {', '.join(fit)}{tail}"
    if len(report.plans) != 1:
        lo = min(report.plans, key=lambda p: p.total_bytes)
        hi = max(report.plans, key=lambda p: p.total_bytes)
        what = "tensors" if any(p.kv_cache_bytes or p.training for p in report.plans) else "weights"
        return (
            f"[bold]{name}[/bold] needs {human_bytes(hi.total_bytes)} of {what} in {escape(_plan_name(hi))}, "
            f"down to {human_bytes(lo.total_bytes)} in {escape(_plan_name(lo))}"
        )
    plan = report.plans[0]
    verb = "need" if not m.name else "needs"
    head = f"[bold]{name}[/bold] in [bold]{escape(_plan_name(plan))}[/bold]"
    if not plan.devices:
        what = "of weights" if plan.total_bytes == plan.weight_bytes else "of tensors"
        return f"{head} {verb} {human_bytes(plan.total_bytes)} {what} ({decimal_bytes(plan.total_bytes)})"
    where = _devices_phrase(plan)
    gpus = [d for d in plan.devices if d.kind == "gpu"]
    need = human_bytes(max(d.required_bytes for d in gpus)) + (" per GPU" if len(_gpu_names(plan)) > 1 else "")
    if plan.fits:
        free = sum((d.headroom_bytes or 0) * d.identical_gpus for d in gpus)
        lacking = [d.name for d in gpus if d.bf16 is False]
        caveat = ""
        if lacking and "bfloat16" in (plan.load_dtype, plan.compute_dtype):  # the notes say what to use instead
            caveat = f", [yellow]but the {escape(lacking[0])} has no bf16 (see the notes)[/yellow]"
        return f"{head} {verb} {need} on {where}: [green]fits[/green], {human_bytes(free)} free{caveat}"
    short = f", {human_bytes(plan.offloaded_bytes)} would go to the CPU" if plan.offloaded_bytes else ""
    return f"{head} {verb} {need} on {where}: [red]does not fit[/red]{short}"


# Narrow names for the precision column (the glossary in the README explains "dq").
SHORT_FORMAT_LABELS = {"nf4+dq": "nf4 + dq", "fp4+dq": "fp4 + dq"}


def _short_name(p: Plan) -> str:
    return p.preset or SHORT_FORMAT_LABELS.get(p.format, p.format)


def comparison_table(report: EstimateReport, out: Console) -> Table:
    """Return one row per precision: bits/param, weights, total (and the fit when GPUs were given)."""
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("precision", no_wrap=True)
    table.add_column("bits/param", justify="right", no_wrap=True)
    table.add_column("weights", justify="right", no_wrap=True)
    table.add_column("GB (10^9)", justify="right", no_wrap=True)
    extra = any(p.total_bytes != p.weight_bytes for p in report.plans)
    if extra:
        table.add_column("total", justify="right", no_wrap=True)
    with_fit = any(p.devices for p in report.plans)
    if with_fit:
        table.add_column("required", justify="right", no_wrap=True)
        table.add_column("fits", no_wrap=True)
    for p in report.plans:
        row = [escape(_short_name(p)), f"{p.bits_per_param:.3f}"]
        row += [human_bytes(p.weight_bytes), decimal_bytes(p.weight_bytes)]
        if extra:
            row.append(human_bytes(p.total_bytes))
        if with_fit:
            row += [human_bytes(p.required_bytes), "[green]yes[/green]" if p.fits else "[red]no[/red]"]
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


COUNT_METHODS = {"analytic": "counted from the config", "meta": "counted on the meta device", "params": "given"}


def groups_heading(m: ModelInfo) -> str:
    """Return the line above the parameter groups: the count, the family and how it was counted."""
    kind = f"{escape(m.model_type)}, " if m.model_type else ""
    how = COUNT_METHODS[m.count_method] + (f" as {escape(m.model_class)}" if m.model_class else "")
    return f"{human_params(m.total_params)} parameters ({m.total_params:,}; {kind}{how})"


def groups_table(m: ModelInfo) -> Table:
    """Return the parameter groups of a model: what stays unquantized is visible here."""
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    table.add_column("parameter group", overflow="fold")
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    for name, count in (m.params_by_group or {}).items():
        share = f"{count / m.total_params:.1%}" if m.total_params else "—"
        table.add_row(GROUP_LABELS.get(name, name), human_params(count), share)
    return table


def render_estimate(report: EstimateReport, out: Console) -> None:
    """Print the answer and the verdict first, then the memory table, the fit, the parameter groups, notes."""
    print_line(out, estimate_answer(report))
    rec = report.recommendation
    if rec:
        print_line(out, f"recommendation: [bold]{escape(rec.preset or 'none')}[/bold] — {escape(rec.reason)}")
    if len(report.plans) != 1:
        out.print()
        out.print(comparison_table(report, out))
    else:
        plan = report.plans[0]
        out.print()
        out.print(components_table(plan, out))
        if plan.cuda_prediction:
            print_line(out, cuda_prediction_line(plan.cuda_prediction))
        if plan.training:
            t = plan.training
            where = STRATEGY_LABELS.get(t.strategy, t.strategy)
            if t.total_gpus > 1:
                where += f" on {t.total_gpus} GPUs ({t.total_nodes} node{'s' if t.total_nodes > 1 else ''})"
            print_line(
                out,
                f"training: {t.mode}, {human_params(t.trainable_params)} trainable params, optimizer "
                f"{t.optimizer}, {where}; mixed precision {t.mixed_precision}"
                f"{', fp32 master weights' if t.master_weights else ''}; "
                f"gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}",
            )
        if plan.devices:
            out.print()
            out.print(devices_table(plan))
            print_line(out, f"verdict: {verdict_line(plan)}")
            if plan.largest_layer:
                ll = plan.largest_layer
                print_line(
                    out,
                    f"largest layer: {escape(ll.name)}, {human_bytes(ll.size_bytes)} — must fit whole on one GPU "
                    "(offloaded blocks are streamed through GPU 0)",
                )
            if plan.max_context_tokens is not None or plan.context_binding:
                print_line(out, _context_line(plan, report.batch_size))
            if plan.max_batch_size is not None:
                ctx = plan.training.sequence_tokens if plan.training else report.context_tokens
                print_line(out, f"max batch that fits: {plan.max_batch_size:,} at {ctx:,} tokens")
    if report.gpus_needed:
        table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
        for col in ("strategy", "GPUs", "per GPU"):
            table.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)
        for g in report.gpus_needed:
            table.add_row(
                escape(STRATEGY_LABELS.get(g.strategy, g.strategy)),
                "—" if g.total_gpus is None else str(g.total_gpus),
                "does not fit" if g.required_bytes is None else human_bytes(g.required_bytes),
            )
        out.print()
        print_line(out, "GPUs needed (--gpus auto)")
        out.print(table)
    if rec and rec.options:
        heading, tail = options_lines(rec.options)
        out.print()
        print_line(out, heading)
        out.print(options_table(rec.options))
        if tail:
            print_line(out, tail)
    for line in _checkpoint_lines(report):
        print_line(out, line)
    if report.model.params_by_group:
        out.print()
        print_line(out, groups_heading(report.model))
        out.print(groups_table(report.model))
    for n in rec.notes if rec else []:
        print_line(out, f"note: {escape(n)}")
    for n in report.notes:
        print_line(out, f"note: {escape(n)}")


def _checkpoint_lines(report: EstimateReport) -> list[str]:
    """Return the lines on the checkpoint itself: its commit, and the bytes it stores next to the plan's."""
    m, lines = report.model, []
    src = m.source
    if src is not None and src.repo_id:
        commit = f"commit {src.commit_sha[:12]}" if src.commit_sha else "commit unknown"
        lines.append(
            f"hub: {escape(src.repo_id)} @ {escape(src.revision or 'main')} = {commit} (config from {src.config_from})"
        )
    if m.stored_bytes is not None and m.stored_bytes_by_dtype is not None:
        by_dtype = ", ".join(f"{escape(k)} {v:,}" for k, v in sorted(m.stored_bytes_by_dtype.items()))
        by_dtype = by_dtype or "no tensors"
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


# The options view lists those that fit and a few that do not (the JSON holds all of them).
OPTIONS_SHOWN = 10
OPTIONS_HEADING = "options (those that fit first; least memory per GPU first)"


def _shown_options(options: list[Option]) -> list[Option]:
    """Return those that fit and the first few that do not (at least 3, up to OPTIONS_SHOWN in all)."""
    shown = [o for o in options if o.fits]
    return shown + [o for o in options if not o.fits][: max(3, OPTIONS_SHOWN - len(shown))]


def options_table(options: list[Option]) -> Table:
    """Return the options: those that fit, then those that do not, least memory per GPU first in each.
    The train and strategy columns appear only where some option has one (a plain estimate has neither)."""
    table = Table(box=box.HORIZONTALS, pad_edge=False, show_edge=False)
    shown = _shown_options(options)
    cells = {
        "preset": [escape(o.preset) for o in shown],
        "train": [o.train or "—" for o in shown],
        "strategy": [escape(STRATEGY_LABELS.get(o.strategy or "", o.strategy or "—")) for o in shown],
        "per GPU": [human_bytes(o.required_bytes) for o in shown],
        "fits": ["[green]yes[/green]" if o.fits else "[red]no[/red]" for o in shown],
        "why not": [escape(o.why_not or "") for o in shown],
    }
    columns = [c for c in cells if c not in {"train", "strategy"} or any(v != "—" for v in cells[c])]
    if not any(cells["why not"]):
        columns.remove("why not")
    for col in columns:
        table.add_column(
            col,
            justify="right" if col == "per GPU" else "left",
            no_wrap=col != "why not",
            overflow="fold",
            ratio=1 if col == "why not" else None,
        )
    for i in range(len(shown)):
        table.add_row(*[cells[c][i] for c in columns])
    return table


def options_lines(options: list[Option]) -> tuple[str, str | None]:
    """Return the options table's heading, and the line under it when some options are not shown."""
    hidden = len(options) - len(_shown_options(options))
    tail = f"{hidden} more that do not fit: --json lists every option" if hidden > 0 else None
    return OPTIONS_HEADING, tail
